//! Bounded property tests of the decoder (deterministic seeds, well under a second): every
//! length of buffer and every offset in memory, every address family value in the caller's
//! sockaddr and in the socket, lengths anywhere from 0 to `u32::MAX`; never a panic, a wrong
//! length is exactly a `Length` error, and what decodes is written by the hand-written JSON
//! encoder byte for byte as serde writes it. The fuzz targets in `fuzz/` explore further.

use super::*;
use crate::jsonline;

/// Lengths around every boundary the sockaddr parser has (family, port, IPv4 address,
/// `sockaddr_in`, IPv6 address, scope id, the copy buffer) and far beyond.
/// And around the kernel's own limits: `sizeof(struct sockaddr_storage)` and the sign of an
/// `int`.
const LENGTHS: [u32; 21] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    23,
    24,
    27,
    28,
    29,
    128,
    129,
    200,
    i32::MAX as u32,
    i32::MIN as u32,
    u32::MAX - 1,
    u32::MAX,
];

#[test]
fn every_length_but_one_is_a_length_error_at_any_alignment() {
    let mut rng = XorShift(0x5eed_0001);
    let backing = rng.bytes(3 * BIND_RECORD_SIZE + 8);
    let clock = clock();
    for offset in 0..8 {
        for len in 0..=2 * BIND_RECORD_SIZE {
            let bytes = &backing[offset..offset + len];
            match decode(bytes, &clock) {
                Err(DecodeError::Length { got, expected }) => {
                    assert_ne!(len, BIND_RECORD_SIZE);
                    assert_eq!((got, expected), (len, BIND_RECORD_SIZE));
                }
                other => assert_eq!(len, BIND_RECORD_SIZE, "{other:?}"),
            }
        }
    }
}

/// What the sockaddr parser must give, as properties of the result rather than a second copy
/// of its code.
fn check_sockaddr(raw: &[u8; SOCKADDR_LEN], len: u32, addrlen: u32) {
    let copied = (len as usize).min(SOCKADDR_LEN);
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let what = format!("family {family} len {len} addrlen {addrlen}");
    // bind() refuses a length below 0 (as an int) or over sizeof(struct sockaddr_storage)
    // before it reads the address: nothing to show, whatever bytes came.
    let refused = (addrlen as i32) < 0 || addrlen > 128;
    match parse_sockaddr(raw, len, addrlen) {
        None => assert!(copied < 2 || refused, "{what}"),
        Some(_) if refused => panic!("{what}: a length the kernel refuses shows an address"),
        Some(Requested::Other {
            sa_family,
            addrlen: a,
        }) => {
            assert_eq!((sa_family, a), (family, addrlen), "{what}");
            let v4 = copied >= 8
                && addrlen >= 16
                && (family == AF_INET || (family == AF_UNSPEC && raw[4..8] == [0; 4]));
            let v6 = family == AF_INET6 && copied >= 24 && addrlen >= 24;
            assert!(copied >= 2 && !v4 && !v6, "{what}: an address was refused");
        }
        Some(Requested::Inet(ep)) => {
            assert_eq!(ep.port, port, "{what}");
            match ep.addr {
                IpAddr::V4(a) => {
                    assert!(family == AF_INET || family == AF_UNSPEC, "{what}");
                    assert!(copied >= 8 && addrlen >= 16, "{what}");
                    assert_eq!(a.octets(), raw[4..8], "{what}");
                    assert_eq!(ep.scope_id, None, "{what}");
                }
                IpAddr::V6(a) => {
                    assert!(
                        family == AF_INET6 && copied >= 24 && addrlen >= 24,
                        "{what}"
                    );
                    assert_eq!(a.octets(), raw[8..24], "{what}");
                    let scope = u32::from_ne_bytes(raw[24..28].try_into().unwrap());
                    let want = (copied >= 28 && scope != 0).then_some(scope);
                    assert_eq!(ep.scope_id, want, "{what}");
                }
            }
        }
    }
}

#[test]
fn every_sockaddr_family_at_every_boundary_length() {
    let mut rng = XorShift(0x5eed_0002);
    for family in 0..=u16::MAX {
        let mut raw: [u8; SOCKADDR_LEN] = rng.bytes(SOCKADDR_LEN).try_into().unwrap();
        raw[0..2].copy_from_slice(&family.to_ne_bytes());
        // Half the time INADDR_ANY, which decides AF_UNSPEC.
        if rng.below(2) == 0 {
            raw[4..8].fill(0);
        }
        let pick = |rng: &mut XorShift| LENGTHS[rng.below(LENGTHS.len() as u64) as usize];
        for _ in 0..3 {
            check_sockaddr(&raw, pick(&mut rng), pick(&mut rng));
        }
        check_sockaddr(&raw, rng.next() as u32, rng.next() as u32);
    }
    // The families that make addresses, at every pair of boundary lengths.
    for family in [AF_UNSPEC, AF_INET, AF_INET6] {
        for any in [false, true] {
            let mut raw: [u8; SOCKADDR_LEN] = rng.bytes(SOCKADDR_LEN).try_into().unwrap();
            raw[0..2].copy_from_slice(&family.to_ne_bytes());
            if any {
                raw[4..8].fill(0);
            }
            for len in LENGTHS {
                for addrlen in LENGTHS {
                    check_sockaddr(&raw, len, addrlen);
                }
            }
        }
    }
}

