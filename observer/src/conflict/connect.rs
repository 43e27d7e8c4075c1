//! "Cannot assign requested address" at `connect()`, explained: the namespace's port range
//! toward the destination, port by port as the kernel judges it, who holds the ports, and
//! what would give the connect a port.
//!
//! The kernel's rules (`net/ipv4/inet_hashtables.c`, `__inet_hash_connect`, 6.1 and 6.12
//! alike): a socket that already holds a port (`bind()` before `connect()`) only has its
//! 4-tuple checked (`check_established`), and the range plays no part. Otherwise the kernel
//! walks `net.ipv4.ip_local_port_range` (ports of `low`'s parity first, then the others) and
//! for each port
//!
//! 1. skips it when `net.ipv4.ip_local_reserved_ports` lists it;
//! 2. skips it when its bind bucket was made or touched by `bind()`/`listen()`
//!    (`fastreuse >= 0 || fastreuseport >= 0`), whatever the address: a listener or a bound
//!    socket on any address takes the port from every connect;
//! 3. takes it when no socket holds it, or when the 4-tuple (source, port, destination,
//!    destination port) is unused (`__inet_check_established`), a TIME_WAIT on the same
//!    4-tuple being reused only under `net.ipv4.tcp_tw_reuse` (`tcp_twsk_unique`: 1, or 2
//!    for loopback, and with TCP timestamps, once the TIME_WAIT is a second old);
//!
//! and returns EADDRNOTAVAIL when no port was taken. So one port serves many destinations,
//! and what runs out is the range toward one destination from one source address.
//!
//! What this reads after the fact, inside the socket's namespace: the sysctls, and from
//! sock_diag the sockets connected to the destination port and those with no remote end
//! (listening, bound). sock_diag does not say which bind bucket a connected socket made, so
//! a port held only by a connected socket that was bound with `bind()` first counts as in use
//! toward its destination, not as bound; bound-only TCP sockets are listed from 6.8
//! (`TCP_BOUND_INACTIVE`), not on 6.1.

use super::Error;
use super::owners;
use super::rules::{TCP_BOUND_INACTIVE, TCP_CLOSE, TCP_LISTEN, TCP_TIME_WAIT};
use super::socktable::{self, DiagSock};
use crate::model::{Conflict, ConnectHolder, ConnectPorts, Endpoint, Proto};
use crate::netns::{Netns, in_netns};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// Holders listed at most.
const HOLDERS_SHOWN: usize = 5;

/// What to explain: a connect to `dst`.
#[derive(Debug, Clone)]
pub struct Ask {
    pub dst: SocketAddr,
    /// The socket's own address, when it had one (bound before, or `--from`).
    pub source: Option<IpAddr>,
    /// The socket's own port, when it held one before the call.
    pub bound_port: Option<u16>,
    /// The failing socket itself: left out of the table.
    pub exclude_inode: Option<u64>,
}

/// How the ports of a range stand toward one destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ports: u32,
    pub reserved: u32,
    pub bound: u32,
    pub in_use: u32,
    pub time_wait: u32,
    pub free: u32,
}

/// What stands on one port, as `__inet_hash_connect` sees it.
#[derive(Debug, Clone, Copy, Default)]
struct PortUse {
    /// A socket that `bind()`/`listen()` put there (no remote end).
    bound: bool,
    /// A live connection from the source to the destination.
    connected: bool,
    /// A TIME_WAIT from the source to the destination.
    time_wait: bool,
}

