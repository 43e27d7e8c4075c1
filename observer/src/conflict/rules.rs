//! Linux's bind-conflict rules, as one pure function of data: given the socket that wants a
//! port ([`Request`]) and the sockets already on that port ([`Existing`]), which of them are
//! in the way, by which address overlap and which flag rule.
//!
//! Each function below mirrors the kernel function of the same name (Linux 6.18,
//! `net/ipv4/inet_connection_sock.c`, `net/ipv4/udp.c`, `include/net/inet_hashtables.h`); they
//! take our records instead of `struct sock`. What the kernel does and this module does not:
//! the bind-bucket fast paths (`tb->fastreuse`, `sk_reuseport_match`) are left out because the
//! slow path they shortcut gives the same answer; UDP's `udp_lib_lport_inuse` stops at the first
//! overlapping socket of its hash chain, so when a socket the new one may share with
//! (SO_REUSEPORT, same uid) comes before one it may not, the kernel says yes where this module
//! says no (the chain order is not exported); UDP ports with more than ten sockets are checked
//! through the second hash in the kernel, with the same outcome since upstream e537dd15 ("udp:
//! Fix wildcard bind conflict check when using hash2", in 6.18.44; it also renamed
//! `inet_use_bhash2_on_bind` to `inet_use_hash2_on_bind`) — older kernels let a wildcard UDP
//! bind through there; and a socket that already joined a reuseport group (`sk_reuseport_cb`)
//! is assumed not to have.

pub use crate::model::{Overlap, Proto, Rule};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP states the rules look at (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_NEW_SYN_RECV: u8 = 12;
pub const TCP_BOUND_INACTIVE: u8 = 13;

/// `INADDR_LOOPBACK`-like stand-in the kernel stores as `inet_rcv_saddr` of an IPv6 socket
/// bound or connected to a non-mapped address (`LOOPBACK4_IPV6`, 127.0.0.6).
const LOOPBACK4_IPV6: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// The socket whose `bind()` or `listen()` is asked about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub proto: Proto,
    /// An IPv6 address (mapped or not) means an `AF_INET6` socket.
    pub addr: IpAddr,
    pub port: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// As set by the caller; the kernel forces it on for a specific non-mapped IPv6 address.
    pub v6only: bool,
    pub bound_dev_if: u32,
    /// Owner uid (`sk_uid`: the fsuid of the socket's creator).
    pub uid: u32,
}

/// A socket already holding a port, as read from the kernel. `None` = not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    /// TCP state number (UDP sockets report `TCP_CLOSE` or `TCP_ESTABLISHED`).
    pub state: u8,
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    pub v6only: Option<bool>,
    pub bound_dev_if: u32,
    /// `None` for TIME_WAIT sockets, which have no owner.
    pub uid: Option<u32>,
}

impl Overlap {
    pub fn sentence(self) -> &'static str {
        match self {
            Overlap::SameAddress => "both sockets are on the same address and port",
            Overlap::Wildcard => {
                "a wildcard address (0.0.0.0 or [::]) overlaps every specific address on the same port"
            }
            Overlap::DualStack => {
                "an IPv6 wildcard socket without IPV6_V6ONLY also covers IPv4 (0.0.0.0 and every IPv4 address)"
            }
        }
    }
}

impl Rule {
    /// The rule's sentence for these two sockets: it names only the flags they hold (`this`:
    /// the request's SO_REUSEADDR; `holder`: the socket in the way's, when read).
    pub fn sentence_for(self, this: bool, holder: Option<bool>) -> &'static str {
        match (self, this, holder) {
            (Rule::ReuseaddrVsListener, true, Some(true)) => {
                "SO_REUSEADDR, which both sockets have, does not let a TCP socket share a port with a listening socket"
            }
            (Rule::ReuseaddrVsListener, false, Some(true)) => {
                "the listening socket's SO_REUSEADDR does not let another TCP socket share its port (only SO_REUSEPORT on both, with the same owner uid, does)"
            }
            (Rule::ReuseaddrVsListener, true, _) => {
                "this socket's SO_REUSEADDR does not let it share a port with a listening socket (only SO_REUSEPORT on both, with the same owner uid, does)"
            }
            _ => self.sentence(),
        }
    }

    pub fn sentence(self) -> &'static str {
        match self {
            Rule::NoReuseFlags => {
                "without SO_REUSEADDR or SO_REUSEPORT on both sockets, only one socket may hold an address and port"
            }
            Rule::ReuseaddrBothSides => {
                "SO_REUSEADDR lets two sockets share a port only when both have it"
            }
            Rule::ReuseaddrVsListener => {
                "SO_REUSEADDR does not let a TCP socket share a port with a listening socket"
            }
            Rule::ReuseportBothSides => {
                "SO_REUSEPORT lets two sockets share a port only when both have it"
            }
            Rule::ReuseportSameUid => {
                "SO_REUSEPORT lets two sockets share a port only when they have the same owner uid"
            }
            Rule::TimeWaitKeepsFlags => {
                "a TIME_WAIT socket keeps the SO_REUSEADDR and SO_REUSEPORT its socket had, and this one had neither that would let the new socket in"
            }
        }
    }
}