/// `r` (random bytes after the tag) with a valid op, the socket family `family`, a realistic
/// sockaddr half the time and an edge-case return a quarter of the time.
fn random_record(rng: &mut XorShift, r: &mut [u8], family: u16) {
    let op = [OP_BIND, OP_LISTEN, OP_GET_PORT][rng.below(3) as usize];
    r[offset_of!(BindRecord, op)..][..2].copy_from_slice(&op.to_ne_bytes());
    r[offset_of!(BindRecord, sock_family)..][..2].copy_from_slice(&family.to_ne_bytes());
    // The socket and its family known for seven families in eight (so every name the decoder
    // has is met), unknown for the rest.
    let at = offset_of!(BindRecord, sock_known);
    let mut sock_known = u32::from_ne_bytes(r[at..at + 4].try_into().unwrap());
    if family.is_multiple_of(8) {
        sock_known &= !known::FAMILY;
    } else {
        sock_known |= known::SOCK | known::FAMILY;
    }
    r[at..at + 4].copy_from_slice(&sock_known.to_ne_bytes());
    if rng.below(2) == 0 {
        let sa = [AF_INET, AF_INET6, AF_UNSPEC][rng.below(3) as usize];
        r[offset_of!(BindRecord, sockaddr)..][..2].copy_from_slice(&sa.to_ne_bytes());
    }
    // The returns at the edges of the errno mapping, now and then.
    if rng.below(4) == 0 {
        let ret = [i32::MIN, -98, -1, 0, 1, i32::MAX][rng.below(6) as usize];
        r[offset_of!(BindRecord, ret)..][..4].copy_from_slice(&ret.to_ne_bytes());
    }
}

/// What the decoder must make of a record's bytes, read here by field offset and spelled out
/// from SCHEMA.md and the wire format (observer-common), not through the decoder's helpers.
struct Model {
    ret: i32,
    family: Option<String>,
    errno: i32,
}

impl Model {
    fn of(bytes: &[u8]) -> Model {
        let u16_at = |at: usize| u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap());
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        let ret = u32_at(offset_of!(BindRecord, ret)) as i32;
        let known = u32_at(offset_of!(BindRecord, sock_known));
        // Bit 0: a socket was found; bit 7: its family was read.
        let family =
            (known & 0x81 == 0x81).then(|| match u16_at(offset_of!(BindRecord, sock_family)) {
                2 => "inet".to_string(),
                10 => "inet6".to_string(),
                1 => "unix".to_string(),
                16 => "netlink".to_string(),
                17 => "packet".to_string(),
                other => format!("af{other}"),
            });
        // A negative return is minus the errno (saturating at i32::MAX for i32::MIN); a port
        // allocation's positive return ("not available") is EADDRINUSE, 98.
        let get_port = u16_at(offset_of!(BindRecord, op)) == 3;
        let errno = match ret {
            r if r < 0 => i32::try_from(-i64::from(r)).unwrap_or(i32::MAX),
            r if r > 0 && get_port => 98,
            _ => 0,
        };
        Model { ret, family, errno }
    }
}

#[test]
fn every_socket_family_decodes_and_encodes_like_serde() {
    let mut rng = XorShift(0x5eed_0003);
    let clock = clock();
    let mut fast = Vec::new();
    let mut bytes = to_bytes(&record());
    let from = offset_of!(BindRecord, hook);
    for family in 0..=u16::MAX {
        // Fresh noise after the tag now and then (drawing it is most of the cost).
        if family % 64 == 0 {
            bytes[from..].copy_from_slice(&rng.bytes(BIND_RECORD_SIZE - from));
        }
        random_record(&mut rng, &mut bytes, family);
        let event = decode(&bytes, &clock).expect("valid tag and op");
        let model = Model::of(&bytes);
        assert_eq!(event.family.as_deref(), model.family.as_deref(), "{family}");
        assert_eq!(event.errno, model.errno, "ret {}", model.ret);
        assert_eq!(event.result == "OK", model.errno == 0, "ret {}", model.ret);
        // Every tenth: the fast encoder against serde (the slow half of this test).
        if family % 10 == 0 {
            fast.clear();
            assert!(jsonline::encode(&mut fast, &event));
            let serde = serde_json::to_string(&event).expect("serde encodes");
            assert_eq!(std::str::from_utf8(&fast).expect("UTF-8"), serde);
        }
    }
}