fn same_addr(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Whether a socket of `table` speaks for the connection from `source` (`None`: any address)
/// to `dst`.
fn toward(s: &DiagSock, source: Option<IpAddr>, dst: SocketAddr) -> bool {
    s.dport == dst.port()
        && same_addr(s.dst, dst.ip())
        && source.is_none_or(|src| same_addr(s.addr, src))
}

fn uses(table: &[DiagSock], source: Option<IpAddr>, dst: SocketAddr) -> HashMap<u16, PortUse> {
    let mut by_port: HashMap<u16, PortUse> = HashMap::new();
    for s in table.iter().filter(|s| s.proto == Proto::Tcp) {
        let unconnected = s.dport == 0;
        if unconnected && matches!(s.state, TCP_LISTEN | TCP_CLOSE | TCP_BOUND_INACTIVE) {
            by_port.entry(s.port).or_default().bound = true;
        } else if toward(s, source, dst) {
            let u = by_port.entry(s.port).or_default();
            if s.state == TCP_TIME_WAIT {
                u.time_wait = true;
            } else {
                u.connected = true;
            }
        }
    }
    by_port
}

/// Judges every port of `range` for a connect from `source` to `dst`, in the kernel's order
/// of checks: reserved, then bound by `bind()`/`listen()`, then the 4-tuple.
pub fn count(
    range: [u16; 2],
    reserved: &BTreeSet<u16>,
    source: Option<IpAddr>,
    dst: SocketAddr,
    table: &[DiagSock],
) -> Counts {
    let by_port = uses(table, source, dst);
    let [lo, hi] = range;
    let mut c = Counts::default();
    if lo > hi {
        return c;
    }
    for port in lo..=hi {
        c.ports += 1;
        let u = by_port.get(&port).copied().unwrap_or_default();
        if reserved.contains(&port) {
            c.reserved += 1;
        } else if u.bound {
            c.bound += 1;
        } else if u.connected {
            c.in_use += 1;
        } else if u.time_wait {
            c.time_wait += 1;
        } else {
            c.free += 1;
        }
    }
    c
}

/// Whether the kernel would recycle a TIME_WAIT toward `dst` from `source` under
/// `tcp_tw_reuse` = `reuse` (`tcp_twsk_unique`: 1 always, 2 for loopback only).
pub fn tw_reuse_applies(reuse: Option<u8>, source: Option<IpAddr>, dst: IpAddr) -> bool {
    let loopback =
        dst.to_canonical().is_loopback() && source.is_none_or(|s| s.to_canonical().is_loopback());
    match reuse {
        Some(1) => true,
        Some(2) => loopback,
        _ => false,
    }
}

/// `addr:port` as the reports write it.
fn at(dst: SocketAddr) -> String {
    super::report::addr_port(dst.ip(), dst.port())
}

/// What would give the connect a port, each checked against the same table with the same
/// rules ([`count`]). `others` are local addresses the socket could be bound to instead.
pub fn fixes(p: &ConnectPorts, table: &[DiagSock], others: &[IpAddr]) -> Vec<String> {
    let dst = SocketAddr::new(p.destination.addr, p.destination.port);
    let reserved = super::ephemeral::parse_ports(&p.reserved);
    let mut out = Vec::new();
    if let Some(port) = p.bound_port {
        out.push(format!(
            "do not bind() the socket to port {port} before connect(): the kernel then only \
             checks that this 4-tuple is unused, and it is not; bind to the address with \
             port 0 and IP_BIND_ADDRESS_NO_PORT instead, so connect() picks the port"
        ));
        return out;
    }
    if p.free > 0 {
        return out;
    }
    for wider in super::ephemeral::wider(p.range) {
        let c = count(wider, &reserved, p.source, dst, table);
        if c.free > 0 {
            out.push(format!(
                "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"{} {}\" \
                 ({} ports of it free toward {})",
                wider[0],
                wider[1],
                c.free,
                at(dst)
            ));
            break;
        }
    }
    if p.time_wait > 0 && !tw_reuse_applies(p.tcp_tw_reuse, p.source, dst.ip()) {
        out.push(format!(
            "sysctl -w net.ipv4.tcp_tw_reuse=1: {} port(s) are held by TIME_WAIT connections \
             to {}, which the kernel then reuses for a new connection (when TCP timestamps \
             are on, the default, and the TIME_WAIT is over a second old)",
            p.time_wait,
            at(dst)
        ));
    }
    let family = |a: &IpAddr| a.to_canonical().is_ipv4() == dst.ip().to_canonical().is_ipv4();
    let mut candidates: Vec<IpAddr> = others
        .iter()
        .copied()
        .filter(|a| family(a) && !a.is_unspecified())
        .filter(|a| p.source.is_none_or(|s| !same_addr(*a, s)))
        .collect();
    // All of 127.0.0.0/8 is local on the loopback device.
    if let (Some(IpAddr::V4(s)), IpAddr::V4(d)) = (p.source, dst.ip().to_canonical())
        && s.is_loopback()
        && d.is_loopback()
    {
        let next = Ipv4Addr::from(u32::from(s).wrapping_add(1));
        if next.is_loopback() && !candidates.contains(&IpAddr::V4(next)) {
            candidates.push(IpAddr::V4(next));
        }
    }
    let usable: Vec<String> = candidates
        .iter()
        .filter(|a| count(p.range, &reserved, Some(**a), dst, table).free > 0)
        .take(4)
        .map(IpAddr::to_string)
        .collect();
    if !usable.is_empty() {
        out.push(format!(
            "give the connections more source addresses: bind() each socket to one of {} \
             with port 0 and IP_BIND_ADDRESS_NO_PORT set before connect(); each source \
             address has the whole range again toward {}",
            usable.join(", "),
            at(dst)
        ));
    }
    if p.in_use + p.time_wait > 0 {
        out.push(format!(
            "reuse connections to {} (keep-alive, a connection pool) instead of one per \
             request: {} are open and {} in TIME_WAIT, one port each",
            at(dst),
            p.in_use,
            p.time_wait
        ));
    }
    if p.bound > 0 {
        out.push(format!(
            "{} port(s) of the range are held by sockets of bind()/listen(), which connect() \
             never shares: move those services' ports out of the range",
            p.bound
        ));
    }
    out
}

/// What a report states besides the counts.
pub struct Facts {
    pub source: Option<IpAddr>,
    pub dst: SocketAddr,
    pub bound_port: Option<u16>,
    pub range: [u16; 2],
    pub reserved: String,
    pub tcp_tw_reuse: Option<u8>,
}

impl Facts {
    /// The report of these facts and counts (no holders yet).
    pub fn with(self, c: Counts) -> ConnectPorts {
        ConnectPorts {
            source: self.source,
            destination: Endpoint {
                addr: self.dst.ip(),
                port: self.dst.port(),
                scope_id: None,
            },
            bound_port: self.bound_port,
            range: self.range,
            reserved: self.reserved,
            tcp_tw_reuse: self.tcp_tw_reuse,
            ports: c.ports,
            reserved_in_range: c.reserved,
            bound: c.bound,
            in_use: c.in_use,
            time_wait: c.time_wait,
            free: c.free,
            holders: Vec::new(),
        }
    }
}

/// What the namespace thread reads.
struct Snapshot {
    netns_ino: u64,
    table: Vec<DiagSock>,
    range: [u16; 2],
    reserved: String,
    tw_reuse: Option<u8>,
    source: Option<IpAddr>,
    local_addrs: Vec<IpAddr>,
}

/// The source address a connection to `dst` would get: the route's, as a UDP connect
/// (which sends nothing) picks it.
fn route_source(dst: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(dst).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn snapshot(ask: &Ask, netns: &Netns) -> Result<Snapshot, Error> {
    let inner = in_netns(netns, || {
        let table = match socktable::dump_toward(Proto::Tcp, ask.dst.port()) {
            Ok(t) => t,
            Err(err) => return Ok(Err(Error::Table(err))),
        };
        let (range, reserved) = super::ephemeral::read_sysctls()?;
        let tw_reuse = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Ok(Ok(Snapshot {
            netns_ino: crate::netns::current_inode().unwrap_or(0),
            table,
            range,
            reserved,
            tw_reuse,
            source: ask.source.or_else(|| route_source(ask.dst)),
            local_addrs: socktable::local_addrs(),
        }))
    });
    inner.map_err(|err| Error::Netns {
        path: netns.to_string(),
        err,
    })?
}

/// The owners of `sockets` (inode → owners), through the kernel walk of their ports when
/// they are on few ports, else through `/proc`.
fn owners_of(sockets: &[&DiagSock], netns_ino: u64) -> owners::ByInode {
    let mut by_port: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
    for s in sockets.iter().filter(|s| s.inode != 0) {
        by_port.entry(s.port).or_default().insert(s.inode);
    }
    if by_port.len() > 4 {
        let all: BTreeSet<u64> = by_port.into_values().flatten().collect();
        return owners::find_in_proc(&all);
    }
    let mut out = owners::ByInode::new();
    for (port, inodes) in by_port {
        out.extend(owners::find(&inodes, owners::Scope { netns_ino, port }).owners);
    }
    out
}

/// The processes holding the most of `sockets`.
fn holders(sockets: &[&DiagSock], netns_ino: u64) -> Vec<ConnectHolder> {
    let found = owners_of(sockets, netns_ino);
    let mut by_pid: BTreeMap<u32, ConnectHolder> = BTreeMap::new();
    for s in sockets {
        let Some(list) = found.get(&s.inode) else {
            continue;
        };
        let pids: BTreeSet<u32> = list.iter().map(|o| o.pid).collect();
        for pid in pids {
            let o = list.iter().find(|o| o.pid == pid).expect("listed");
            by_pid
                .entry(pid)
                .or_insert_with(|| ConnectHolder {
                    pid,
                    comm: o.comm.to_string(),
                    cmdline: o.cmdline.to_string(),
                    sockets: 0,
                })
                .sockets += 1;
        }
    }
    let mut out: Vec<ConnectHolder> = by_pid.into_values().collect();
    out.sort_by(|a, b| b.sockets.cmp(&a.sockets).then(a.pid.cmp(&b.pid)));
    out.truncate(HOLDERS_SHOWN);
    out
}

/// Looks at the port range toward `ask.dst` in `netns` now.
pub fn explain(ask: &Ask, netns: &Netns) -> Result<Conflict, Error> {
    let snap = snapshot(ask, netns)?;
    let table: Vec<DiagSock> = snap
        .table
        .into_iter()
        .filter(|s| s.inode == 0 || Some(s.inode) != ask.exclude_inode)
        .collect();
    let reserved = super::ephemeral::parse_ports(&snap.reserved);
    let c = count(snap.range, &reserved, snap.source, ask.dst, &table);
    let mut notes = Vec::new();
    if snap.source.is_none() {
        notes.push(format!(
            "no route to {}: connections from every source address were counted",
            ask.dst.ip()
        ));
    }
    let connected: Vec<&DiagSock> = table
        .iter()
        .filter(|s| s.state != TCP_TIME_WAIT && toward(s, snap.source, ask.dst))
        .collect();
    let taken = ask.bound_port.is_some_and(|port| {
        table
            .iter()
            .any(|s| s.port == port && toward(s, snap.source, ask.dst))
    });
    let facts = Facts {
        source: snap.source,
        dst: ask.dst,
        bound_port: ask.bound_port,
        range: snap.range,
        reserved: snap.reserved,
        tcp_tw_reuse: snap.tw_reuse,
    };
    let mut ports = facts.with(c);
    ports.holders = holders(&connected, snap.netns_ino);
    let exhausted = match ask.bound_port {
        Some(_) => taken,
        None => c.free == 0,
    };
    if !exhausted {
        notes.push(match ask.bound_port {
            Some(port) => format!(
                "the connection from port {port} to {} is not in use now",
                at(ask.dst)
            ),
            None => format!(
                "{} port(s) of the range are free toward {} now",
                c.free,
                at(ask.dst)
            ),
        });
    }
    let others: Vec<IpAddr> = snap.local_addrs;
    Ok(Conflict {
        verdict: if exhausted { "exhausted" } else { "free" },
        holders: Vec::new(),
        fixes: if exhausted {
            fixes(&ports, &table, &others)
        } else {
            Vec::new()
        },
        ephemeral: None,
        connect: Some(Box::new(ports)),
        notes,
        refusal: None,
        sharing: None,
    })
}

/// The lines of a report for a connect's port range (the body of [`super::report::lines`]).
pub fn lines(p: &ConnectPorts) -> Vec<String> {
    let dst = SocketAddr::new(p.destination.addr, p.destination.port);
    let from = p
        .source
        .map_or_else(|| "any address".into(), |s| s.to_string());
    let mut out = vec![format!(
        "local ports {}-{} from {from} toward {}: {} free, {} in use, {} TIME_WAIT, {} held by \
         bind()/listen(), {} reserved (tcp_tw_reuse {}, ip_local_reserved_ports {})",
        p.range[0],
        p.range[1],
        at(dst),
        p.free,
        p.in_use,
        p.time_wait,
        p.bound,
        p.reserved_in_range,
        p.tcp_tw_reuse
            .map_or_else(|| "unknown".into(), |v| v.to_string()),
        if p.reserved.is_empty() {
            "none"
        } else {
            &p.reserved
        }
    )];
    if let Some(port) = p.bound_port {
        out.push(format!(
            "the socket was bound to port {port} before connect()"
        ));
    }
    for h in &p.holders {
        out.push(format!(
            "  {} connection(s) held by pid {} ({}): {}",
            h.sockets, h.pid, h.comm, h.cmdline
        ));
    }
    out
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
