//! Every failed `bind()` and `listen()` explained, not only EADDRINUSE: the rule of the kernel
//! that gives the errno, as a [`Refusal`] in the event's `"conflict"` (verdict `"refused"`), or
//! why no rule can be named (verdict `"unavailable"`, rule `not-explained`).
//!
//! What the event itself decides is explained at once, on the event path ([`direct`]): an
//! errno of the system call's prefix (`net/socket.c` `__sys_bind`/`__sys_listen`: EBADF,
//! ENOTSOCK, EFAULT), an address length or family the socket's family refuses
//! (`inet_bind_sk`, `inet6_bind`, `__inet_bind`, `__inet6_bind`: EINVAL, EAFNOSUPPORT), a
//! second bind (EINVAL: the event records what the socket holds), an IPv4-mapped address on an
//! IPV6_V6ONLY socket or a link-local one without a scope (EINVAL), and `listen()`'s own
//! refusals (`inet_listen`: EINVAL; `sock_no_listen`: EOPNOTSUPP). What needs the namespace or
//! the host (EADDRNOTAVAIL, EACCES, ENODEV: [`super::refusal::explain`]; EPERM:
//! [`super::cgroupbpf`]) goes to the lookup workers like an EADDRINUSE ([`lookup`]).

use super::refusal::{self, Ask, Caller};
use crate::model::NOT_EXPLAINED;
use crate::model::{BindEvent, Conflict, Op, Proto, Refusal, Requested};
use crate::netns::Netns;
use crate::sockopt::Opt;

/// What a failed event needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Explained from the event alone.
    Now(Box<Conflict>),
    /// A lookup off the event path ([`lookup`]).
    Lookup,
}

/// Whether `e` is a failure this module explains: a failed `bind()` or `listen()` that is
/// not the conflict lookup's (an EADDRINUSE of a TCP or UDP socket: `diagnoser::wants`).
pub fn wants(e: &BindEvent) -> bool {
    e.errno != 0 && e.op != Op::GetPort && !super::diagnoser::wants(e)
}

fn refusal(errno: i32, rule: &'static str, text: String, fixes: Vec<String>) -> Refusal {
    Refusal {
        errno: crate::errno::name(errno),
        rule,
        text,
        facts: Vec::new(),
        fixes,
    }
}

fn unexplained(errno: i32, text: impl Into<String>) -> Refusal {
    refusal(errno, NOT_EXPLAINED, text.into(), Vec::new())
}

/// The smallest address length of the socket's family (`sizeof(struct sockaddr_in)`; for
/// IPv6 `SIN6_LEN_RFC2133`).
fn min_len(family: &str) -> u32 {
    if family == "inet6" { 24 } else { 16 }
}

/// The plan for a failure [`wants`] takes.
pub fn plan(e: &BindEvent) -> Plan {
    match explain_now(e) {
        Some(r) => Plan::Now(Box::new(Conflict::refused(r))),
        None => Plan::Lookup,
    }
}

/// What the event alone explains; `None` when the namespace or the host must be asked.
fn explain_now(e: &BindEvent) -> Option<Refusal> {
    let errno = e.errno;
    if e.op == Op::Connect {
        // TCP's EADDRNOTAVAIL and UDP's EAGAIN have their lookup (`super::diagnoser::wants`);
        // the rules of bind() below do not apply to the others.
        return Some(unexplained(
            errno,
            format!(
                "connect() failures other than a TCP EADDRNOTAVAIL or a UDP EAGAIN (no local \
                 port) are not explained ({})",
                crate::errno::name(errno)
            ),
        ));
    }
    let call = e.op.as_str();
    let fixes = Vec::new;
    // The system call's own prefix, before any socket family is involved.
    let prefix = match errno {
        libc::EBADF => Some(format!(
            "the descriptor is not open (net/socket.c __sys_{call}: EBADF before the socket is \
             looked at)"
        )),
        libc::ENOTSOCK => Some(format!(
            "the descriptor is not a socket (net/socket.c __sys_{call})"
        )),
        libc::EFAULT if e.op == Op::Bind => Some(
            "the address pointer is not readable memory of the caller (net/socket.c \
             move_addr_to_kernel: copy_from_user)"
                .to_string(),
        ),
        _ => None,
    };
    if let Some(text) = prefix {
        return Some(refusal(errno, "errno", text, fixes()));
    }
    let family = e.family.as_deref().unwrap_or("?");
    if !e.is_inet() {
        return Some(unexplained(
            errno,
            format!(
                "the rules of {family} sockets are not modelled here: only inet and inet6 \
                 sockets' {call}() is explained"
            ),
        ));
    }
    if e.op == Op::Listen {
        return Some(listen(e));
    }
    if errno == libc::EADDRINUSE {
        return Some(unexplained(
            errno,
            format!(
                "the conflict lookup knows TCP and UDP sockets only; this is a {} socket",
                e.protocol.as_deref().unwrap_or("?")
            ),
        ));
    }
    let min = min_len(family);
    let requested = match &e.requested {
        None if e.unreadable.keys().any(|k| k == "requested") => {
            return Some(unexplained(
                errno,
                "the requested address could not be read from the caller",
            ));
        }
        None if errno == libc::EINVAL => {
            return Some(refusal(
                errno,
                "address-length",
                format!(
                    "the address length is out of range: below 0 or over 128 (sizeof(struct \
                     sockaddr_storage): net/socket.c move_addr_to_kernel), or 0, below the \
                     {min} bytes of the family's sockaddr ({})",
                    if family == "inet6" {
                        "inet6_bind"
                    } else {
                        "inet_bind_sk"
                    }
                ),
                vec![format!("pass the length of the family's sockaddr ({min})")],
            ));
        }
        None => return Some(refusal::generic(errno, call, "security_socket_bind")),
        Some(Requested::Other { addrlen, .. }) if errno == libc::EINVAL && *addrlen < min => {
            return Some(refusal(
                errno,
                "address-length",
                format!(
                    "address length {addrlen} is shorter than the family's sockaddr ({min} \
                     bytes): {} refuses it before reading the address",
                    if family == "inet6" {
                        "inet6_bind"
                    } else {
                        "inet_bind_sk"
                    }
                ),
                vec![format!("pass the length of the family's sockaddr ({min})")],
            ));
        }
        Some(r) => r,
    };
    if errno == libc::EAFNOSUPPORT {
        let given = match requested {
            Requested::Inet(ep) if ep.addr.is_ipv6() => "AF_INET6".to_string(),
            Requested::Inet(_) => "AF_INET".to_string(),
            Requested::Other { sa_family, .. } => format!("family {sa_family}"),
        };
        let (own, func) = if family == "inet6" {
            ("AF_INET6", "__inet6_bind")
        } else {
            ("AF_INET", "__inet_bind")
        };
        return Some(refusal(
            errno,
            "family-mismatch",
            format!(
                "the address is {given}, the socket is {own}: {func} takes only its own family{}",
                if family == "inet" {
                    " (and AF_UNSPEC with INADDR_ANY)"
                } else {
                    ""
                }
            ),
            vec![format!(
                "a sockaddr of the socket's family ({own}), or a socket of the address's family"
            )],
        ));
    }
    let Requested::Inet(ep) = requested else {
        return Some(refusal::generic(errno, call, "security_socket_bind"));
    };
    match errno {
        libc::EINVAL => Some(einval(e, ep)),
        libc::EADDRNOTAVAIL | libc::EACCES | libc::ENODEV | libc::EPERM => None,
        _ => Some(refusal::generic(errno, call, "security_socket_bind")),
    }
}

