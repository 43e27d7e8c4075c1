//! Silent port sharing: a successful bind or listen that puts a socket beside sockets of
//! another process on the same address and port, and what the kernel then does with the
//! traffic. Looked up off the event path, through the same pool as conflicts.
//!
//! Which events: a TCP `listen()` with SO_REUSEPORT (a bound-only TCP socket takes no
//! connections; it joins the listeners' group when it listens), and a UDP `bind()` with
//! SO_REUSEPORT or SO_REUSEADDR (a UDP socket receives as soon as it is bound).
//!
//! What the kernel does (Linux 6.18):
//! - TCP listeners with SO_REUSEPORT on the same address and port, same owner uid, family,
//!   IPV6_V6ONLY and bound device, form one group (`inet_reuseport_add_sock`,
//!   `net/ipv4/inet_hashtables.c`); a new connection goes to the best-scoring listener
//!   (`inet_lhash2_lookup`: an exact address beats a wildcard) and, when that one is in a
//!   group, to the member a hash of the connection's addresses and ports picks
//!   (`reuseport_select_sock`, `net/core/sock_reuseport.c`), unless a BPF program attached to
//!   the group picks.
//! - UDP sockets with SO_REUSEPORT form groups the same way (`udp_reuseport_add_sock`,
//!   `net/ipv4/udp.c`): each datagram goes to the member the hash of its addresses and ports
//!   picks.
//! - UDP sockets sharing a port through SO_REUSEADDR alone are not a group: a unicast datagram
//!   goes to one socket, the best-scoring one (`udp4_lib_lookup2`, `compute_score`: an exact
//!   local address, a connected peer and a bound device score higher; a socket that last
//!   received on the CPU handling the datagram scores one more); among equals the first of the
//!   hash chain wins, and a newly bound socket goes to its head (`udp_lib_get_port`,
//!   `hlist_add_head_rcu`), so the newest takes the unicast traffic. Multicast and broadcast
//!   datagrams are delivered to every matching socket (`__udp4_lib_mcast_deliver`).

use super::owners::{self, Scope};
use super::rules::{TCP_CLOSE, TCP_LISTEN};
use super::socktable::{self, DiagSock};
use crate::model::{BindEvent, Conflict, Op, Partner, Proto, Sharing};
use crate::netns::{Netns, in_netns};
use crate::sockopt::Opt;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The verdict of a lookup that found nobody of another process to share with: nothing is
/// attached to the event.
pub const ALONE: &str = "alone";

/// Whether a successful event may have joined another process's sockets.
pub fn wants(e: &BindEvent) -> bool {
    if e.errno != 0 || !e.is_inet() {
        return false;
    }
    let reuseaddr = e.flags.get(Opt::ReuseAddr) == Some(true);
    let reuseport = e.flags.get(Opt::ReusePort) == Some(true);
    match e.protocol.as_deref() {
        Some("tcp") => e.op == Op::Listen && reuseport,
        Some("udp") => e.op == Op::Bind && (reuseport || reuseaddr),
        _ => false,
    }
}

/// The sockets of other processes `e`'s socket now shares its port with, and what the kernel
/// does with the traffic; verdict [`ALONE`] when there are none.
pub fn lookup(e: &BindEvent, netns: Result<Netns, String>) -> Conflict {
    let unavailable = |note: String| Conflict::with_note("unavailable", note);
    let (Some(bound), Some(proto)) = (e.bound.as_ref(), proto_of(e)) else {
        return unavailable("the event has no bound address to look up".into());
    };
    let netns = match netns {
        Ok(ns) => ns,
        Err(why) => return unavailable(why),
    };
    let (addr, port) = (bound.addr, bound.port);
    let read = in_netns(&netns, || {
        let table = socktable::dump(proto, Some(port))?;
        let flags = super::sockflags::read(proto).unwrap_or_default();
        Ok((table, flags, crate::netns::current_inode().unwrap_or(0)))
    });
    let (table, flags, netns_ino) = match read {
        Ok(read) => read,
        Err(err) => return unavailable(format!("reading the socket table: {err}")),
    };
    let this = |s: &DiagSock| Some(s.inode) == e.sock_ino;
    let candidates: Vec<&DiagSock> = table
        .iter()
        .filter(|s| !this(s) && s.inode != 0 && receives(proto, s) && overlaps(addr, s.addr))
        .collect();
    let inodes: BTreeSet<u64> = candidates.iter().map(|s| s.inode).collect();
    let found = owners::find(&inodes, Scope { netns_ino, port }).owners;
    let reuseport = e.flags.get(Opt::ReusePort) == Some(true);
    let mut partners = Vec::new();
    for s in candidates {
        let Some(owners) = found.get(&s.inode) else {
            continue;
        };
        // Another process's socket: one of its holders is not the caller.
        if owners.iter().all(|o| o.pid == e.pid) {
            continue;
        }
        let opts = flags.get(&s.cookie).copied().unwrap_or_default();
        partners.push(Partner {
            state: socktable::state_name(proto, s.state),
            addr: s.addr,
            port: s.port,
            reuseaddr: opts.reuseaddr,
            reuseport: opts.reuseport,
            uid: s.uid,
            inode: s.inode,
            owners: owners.clone(),
        });
    }
    if partners.is_empty() {
        return Conflict::with_note(ALONE, String::new());
    }
    let same_address = partners.iter().any(|p| p.addr == addr);
    let group = reuseport && partners.iter().all(|p| p.reuseport == Some(true));
    let (rule, effect) = effect(proto, addr, group, same_address);
    let mut c = Conflict::with_note("shared", String::new());
    c.notes.clear();
    c.sharing = Some(Sharing {
        protocol: proto,
        rule,
        effect,
        with: partners,
    });
    c
}

