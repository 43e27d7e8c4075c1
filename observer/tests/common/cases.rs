//! The case set that decides Linux's answer to a bind or listen on a taken port: TCP and UDP,
//! IPv4, IPv6 and dual-stack, listening or not, SO_REUSEADDR, SO_REUSEPORT, owner uids and
//! TIME_WAIT, each with the answer Linux 6.18 gives and the overlap and rule that explain a
//! refusal. The rule engine's unit tests check it against these answers; the root
//! integration test plays every case on real sockets and checks the kernel gives them too.
//! A test fixture: compiled into the tests only, never into the binary.

// `observer::` paths, not `crate::`: this file is also compiled into the library's own unit
// tests (`conflict::rules_tests`), where `observer` names the library itself.
use observer::conflict::rules::{Existing, Request, TCP_CLOSE, TCP_LISTEN, TCP_TIME_WAIT};
use observer::model::{Overlap, Proto, Rule};
use std::net::IpAddr;

/// The port every case uses (in its own network namespace).
pub const PORT: u16 = 7000;
/// uid of `nobody`, the "other user" of the uid cases.
pub const OTHER_UID: u32 = 65534;

/// What becomes of a socket before the request is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Bound only.
    Bound,
    /// Bound, then listening.
    Listen,
    /// A listener whose accepted connection the server side closed first, then the listener
    /// closed: what is left is the connection's TIME_WAIT socket.
    TimeWait,
}

/// A socket of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub proto: Proto,
    pub addr: &'static str,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub uid: u32,
    pub fate: Fate,
}

pub fn tcp(addr: &'static str) -> Spec {
    Spec {
        proto: Proto::Tcp,
        addr,
        reuseaddr: false,
        reuseport: false,
        v6only: false,
        uid: 0,
        fate: Fate::Bound,
    }
}

pub fn udp(addr: &'static str) -> Spec {
    Spec {
        proto: Proto::Udp,
        ..tcp(addr)
    }
}

impl Spec {
    pub fn ra(self) -> Spec {
        Spec {
            reuseaddr: true,
            ..self
        }
    }
    pub fn rp(self) -> Spec {
        Spec {
            reuseport: true,
            ..self
        }
    }
    pub fn v6only(self) -> Spec {
        Spec {
            v6only: true,
            ..self
        }
    }
    pub fn uid(self, uid: u32) -> Spec {
        Spec { uid, ..self }
    }
    pub fn listen(self) -> Spec {
        Spec {
            fate: Fate::Listen,
            ..self
        }
    }
    pub fn tw(self) -> Spec {
        Spec {
            fate: Fate::TimeWait,
            ..self
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.parse().expect("a case address")
    }

    /// The request this socket makes (its `fate` says whether it is a bind or a listen).
    pub fn request(&self) -> Request {
        Request {
            proto: self.proto,
            addr: self.ip(),
            port: PORT,
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            v6only: self.v6only,
            bound_dev_if: 0,
            uid: self.uid,
        }
    }

    /// The socket as the table shows it once its fate is played, every flag known.
    pub fn existing(&self) -> Existing {
        let state = match (self.proto, self.fate) {
            (Proto::Udp, _) | (_, Fate::Bound) => TCP_CLOSE,
            (_, Fate::Listen) => TCP_LISTEN,
            (_, Fate::TimeWait) => TCP_TIME_WAIT,
        };
        Existing {
            proto: self.proto,
            addr: self.ip(),
            port: PORT,
            state,
            reuseaddr: Some(self.reuseaddr),
            reuseport: Some(self.reuseport),
            v6only: Some(self.v6only),
            bound_dev_if: 0,
            uid: (state != TCP_TIME_WAIT).then_some(self.uid),
        }
    }
}

/// One case: `existing` sockets, then `request`; `Some((overlap, rule))` when Linux refuses
/// it with EADDRINUSE (explained by the first socket in the way), `None` when it succeeds.
/// A request whose fate is `Listen` is bound before the existing sockets listen and asks
/// about its own `listen()`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub existing: Vec<Spec>,
    pub request: Spec,
    pub refused: Option<(Overlap, Rule)>,
}

fn case(
    name: &'static str,
    existing: &[Spec],
    request: Spec,
    refused: Option<(Overlap, Rule)>,
) -> Case {
    Case {
        name,
        existing: existing.to_vec(),
        request,
        refused,
    }
}

