//! The rules explained from the event alone: one event per rule, the exact refusal.

use super::*;
use crate::model::{Endpoint, Unreadable};
use std::borrow::Cow;
use std::net::IpAddr;

fn event(op: Op, family: &'static str, protocol: &'static str, errno: i32) -> BindEvent {
    let mut e = BindEvent::blank();
    e.op = op;
    e.family = Some(Cow::Borrowed(family));
    e.protocol = Some(Cow::Borrowed(protocol));
    e.errno = errno;
    e.result = crate::errno::name(errno);
    e
}

fn at(addr: &str, port: u16, scope_id: Option<u32>) -> Option<Requested> {
    Some(Requested::Inet(Endpoint {
        addr: addr.parse::<IpAddr>().unwrap(),
        port,
        scope_id,
    }))
}

fn now(e: &BindEvent) -> Refusal {
    match plan(e) {
        Plan::Now(c) => {
            assert_eq!(c.verdict, "refused", "{c:?}");
            c.refusal.unwrap()
        }
        Plan::Lookup => panic!("{e:?} asks for a lookup"),
    }
}

#[test]
fn a_second_bind_names_what_the_socket_holds() {
    let mut e = event(Op::Bind, "inet", "tcp", libc::EINVAL);
    e.requested = at("127.0.0.1", 5001, None);
    e.bound = Some(Endpoint {
        addr: "127.0.0.1".parse().unwrap(),
        port: 5000,
        scope_id: None,
    });
    let r = now(&e);
    assert_eq!((r.errno.as_ref(), r.rule), ("EINVAL", "already-bound"));
    assert!(
        r.text
            .starts_with("the socket is already bound, to 127.0.0.1:5000:"),
        "{r:?}"
    );
    assert_eq!(r.fixes, ["bind a new socket to 127.0.0.1:5001"]);
}

#[test]
fn a_bound_address_without_a_port_is_no_second_bind() {
    // IP_BIND_ADDRESS_NO_PORT: the address is held, the port not; __inet_bind lets the socket
    // bind again (inet_num is 0), so an EINVAL there is not the double-bind rule.
    let mut e = event(Op::Bind, "inet6", "tcp", libc::EINVAL);
    e.requested = at("::ffff:127.0.0.1", 5000, None);
    e.bound = Some(Endpoint {
        addr: "::1".parse().unwrap(),
        port: 0,
        scope_id: None,
    });
    e.flags.set(Opt::V6Only, Some(true));
    assert_eq!(now(&e).rule, "mapped-on-v6only");
}

#[test]
fn v6_address_rules() {
    let mut e = event(Op::Bind, "inet6", "tcp", libc::EINVAL);
    e.requested = at("fe80::1", 5000, None);
    let r = now(&e);
    assert_eq!(r.rule, "link-local-needs-scope");
    e.bound_dev_if = Some(1);
    assert_eq!(now(&e).rule, "address-check");
    e.bound_dev_if = Some(0);
    e.requested = at("ff02::1", 5000, None);
    assert_eq!(now(&e).rule, "multicast-on-tcp");
}

#[test]
fn address_lengths() {
    let mut e = event(Op::Bind, "inet", "tcp", libc::EINVAL);
    let r = now(&e);
    assert_eq!(r.rule, "address-length");
    assert_eq!(r.fixes, ["pass the length of the family's sockaddr (16)"]);
    e.requested = Some(Requested::Other {
        sa_family: 2,
        addrlen: 8,
    });
    let r = now(&e);
    assert_eq!(r.rule, "address-length");
    assert!(
        r.text
            .starts_with("address length 8 is shorter than the family's sockaddr (16 bytes)"),
        "{r:?}"
    );
    let mut e6 = event(Op::Bind, "inet6", "udp", libc::EINVAL);
    e6.requested = Some(Requested::Other {
        sa_family: 10,
        addrlen: 16,
    });
    assert!(now(&e6).text.contains("(24 bytes): inet6_bind"));
    // Unread is not refused.
    e.requested = None;
    e.unreadable = Unreadable::of(Unreadable::REQUESTED);
    match plan(&e) {
        Plan::Now(c) => {
            assert_eq!(c.verdict, "unavailable");
            assert_eq!(c.refusal.unwrap().rule, "not-explained");
        }
        Plan::Lookup => panic!(),
    }
}

#[test]
fn family_mismatch() {
    let mut e = event(Op::Bind, "inet", "tcp", libc::EAFNOSUPPORT);
    e.requested = at("::1", 80, None);
    let r = now(&e);
    assert_eq!(
        (r.errno.as_ref(), r.rule),
        ("EAFNOSUPPORT", "family-mismatch")
    );
    assert_eq!(
        r.text,
        "the address is AF_INET6, the socket is AF_INET: __inet_bind takes only its own family \
         (and AF_UNSPEC with INADDR_ANY)"
    );
}

#[test]
fn listen_rules() {
    let r = now(&event(Op::Listen, "inet", "udp", libc::EOPNOTSUPP));
    assert_eq!(r.rule, "listen-not-stream");
    assert!(r.text.contains("a udp socket's listen is sock_no_listen"));
    assert_eq!(
        now(&event(Op::Listen, "inet6", "tcp", libc::EINVAL)).rule,
        "listen-state"
    );
    let r = now(&event(Op::Listen, "inet", "tcp", libc::ENOMEM));
    assert_eq!(r.rule, "errno");
    assert!(r.text.contains("security_socket_listen"), "{r:?}");
}

#[test]
fn prefix_errnos_need_no_family() {
    let mut e = event(Op::Bind, "inet", "tcp", libc::EBADF);
    e.family = None;
    e.protocol = None;
    let r = now(&e);
    assert_eq!((r.errno.as_ref(), r.rule), ("EBADF", "errno"));
    assert!(r.text.contains("__sys_bind"));
    e.errno = libc::ENOTSOCK;
    assert!(now(&e).text.starts_with("the descriptor is not a socket"));
    e.errno = libc::EFAULT;
    assert!(now(&e).text.contains("move_addr_to_kernel"));
}

#[test]
fn other_families_say_why_they_are_not_explained() {
    let e = event(Op::Bind, "af1", "?", libc::EADDRINUSE);
    match plan(&e) {
        Plan::Now(c) => {
            assert_eq!(c.verdict, "unavailable");
            assert!(
                c.refusal
                    .unwrap()
                    .text
                    .starts_with("the rules of af1 sockets")
            );
        }
        Plan::Lookup => panic!(),
    }
}

#[test]
fn namespace_rules_are_looked_up() {
    for errno in [libc::EADDRNOTAVAIL, libc::EACCES, libc::ENODEV, libc::EPERM] {
        let mut e = event(Op::Bind, "inet", "tcp", errno);
        e.requested = at("192.0.2.1", 80, None);
        assert!(wants(&e));
        assert_eq!(plan(&e), Plan::Lookup, "{errno}");
    }
    // EADDRINUSE of TCP is the conflict lookup's.
    let mut e = event(Op::Bind, "inet", "tcp", libc::EADDRINUSE);
    e.requested = at("127.0.0.1", 80, None);
    assert!(!wants(&e));
    e.errno = 0;
    assert!(!wants(&e));
}
