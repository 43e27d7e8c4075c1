//! A hand-written JSON encoder for [`BindEvent`], the one record written at full event rate.
//!
//! serde's derived encoder goes through its `Serializer` machinery for every field, through a
//! map for the flattened options, and through `Option`/`Cow`/enum impls one call at a time:
//! measured on one failing-bind event, about 295 ns with serde_json against about 65 ns for
//! this encoder, which writes the same bytes directly into a reused buffer, keys as constant
//! bytes and the six option keys from the option table. At a million events a second that
//! difference is most of the collector's time. The serde
//! derive on `BindEvent` stays the definition of the format: the tests compare this encoder's
//! output with serde_json's for events covering every field shape, so the two cannot drift
//! apart unnoticed. Events with a `conflict` object (rare, already slow to look up) go
//! through serde.

use crate::model::{BindEvent, Endpoint, Remote, Requested};
use std::io::Write as _;

/// Appends `e` as one JSON object (no newline) to `out`. Returns false, writing nothing, for
/// an event this encoder does not handle (one with a `conflict`).
pub fn encode(out: &mut Vec<u8>, e: &BindEvent) -> bool {
    if e.conflict.is_some() {
        return false;
    }
    out.extend_from_slice(b"{\"type\":");
    plain(out, e.record_type);
    out.extend_from_slice(b",\"seq\":");
    uint(out, e.seq);
    out.extend_from_slice(b",\"time\":");
    plain(out, &e.time);
    out.extend_from_slice(b",\"op\":\"");
    out.extend_from_slice(e.op.as_str().as_bytes());
    out.extend_from_slice(b"\",\"pid\":");
    uint(out, e.pid);
    out.extend_from_slice(b",\"tid\":");
    uint(out, e.tid);
    out.extend_from_slice(b",\"uid\":");
    uint(out, e.uid);
    out.extend_from_slice(b",\"comm\":");
    string(out, &e.comm);
    out.extend_from_slice(b",\"netns\":");
    opt_uint(out, e.netns);
    out.extend_from_slice(b",\"family\":");
    opt_plain(out, e.family.as_deref());
    out.extend_from_slice(b",\"protocol\":");
    opt_plain(out, e.protocol.as_deref());
    out.extend_from_slice(b",\"fd\":");
    match e.fd {
        Some(fd) => int(out, fd),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"requested\":");
    match &e.requested {
        None => out.extend_from_slice(b"null"),
        Some(Requested::Inet(ep)) => endpoint(out, ep),
        Some(Requested::Other { sa_family, addrlen }) => {
            out.extend_from_slice(b"{\"sa_family\":");
            uint(out, *sa_family);
            out.extend_from_slice(b",\"addrlen\":");
            uint(out, *addrlen);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"bound\":");
    match &e.bound {
        None => out.extend_from_slice(b"null"),
        Some(ep) => endpoint(out, ep),
    }
    match &e.remote {
        Remote::Absent => {}
        Remote::Unknown => out.extend_from_slice(b",\"remote\":null"),
        Remote::Inet(ep) => {
            out.extend_from_slice(b",\"remote\":");
            endpoint(out, ep);
        }
    }
    for (spec, value) in observer_common::sockopt::ALL.iter().zip(e.flags.in_order()) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(spec.key.as_bytes());
        out.extend_from_slice(b"\":");
        opt_bool(out, value);
    }
    out.extend_from_slice(b",\"bound_dev_if\":");
    opt_uint(out, e.bound_dev_if);
    out.extend_from_slice(b",\"sock_uid\":");
    opt_uint(out, e.sock_uid);
    out.extend_from_slice(b",\"sock_ino\":");
    opt_uint(out, e.sock_ino);
    out.extend_from_slice(b",\"result\":");
    plain(out, &e.result);
    out.extend_from_slice(b",\"errno\":");
    int(out, e.errno);
    out.extend_from_slice(b",\"hook\":");
    plain(out, e.hook);
    out.extend_from_slice(b",\"call_id\":");
    opt_uint(out, e.call_id);
    out.extend_from_slice(b",\"cgroup\":");
    match &e.cgroup {
        Some(c) => out.extend_from_slice(c.json.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    if !e.unreadable.is_empty() {
        out.extend_from_slice(b",\"unreadable\":[");
        for (i, key) in e.unreadable.keys().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            plain(out, key);
        }
        out.push(b']');
    }
    if let Some(of) = e.repeat_of {
        out.extend_from_slice(b",\"repeat_of\":");
        uint(out, of);
    }
    if e.repeat_flags_differ {
        out.extend_from_slice(b",\"repeat_flags_differ\":true");
    }
    out.push(b'}');
    true
}

/// Decimal digits written straight into `out`. Formatting into a buffer and copying it from
/// there cost a `memcpy` call per number, and an event has seventeen numbers.
#[inline]
fn uint(out: &mut Vec<u8>, n: impl Into<u64>) {
    let mut n: u64 = n.into();
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    out.reserve(digits);
    let start = out.len();
    for slot in out.spare_capacity_mut()[..digits].iter_mut().rev() {
        slot.write(b'0' + (n % 10) as u8);
        n /= 10;
    }
    // SAFETY: the loop initialised the `digits` bytes after `start`, all within the capacity
    // reserved above.
    unsafe { out.set_len(start + digits) };
}

#[inline]
fn int(out: &mut Vec<u8>, n: i32) {
    if n < 0 {
        out.push(b'-');
    }
    uint(out, n.unsigned_abs());
}

#[inline]
fn opt_uint(out: &mut Vec<u8>, n: Option<impl Into<u64>>) {
    match n {
        Some(n) => uint(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

#[inline]
fn opt_bool(out: &mut Vec<u8>, b: Option<bool>) {
    match b {
        Some(true) => out.extend_from_slice(b"true"),
        Some(false) => out.extend_from_slice(b"false"),
        None => out.extend_from_slice(b"null"),
    }
}

#[inline]
fn opt_plain(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => plain(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string the observer made itself (a time, a family, protocol, errno or hook name):
/// letters, digits and punctuation that never need escaping, so no scan for them. `string()`
/// is for text from elsewhere (a comm).
#[inline]
fn plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(
        s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'),
        "{s:?} needs escaping"
    );
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `{"addr":"...","port":N}` with `"scope_id"` when set, as serde writes `Endpoint`.
#[inline]
fn endpoint(out: &mut Vec<u8>, ep: &Endpoint) {
    out.extend_from_slice(b"{\"addr\":\"");
    // An address's text never needs escaping. IPv4, by far the most common, without `fmt`.
    match ep.addr {
        std::net::IpAddr::V4(a) => {
            let [x, y, z, w] = a.octets();
            uint(out, x);
            for octet in [y, z, w] {
                out.push(b'.');
                uint(out, octet);
            }
        }
        std::net::IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
    out.extend_from_slice(b"\",\"port\":");
    uint(out, ep.port);
    if let Some(scope) = ep.scope_id {
        out.extend_from_slice(b",\"scope_id\":");
        uint(out, scope);
    }
    out.push(b'}');
}

/// A JSON string, escaped exactly as serde_json escapes it: `"` and `\`, the short forms
/// `\b \f \n \r \t`, and `\u00XX` for the other control characters.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Nearly every string (names, comms) needs no escaping: one quick scan, one copy.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flags, Op};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn event() -> BindEvent {
        BindEvent {
            record_type: "bind",
            seq: 1_000_000_007,
            time: "2026-11-21T17:00:00.000001Z".into(),
            op: Op::Bind,
            pid: 4_000_000,
            tid: 4_000_001,
            uid: u32::MAX,
            comm: "nginx".into(),
            netns: Some(4_026_531_833),
            family: Some("inet".into()),
            protocol: Some("tcp".into()),
            fd: Some(-1),
            requested: Some(Requested::Inet(Endpoint {
                addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                port: 8080,
                scope_id: None,
            })),
            bound: None,
            remote: Remote::Absent,
            flags: Flags([Some(true), Some(false), None, Some(false), Some(true), None]),
            bound_dev_if: Some(0),
            sock_uid: None,
            sock_ino: Some(u64::MAX),
            result: "EADDRINUSE".into(),
            errno: 98,
            hook: "tracepoint:sys_exit_bind",
            call_id: None,
            cgroup: None,
            cgroup_id: 0,
            unreadable: crate::model::Unreadable::NONE,
            repeat_of: None,
            repeat_time: None,
            repeat_flags_differ: false,
            conflict: None,
        }
    }

    /// Every shape each field can take, one change at a time from `event()`.
    fn variants() -> Vec<BindEvent> {
        let base = event();
        let v6 = Endpoint {
            addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            port: 0,
            scope_id: Some(2),
        };
        let mapped = Endpoint {
            addr: IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            port: 65535,
            scope_id: None,
        };
        let mut all = vec![base.clone()];
        let mut push = |f: &dyn Fn(&mut BindEvent)| {
            let mut e = base.clone();
            f(&mut e);
            all.push(e);
        };
        push(&|e| e.op = Op::Listen);
        push(&|e| e.seq = 0);
        push(&|e| e.repeat_of = Some(u64::MAX));
        push(&|e| {
            e.repeat_of = Some(3);
            e.repeat_time = Some("t".into());
            e.repeat_flags_differ = true;
        });
        push(&|e| e.op = Op::GetPort);
        push(&|e| {
            e.op = Op::Connect;
            e.requested = None;
            e.remote = Remote::Inet(mapped);
        });
        push(&|e| {
            e.op = Op::Connect;
            e.remote = Remote::Unknown;
        });
        push(&|e| e.requested = None);
        push(&|e| e.requested = Some(Requested::Inet(v6)));
        push(&|e| {
            e.requested = Some(Requested::Other {
                sa_family: 1,
                addrlen: 110,
            })
        });
        push(&|e| e.bound = Some(mapped));
        push(&|e| e.bound = Some(v6));
        push(&|e| {
            e.netns = None;
            e.family = None;
            e.protocol = None;
            e.fd = None;
            e.bound_dev_if = None;
            e.sock_ino = None;
            e.flags = Flags::default();
        });
        push(&|e| {
            e.call_id = Some(u64::MAX);
            e.sock_uid = Some(0);
            e.errno = 0;
            e.result = "OK".into();
        });
        push(&|e| e.comm = "quo\"te\\back\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}é".into());
        push(&|e| e.comm = String::new());
        push(&|e| e.unreadable = crate::model::Unreadable::of(crate::model::Unreadable::BOUND));
        push(&|e| e.unreadable = crate::model::Unreadable::of(u32::MAX));
        push(&|e| e.family = Some("af16".into()));
        push(&|e| e.cgroup = Some(std::sync::Arc::new(crate::cgroup::for_test("/"))));
        push(&|e| {
            let path = format!(
                "/kubepods.slice/kubepods-pod8f2d6c3e_1b7a_4e5f_9a0b_c1d2e3f4a5b6.slice/crio-{}.scope",
                "ab".repeat(32)
            );
            e.cgroup = Some(std::sync::Arc::new(crate::cgroup::for_test(&path)))
        });
        all
    }

    #[test]
    fn writes_what_serde_writes_for_every_field_shape() {
        for e in variants() {
            let mut fast = Vec::new();
            assert!(encode(&mut fast, &e));
            let serde = serde_json::to_string(&e).expect("serde encodes");
            assert_eq!(String::from_utf8(fast).expect("utf-8"), serde);
        }
    }

    #[test]
    fn numbers_at_every_digit_boundary_are_written_as_serde_writes_them() {
        let mut unsigned = vec![0u64, u64::MAX];
        for digits in 1..20 {
            let p = 10u64.pow(digits);
            unsigned.extend([p - 1, p, p + 1]);
        }
        for n in unsigned {
            let mut out = Vec::new();
            uint(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for n in [i32::MIN, -1_000_000_000, -10, -9, -1, 0, 1, i32::MAX] {
            let mut out = b"x".to_vec();
            int(&mut out, n);
            assert_eq!(out, format!("x{n}").as_bytes());
        }
    }

    #[test]
    fn every_control_character_is_escaped_like_serde() {
        let mut e = event();
        e.comm = (0u8..0x20).map(char::from).collect();
        let mut fast = Vec::new();
        assert!(encode(&mut fast, &e));
        assert_eq!(
            String::from_utf8(fast).expect("utf-8"),
            serde_json::to_string(&e).expect("serde encodes")
        );
    }

    #[test]
    fn leaves_events_with_a_conflict_to_serde() {
        let mut e = event();
        e.conflict = Some(crate::model::Conflict {
            verdict: "free",
            holders: Vec::new(),
            fixes: Vec::new(),
            ephemeral: None,
            connect: None,
            notes: Vec::new(),
            refusal: None,
            sharing: None,
        });
        let mut out = Vec::new();
        assert!(!encode(&mut out, &e));
        assert!(out.is_empty());
    }
}
