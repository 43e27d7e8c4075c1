//! The scenarios: each claim the notes in `shared/seeds/` make about `bind()`, as steps with
//! Linux's result. The expected results follow the kernel's conflict checks
//! (`inet_csk_bind_conflict` / `inet_bind_conflict` for TCP, `udp_lib_lport_inuse` for UDP,
//! `inet_bind_sk` / `__inet6_bind` for addresses and privileged ports), and are checked against
//! the running kernel by the tests.

use super::check::PORTS_EXHAUSTED;
use super::{Act, Kind, NOBODY, NON_LOCAL_V4, OTHER_LOCAL_V4, Scenario, Setup, Step};
use crate::sockopt::Opt;
use libc::{EACCES, EADDRINUSE, EADDRNOTAVAIL, EAGAIN, EINVAL};

const OK: i32 = 0;
const NOTE_ANY: &str = "000_6b51aaa822b7bfaa.txt";
const NOTE_REUSEADDR: &str = "002_a3672dce97014c81.txt";
const NOTE_TWO_PROCESSES: &str = "003_e951d6b44d1d5051.txt";

fn step(sock: char, act: Act, expect: i32) -> Step {
    Step {
        sock,
        act,
        expect,
        rule: None,
    }
}
fn socket(sock: char, kind: Kind) -> Step {
    step(sock, Act::Socket { kind, uid: None }, OK)
}
fn socket_as(sock: char, kind: Kind, uid: u32) -> Step {
    step(
        sock,
        Act::Socket {
            kind,
            uid: Some(uid),
        },
        OK,
    )
}
fn set(sock: char, opt: Opt) -> Step {
    step(sock, Act::Set(opt), OK)
}
fn bind(sock: char, addr: &'static str, port: u16, expect: i32) -> Step {
    step(sock, Act::Bind { addr, port }, expect)
}
fn listen(sock: char, expect: i32) -> Step {
    step(sock, Act::Listen, expect)
}
/// A bind that fails with `errno`, explained by `rule`.
fn bind_fails(sock: char, addr: &'static str, port: u16, errno: i32, rule: &'static str) -> Step {
    Step {
        rule: Some(rule),
        ..bind(sock, addr, port, errno)
    }
}
/// A connect to `addr:port` (TCP, loopback only).
fn connect(sock: char, addr: &'static str, port: u16, expect: i32) -> Step {
    step(sock, Act::Connect { addr, port }, expect)
}
/// A connect that fails with `errno`, explained by `rule`.
fn connect_fails(
    sock: char,
    addr: &'static str,
    port: u16,
    errno: i32,
    rule: &'static str,
) -> Step {
    Step {
        rule: Some(rule),
        ..connect(sock, addr, port, errno)
    }
}
/// A listen that fails with `errno`, explained by `rule`.
fn listen_fails(sock: char, errno: i32, rule: &'static str) -> Step {
    Step {
        rule: Some(rule),
        ..listen(sock, errno)
    }
}

/// The rule names the observer's explanations use (`conflict.holders[].rule.name`,
/// `conflict.refusal.rule`).
const NO_REUSE_FLAGS: &str = "no-reuse-flags";
const REUSEADDR_BOTH_SIDES: &str = "reuseaddr-both-sides";
const REUSEADDR_VS_LISTENER: &str = "reuseaddr-vs-listener";
const REUSEPORT_BOTH_SIDES: &str = "reuseport-both-sides";
const REUSEPORT_SAME_UID: &str = "reuseport-same-uid";
const TIME_WAIT_KEEPS_FLAGS: &str = "time-wait-keeps-flags";
const ADDRESS_NOT_LOCAL: &str = "address-not-local";
const PRIVILEGED_PORT: &str = "privileged-port";
const ALREADY_BOUND: &str = "already-bound";

#[allow(clippy::too_many_arguments)]
fn scenario(
    name: &'static str,
    note: &'static str,
    claim: &'static str,
    linux: &'static str,
    claim_holds: bool,
    setup: Setup,
    steps: Vec<Step>,
) -> Scenario {
    Scenario {
        name,
        note,
        claim,
        linux,
        claim_holds,
        setup,
        steps,
        second_process: &[],
    }
}