fn proto_of(e: &BindEvent) -> Option<Proto> {
    match e.protocol.as_deref() {
        Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        _ => None,
    }
}

/// Sockets that take traffic for the port: TCP listeners; bound UDP sockets (connected ones
/// only take their peer's datagrams, and are left out).
fn receives(proto: Proto, s: &DiagSock) -> bool {
    match proto {
        Proto::Tcp => s.state == TCP_LISTEN,
        Proto::Udp => s.state == TCP_CLOSE,
    }
}

/// Whether traffic to `a` could reach a socket bound to `b` or the other way round: the same
/// address, or a wildcard of either (IPv4 or IPv6; a mapped address counts as IPv4).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canon(a), canon(b));
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// The rule that decides where the traffic goes, and its sentence.
fn effect(proto: Proto, addr: IpAddr, group: bool, same_address: bool) -> (&'static str, String) {
    let what = match proto {
        Proto::Tcp => "new connections",
        Proto::Udp => "datagrams",
    };
    if group && same_address {
        return (
            "reuseport-group",
            format!(
                "SO_REUSEPORT on every socket: one group; {what} to {addr} are spread over its \
                 members by a hash of their addresses and ports (reuseport_select_sock), unless \
                 a BPF program attached to the group picks"
            ),
        );
    }
    if !same_address {
        return (
            "most-specific-address",
            format!(
                "the sockets are on different addresses of the port: {what} go to the socket \
                 whose address matches exactly, the wildcard one takes the rest \
                 ({})",
                match proto {
                    Proto::Tcp => "inet_lhash2_lookup",
                    Proto::Udp => "udp4_lib_lookup2 compute_score",
                }
            ),
        );
    }
    match proto {
        Proto::Udp => (
            "udp-one-receiver",
            "SO_REUSEADDR without SO_REUSEPORT on every socket: no group; each unicast datagram \
             goes to one socket only, the best-scoring one, and among equals the most recently \
             bound (udp4_lib_lookup2, udp_lib_get_port): this socket now takes them; multicast \
             and broadcast datagrams reach every socket"
                .into(),
        ),
        // A listener without SO_REUSEPORT beside this one could not exist (the listen would
        // have failed); a listener of the group with another uid neither.
        Proto::Tcp => (
            "reuseport-group",
            format!(
                "{what} to {addr} are spread over the listeners of the port by a hash of their \
                 addresses and ports (reuseport_select_sock)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_overlap_every_address_of_their_family_and_mapped_ones() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("127.0.0.1"), ip("::")));
        assert!(overlaps(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(!overlaps(ip("::1"), ip("127.0.0.1")));
    }

    #[test]
    fn the_rule_follows_the_flags_and_the_addresses() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(effect(Proto::Udp, ip, true, true).0, "reuseport-group");
        assert_eq!(effect(Proto::Udp, ip, false, true).0, "udp-one-receiver");
        assert_eq!(
            effect(Proto::Udp, ip, false, false).0,
            "most-specific-address"
        );
        assert_eq!(effect(Proto::Tcp, ip, true, true).0, "reuseport-group");
        assert_eq!(
            effect(Proto::Tcp, ip, true, false).0,
            "most-specific-address"
        );
    }
}