/// One socket in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Index into the `existing` slice.
    pub index: usize,
    pub overlap: Overlap,
    pub rule: Rule,
    /// The kernel function whose check fails on this socket.
    pub check: &'static str,
    /// False when the answer depends on a flag of this socket that could not be read: it
    /// conflicts under some values of the unknown flags and not under others.
    pub certain: bool,
}

/// A socket record with every flag known: what the kernel's functions read.
#[derive(Debug, Clone, Copy)]
struct Sk {
    v6: Option<Ipv6Addr>,
    /// `inet_rcv_saddr`.
    rcv_saddr: Ipv4Addr,
    reuse: bool,
    reuseport: bool,
    ipv6only: bool,
    bound_dev_if: u32,
    state: u8,
    uid: Option<u32>,
}

impl Sk {
    fn new(addr: IpAddr, v6only: bool) -> Sk {
        let (v6, rcv_saddr, forced) = match addr {
            IpAddr::V4(a) => (None, a, false),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => (Some(a), v4, false),
                None if a.is_unspecified() => (Some(a), Ipv4Addr::UNSPECIFIED, false),
                // inet6_bind() sets sk_ipv6only itself for a specific non-mapped address.
                None => (Some(a), LOOPBACK4_IPV6, true),
            },
        };
        Sk {
            v6,
            rcv_saddr,
            reuse: false,
            reuseport: false,
            ipv6only: v6only || forced,
            bound_dev_if: 0,
            state: TCP_CLOSE,
            uid: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V6Type {
    Any,
    Mapped,
    Other,
}

fn ipv6_addr_type(a: &Ipv6Addr) -> V6Type {
    if a.is_unspecified() {
        V6Type::Any
    } else if a.to_ipv4_mapped().is_some() {
        V6Type::Mapped
    } else {
        V6Type::Other
    }
}

#[allow(clippy::too_many_arguments)]
fn ipv6_rcv_saddr_equal(
    sk1_v6: &Ipv6Addr,
    sk2_v6: Option<&Ipv6Addr>,
    sk1_rcv_saddr: Ipv4Addr,
    sk2_rcv_saddr: Ipv4Addr,
    sk1_ipv6only: bool,
    sk2_ipv6only: bool,
    match_sk1_wildcard: bool,
    match_sk2_wildcard: bool,
) -> bool {
    let t1 = ipv6_addr_type(sk1_v6);
    let t2 = sk2_v6.map_or(V6Type::Mapped, ipv6_addr_type);
    if t1 == V6Type::Mapped && t2 == V6Type::Mapped {
        if !sk2_ipv6only {
            if sk1_rcv_saddr == sk2_rcv_saddr {
                return true;
            }
            return (match_sk1_wildcard && sk1_rcv_saddr.is_unspecified())
                || (match_sk2_wildcard && sk2_rcv_saddr.is_unspecified());
        }
        return false;
    }
    if t1 == V6Type::Any && t2 == V6Type::Any {
        return true;
    }
    if t2 == V6Type::Any && match_sk2_wildcard && !(sk2_ipv6only && t1 == V6Type::Mapped) {
        return true;
    }
    if t1 == V6Type::Any && match_sk1_wildcard && !(sk1_ipv6only && t2 == V6Type::Mapped) {
        return true;
    }
    sk2_v6.is_some_and(|a| a == sk1_v6)
}

fn ipv4_rcv_saddr_equal(
    sk1: Ipv4Addr,
    sk2: Ipv4Addr,
    sk2_ipv6only: bool,
    match_sk1_wildcard: bool,
    match_sk2_wildcard: bool,
) -> bool {
    if !sk2_ipv6only {
        if sk1 == sk2 {
            return true;
        }
        return (match_sk1_wildcard && sk1.is_unspecified())
            || (match_sk2_wildcard && sk2.is_unspecified());
    }
    false
}

fn inet_rcv_saddr_equal(sk: &Sk, sk2: &Sk, match_wildcard: bool) -> bool {
    match &sk.v6 {
        Some(v6) => ipv6_rcv_saddr_equal(
            v6,
            sk2.v6.as_ref(),
            sk.rcv_saddr,
            sk2.rcv_saddr,
            sk.ipv6only,
            sk2.ipv6only,
            match_wildcard,
            match_wildcard,
        ),
        None => ipv4_rcv_saddr_equal(
            sk.rcv_saddr,
            sk2.rcv_saddr,
            sk2.ipv6only,
            match_wildcard,
            match_wildcard,
        ),
    }
}

fn is_v4_or_mapped(sk: &Sk) -> bool {
    sk.v6.is_none_or(|a| a.to_ipv4_mapped().is_some())
}

/// Specific addresses are checked through the bhash2 table (by address), wildcards through
/// every socket on the port.
fn inet_use_bhash2_on_bind(sk: &Sk) -> bool {
    if let Some(a) = &sk.v6 {
        if a.is_unspecified() {
            return false;
        }
        if a.to_ipv4_mapped().is_none() {
            return true;
        }
    }
    !sk.rcv_saddr.is_unspecified()
}

/// `inet_bind2_bucket_match_addr_any`: is `sk2`'s bhash2 bucket one of the wildcard buckets
/// that a specific-address `sk` must be checked against?
fn inet_bind2_bucket_match_addr_any(sk2: &Sk, sk: &Sk) -> bool {
    let bucket_v6 = sk2.v6.unwrap_or_else(|| sk2.rcv_saddr.to_ipv6_mapped());
    match ipv6_addr_type(&bucket_v6) {
        V6Type::Any => true,
        V6Type::Other => false,
        V6Type::Mapped => is_v4_or_mapped(sk) && sk2.rcv_saddr.is_unspecified(),
    }
}

/// `inet_bind2_bucket_addr_match`: is `sk2` in `sk`'s own bhash2 bucket (same address)?
fn inet_bind2_bucket_addr_match(sk2: &Sk, sk: &Sk) -> bool {
    let mapped = |s: &Sk| s.v6.unwrap_or_else(|| s.rcv_saddr.to_ipv6_mapped());
    mapped(sk) == mapped(sk2)
}

/// `inet_bind_conflict` with `relax` and `reuseport_ok` true (an explicit port; the autobind
/// search is the ephemeral report's business) and no reuseport group yet.
fn inet_bind_conflict(sk: &Sk, sk2: &Sk) -> bool {
    if sk.bound_dev_if != 0 && sk2.bound_dev_if != 0 && sk.bound_dev_if != sk2.bound_dev_if {
        return false;
    }
    if sk.reuse && sk2.reuse && sk2.state != TCP_LISTEN {
        return false;
    }
    !sk.reuseport || !sk2.reuseport || (sk2.state != TCP_TIME_WAIT && sk.uid != sk2.uid)
}

fn inet_bhash2_conflict(sk: &Sk, sk2: &Sk) -> bool {
    if sk2.ipv6only && is_v4_or_mapped(sk) {
        return false;
    }
    inet_bind_conflict(sk, sk2)
}

/// The TCP check of `inet_csk_get_port` for one existing socket: which kernel function says
/// it conflicts, if any.
fn tcp_conflict(sk: &Sk, sk2: &Sk) -> Option<&'static str> {
    if inet_use_bhash2_on_bind(sk) {
        if inet_bind2_bucket_match_addr_any(sk2, sk) && inet_bhash2_conflict(sk, sk2) {
            return Some("inet_bhash2_addr_any_conflict");
        }
        if inet_bind2_bucket_addr_match(sk2, sk) && inet_bhash2_conflict(sk, sk2) {
            return Some("inet_csk_bind_conflict");
        }
        return None;
    }
    (inet_bind_conflict(sk, sk2) && inet_rcv_saddr_equal(sk, sk2, true))
        .then_some("inet_csk_bind_conflict")
}

/// `udp_lib_lport_inuse` for one existing socket.
fn udp_lib_lport_inuse(sk: &Sk, sk2: &Sk) -> Option<&'static str> {
    let overlaps = (!sk2.reuse || !sk.reuse)
        && (sk2.bound_dev_if == 0 || sk.bound_dev_if == 0 || sk2.bound_dev_if == sk.bound_dev_if)
        && inet_rcv_saddr_equal(sk, sk2, true);
    let shares = sk2.reuseport && sk.reuseport && sk.uid == sk2.uid;
    (overlaps && !shares).then_some("udp_lib_lport_inuse")
}