/// `s` with the sockets `socks` created and used by a second process.
fn in_second_process(s: Scenario, socks: &'static [char]) -> Scenario {
    Scenario {
        second_process: socks,
        ..s
    }
}

/// A server on 127.0.0.1:`port` (with `old` options) whose accepted connection is closed by
/// the server first, leaving it in TIME_WAIT; then a new server socket (with `new` options)
/// binds the same address.
fn time_wait_restart(
    port: u16,
    old: &[Opt],
    new: &[Opt],
    expect: i32,
    rule: Option<&'static str>,
) -> Vec<Step> {
    let mut steps = vec![socket('A', Kind::Tcp4)];
    steps.extend(old.iter().map(|o| set('A', *o)));
    steps.extend([
        bind('A', "127.0.0.1", port, OK),
        listen('A', OK),
        socket('C', Kind::Tcp4),
        connect('C', "127.0.0.1", port, OK),
        step('A', Act::Accept { into: 'S' }, OK),
        step('S', Act::Close, OK),
        step('C', Act::ReadEof, OK),
        step('C', Act::Close, OK),
        step('S', Act::AwaitTimeWait { port }, OK),
        step('A', Act::Close, OK),
        socket('N', Kind::Tcp4),
    ]);
    steps.extend(new.iter().map(|o| set('N', *o)));
    steps.push(Step {
        rule,
        ..bind('N', "127.0.0.1", port, expect)
    });
    steps
}

/// Two sockets of `kind` with `opt` set binding `addr:port`, both successfully (listening too
/// when `listen_too`); `b_uid`: B's owner, when not root.
fn pair_sharing(
    kind: Kind,
    opt: Opt,
    addr: &'static str,
    port: u16,
    listen_too: bool,
    b_uid: Option<u32>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for sock in ['A', 'B'] {
        steps.push(match (sock, b_uid) {
            ('B', Some(uid)) => socket_as(sock, kind, uid),
            _ => socket(sock, kind),
        });
        steps.push(set(sock, opt));
        steps.push(bind(sock, addr, port, OK));
        if listen_too {
            steps.push(listen(sock, OK));
        }
    }
    steps
}

