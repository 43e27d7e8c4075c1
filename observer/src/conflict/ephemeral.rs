//! Ephemeral-port exhaustion: when a port-0 bind, a listen autobind or a UDP socket's
//! autobind at `connect()` fails, the namespace's `ip_local_port_range`, its
//! `ip_local_reserved_ports`, how many ports of the range are taken for the requested address
//! and protocol, and the range that would have one free.

use super::rules::{Existing, Request, check};
use crate::model::Ephemeral;
use std::collections::BTreeSet;
use std::io;

/// The kernel's default `ip_local_port_range`.
pub const DEFAULT_RANGE: [u16; 2] = [32768, 60999];

/// Ranges wider than `range` to offer, narrowest first: `range` joined with the kernel's
/// default, then every port from 1024 (or `range`'s start, when lower) up.
pub fn wider(range: [u16; 2]) -> impl Iterator<Item = [u16; 2]> {
    let [lo, hi] = range;
    [
        [lo.min(DEFAULT_RANGE[0]), hi.max(DEFAULT_RANGE[1])],
        [lo.min(1024), 65535],
    ]
    .into_iter()
    .filter(move |w| w[1].saturating_sub(w[0]) > hi.saturating_sub(lo))
}

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

/// What would give `r` a port when `e` (its report against `table`) has none free: the
/// narrowest wider range ([`wider`]) in which the same rules find one.
pub fn fixes(r: &Request, e: &Ephemeral, table: &[Existing]) -> Vec<String> {
    if e.free > 0 {
        return Vec::new();
    }
    wider(e.range)
        .map(|w| (w, report(r, w, e.reserved.clone(), table)))
        .find(|(_, c)| c.free > 0)
        .map(|(w, c)| {
            format!(
                "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"{} {}\" ({} \
                 ports of it free for this socket)",
                w[0], w[1], c.free
            )
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;
    use std::net::Ipv4Addr;

    fn udp_any() -> Request {
        Request {
            proto: Proto::Udp,
            addr: Ipv4Addr::UNSPECIFIED.into(),
            port: 0,
            reuseaddr: false,
            reuseport: false,
            v6only: false,
            bound_dev_if: 0,
            uid: 0,
        }
    }

    fn bound(port: u16) -> Existing {
        Existing {
            proto: Proto::Udp,
            addr: Ipv4Addr::UNSPECIFIED.into(),
            port,
            state: crate::conflict::rules::TCP_CLOSE,
            reuseaddr: Some(false),
            reuseport: Some(false),
            v6only: None,
            bound_dev_if: 0,
            uid: Some(0),
        }
    }

    #[test]
    fn wider_ranges_are_wider_and_narrowest_first() {
        assert_eq!(
            wider([40000, 40001]).collect::<Vec<_>>(),
            [[32768, 60999], [1024, 65535]]
        );
        assert_eq!(wider([32768, 60999]).collect::<Vec<_>>(), [[1024, 65535]]);
        assert_eq!(wider([500, 65535]).count(), 0);
        assert_eq!(
            wider([50000, 65000]).collect::<Vec<_>>(),
            [[32768, 65000], [1024, 65535]]
        );
    }

    #[test]
    fn a_used_up_range_is_offered_the_narrowest_wider_one_with_a_free_port() {
        let table = [bound(40000), bound(40001)];
        let r = udp_any();
        let e = report(&r, [40000, 40001], String::new(), &table);
        assert_eq!((e.in_use, e.free), (2, 0));
        assert_eq!(
            fixes(&r, &e, &table),
            [
                "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\" \
              (28230 ports of it free for this socket)"
            ]
        );
        // Reserved ports count against the wider range too.
        let e = report(&r, [40000, 40001], "32768-60999".into(), &table);
        assert_eq!(e.free, 0);
        assert_eq!(
            fixes(&r, &e, &table),
            [
                "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\" \
              (36280 ports of it free for this socket)"
            ]
        );
    }

    #[test]
    fn a_range_with_a_free_port_needs_no_fix() {
        let r = udp_any();
        let e = report(&r, [40000, 40001], String::new(), &[bound(40000)]);
        assert_eq!(e.free, 1);
        assert!(fixes(&r, &e, &[bound(40000)]).is_empty());
    }
}
