//! The rule engine over the whole case set, plus what the case set cannot play on loopback
//! alone (bound devices, unknown flags) and the advice and ephemeral counts built on it.

use super::*;
use crate::conflict::advice::{self, Context};
use crate::conflict::cases::{self, PORT, tcp, udp};
use crate::conflict::ephemeral;
use std::net::IpAddr;

fn table(specs: &[cases::Spec]) -> Vec<Existing> {
    specs.iter().map(|s| s.existing()).collect()
}

#[test]
fn every_case_gets_linux_answer_overlap_and_rule() {
    let mut wrong = Vec::new();
    for c in cases::all() {
        let findings = check(&c.request.request(), &table(&c.existing));
        let got = findings.first().map(|f| (f.overlap, f.rule));
        if got != c.refused || findings.iter().any(|f| !f.certain) {
            wrong.push(format!(
                "{}: want {:?}, got {findings:?}",
                c.name, c.refused
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn kernel_check_names_the_function_that_refuses() {
    let check_of = |existing: cases::Spec, request: cases::Spec| {
        check(&request.request(), &[existing.existing()])[0].check
    };
    let lo = "127.0.0.1";
    assert_eq!(
        check_of(tcp("0.0.0.0").listen(), tcp(lo)),
        "inet_bhash2_addr_any_conflict"
    );
    assert_eq!(
        check_of(tcp(lo).listen(), tcp(lo)),
        "inet_csk_bind_conflict"
    );
    assert_eq!(
        check_of(tcp(lo).listen(), tcp("0.0.0.0")),
        "inet_csk_bind_conflict"
    );
    assert_eq!(check_of(udp(lo), udp(lo)), "udp_lib_lport_inuse");
}

#[test]
fn bound_devices_apart_never_conflict() {
    let mut dev1 = tcp("0.0.0.0").listen().existing();
    dev1.bound_dev_if = 1;
    let mut r = tcp("0.0.0.0").request();
    r.bound_dev_if = 2;
    assert!(check(&r, std::slice::from_ref(&dev1)).is_empty());
    r.bound_dev_if = 1;
    assert_eq!(check(&r, std::slice::from_ref(&dev1)).len(), 1);
    // An unbound socket overlaps a bound one.
    r.bound_dev_if = 0;
    assert_eq!(check(&r, &[dev1]).len(), 1);
    let mut u = udp("127.0.0.1").existing();
    u.bound_dev_if = 1;
    let mut ur = udp("127.0.0.1").request();
    ur.bound_dev_if = 2;
    assert!(check(&ur, &[u]).is_empty());
}

#[test]
fn unknown_flags_make_an_uncertain_finding_only_when_they_decide() {
    // A TIME_WAIT socket whose SO_REUSEADDR is unknown: decides for a request with it...
    let mut tw = tcp("127.0.0.1").ra().tw().existing();
    tw.reuseaddr = None;
    tw.reuseport = None;
    let f = check(&tcp("127.0.0.1").ra().request(), std::slice::from_ref(&tw));
    assert_eq!(f.len(), 1);
    assert!(!f[0].certain);
    // ...but not for one without: it conflicts whatever the old socket had.
    let f = check(&tcp("127.0.0.1").request(), &[tw]);
    assert!(f[0].certain);
    // A listener conflicts whatever its flags when the request has none.
    let mut l = tcp("127.0.0.1").listen().existing();
    l.reuseaddr = None;
    l.reuseport = None;
    assert!(check(&tcp("127.0.0.1").request(), &[l])[0].certain);
}

#[test]
fn request_sockets_and_other_ports_are_ignored() {
    let mut syn = tcp("127.0.0.1").listen().existing();
    syn.state = TCP_NEW_SYN_RECV;
    let mut other = tcp("127.0.0.1").listen().existing();
    other.port = PORT + 1;
    assert!(check(&tcp("127.0.0.1").request(), &[syn, other]).is_empty());
}

fn fixes_for(existing: &[cases::Spec], request: cases::Spec, local: &[&str]) -> Vec<String> {
    fixes_in(table(existing), request, local)
}

fn fixes_in(t: Vec<Existing>, request: cases::Spec, local: &[&str]) -> Vec<String> {
    let r = request.request();
    let findings = check(&r, &t);
    let left = |i: usize| (t[i].state == TCP_TIME_WAIT).then_some(42_500);
    let local: Vec<IpAddr> = local.iter().map(|a| a.parse().unwrap()).collect();
    let owned = |i: usize| t[i].state != TCP_TIME_WAIT;
    let ctx = Context {
        table: &t,
        time_left_ms: &left,
        local_addrs: &local,
        has_owner: &owned,
    };
    advice::fixes(&r, &findings, &ctx)
}

#[test]
fn advice_offers_only_what_works() {
    let lo = "127.0.0.1";
    assert_eq!(
        fixes_for(&[tcp(lo).ra()], tcp(lo), &[]),
        [
            "set SO_REUSEADDR on this socket",
            "port 7001 is free for this socket"
        ]
    );
    // Against a listener SO_REUSEADDR never helps; SO_REUSEPORT on both sides does.
    let mut next_port = tcp(lo).uid(7).listen().existing();
    next_port.port = PORT + 1;
    assert_eq!(
        fixes_in(
            vec![tcp(lo).listen().existing(), next_port],
            tcp(lo),
            &[lo, "127.0.0.2"]
        ),
        [
            "set SO_REUSEPORT on this socket and the sockets in the way that lack it (same owner uid)",
            "address 127.0.0.2 is free on port 7000",
            "port 7002 is free for this socket"
        ]
    );
    // A different owner uid: SO_REUSEPORT on both sides would not do.
    assert_eq!(
        fixes_for(&[tcp(lo).uid(cases::OTHER_UID).listen()], tcp(lo), &[]),
        ["port 7001 is free for this socket"]
    );
    assert_eq!(
        fixes_for(&[tcp("0.0.0.0").listen()], tcp("::"), &[]),
        [
            "set IPV6_V6ONLY on this socket",
            "port 7001 is free for this socket"
        ]
    );
    assert_eq!(
        fixes_for(&[tcp(lo).tw()], tcp(lo).ra(), &[]),
        [
            "wait 43 s: the TIME_WAIT socket is then gone",
            "port 7001 is free for this socket"
        ]
    );
    assert!(fixes_for(&[tcp(lo).listen()], tcp("127.0.0.2"), &[]).is_empty());
}

#[test]
fn ephemeral_counts_reserved_and_taken_ports() {
    assert_eq!(
        ephemeral::parse_ports("1000-1002, 2000,x"),
        [1000, 1001, 1002, 2000].into()
    );
    let mut taken = tcp("0.0.0.0").listen().existing();
    taken.port = 40000;
    let mut reserved = taken.clone();
    reserved.port = 40001;
    let mut elsewhere = taken.clone();
    elsewhere.port = 1000;
    let e = ephemeral::report(
        &tcp("127.0.0.1").request(),
        [40000, 40009],
        "40001-40002".into(),
        &[taken, reserved, elsewhere],
    );
    assert_eq!((e.in_use, e.reserved_in_range, e.free), (1, 2, 7));
}

#[test]
fn fixes_name_only_flags_the_socket_lacks_and_try_both_flags_together() {
    let lo = "127.0.0.1";
    // This socket already has SO_REUSEPORT; the listener in the way lacks it.
    assert_eq!(
        fixes_in(vec![tcp(lo).listen().existing()], tcp(lo).rp(), &[])[0],
        "set SO_REUSEPORT on the sockets in the way that lack it (same owner uid)"
    );
    // A SO_REUSEPORT listener and a TIME_WAIT socket that had SO_REUSEADDR on one port: neither
    // flag alone gets past both, the two together do (as a real bind shows).
    let any = "0.0.0.0";
    let fixes = fixes_in(
        vec![
            tcp(any).rp().listen().existing(),
            tcp(lo).ra().tw().existing(),
        ],
        tcp(any),
        &[],
    );
    assert_eq!(
        fixes[0], "set SO_REUSEADDR and SO_REUSEPORT on this socket",
        "{fixes:?}"
    );
}

#[test]
fn the_listener_rule_names_the_flags_the_sockets_hold() {
    let r = Rule::ReuseaddrVsListener;
    assert!(
        r.sentence_for(true, Some(true))
            .starts_with("SO_REUSEADDR, which both sockets have")
    );
    assert!(
        r.sentence_for(false, Some(true))
            .starts_with("the listening socket's SO_REUSEADDR")
    );
    assert!(
        r.sentence_for(true, Some(false))
            .starts_with("this socket's SO_REUSEADDR")
    );
    assert_eq!(
        Rule::NoReuseFlags.sentence_for(false, None),
        Rule::NoReuseFlags.sentence()
    );
}