/// Every scenario, in the order the demo shows them.
pub fn all() -> Vec<Scenario> {
    use Kind::{Tcp4, Tcp6, Udp4};
    use Opt::{FreeBind, ReuseAddr, ReusePort, V6Only};
    use Setup::{Loopback, SecondAddress, TwoPortRange};
    const TW_CLAIM: &str =
        "SO_REUSEADDR lets a restarted server bind a port whose old connection is in TIME_WAIT";
    vec![
        scenario(
            "any-address",
            NOTE_ANY,
            "INADDR_ANY (0.0.0.0) is every local address: one socket serves all interfaces",
            "binds the wildcard; the socket accepts on every local address of its namespace",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "0.0.0.0", 5000, OK),
                listen('A', OK),
            ],
        ),
        scenario(
            "loopback",
            NOTE_ANY,
            "127.0.0.1 can be bound; only this host can reach it",
            "127.0.0.1 is local on lo in every namespace",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "127.0.0.1", 5000, OK),
                listen('A', OK),
            ],
        ),
        scenario(
            "loopback-range",
            NOTE_ANY,
            "the only addresses bind() accepts are 0.0.0.0, 127.0.0.1 and the host's own IP",
            "all of 127.0.0.0/8 is local (lo has 127.0.0.1/8), so 127.0.0.2 binds too",
            false,
            Loopback,
            vec![socket('A', Tcp4), bind('A', "127.0.0.2", 5000, OK)],
        ),
        scenario(
            "other-local-address",
            NOTE_ANY,
            "binding one of the host's own addresses works, and serves that address only",
            "any address configured on an interface of the namespace is local (RTN_LOCAL)",
            true,
            SecondAddress,
            vec![
                socket('A', Tcp4),
                bind('A', OTHER_LOCAL_V4, 5000, OK),
                listen('A', OK),
            ],
        ),
        scenario(
            "non-local-address",
            NOTE_ANY,
            "binding an address the host does not have fails: \"Cannot assign requested address\"",
            "inet_bind_sk refuses a non-local address with EADDRNOTAVAIL",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind_fails('A', NON_LOCAL_V4, 5000, EADDRNOTAVAIL, ADDRESS_NOT_LOCAL),
            ],
        ),
        scenario(
            "non-local-freebind",
            NOTE_ANY,
            "no socket can bind an address the host does not have",
            "IP_FREEBIND (or net.ipv4.ip_nonlocal_bind) lets a socket bind a non-local address",
            false,
            Loopback,
            vec![
                socket('A', Tcp4),
                set('A', FreeBind),
                bind('A', NON_LOCAL_V4, 5000, OK),
            ],
        ),
        scenario(
            "two-specific-addresses",
            NOTE_REUSEADDR,
            "two servers can use the same port on two different specific addresses",
            "different specific addresses never conflict",
            true,
            SecondAddress,
            vec![
                socket('A', Tcp4),
                bind('A', "127.0.0.1", 6666, OK),
                listen('A', OK),
                socket('B', Tcp4),
                bind('B', OTHER_LOCAL_V4, 6666, OK),
                listen('B', OK),
            ],
        ),
        scenario(
            "any-then-loopback",
            NOTE_REUSEADDR,
            "INADDR_ANY then 127.0.0.1 on the same port: \"Address already in use\"",
            "the wildcard overlaps every specific address; without reuse flags they conflict",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "0.0.0.0", 6666, OK),
                listen('A', OK),
                socket('B', Tcp4),
                bind_fails('B', "127.0.0.1", 6666, EADDRINUSE, NO_REUSE_FLAGS),
            ],
        ),
        scenario(
            "any-then-loopback-reuseaddr-listening",
            NOTE_REUSEADDR,
            "with SO_REUSEADDR on both, a listening INADDR_ANY server and a 127.0.0.1 one share the port",
            "not on Linux (BSD and macOS allow it): SO_REUSEADDR never shares a port with a LISTEN socket on an overlapping address",
            false,
            Loopback,
            vec![
                socket('A', Tcp4),
                set('A', ReuseAddr),
                bind('A', "0.0.0.0", 6666, OK),
                listen('A', OK),
                socket('B', Tcp4),
                set('B', ReuseAddr),
                bind_fails('B', "127.0.0.1", 6666, EADDRINUSE, REUSEADDR_VS_LISTENER),
            ],
        ),
        scenario(
            "any-then-loopback-reuseaddr-bound",
            NOTE_REUSEADDR,
            "with SO_REUSEADDR on both, INADDR_ANY and 127.0.0.1 can both bind the port",
            "both binds succeed while neither listens; the check runs again at listen(), and the second listen() fails",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                set('A', ReuseAddr),
                bind('A', "0.0.0.0", 6666, OK),
                socket('B', Tcp4),
                set('B', ReuseAddr),
                bind('B', "127.0.0.1", 6666, OK),
                listen('A', OK),
                listen_fails('B', EADDRINUSE, REUSEADDR_VS_LISTENER),
            ],
        ),
        scenario(
            "time-wait-no-reuseaddr",
            NOTE_TWO_PROCESSES,
            "without SO_REUSEADDR a restarted server cannot bind while the old connection is in TIME_WAIT",
            "the TIME_WAIT socket still holds the port; without reuse flags that conflicts",
            true,
            Loopback,
            time_wait_restart(10013, &[], &[], EADDRINUSE, Some(NO_REUSE_FLAGS)),
        ),
        scenario(
            "time-wait-reuseaddr-both",
            NOTE_TWO_PROCESSES,
            TW_CLAIM,
            "it does when both the old and the new server socket set it",
            true,
            Loopback,
            time_wait_restart(10013, &[ReuseAddr], &[ReuseAddr], OK, None),
        ),
        scenario(
            "time-wait-reuseaddr-new-only",
            NOTE_TWO_PROCESSES,
            TW_CLAIM,
            "only if the old socket had it too: a TIME_WAIT socket keeps its socket's SO_REUSEADDR, and both sides need it",
            false,
            Loopback,
            time_wait_restart(
                10013,
                &[],
                &[ReuseAddr],
                EADDRINUSE,
                Some(TIME_WAIT_KEEPS_FLAGS),
            ),
        ),
        scenario(
            "time-wait-reuseaddr-old-only",
            NOTE_TWO_PROCESSES,
            TW_CLAIM,
            "the new socket must set it as well: both sides need SO_REUSEADDR",
            false,
            Loopback,
            time_wait_restart(
                10013,
                &[ReuseAddr],
                &[],
                EADDRINUSE,
                Some(REUSEADDR_BOTH_SIDES),
            ),
        ),
        scenario(
            "reuseport-both",
            NOTE_TWO_PROCESSES,
            "SO_REUSEPORT allows a completely duplicate bind when every socket sets it",
            "two listeners share the port; the kernel balances connections between them",
            true,
            Loopback,
            pair_sharing(Tcp4, ReusePort, "127.0.0.1", 7000, true, None),
        ),
        scenario(
            "reuseport-one-side",
            NOTE_TWO_PROCESSES,
            "SO_REUSEPORT works only if every socket binding the port sets it",
            "a socket without SO_REUSEPORT conflicts with one that has it",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                set('A', ReusePort),
                bind('A', "127.0.0.1", 7000, OK),
                listen('A', OK),
                socket('B', Tcp4),
                bind_fails('B', "127.0.0.1", 7000, EADDRINUSE, REUSEPORT_BOTH_SIDES),
            ],
        ),
        scenario(
            "reuseport-two-users",
            NOTE_TWO_PROCESSES,
            "SO_REUSEPORT allows a completely duplicate bind when every socket sets it",
            "only between sockets of the same owner uid: another user's socket gets EADDRINUSE",
            false,
            Loopback,
            vec![
                socket('A', Tcp4),
                set('A', ReusePort),
                bind('A', "127.0.0.1", 7000, OK),
                listen('A', OK),
                socket_as('B', Tcp4, NOBODY),
                set('B', ReusePort),
                bind_fails('B', "127.0.0.1", 7000, EADDRINUSE, REUSEPORT_SAME_UID),
            ],
        ),
        in_second_process(
            scenario(
                "reuseport-two-processes",
                NOTE_TWO_PROCESSES,
                "a port can be bound by two processes at once when both sockets set SO_REUSEPORT",
                "two processes of the same owner uid share 127.0.0.1:7000, both listening; the kernel balances connections between them",
                true,
                Loopback,
                pair_sharing(Tcp4, ReusePort, "127.0.0.1", 7000, true, None),
            ),
            &['B'],
        ),
        scenario(
            "udp-multicast-reuseaddr",
            NOTE_TWO_PROCESSES,
            "SO_REUSEADDR allows a completely duplicate bind for UDP multicast",
            "two UDP sockets with SO_REUSEADDR bind the same group and port",
            true,
            Loopback,
            pair_sharing(Udp4, ReuseAddr, "239.1.2.3", 5353, false, None),
        ),
        scenario(
            "udp-multicast-no-reuseaddr",
            NOTE_TWO_PROCESSES,
            "a duplicate multicast bind needs SO_REUSEADDR",
            "without it on both sockets the second bind fails",
            true,
            Loopback,
            vec![
                socket('A', Udp4),
                bind('A', "239.1.2.3", 5353, OK),
                socket('B', Udp4),
                set('B', ReuseAddr),
                bind_fails('B', "239.1.2.3", 5353, EADDRINUSE, REUSEADDR_BOTH_SIDES),
            ],
        ),
        scenario(
            "multicast-reuseport",
            NOTE_TWO_PROCESSES,
            "for a multicast address SO_REUSEPORT is equivalent to SO_REUSEADDR",
            "SO_REUSEPORT on both UDP sockets (same uid) also allows the duplicate bind",
            true,
            Loopback,
            pair_sharing(Udp4, ReusePort, "239.1.2.3", 5353, false, None),
        ),
        scenario(
            "udp-unicast-reuseaddr",
            NOTE_TWO_PROCESSES,
            "a completely duplicate bind with SO_REUSEADDR works only for multicast",
            "Linux allows it for any UDP address when both sockets set SO_REUSEADDR",
            false,
            Loopback,
            pair_sharing(Udp4, ReuseAddr, "127.0.0.1", 5353, false, None),
        ),
        in_second_process(
            scenario(
                "udp-reuseaddr-two-processes",
                NOTE_TWO_PROCESSES,
                "a completely duplicate bind with SO_REUSEADDR works only for multicast",
                "two processes' UDP sockets with SO_REUSEADDR share the unicast 127.0.0.1:5353",
                false,
                Loopback,
                pair_sharing(Udp4, ReuseAddr, "127.0.0.1", 5353, false, None),
            ),
            &['B'],
        ),
        scenario(
            "udp-reuseaddr-two-users",
            NOTE_TWO_PROCESSES,
            "SO_REUSEADDR allows a completely duplicate bind for UDP multicast",
            "for UDP, SO_REUSEADDR on both shares any address even between owners (root and nobody): it compares no uid, SO_REUSEPORT does",
            false,
            Loopback,
            pair_sharing(Udp4, ReuseAddr, "127.0.0.1", 5353, false, Some(NOBODY)),
        ),
        scenario(
            "tcp-duplicate-reuseaddr",
            NOTE_TWO_PROCESSES,
            "SO_REUSEADDR's completely duplicate bind is not for TCP",
            "two TCP sockets with SO_REUSEADDR can bind the same address while neither listens; the second listen() fails",
            false,
            Loopback,
            vec![
                socket('A', Tcp4),
                set('A', ReuseAddr),
                bind('A', "127.0.0.1", 8000, OK),
                socket('B', Tcp4),
                set('B', ReuseAddr),
                bind('B', "127.0.0.1", 8000, OK),
                listen('A', OK),
                listen_fails('B', EADDRINUSE, REUSEADDR_VS_LISTENER),
            ],
        ),
        scenario(
            "v6-any-then-v4-any",
            NOTE_ANY,
            "INADDR_ANY is every address, so [::] and 0.0.0.0 are separate wildcards",
            "an IPv6 wildcard socket without IPV6_V6ONLY also covers IPv4: it conflicts with 0.0.0.0",
            false,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "0.0.0.0", 9000, OK),
                listen('A', OK),
                socket('B', Tcp6),
                bind_fails('B', "::", 9000, EADDRINUSE, NO_REUSE_FLAGS),
            ],
        ),
        scenario(
            "v6-any-v6only-then-v4-any",
            NOTE_ANY,
            "INADDR_ANY is every address, so [::] and 0.0.0.0 are separate wildcards",
            "with IPV6_V6ONLY the IPv6 wildcard covers IPv6 only and shares the port with 0.0.0.0",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "0.0.0.0", 9000, OK),
                listen('A', OK),
                socket('B', Tcp6),
                set('B', V6Only),
                bind('B', "::", 9000, OK),
                listen('B', OK),
            ],
        ),
        scenario(
            "privileged-port-unprivileged",
            NOTE_ANY,
            "ports below 1024 are for root",
            "binding a port below net.ipv4.ip_unprivileged_port_start needs CAP_NET_BIND_SERVICE: EACCES",
            true,
            Loopback,
            vec![
                socket_as('A', Tcp4, NOBODY),
                bind_fails('A', "127.0.0.1", 80, EACCES, PRIVILEGED_PORT),
            ],
        ),
        scenario(
            "bind-twice",
            NOTE_REUSEADDR,
            "a socket is bound to one address",
            "a second bind() on a bound socket fails with EINVAL; the first binding stays",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "127.0.0.1", 5000, OK),
                bind_fails('A', "127.0.0.1", 5001, EINVAL, ALREADY_BOUND),
            ],
        ),
        scenario(
            "port-zero",
            NOTE_REUSEADDR,
            "a server is given a fixed port",
            "port 0 asks the kernel for a free port from ip_local_port_range at bind()",
            true,
            Loopback,
            vec![
                socket('A', Tcp4),
                bind('A', "127.0.0.1", 0, OK),
                listen('A', OK),
            ],
        ),
        scenario(
            "connect-range-exhausted",
            NOTE_REUSEADDR,
            "a client's connect() always finds a local port: it is given one implicitly",
            "connect() takes a port of ip_local_port_range not already in use toward the same \
             destination (__inet_hash_connect); with the range used up it fails with EADDRNOTAVAIL",
            false,
            TwoPortRange,
            vec![
                socket('A', Tcp4),
                bind('A', "127.0.0.1", 5000, OK),
                listen('A', OK),
                socket('B', Tcp4),
                connect('B', "127.0.0.1", 5000, OK),
                socket('C', Tcp4),
                connect('C', "127.0.0.1", 5000, OK),
                socket('D', Tcp4),
                connect_fails('D', "127.0.0.1", 5000, EADDRNOTAVAIL, PORTS_EXHAUSTED),
            ],
        ),
        scenario(
            "udp-connect-range-exhausted",
            NOTE_REUSEADDR,
            "a UDP client's connect() always finds a local port: it is given one implicitly",
            "an unbound UDP socket's connect() autobinds, a port-0 bind on ip_local_port_range \
             whatever the destination (inet_autobind, udp_lib_get_port); with every port of the \
             range taken it fails with EAGAIN",
            false,
            TwoPortRange,
            vec![
                socket('A', Udp4),
                bind('A', "0.0.0.0", 40000, OK),
                socket('B', Udp4),
                bind('B', "0.0.0.0", 40001, OK),
                socket('C', Udp4),
                connect_fails('C', "127.0.0.1", 53, EAGAIN, PORTS_EXHAUSTED),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn catalog_is_well_formed() {
        let all = all();
        let names: BTreeSet<&str> = all.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), all.len(), "scenario names are unique");
        for s in &all {
            assert!(
                [NOTE_ANY, NOTE_REUSEADDR, NOTE_TWO_PROCESSES].contains(&s.note),
                "{}: unknown note",
                s.name
            );
            assert!(
                s.steps.iter().any(|st| st.act.is_observed()),
                "{}: observes nothing",
                s.name
            );
            for (i, st) in s.steps.iter().enumerate() {
                // A call declared to fail names the rule its explanation must give; nothing
                // else declares one.
                assert_eq!(
                    st.rule.is_some(),
                    st.act.is_observed_with(st.expect) && st.expect != OK,
                    "{} step {i}: a failing bind/listen/connect declares its rule, and only it",
                    s.name
                );
            }
            for sock in s.second_process {
                assert!(
                    s.steps
                        .iter()
                        .any(|st| st.sock == *sock && matches!(st.act, Act::Socket { .. })),
                    "{}: second-process socket {sock} is never created",
                    s.name
                );
            }
            // Every socket is created before it is used.
            let mut created = BTreeSet::new();
            for st in &s.steps {
                match &st.act {
                    Act::Socket { .. } => {
                        created.insert(st.sock);
                    }
                    Act::Accept { into } => {
                        assert!(
                            created.contains(&st.sock),
                            "{}: {} used first",
                            s.name,
                            st.sock
                        );
                        created.insert(*into);
                    }
                    Act::AwaitTimeWait { .. } => {}
                    _ => assert!(
                        created.contains(&st.sock),
                        "{}: {} used first",
                        s.name,
                        st.sock
                    ),
                }
            }
        }
    }

    #[test]
    fn selection_by_name() {
        assert_eq!(super::super::select(&[]).map(|v| v.len()), Ok(all().len()));
        let one = super::super::select(&["bind-twice".to_string()]).expect("known");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "bind-twice");
        assert_eq!(
            super::super::select(&["nope".to_string()]).map(|v| v.len()),
            Err("unknown scenario nope (see `observer scenarios list`)".to_string())
        );
    }
}