fn request_sk(r: &Request) -> Sk {
    Sk {
        reuse: r.reuseaddr,
        reuseport: r.reuseport,
        bound_dev_if: r.bound_dev_if,
        state: TCP_CLOSE,
        uid: Some(r.uid),
        ..Sk::new(r.addr, r.v6only)
    }
}

fn existing_sk(e: &Existing, reuse: bool, reuseport: bool, v6only: bool) -> Sk {
    Sk {
        reuse,
        reuseport,
        bound_dev_if: e.bound_dev_if,
        state: e.state,
        uid: e.uid,
        ..Sk::new(e.addr, v6only)
    }
}

/// Every value an unknown flag may have.
fn values(flag: Option<bool>) -> &'static [bool] {
    match flag {
        Some(true) => &[true],
        Some(false) => &[false],
        None => &[true, false],
    }
}

/// Does `e` block `r`? Evaluated under every value of `e`'s unknown flags.
pub fn check_one(r: &Request, index: usize, e: &Existing) -> Option<Finding> {
    if e.proto != r.proto || e.port != r.port || blocks_nothing(e) {
        return None;
    }
    let sk = request_sk(r);
    let mut hits = Vec::new();
    let mut total = 0;
    for &reuse in values(e.reuseaddr) {
        for &reuseport in values(e.reuseport) {
            for &v6only in values(e.v6only) {
                total += 1;
                let sk2 = existing_sk(e, reuse, reuseport, v6only);
                let check = match r.proto {
                    Proto::Tcp => tcp_conflict(&sk, &sk2),
                    Proto::Udp => udp_lib_lport_inuse(&sk, &sk2),
                };
                if let Some(check) = check {
                    hits.push((sk2, check));
                }
            }
        }
    }
    let (sk2, check) = *hits.first()?;
    Some(Finding {
        index,
        overlap: overlap(&sk, &sk2),
        rule: rule(r.proto, &sk, &sk2),
        check,
        certain: hits.len() == total,
    })
}

