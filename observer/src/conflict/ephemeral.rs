//! Ephemeral-port exhaustion: when a port-0 bind or a listen autobind fails, the namespace's
//! `ip_local_port_range`, its `ip_local_reserved_ports`, and how many ports of the range are
//! taken for the requested address and protocol.

use super::rules::{Existing, Request, check};
use crate::model::Ephemeral;
use std::collections::BTreeSet;
use std::io;

/// The two sysctls, read in the calling thread's network namespace.
pub fn read_sysctls() -> io::Result<([u16; 2], String)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut parts = range.split_whitespace().map(|s| s.parse::<u16>());
    let (Some(Ok(lo)), Some(Ok(hi))) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ip_local_port_range: {range:?}"),
        ));
    };
    let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")?;
    Ok(([lo, hi], reserved.trim().to_string()))
}

/// `"1000-1002,2000"` → every port listed.
pub fn parse_ports(list: &str) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// Counts the range for `r` (its port is ignored) against `table`.
pub fn report(r: &Request, range: [u16; 2], reserved: String, table: &[Existing]) -> Ephemeral {
    let reserved_set = parse_ports(&reserved);
    let [lo, hi] = range;
    let ports: BTreeSet<u16> = table
        .iter()
        .map(|e| e.port)
        .filter(|p| (lo..=hi).contains(p))
        .collect();
    let in_use = ports
        .iter()
        .filter(|&&port| !reserved_set.contains(&port))
        .filter(|&&port| !check(&Request { port, ..r.clone() }, table).is_empty())
        .count() as u32;
    let size = u32::from(hi.saturating_sub(lo)) + 1;
    let reserved_in_range = reserved_set.range(lo..=hi).count() as u32;
    Ephemeral {
        range,
        reserved,
        reserved_in_range,
        in_use,
        free: size.saturating_sub(reserved_in_range + in_use),
    }
}