/// Every case.
pub fn all() -> Vec<Case> {
    use Overlap::*;
    use Rule::*;
    let lo = "127.0.0.1";
    vec![
        case(
            "tcp4-same-address",
            &[tcp(lo)],
            tcp(lo),
            Some((SameAddress, NoReuseFlags)),
        ),
        case(
            "tcp4-reuseaddr-both-bound",
            &[tcp(lo).ra()],
            tcp(lo).ra(),
            None,
        ),
        case(
            "tcp4-reuseaddr-vs-listener",
            &[tcp(lo).ra().listen()],
            tcp(lo).ra(),
            Some((SameAddress, ReuseaddrVsListener)),
        ),
        case(
            "tcp4-reuseaddr-only-new",
            &[tcp(lo)],
            tcp(lo).ra(),
            Some((SameAddress, ReuseaddrBothSides)),
        ),
        case(
            "tcp4-reuseaddr-only-old",
            &[tcp(lo).ra()],
            tcp(lo),
            Some((SameAddress, ReuseaddrBothSides)),
        ),
        case(
            "tcp4-reuseport-same-uid-listener",
            &[tcp(lo).rp().listen()],
            tcp(lo).rp(),
            None,
        ),
        case(
            "tcp4-reuseport-other-uid",
            &[tcp(lo).rp().uid(OTHER_UID).listen()],
            tcp(lo).rp(),
            Some((SameAddress, ReuseportSameUid)),
        ),
        case(
            "tcp4-reuseport-only-new",
            &[tcp(lo).listen()],
            tcp(lo).rp(),
            Some((SameAddress, ReuseportBothSides)),
        ),
        case(
            "tcp4-wildcard-holds-specific",
            &[tcp("0.0.0.0").listen()],
            tcp(lo),
            Some((Wildcard, NoReuseFlags)),
        ),
        case(
            "tcp4-specific-blocks-wildcard",
            &[tcp(lo).listen()],
            tcp("0.0.0.0"),
            Some((Wildcard, NoReuseFlags)),
        ),
        case(
            "tcp4-other-address",
            &[tcp(lo).listen()],
            tcp("127.0.0.2"),
            None,
        ),
        case(
            "tcp4-reuseaddr-wildcard-bound",
            &[tcp("0.0.0.0").ra()],
            tcp(lo).ra(),
            None,
        ),
        case(
            "tcp4-reuseaddr-wildcard-listener",
            &[tcp("0.0.0.0").ra().listen()],
            tcp(lo).ra(),
            Some((Wildcard, ReuseaddrVsListener)),
        ),
        case(
            "tcp-dual-stack-holds-v4",
            &[tcp("::").listen()],
            tcp(lo),
            Some((DualStack, NoReuseFlags)),
        ),
        case(
            "tcp-v6only-wildcard-spares-v4",
            &[tcp("::").v6only().listen()],
            tcp(lo),
            None,
        ),
        case(
            "tcp-v6only-wildcard-spares-v4-wildcard",
            &[tcp("::").v6only().listen()],
            tcp("0.0.0.0"),
            None,
        ),
        case(
            "tcp-v4-wildcard-blocks-dual-stack",
            &[tcp("0.0.0.0").listen()],
            tcp("::"),
            Some((DualStack, NoReuseFlags)),
        ),
        case(
            "tcp-v4-wildcard-spares-v6only",
            &[tcp("0.0.0.0").listen()],
            tcp("::").v6only(),
            None,
        ),
        case(
            "tcp-mapped-is-v4",
            &[tcp(lo).listen()],
            tcp("::ffff:127.0.0.1"),
            Some((SameAddress, NoReuseFlags)),
        ),
        case(
            "tcp-v6-loopback-spares-v4",
            &[tcp("::1").listen()],
            tcp(lo),
            None,
        ),
        case(
            "tcp6-wildcard-blocks-v6-specific",
            &[tcp("::").v6only().listen()],
            tcp("::1"),
            Some((Wildcard, NoReuseFlags)),
        ),
        case(
            "tcp6-specific-blocks-wildcard",
            &[tcp("::1").listen()],
            tcp("::").v6only(),
            Some((Wildcard, NoReuseFlags)),
        ),
        case(
            "tcp4-time-wait-kept-reuseaddr",
            &[tcp(lo).ra().tw()],
            tcp(lo).ra(),
            None,
        ),
        case(
            "tcp4-time-wait-without-reuseaddr",
            &[tcp(lo).tw()],
            tcp(lo).ra(),
            Some((SameAddress, TimeWaitKeepsFlags)),
        ),
        case(
            "tcp4-time-wait-needs-reuseaddr-here",
            &[tcp(lo).ra().tw()],
            tcp(lo),
            Some((SameAddress, ReuseaddrBothSides)),
        ),
        case(
            "tcp4-time-wait-reuseport-any-uid",
            &[tcp(lo).rp().uid(OTHER_UID).tw()],
            tcp(lo).rp(),
            None,
        ),
        case(
            "tcp4-listen-reuseaddr-second-listener",
            &[tcp(lo).ra().listen()],
            tcp(lo).ra().listen(),
            Some((SameAddress, ReuseaddrVsListener)),
        ),
        case(
            "tcp4-listen-reuseport-second-listener",
            &[tcp(lo).rp().listen()],
            tcp(lo).rp().listen(),
            None,
        ),
        case(
            "tcp4-listen-over-bound-reuseaddr",
            &[tcp(lo).ra()],
            tcp(lo).ra().listen(),
            None,
        ),
        case("tcp-vs-udp", &[udp(lo)], tcp(lo), None),
        case(
            "udp4-same-address",
            &[udp(lo)],
            udp(lo),
            Some((SameAddress, NoReuseFlags)),
        ),
        case("udp4-reuseaddr-both", &[udp(lo).ra()], udp(lo).ra(), None),
        case(
            "udp4-reuseaddr-only-new",
            &[udp(lo)],
            udp(lo).ra(),
            Some((SameAddress, ReuseaddrBothSides)),
        ),
        case(
            "udp4-reuseport-same-uid",
            &[udp(lo).rp()],
            udp(lo).rp(),
            None,
        ),
        case(
            "udp4-reuseport-other-uid",
            &[udp(lo).rp().uid(OTHER_UID)],
            udp(lo).rp(),
            Some((SameAddress, ReuseportSameUid)),
        ),
        case(
            "udp4-wildcard-holds-specific",
            &[udp("0.0.0.0")],
            udp(lo),
            Some((Wildcard, NoReuseFlags)),
        ),
        case(
            "udp-dual-stack-holds-v4",
            &[udp("::")],
            udp(lo),
            Some((DualStack, NoReuseFlags)),
        ),
        case(
            "udp-v6only-spares-v4-wildcard",
            &[udp("::").v6only()],
            udp("0.0.0.0"),
            None,
        ),
        case(
            "udp6-loopback-vs-wildcard-v6only",
            &[udp("::1")],
            udp("::").v6only(),
            Some((Wildcard, NoReuseFlags)),
        ),
    ]
}
