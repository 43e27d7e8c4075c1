//! Why a `connect()` found no local port (EADDRNOTAVAIL): the `"connect"` object of a
//! conflict. Filled by `crate::conflict::connect` with the rules of the kernel's
//! `__inet_hash_connect`.

use serde::Serialize;
use std::net::IpAddr;

/// The port range toward one destination, port by port as the kernel judges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectPorts {
    /// The source address the connection would use (the socket's bound address, else the
    /// one the route to the destination gives).
    pub source: Option<IpAddr>,
    /// Where to.
    pub destination: super::Endpoint,
    /// The local port the socket held before the call, when it had one (bound by `bind()`):
    /// the kernel then only checks that the 4-tuple is unused, and the range plays no part.
    pub bound_port: Option<u16>,
    /// `net.ipv4.ip_local_port_range` (inclusive; IPv6 uses it too).
    pub range: [u16; 2],
    /// `net.ipv4.ip_local_reserved_ports`, as the sysctl prints it.
    pub reserved: String,
    /// `net.ipv4.tcp_tw_reuse` (0 off, 1 on, 2 loopback only; `null`: unreadable).
    pub tcp_tw_reuse: Option<u8>,
    /// Ports in the range.
    pub ports: u32,
    /// Ports of the range that are reserved: never chosen.
    pub reserved_in_range: u32,
    /// Ports of the range held by a socket that `bind()` or `listen()` put there (on any
    /// address): `__inet_hash_connect` skips a port whose bind bucket such a socket made.
    pub bound: u32,
    /// Ports whose connection from `source` to `destination` exists (not TIME_WAIT).
    pub in_use: u32,
    /// Ports whose connection from `source` to `destination` is in TIME_WAIT.
    pub time_wait: u32,
    /// Ports none of the above: a connect would take one.
    pub free: u32,
    /// The processes holding the most of the `in_use` connections, most first (at most 5).
    pub holders: Vec<ConnectHolder>,
}

/// A process holding connections toward the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectHolder {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// Its connections toward the destination.
    pub sockets: u32,
}

#[cfg(test)]
impl ConnectPorts {
    /// A two-port range from 127.0.0.1 toward 127.0.0.1:`port`, both ports in use by one
    /// process: the test fixture of an `exhausted` answer.
    pub fn two_ports_in_use(port: u16) -> ConnectPorts {
        let localhost = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        ConnectPorts {
            source: Some(localhost),
            destination: super::Endpoint {
                addr: localhost,
                port,
                scope_id: None,
            },
            bound_port: Some(1),
            range: [1, 2],
            reserved: String::new(),
            tcp_tw_reuse: Some(2),
            ports: 2,
            reserved_in_range: 0,
            bound: 0,
            in_use: 2,
            time_wait: 0,
            free: 0,
            holders: vec![ConnectHolder {
                pid: 1,
                comm: "c".into(),
                cmdline: "c".into(),
                sockets: 2,
            }],
        }
    }
}