/// A bind's EINVAL with an address: a second bind, or the address rules.
fn einval(e: &BindEvent, ep: &crate::model::Endpoint) -> Refusal {
    if let Some(bound) = e.bound.filter(|b| b.port != 0) {
        let held = super::report::addr_port(bound.addr, bound.port);
        return refusal(
            libc::EINVAL,
            "already-bound",
            format!(
                "the socket is already bound, to {held}: a socket is bound once (__inet_bind / \
                 __inet6_bind refuse a socket that has a port or is not closed)"
            ),
            vec![format!(
                "bind a new socket to {}",
                super::report::addr_port(ep.addr, ep.port)
            )],
        );
    }
    if e.family.as_deref() == Some("inet") || ep.addr.is_ipv4() {
        return refusal::generic(libc::EINVAL, "bind", "security_socket_bind");
    }
    refusal::invalid(&ask(e, ep))
}

/// A `listen()`'s failure (`inet_listen`, `sock_no_listen`).
fn listen(e: &BindEvent) -> Refusal {
    let proto = e.protocol.as_deref().unwrap_or("?");
    match e.errno {
        libc::EOPNOTSUPP => refusal(
            e.errno,
            "listen-not-stream",
            format!(
                "listen() is for stream sockets: a {proto} socket's listen is sock_no_listen, \
                 which returns EOPNOTSUPP"
            ),
            vec!["a SOCK_STREAM (TCP) socket".into()],
        ),
        libc::EINVAL => refusal(
            e.errno,
            "listen-state",
            "inet_listen refuses a socket that is connected or connecting (not SS_UNCONNECTED) \
             or not a stream socket, and __inet_listen_sk one whose TCP state is neither CLOSE \
             nor LISTEN (or, in inet_csk_listen_start, whose upper-layer protocol cannot be \
             cloned)"
                .into(),
            vec!["listen() on a new, unconnected TCP socket".into()],
        ),
        errno => refusal::generic(errno, "listen", "security_socket_listen"),
    }
}

/// The bind an event describes, as the refusal rules read it.
fn ask(e: &BindEvent, ep: &crate::model::Endpoint) -> Ask {
    Ask {
        proto: if e.protocol.as_deref() == Some("udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        },
        addr: ep.addr,
        port: ep.port,
        scope_id: ep.scope_id.unwrap_or(0),
        v6only: e.flags.get(Opt::V6Only).unwrap_or(false),
        freebind: e.flags.get(Opt::FreeBind).unwrap_or(false),
        transparent: e.flags.get(Opt::Transparent).unwrap_or(false),
        bound_dev_if: e.bound_dev_if.unwrap_or(0),
        caller: Caller::Task {
            pid: e.pid,
            tid: e.tid,
        },
    }
}

/// The lookup for a failure [`plan`] could not explain at once (EADDRNOTAVAIL, EACCES,
/// ENODEV: in the namespace, through `netns`; EPERM: the cgroup programs).
pub fn lookup(e: &BindEvent, netns: Result<Netns, String>) -> Conflict {
    let Some(Requested::Inet(ep)) = &e.requested else {
        return Conflict::refused(unexplained(e.errno, "the event has no address"));
    };
    if e.errno == libc::EPERM {
        let path = e.cgroup.as_ref().and_then(|c| c.path.as_deref());
        return Conflict::refused(super::cgroupbpf::explain(
            path,
            e.family.as_deref() == Some("inet6"),
        ));
    }
    let netns = match netns {
        Ok(ns) => ns,
        Err(why) => return Conflict::refused(unexplained(e.errno, why)),
    };
    let ask = ask(e, ep);
    match refusal::explain(&ask, e.errno, &netns) {
        Ok(r) => Conflict::refused(r),
        Err(err) => Conflict::refused(unexplained(
            e.errno,
            format!("entering the network namespace {netns}: {err}"),
        )),
    }
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