/// Request sockets (SYN_RECV) are not in the bind tables: they never block a bind.
fn blocks_nothing(e: &Existing) -> bool {
    e.proto == Proto::Tcp && matches!(e.state, TCP_SYN_RECV | TCP_NEW_SYN_RECV)
}

/// Every existing socket that blocks `r`, in the order given.
pub fn check(r: &Request, existing: &[Existing]) -> Vec<Finding> {
    existing
        .iter()
        .enumerate()
        .filter_map(|(i, e)| check_one(r, i, e))
        .collect()
}

/// Whether [`check`] would find anything, stopping at the first socket in the way.
pub fn any(r: &Request, existing: &[Existing]) -> bool {
    existing
        .iter()
        .enumerate()
        .any(|(i, e)| check_one(r, i, e).is_some())
}

fn overlap(sk: &Sk, sk2: &Sk) -> Overlap {
    let key = |s: &Sk| s.v6.unwrap_or_else(|| s.rcv_saddr.to_ipv6_mapped());
    let (a, b) = (key(sk), key(sk2));
    if a == b {
        return Overlap::SameAddress;
    }
    let dual = |x: &Sk, y: &Sk| {
        x.v6.is_some_and(|v| v.is_unspecified()) && !x.ipv6only && is_v4_or_mapped(y)
    };
    if dual(sk, sk2) || dual(sk2, sk) {
        Overlap::DualStack
    } else {
        Overlap::Wildcard
    }
}

/// The flag rule that kept two overlapping sockets apart (the first that applies, most
/// specific first).
fn rule(proto: Proto, sk: &Sk, sk2: &Sk) -> Rule {
    let tw = proto == Proto::Tcp && sk2.state == TCP_TIME_WAIT;
    if sk.reuseport && sk2.reuseport && !tw && sk.uid != sk2.uid {
        return Rule::ReuseportSameUid;
    }
    // Against a listener SO_REUSEADDR can never help: say so whenever either side has it.
    if proto == Proto::Tcp && (sk.reuse || sk2.reuse) && sk2.state == TCP_LISTEN {
        return Rule::ReuseaddrVsListener;
    }
    if tw && (sk.reuse || sk.reuseport) {
        return Rule::TimeWaitKeepsFlags;
    }
    if sk.reuse != sk2.reuse {
        return Rule::ReuseaddrBothSides;
    }
    if sk.reuseport != sk2.reuseport {
        return Rule::ReuseportBothSides;
    }
    Rule::NoReuseFlags
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
