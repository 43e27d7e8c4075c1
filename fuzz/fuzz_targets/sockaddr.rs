//! The caller's sockaddr as the kernel program copied it (`decode::parse_sockaddr`): any
//! bytes, any copied length, any `addrlen`. Checked against a model of the rules written out
//! here (which families and lengths make an address, where each field is), and the address
//! shown in the table reads back as the same address and port.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::decode::parse_sockaddr;
use observer::model::{Endpoint, Requested};
use observer_common::SOCKADDR_LEN;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u32::from_ne_bytes(data[0..4].try_into().unwrap());
    let addrlen = u32::from_ne_bytes(data[4..8].try_into().unwrap());
    let mut raw = [0u8; SOCKADDR_LEN];
    let rest = &data[8..];
    let n = rest.len().min(SOCKADDR_LEN);
    raw[..n].copy_from_slice(&rest[..n]);

    let got = parse_sockaddr(&raw, len, addrlen);
    assert_eq!(
        got,
        model(&raw, len, addrlen),
        "len {len} addrlen {addrlen} raw {raw:?}"
    );
    if let Some(Requested::Inet(ep)) = got {
        round_trip(&ep);
    }
});

/// What `parse_sockaddr` must return, from `struct sockaddr_in` / `sockaddr_in6`.
fn model(raw: &[u8; SOCKADDR_LEN], len: u32, addrlen: u32) -> Option<Requested> {
    let copied = (len as usize).min(SOCKADDR_LEN);
    if copied < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let v4_any = copied >= 8 && raw[4..8] == [0; 4];
    let inet = |addr: IpAddr, scope_id| {
        Some(Requested::Inet(Endpoint {
            addr,
            port,
            scope_id,
        }))
    };
    match family {
        // AF_INET, or AF_UNSPEC with INADDR_ANY (which the kernel takes as AF_INET).
        2 | 0 if copied >= 8 && addrlen >= 16 && (family == 2 || v4_any) => inet(
            IpAddr::V4(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7])),
            None,
        ),
        10 if copied >= 24 && addrlen >= 24 => {
            let octets: [u8; 16] = raw[8..24].try_into().unwrap();
            let scope = (copied >= 28)
                .then(|| u32::from_ne_bytes(raw[24..28].try_into().unwrap()))
                .filter(|s| *s != 0);
            inet(IpAddr::V6(Ipv6Addr::from(octets)), scope)
        }
        _ => Some(Requested::Other {
            sa_family: family,
            addrlen,
        }),
    }
}

/// The table's `addr:port` (`[v6%scope]:port`) parses back to the same endpoint.
fn round_trip(ep: &Endpoint) {
    let text = observer::sink::endpoint(ep);
    let back: SocketAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!((back.ip(), back.port()), (ep.addr, ep.port), "{text}");
    if let SocketAddr::V6(v6) = back {
        assert_eq!(v6.scope_id(), ep.scope_id.unwrap_or(0), "{text}");
    }
}
