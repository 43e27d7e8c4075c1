use super::*;
use crate::sockopt::Opt;
use observer_common::{BIND_RECORD_SIZE, COMM_LEN, HOOK_COUNT, flag};
use serde_json::json;
use std::mem::{offset_of, size_of};

/// `ts_ns` of the base record and the clock offset that turns it into [`TIME`].
const TS_NS: u64 = 1_000_123_456;
const CLOCK_OFFSET_NS: i128 = 1_795_278_230_000_000_000;
const TIME: &str = "2026-11-21T16:23:51.000123Z";
const NETNS: u32 = 4_026_531_840;

fn clock() -> Clock {
    Clock::with_offset(CLOCK_OFFSET_NS)
}

/// A `sockaddr_in` as the caller passes it: family native-endian, port big-endian.
fn sockaddr_in(family: u16, port: u16, addr: [u8; 4]) -> [u8; SOCKADDR_LEN] {
    let mut raw = [0u8; SOCKADDR_LEN];
    raw[0..2].copy_from_slice(&family.to_ne_bytes());
    raw[2..4].copy_from_slice(&port.to_be_bytes());
    raw[4..8].copy_from_slice(&addr);
    raw
}

/// A `sockaddr_in6`: family, port, flowinfo (left 0), address, scope id (native-endian).
fn sockaddr_in6(port: u16, addr: Ipv6Addr, scope_id: u32) -> [u8; SOCKADDR_LEN] {
    let mut raw = [0u8; SOCKADDR_LEN];
    raw[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
    raw[2..4].copy_from_slice(&port.to_be_bytes());
    raw[8..24].copy_from_slice(&addr.octets());
    raw[24..28].copy_from_slice(&scope_id.to_ne_bytes());
    raw
}

fn comm_bytes(name: &[u8]) -> [u8; COMM_LEN] {
    let mut raw = [0u8; COMM_LEN];
    raw[..name.len()].copy_from_slice(name);
    raw
}

fn v4_bound(addr: [u8; 4]) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&addr);
    raw
}

/// A successful `bind(3, {AF_INET, 127.0.0.1:8080}, 16)` on a TCP socket with SO_REUSEADDR,
/// on a kernel where every field is known.
fn record() -> BindRecord {
    BindRecord {
        kind: RECORD_BIND,
        op: OP_BIND,
        hook: HOOK_TP_SYS_EXIT_BIND,
        ts_ns: TS_NS,
        pid: 4242,
        tid: 4243,
        uid: 1000,
        sk_uid: 1001,
        ret: 0,
        fd: 3,
        addrlen: 16,
        netns: NETNS,
        ino: 123_456,
        flags: flag::REUSEADDR,
        flags_known: flag::ALL,
        sock_known: 0xff,
        bound_dev_if: 0,
        sock_family: AF_INET,
        protocol: 6,
        sock_type: 1,
        bound_port: 8080,
        bound_addr: v4_bound([127, 0, 0, 1]),
        sockaddr: sockaddr_in(AF_INET, 8080, [127, 0, 0, 1]),
        sockaddr_len: 16,
        comm: comm_bytes(b"nginx"),
        call_id: 0,
        snum: 0,
        _pad: 0,
        unreadable: 0,
        cgroup_id: 0,
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        port,
        scope_id: None,
    }
}

/// What [`record`] decodes to.
fn expected() -> BindEvent {
    BindEvent {
        record_type: "bind",
        seq: 0,
        time: TIME.to_string(),
        op: Op::Bind,
        pid: 4242,
        tid: 4243,
        uid: 1000,
        comm: "nginx".to_string(),
        netns: Some(NETNS),
        family: Some("inet".into()),
        protocol: Some("tcp".into()),
        fd: Some(3),
        requested: Some(Requested::Inet(v4(127, 0, 0, 1, 8080))),
        bound: Some(v4(127, 0, 0, 1, 8080)),
        remote: Remote::Absent,
        flags: Flags([
            Some(true),
            Some(false),
            Some(false),
            Some(false),
            Some(false),
            Some(false),
        ]),
        bound_dev_if: Some(0),
        sock_uid: Some(1001),
        sock_ino: Some(123_456),
        result: "OK".into(),
        errno: 0,
        hook: "tracepoint:sys_exit_bind",
        call_id: None,
        cgroup: None,
        cgroup_id: 0,
        unreadable: Unreadable::NONE,
        repeat_of: None,
        repeat_time: None,
        repeat_flags_differ: false,
        conflict: None,
    }
}

fn to_bytes(r: &BindRecord) -> Vec<u8> {
    // SAFETY: `BindRecord` is `repr(C)` plain data with no padding (checked by
    // `record_layout_has_no_padding`), so all `size_of::<BindRecord>()` bytes behind the
    // reference are initialised, and they stay borrowed only for the copy.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (r as *const BindRecord).cast::<u8>(),
            size_of::<BindRecord>(),
        )
    };
    bytes.to_vec()
}

fn decoded(r: &BindRecord) -> BindEvent {
    decode(&to_bytes(r), &clock()).expect("record decodes")
}

fn json_of(r: &BindRecord) -> serde_json::Value {
    serde_json::to_value(decoded(r)).expect("event serialises")
}

#[test]
fn record_layout_has_no_padding() {
    let fields = 4
        + 2
        + 2
        + 8
        + 4 * 8
        + 8
        + 4 * 4
        + 2 * 4
        + 16
        + SOCKADDR_LEN
        + 4
        + COMM_LEN
        + 8
        + 2
        + 2
        + 4
        + 8;
    assert_eq!(fields, BIND_RECORD_SIZE);
    assert_eq!(BIND_RECORD_SIZE, 168);
    assert_eq!(offset_of!(BindRecord, unreadable), 156);
    assert_eq!(offset_of!(BindRecord, cgroup_id), 160);
    assert_eq!(offset_of!(BindRecord, call_id), 144);
    assert_eq!(offset_of!(BindRecord, snum), 152);
    assert_eq!(offset_of!(BindRecord, ts_ns), 8);
    assert_eq!(offset_of!(BindRecord, ino), 48);
    assert_eq!(offset_of!(BindRecord, sockaddr), 96);
    assert_eq!(offset_of!(BindRecord, comm), 128);
}

#[test]
fn ipv4_tcp_bind_success_exact_json() {
    assert_eq!(
        json_of(&record()),
        json!({
            "type": "bind",
            "seq": 0,
            "time": TIME,
            "op": "bind",
            "pid": 4242,
            "tid": 4243,
            "uid": 1000,
            "comm": "nginx",
            "netns": NETNS,
            "family": "inet",
            "protocol": "tcp",
            "fd": 3,
            "requested": {"addr": "127.0.0.1", "port": 8080},
            "bound": {"addr": "127.0.0.1", "port": 8080},
            "reuseaddr": true,
            "reuseport": false,
            "v6only": false,
            "freebind": false,
            "transparent": false,
            "bind_address_no_port": false,
            "bound_dev_if": 0,
            "sock_uid": 1001,
            "sock_ino": 123_456,
            "result": "OK",
            "errno": 0,
            "hook": "tracepoint:sys_exit_bind",
            "call_id": null,
            "cgroup": null,
        })
    );
    assert_eq!(decoded(&record()), expected());
}

#[test]
fn cgroup_id_is_carried_for_the_collector() {
    let r = BindRecord {
        cgroup_id: 0x1234_5678_9abc,
        ..record()
    };
    let e = decoded(&r);
    assert_eq!(e.cgroup_id, 0x1234_5678_9abc);
    assert_eq!(e.cgroup, None, "resolved by the collector, not the decoder");
}

/// Writes the record byte by byte at the documented offsets, without going through the struct.
#[test]
fn hand_written_bytes_decode() {
    fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }
    let mut buf = vec![0u8; BIND_RECORD_SIZE];
    put(&mut buf, offset_of!(BindRecord, kind), &1u32.to_ne_bytes());
    put(&mut buf, offset_of!(BindRecord, op), &1u16.to_ne_bytes());
    put(&mut buf, offset_of!(BindRecord, hook), &1u16.to_ne_bytes());
    put(
        &mut buf,
        offset_of!(BindRecord, ts_ns),
        &TS_NS.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, pid),
        &4242u32.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, tid),
        &4243u32.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, uid),
        &1000u32.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, sk_uid),
        &1001u32.to_ne_bytes(),
    );
    put(&mut buf, offset_of!(BindRecord, ret), &0i32.to_ne_bytes());
    put(&mut buf, offset_of!(BindRecord, fd), &3i32.to_ne_bytes());
    put(
        &mut buf,
        offset_of!(BindRecord, addrlen),
        &16u32.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, netns),
        &NETNS.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, ino),
        &123_456u64.to_ne_bytes(),
    );
    put(&mut buf, offset_of!(BindRecord, flags), &1u32.to_ne_bytes());
    put(
        &mut buf,
        offset_of!(BindRecord, flags_known),
        &0x3fu32.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, sock_known),
        &0xffu32.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, sock_family),
        &2u16.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, protocol),
        &6u16.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, sock_type),
        &1u16.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, bound_port),
        &8080u16.to_ne_bytes(),
    );
    put(
        &mut buf,
        offset_of!(BindRecord, bound_addr),
        &[127, 0, 0, 1],
    );
    let sa = offset_of!(BindRecord, sockaddr);
    put(&mut buf, sa, &2u16.to_ne_bytes());
    put(&mut buf, sa + 2, &[0x1f, 0x90]); // 8080, network byte order
    put(&mut buf, sa + 4, &[127, 0, 0, 1]);
    put(
        &mut buf,
        offset_of!(BindRecord, sockaddr_len),
        &16u32.to_ne_bytes(),
    );
    put(&mut buf, offset_of!(BindRecord, comm), b"nginx");

    assert_eq!(decode(&buf, &clock()), Ok(expected()));
    assert_eq!(buf, to_bytes(&record()));
}

#[test]
fn decodes_from_unaligned_buffer() {
    let mut buf = vec![0u8; 1];
    buf.extend_from_slice(&to_bytes(&record()));
    assert_eq!(decode(&buf[1..], &clock()), Ok(expected()));
}

#[test]
fn ipv6_udp_with_scope_id() {
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let mut r = record();
    r.sock_family = AF_INET6;
    r.protocol = 17;
    r.sock_type = 2;
    r.flags = flag::V6ONLY | flag::REUSEPORT;
    r.addrlen = 28;
    r.sockaddr = sockaddr_in6(5353, ll, 2);
    r.sockaddr_len = 28;
    r.bound_port = 5353;
    r.bound_addr = ll.octets();
    r.bound_dev_if = 2;
    let v = json_of(&r);
    assert_eq!(v["family"], json!("inet6"));
    assert_eq!(v["protocol"], json!("udp"));
    assert_eq!(
        v["requested"],
        json!({"addr": "fe80::1", "port": 5353, "scope_id": 2})
    );
    assert_eq!(v["bound"], json!({"addr": "fe80::1", "port": 5353}));
    assert_eq!(v["bound_dev_if"], json!(2));
    assert_eq!(
        (&v["reuseaddr"], &v["reuseport"], &v["v6only"]),
        (&json!(false), &json!(true), &json!(true))
    );
}

#[test]
fn v4_mapped_ipv6_stays_ipv6_and_zero_scope_is_omitted() {
    let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
    let mut r = record();
    r.sock_family = AF_INET6;
    r.addrlen = 28;
    r.sockaddr = sockaddr_in6(8080, mapped, 0);
    r.sockaddr_len = 28;
    r.bound_addr = mapped.octets();
    let e = decoded(&r);
    let want = Endpoint {
        addr: IpAddr::V6(mapped),
        port: 8080,
        scope_id: None,
    };
    assert_eq!(e.requested, Some(Requested::Inet(want)));
    assert_eq!(e.bound, Some(want));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v["requested"],
        json!({"addr": "::ffff:127.0.0.1", "port": 8080})
    );
}

#[test]
fn eaddrinuse_has_no_bound_endpoint() {
    let mut r = record();
    r.ret = -98;
    r.bound_port = 0;
    r.bound_addr = [0; 16];
    let mut want = expected();
    want.result = "EADDRINUSE".into();
    want.errno = 98;
    want.bound = None;
    assert_eq!(decoded(&r), want);
    let v = json_of(&r);
    assert_eq!(
        (&v["result"], &v["errno"], &v["bound"]),
        (&json!("EADDRINUSE"), &json!(98), &json!(null))
    );
}

#[test]
fn ret_edge_values() {
    let cases = [
        (-1, "EPERM", 1),
        (-13, "EACCES", 13),
        (-200, "E200", 200),
        (i32::MIN, "E2147483647", i32::MAX),
        (7, "OK", 0),
    ];
    for (ret, result, errno) in cases {
        let mut r = record();
        r.ret = ret;
        let e = decoded(&r);
        assert_eq!((e.result.as_ref(), e.errno), (result, errno), "ret {ret}");
    }
}

#[test]
fn listen_has_no_requested_endpoint() {
    let mut r = record();
    r.op = OP_LISTEN;
    r.hook = HOOK_TP_SYS_EXIT_LISTEN;
    r.addrlen = 0;
    r.sockaddr_len = 0;
    let mut want = expected();
    want.op = Op::Listen;
    want.requested = None;
    want.hook = "tracepoint:sys_exit_listen";
    assert_eq!(decoded(&r), want);
    // Even with sockaddr bytes present, listen() never reports a requested address.
    r.sockaddr_len = 16;
    r.addrlen = 16;
    let v = json_of(&r);
    assert_eq!(v["requested"], json!(null));
    assert_eq!(v["op"], json!("listen"));
    assert_eq!(v["hook"], json!("tracepoint:sys_exit_listen"));
}

#[test]
fn unknown_flag_is_null() {
    let mut r = record();
    r.flags = flag::REUSEADDR | flag::FREEBIND;
    r.flags_known = flag::ALL & !flag::FREEBIND;
    let mut want = expected();
    want.flags.set(crate::sockopt::Opt::FreeBind, None);
    assert_eq!(decoded(&r), want);
    assert_eq!(json_of(&r)["freebind"], json!(null));

    r.flags_known = 0;
    assert_eq!(decoded(&r).flags, Flags::default());
}

#[test]
fn unknown_socket_nulls_every_socket_field() {
    let mut r = record();
    r.sock_known = 0xff & !known::SOCK;
    let mut want = expected();
    want.netns = None;
    want.family = None;
    want.protocol = None;
    want.bound = None;
    want.flags = Flags::default();
    want.bound_dev_if = None;
    want.sock_uid = None;
    want.sock_ino = None;
    assert_eq!(decoded(&r), want);
    let v = json_of(&r);
    for key in [
        "netns",
        "family",
        "protocol",
        "bound",
        "reuseaddr",
        "reuseport",
        "v6only",
        "freebind",
        "transparent",
        "bind_address_no_port",
        "bound_dev_if",
        "sock_uid",
        "sock_ino",
    ] {
        assert_eq!(v[key], json!(null), "{key}");
    }
    assert_eq!(v["requested"], json!({"addr": "127.0.0.1", "port": 8080}));
}

#[test]
fn each_known_bit_controls_only_its_fields() {
    type Clear = fn(&mut BindEvent);
    let cases: [(u32, Clear); 7] = [
        (known::BOUND, |e| e.bound = None),
        (known::PROTOCOL, |e| e.protocol = None),
        (known::SK_UID, |e| e.sock_uid = None),
        (known::NETNS, |e| e.netns = None),
        (known::INODE, |e| e.sock_ino = None),
        (known::DEV_IF, |e| e.bound_dev_if = None),
        // Without the family the bound address cannot be told IPv4 from IPv6, nor the
        // protocol number taken for an IP protocol, nor the `inet_sock` options read as
        // such: all go.
        (known::FAMILY, |e| {
            e.family = None;
            e.bound = None;
            e.protocol = None;
            for opt in [Opt::FreeBind, Opt::Transparent, Opt::BindAddressNoPort] {
                e.flags.set(opt, None);
            }
        }),
    ];
    for (bit, clear) in cases {
        let mut r = record();
        r.sock_known = 0xff & !bit;
        let mut want = expected();
        clear(&mut want);
        assert_eq!(decoded(&r), want, "known bit {bit:#x}");
    }
}

fn requested_of(
    sockaddr: [u8; SOCKADDR_LEN],
    sockaddr_len: u32,
    addrlen: u32,
) -> Option<Requested> {
    let mut r = record();
    r.sockaddr = sockaddr;
    r.sockaddr_len = sockaddr_len;
    r.addrlen = addrlen;
    decoded(&r).requested
}

#[test]
fn af_unspec_inaddr_any_is_shown_as_inet() {
    let sa = sockaddr_in(AF_UNSPEC, 9000, [0, 0, 0, 0]);
    assert_eq!(
        requested_of(sa, 16, 16),
        Some(Requested::Inet(v4(0, 0, 0, 0, 9000)))
    );
}

#[test]
fn non_inet_and_short_sockaddrs_are_other() {
    let mut unix = [0u8; SOCKADDR_LEN];
    unix[0..2].copy_from_slice(&1u16.to_ne_bytes());
    unix[2..].fill(b'/');
    assert_eq!(
        requested_of(unix, 28, 110),
        Some(Requested::Other {
            sa_family: 1,
            addrlen: 110
        })
    );
    let inet = sockaddr_in(AF_INET, 80, [10, 0, 0, 1]);
    assert_eq!(
        requested_of(inet, 8, 8),
        Some(Requested::Other {
            sa_family: 2,
            addrlen: 8
        })
    );
    // Only 4 bytes copied: family and port, no address.
    assert_eq!(
        requested_of(inet, 4, 16),
        Some(Requested::Other {
            sa_family: 2,
            addrlen: 16
        })
    );
    let inet6 = sockaddr_in6(80, Ipv6Addr::LOCALHOST, 0);
    assert_eq!(
        requested_of(inet6, 16, 16),
        Some(Requested::Other {
            sa_family: 10,
            addrlen: 16
        })
    );
    let mut r = record();
    r.sockaddr = unix;
    r.sockaddr_len = 28;
    r.addrlen = 110;
    assert_eq!(
        json_of(&r)["requested"],
        json!({"sa_family": 1, "addrlen": 110})
    );
}

#[test]
fn failed_or_truncated_copy_gives_no_requested() {
    let sa = sockaddr_in(AF_INET, 8080, [127, 0, 0, 1]);
    assert_eq!(requested_of(sa, 0, 16), None);
    assert_eq!(requested_of(sa, 1, 16), None);
    assert_eq!(
        json_of(&BindRecord {
            sockaddr_len: 0,
            ..record()
        })["requested"],
        json!(null)
    );
}

#[test]
fn oversized_sockaddr_len_is_clamped() {
    let sa = sockaddr_in6(443, Ipv6Addr::LOCALHOST, 5);
    let want = Some(Requested::Inet(Endpoint {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        port: 443,
        scope_id: Some(5),
    }));
    for len in [28, 29, 1000, u32::MAX] {
        assert_eq!(requested_of(sa, len, 28), want, "sockaddr_len {len}");
        // The longest address length bind() takes (sizeof(struct sockaddr_storage)).
        assert_eq!(parse_sockaddr(&sa, len, 128), want);
    }
    // 24 bytes is a valid (RFC 2133) sockaddr_in6 without a scope id.
    let no_scope = Some(Requested::Inet(Endpoint {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        port: 443,
        scope_id: None,
    }));
    assert_eq!(parse_sockaddr(&sa, 24, 24), no_scope);
}

#[test]
fn length_errors_are_exact() {
    let bytes = to_bytes(&record());
    let n = BIND_RECORD_SIZE;
    for got in [0, 1, n - 1, n + 1, 2 * n] {
        let mut buf = bytes.clone();
        buf.resize(got, 0);
        assert_eq!(
            decode(&buf, &clock()),
            Err(DecodeError::Length { got, expected: n })
        );
    }
    assert_eq!(
        DecodeError::Length {
            got: 0,
            expected: n
        }
        .to_string(),
        format!("record of 0 bytes, expected {n}")
    );
}

#[test]
fn unknown_type_and_op() {
    for kind in [0, 2, u32::MAX] {
        let r = BindRecord { kind, ..record() };
        assert_eq!(
            decode(&to_bytes(&r), &clock()),
            Err(DecodeError::UnknownType(kind))
        );
    }
    for op in [0, 5, 9, u16::MAX] {
        let r = BindRecord { op, ..record() };
        assert_eq!(
            decode(&to_bytes(&r), &clock()),
            Err(DecodeError::UnknownOp(op))
        );
    }
    assert_eq!(DecodeError::UnknownOp(9).to_string(), "unknown op 9");
    assert_eq!(
        DecodeError::UnknownType(7).to_string(),
        "unknown record type 7"
    );
}

#[test]
fn unknown_hook_is_named_unknown() {
    let r = BindRecord {
        hook: 77,
        ..record()
    };
    assert_eq!(decoded(&r).hook, "unknown");
}

#[test]
fn comm_edge_cases() {
    let full = BindRecord {
        comm: *b"abcdefghijklmnop",
        ..record()
    };
    assert_eq!(decoded(&full).comm, "abcdefghijklmnop");

    let invalid = BindRecord {
        comm: comm_bytes(&[b'a', 0xff, b'b', 0xc3]),
        ..record()
    };
    assert_eq!(decoded(&invalid).comm, "a\u{fffd}b\u{fffd}");

    let mut after_nul = comm_bytes(b"sshd");
    after_nul[5..9].copy_from_slice(b"junk");
    assert_eq!(
        decoded(&BindRecord {
            comm: after_nul,
            ..record()
        })
        .comm,
        "sshd"
    );

    assert_eq!(
        decoded(&BindRecord {
            comm: [0; COMM_LEN],
            ..record()
        })
        .comm,
        ""
    );
}

#[test]
fn time_uses_the_clock_offset() {
    let r = BindRecord {
        ts_ns: 0,
        ..record()
    };
    assert_eq!(
        decode(&to_bytes(&r), &Clock::with_offset(0)).unwrap().time,
        "1970-01-01T00:00:00.000000Z"
    );
    let r = BindRecord {
        ts_ns: u64::MAX,
        ..record()
    };
    assert!(decode(&to_bytes(&r), &clock()).is_ok());
}

/// Small deterministic PRNG (xorshift64*), so the property test needs no extra crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_buffers_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let clock = clock();
    for _ in 0..20_000 {
        let len = rng.below(2 * BIND_RECORD_SIZE as u64 + 1) as usize;
        let buf = rng.bytes(len);
        let result = decode(&buf, &clock);
        if len != BIND_RECORD_SIZE {
            let want = DecodeError::Length {
                got: len,
                expected: BIND_RECORD_SIZE,
            };
            assert_eq!(result, Err(want));
        }
    }
}

#[test]
fn random_valid_records_decode_consistently() {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let clock = clock();
    for i in 0..20_000 {
        let mut buf = rng.bytes(BIND_RECORD_SIZE);
        buf[offset_of!(BindRecord, kind)..][..4].copy_from_slice(&RECORD_BIND.to_ne_bytes());
        let op = match i % 8 {
            0 => rng.next() as u16,
            n if n % 2 == 0 => OP_BIND,
            _ => OP_LISTEN,
        };
        buf[offset_of!(BindRecord, op)..][..2].copy_from_slice(&op.to_ne_bytes());
        // Make realistic sockaddrs common: random families rarely hit AF_INET/AF_INET6.
        let family = [AF_UNSPEC, AF_INET, AF_INET6, rng.next() as u16][i % 4];
        buf[offset_of!(BindRecord, sockaddr)..][..2].copy_from_slice(&family.to_ne_bytes());

        let r = parse_record(&buf).expect("right length and kind");
        match decode(&buf, &clock) {
            Err(e) => {
                assert_ne!(op, OP_BIND);
                assert_ne!(op, OP_LISTEN);
                assert_ne!(op, OP_GET_PORT);
                assert_eq!(e, DecodeError::UnknownOp(op));
            }
            Ok(e) => {
                serde_json::to_string(&e).expect("serialises");
                assert!(e.errno >= 0);
                assert_eq!(
                    e.result == "OK",
                    r.ret == 0 || (r.ret > 0 && op != OP_GET_PORT)
                );
                assert!(e.comm.chars().count() <= COMM_LEN);
                assert_eq!(e.pid, r.pid);
                assert!(e.fd.is_none_or(|fd| fd == r.fd));
                if op == OP_LISTEN {
                    assert_eq!(e.requested, None);
                }
                if r.sock_known & known::SOCK == 0 {
                    assert_eq!((e.family, e.bound, e.flags), (None, None, Flags::default()));
                }
            }
        }
    }
}

#[test]
fn names_of_numbers() {
    assert_eq!(family_name(2), "inet");
    assert_eq!(family_name(10), "inet6");
    assert_eq!(family_name(1), "unix");
    assert_eq!(family_name(16), "netlink");
    assert_eq!(family_name(17), "packet");
    assert_eq!(family_name(0), "af0");
    assert_eq!(family_name(44), "af44");
    assert_eq!(family_name(u16::MAX), "af65535");

    assert_eq!(protocol_name(0), "ip");
    assert_eq!(protocol_name(1), "icmp");
    assert_eq!(protocol_name(6), "tcp");
    assert_eq!(protocol_name(17), "udp");
    assert_eq!(protocol_name(58), "icmpv6");
    assert_eq!(protocol_name(132), "sctp");
    assert_eq!(protocol_name(136), "udplite");
    assert_eq!(protocol_name(255), "raw");
    assert_eq!(protocol_name(262), "mptcp");
    assert_eq!(protocol_name(33), "33");

    assert_eq!(hook_name(HOOK_TP_SYS_EXIT_BIND), "tracepoint:sys_exit_bind");
    assert_eq!(
        hook_name(HOOK_TP_SYS_EXIT_LISTEN),
        "tracepoint:sys_exit_listen"
    );
    assert_eq!(
        hook_name(HOOK_TP_SYS_EXIT_CONNECT),
        "tracepoint:sys_exit_connect"
    );
    assert_eq!(hook_name(0), "unknown");
    assert_eq!(hook_name(HOOK_COUNT as u16), "unknown");
    assert_eq!(
        hook_name(HOOK_FEXIT_UDP_LIB_GET_PORT),
        "fexit:udp_lib_get_port"
    );
    assert_eq!(
        hook_name(HOOK_KRETPROBE_INET_LISTEN),
        "kretprobe:inet_listen"
    );
}

#[test]
fn raw_socket_protocol_is_not_a_port() {
    let mut r = record();
    r.sock_type = 3; // SOCK_RAW
    r.protocol = 1; // IPPROTO_ICMP, which the kernel keeps in the port field
    r.bound_port = 1;
    let e = decoded(&r);
    assert_eq!(
        e.bound,
        Some(Endpoint {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            scope_id: None
        })
    );
    r.bound_addr = [0; 16];
    assert_eq!(decoded(&r).bound, None);
}

/// An fexit `inet_bind` record from a bind() system call: the fd is known, the call linked.
#[test]
fn kernel_function_bind_has_fd_and_call_id() {
    let mut r = record();
    r.hook = HOOK_FEXIT_INET_BIND;
    r.sock_known |= known::FD;
    r.call_id = 77;
    let e = decoded(&r);
    assert_eq!(e.hook, "fexit:inet_bind");
    assert_eq!(e.fd, Some(3));
    assert_eq!(e.call_id, Some(77));
}

/// A kretprobe record of a call that did not come from the system call (io_uring): no fd.
#[test]
fn kernel_function_bind_without_syscall_has_no_fd() {
    let mut r = record();
    r.hook = HOOK_KRETPROBE_INET6_BIND;
    r.fd = -1;
    r.call_id = 5;
    let e = decoded(&r);
    assert_eq!(e.hook, "kretprobe:inet6_bind");
    assert_eq!(e.fd, None);
}

/// A port allocation that found no port: the kernel's 1 is shown as EADDRINUSE, the port
/// asked for is `requested`, on the address the socket holds.
#[test]
fn get_port_failure_is_eaddrinuse() {
    let mut r = record();
    r.op = OP_GET_PORT;
    r.hook = HOOK_FEXIT_INET_CSK_GET_PORT;
    r.ret = 1;
    r.snum = 8080;
    r.bound_port = 0;
    r.call_id = 9;
    let e = decoded(&r);
    assert_eq!(e.op, Op::GetPort);
    assert_eq!(e.op.as_str(), "get_port");
    assert_eq!(e.hook, "fexit:inet_csk_get_port");
    assert_eq!(e.result, "EADDRINUSE");
    assert_eq!(e.errno, 98);
    assert_eq!(e.requested, Some(Requested::Inet(v4(127, 0, 0, 1, 8080))));
    assert_eq!(e.bound, None);
}

/// An ephemeral allocation: asked for 0, got a port.
#[test]
fn get_port_ephemeral() {
    let mut r = record();
    r.op = OP_GET_PORT;
    r.hook = HOOK_KRETPROBE_UDP_LIB_GET_PORT;
    r.snum = 0;
    r.bound_port = 40000;
    r.call_id = 3;
    let e = decoded(&r);
    assert_eq!(e.hook, "kretprobe:udp_lib_get_port");
    assert_eq!(e.result, "OK");
    assert_eq!(e.requested_port(), Some(0));
    assert_eq!(e.bound, Some(v4(127, 0, 0, 1, 40000)));
}

/// Property tests over every length, alignment and family value.
#[path = "decode_props.rs"]
mod props;

#[test]
fn decoding_into_a_spare_event_gives_the_same_event() {
    let first = BindRecord {
        comm: *b"a-much-longer-cm",
        ts_ns: 5_000_000_000,
        ..record()
    };
    let mut second = BindRecord {
        ts_ns: 7_000_001_000,
        ..record()
    };
    second.comm = [0; 16];
    second.comm[..2].copy_from_slice(b"ab");
    let mut reused = decoded(&first);
    reused.conflict = Some(crate::model::Conflict {
        verdict: "in_use",
        holders: Vec::new(),
        fixes: vec!["a fix".into()],
        ephemeral: None,
        connect: None,
        notes: Vec::new(),
        refusal: None,
        sharing: None,
    });
    super::decode_into(&to_bytes(&second), &clock(), &mut reused).expect("record decodes");
    assert_eq!(
        reused,
        decoded(&second),
        "nothing of the event before is left"
    );
    assert_eq!(
        reused.comm, "ab",
        "no text of the spare's comm is left over"
    );
}

// ----- IP_BIND_ADDRESS_NO_PORT: an address without a port ----------------------------------

/// `bind(127.0.0.1:0)` with IP_BIND_ADDRESS_NO_PORT: `__inet_bind` sets `inet_rcv_saddr` and
/// skips the port allocation, so the socket holds 127.0.0.1 and port 0 (getsockname says
/// 127.0.0.1:0): `bound` is that, not `null`.
#[test]
fn address_without_port_is_bound_with_port_zero() {
    let r = BindRecord {
        addrlen: 16,
        sockaddr: sockaddr_in(AF_INET, 0, [127, 0, 0, 1]),
        bound_port: 0,
        bound_addr: v4_bound([127, 0, 0, 1]),
        flags: flag::BIND_ADDRESS_NO_PORT,
        ..record()
    };
    let v = json_of(&r);
    assert_eq!(v["requested"], json!({"addr": "127.0.0.1", "port": 0}));
    assert_eq!(v["bound"], json!({"addr": "127.0.0.1", "port": 0}));
    assert_eq!(v["bind_address_no_port"], json!(true));
    assert_eq!(v["reuseaddr"], json!(false));
    // IPv6 alike (`__inet6_bind` sets `sk_v6_rcv_saddr`).
    let r6 = BindRecord {
        sock_family: AF_INET6,
        addrlen: 28,
        sockaddr: sockaddr_in6(0, Ipv6Addr::LOCALHOST, 0),
        sockaddr_len: 28,
        bound_port: 0,
        bound_addr: Ipv6Addr::LOCALHOST.octets(),
        ..r
    };
    assert_eq!(json_of(&r6)["bound"], json!({"addr": "::1", "port": 0}));
}

/// The wildcard with port 0 is what an unbound socket holds (`bind(0.0.0.0:0)` under
/// IP_BIND_ADDRESS_NO_PORT leaves the socket as it was): nothing bound.
#[test]
fn wildcard_without_port_is_not_bound() {
    for (family, addr) in [(AF_INET, [0u8; 16]), (AF_INET6, [0u8; 16])] {
        let r = BindRecord {
            sock_family: family,
            bound_port: 0,
            bound_addr: addr,
            ..record()
        };
        assert_eq!(decoded(&r).bound, None, "family {family}");
    }
    // IPv4 keeps its address in the first four bytes only.
    let mut tail = [0u8; 16];
    tail[4..].fill(0xee);
    let r = BindRecord {
        bound_port: 0,
        bound_addr: tail,
        ..record()
    };
    assert_eq!(decoded(&r).bound, None);
}

/// Not for other families (their `skc_rcv_saddr` is no address of theirs), nor when the
/// address or the family could not be read, nor inside a port allocation (the address is set
/// before it and cleared when it fails: it is the `requested` one).
#[test]
fn address_without_port_needs_a_known_inet_socket() {
    let base = BindRecord {
        bound_port: 0,
        bound_addr: v4_bound([127, 0, 0, 1]),
        ..record()
    };
    let cases = [
        (
            "unix",
            BindRecord {
                sock_family: 1,
                ..base
            },
        ),
        (
            "no BOUND",
            BindRecord {
                sock_known: 0xff & !known::BOUND,
                ..base
            },
        ),
        (
            "no FAMILY",
            BindRecord {
                sock_known: 0xff & !known::FAMILY,
                ..base
            },
        ),
        (
            "get_port",
            BindRecord {
                op: OP_GET_PORT,
                hook: HOOK_FEXIT_INET_CSK_GET_PORT,
                ret: 1,
                snum: 5000,
                ..base
            },
        ),
    ];
    for (what, r) in cases {
        assert_eq!(decoded(&r).bound, None, "{what}");
    }
    // A listen of such a socket shows what it holds after the call, as a bind does.
    let listen = BindRecord {
        op: OP_LISTEN,
        hook: HOOK_TP_SYS_EXIT_LISTEN,
        addrlen: 0,
        sockaddr_len: 0,
        ..base
    };
    assert_eq!(decoded(&listen).bound, Some(v4(127, 0, 0, 1, 0)));
}

// ----- address lengths the kernel refuses before reading the address ----------------------

/// `bind()` returns EINVAL for a length below 0 or over `sizeof(struct sockaddr_storage)`
/// (128) before it copies the address (`move_addr_to_kernel`): the kernel never read it, so
/// `requested` is `null` even if bytes came with the record (an older program copied them).
#[test]
fn refused_address_lengths_show_no_requested_address() {
    let sa = sockaddr_in(AF_INET, 8080, [127, 0, 0, 1]);
    for addrlen in [-1i32 as u32, i32::MIN as u32, 129, 200, u32::MAX - 1] {
        let r = BindRecord {
            ret: -libc::EINVAL,
            addrlen,
            sockaddr: sa,
            sockaddr_len: 28,
            bound_port: 0,
            bound_addr: [0; 16],
            ..record()
        };
        let v = json_of(&r);
        assert_eq!(v["requested"], json!(null), "addrlen {addrlen}");
        assert_eq!(v["result"], json!("EINVAL"));
        assert_eq!(v["errno"], json!(22));
        // Nothing the program failed to read: the kernel refused the length.
        assert_eq!(v.get("unreadable"), None, "addrlen {addrlen}");
    }
    // 128 is still read (and then judged by the family: a sockaddr_in in a longer buffer).
    let r = BindRecord {
        addrlen: 128,
        sockaddr: sa,
        sockaddr_len: 28,
        ..record()
    };
    assert_eq!(
        json_of(&r)["requested"],
        json!({"addr": "127.0.0.1", "port": 8080})
    );
}

/// Shorter than `sockaddr_in` but copied (`inet_bind_sk`: `addr_len < sizeof(struct
/// sockaddr_in)` is EINVAL after the copy): the kernel read those bytes, and `requested` says
/// what they were, the family and the length, not an address.
#[test]
fn short_address_lengths_are_the_family_and_the_length() {
    for addrlen in [2u32, 8, 15] {
        let r = BindRecord {
            ret: -libc::EINVAL,
            addrlen,
            sockaddr: sockaddr_in(AF_INET, 8080, [127, 0, 0, 1]),
            sockaddr_len: addrlen,
            ..record()
        };
        assert_eq!(
            json_of(&r)["requested"],
            json!({"sa_family": 2, "addrlen": addrlen}),
            "addrlen {addrlen}"
        );
    }
    // Zero bytes: nothing was read, by the kernel or us.
    let r = BindRecord {
        addrlen: 0,
        sockaddr_len: 0,
        ..record()
    };
    assert_eq!(json_of(&r)["requested"], json!(null));
}

// ----- protocol only for inet sockets ------------------------------------------------------

/// `sk_protocol` of an AF_UNIX socket is the 0 its caller passed, of a netlink socket its
/// netlink protocol (NETLINK_ROUTE is 0 too), of a packet socket an ethertype: none is an IP
/// protocol, so none is named.
#[test]
fn protocol_is_null_for_non_inet_families() {
    for (family, protocol) in [(1u16, 0u16), (16, 0), (16, 9), (17, 0x0300), (40, 6)] {
        let r = BindRecord {
            sock_family: family,
            protocol,
            sock_type: 1,
            ..record()
        };
        let v = json_of(&r);
        assert_eq!(
            v["protocol"],
            json!(null),
            "family {family} protocol {protocol}"
        );
        assert_eq!(v.get("unreadable"), None);
        // The `inet_sock` options do not exist there either; the `sock_common` ones do.
        for key in ["freebind", "transparent", "bind_address_no_port"] {
            assert_eq!(v[key], json!(null), "family {family}: {key}");
        }
        assert_eq!(v["reuseaddr"], json!(true));
        assert_eq!(v["reuseport"], json!(false));
        assert_eq!(v["v6only"], json!(false));
    }
    // An inet socket's 0 is IPPROTO_IP, named as before; IPv6 is inet too.
    let ip = BindRecord {
        protocol: 0,
        ..record()
    };
    assert_eq!(json_of(&ip)["protocol"], json!("ip"));
    let udp6 = BindRecord {
        sock_family: AF_INET6,
        protocol: 17,
        ..record()
    };
    assert_eq!(json_of(&udp6)["protocol"], json!("udp"));
}

// ----- unreadable: which fields the kernel could not read ----------------------------------

/// Each wire bit, with the field it stands for left unread (zero, its `known` bit clear),
/// names that field, in the event's order.
#[test]
fn each_unreadable_bit_names_its_field() {
    use observer_common::unreadable as u;
    let cases: [(u32, u32, &[&str]); 9] = [
        (
            u::FAMILY,
            known::FAMILY,
            &[
                "family",
                "protocol",
                "bound",
                "freebind",
                "transparent",
                "bind_address_no_port",
            ],
        ),
        (u::BOUND, known::BOUND, &["bound"]),
        (u::PROTOCOL, known::PROTOCOL, &["protocol"]),
        (u::SK_UID, known::SK_UID, &["sock_uid"]),
        (u::NETNS, known::NETNS, &["netns"]),
        (u::INODE, known::INODE, &["sock_ino"]),
        (u::DEV_IF, known::DEV_IF, &["bound_dev_if"]),
        (
            u::FAMILY | u::INODE,
            known::FAMILY | known::INODE,
            &[
                "family",
                "protocol",
                "bound",
                "freebind",
                "transparent",
                "bind_address_no_port",
                "sock_ino",
            ],
        ),
        (
            u::BOUND | u::NETNS,
            known::BOUND | known::NETNS,
            &["netns", "bound"],
        ),
    ];
    for (bits, unknown, names) in cases {
        let r = BindRecord {
            unreadable: bits,
            sock_known: 0xff & !unknown,
            ..record()
        };
        let v = json_of(&r);
        assert_eq!(v["unreadable"], json!(names), "bits {bits:#x}");
        let e = decoded(&r);
        assert_eq!(e.unreadable.keys().collect::<Vec<_>>(), names);
    }
}

/// An option the program could not read is `null` and named; one this kernel does not have is
/// `null` and not named (the start record's `unknown_fields` says so once).
#[test]
fn unreadable_option_is_named_unknown_one_is_not() {
    use observer_common::unreadable as u;
    let r = BindRecord {
        unreadable: u::flag(flag::REUSEPORT),
        flags_known: flag::ALL & !(flag::REUSEPORT | flag::TRANSPARENT),
        ..record()
    };
    let v = json_of(&r);
    assert_eq!(v["reuseport"], json!(null));
    assert_eq!(v["transparent"], json!(null));
    assert_eq!(v["unreadable"], json!(["reuseport"]));
}

/// The walk to the socket failed: every socket field is `null`, and named.
#[test]
fn unreachable_socket_names_every_socket_field() {
    let r = BindRecord {
        unreadable: observer_common::unreadable::SOCKET,
        sock_known: 0,
        flags_known: 0,
        ..record()
    };
    let v = json_of(&r);
    assert_eq!(
        v["unreadable"],
        json!([
            "netns",
            "family",
            "protocol",
            "bound",
            "reuseaddr",
            "reuseport",
            "v6only",
            "freebind",
            "transparent",
            "bind_address_no_port",
            "bound_dev_if",
            "sock_uid",
            "sock_ino"
        ])
    );
    // What does not come from the socket is still there.
    assert_eq!(v["requested"], json!({"addr": "127.0.0.1", "port": 8080}));
    assert_eq!(v["fd"], json!(3));
    assert_eq!(v["pid"], json!(4242));
}

/// The caller's sockaddr could not be copied: `requested` is `null` and named (a `listen()`
/// has none to read, and a port allocation takes its request from the socket).
#[test]
fn unreadable_sockaddr_is_named() {
    use observer_common::unreadable as u;
    let bind = BindRecord {
        unreadable: u::REQUESTED,
        sockaddr: [0; SOCKADDR_LEN],
        sockaddr_len: 0,
        ..record()
    };
    let v = json_of(&bind);
    assert_eq!(v["requested"], json!(null));
    assert_eq!(v["unreadable"], json!(["requested"]));
    let get_port = BindRecord {
        op: OP_GET_PORT,
        hook: HOOK_FEXIT_INET_CSK_GET_PORT,
        unreadable: u::BOUND,
        sock_known: 0xff & !known::BOUND,
        ..record()
    };
    assert_eq!(
        json_of(&get_port)["unreadable"],
        json!(["requested", "bound"])
    );
}

/// A bit for a field that is there after all (a later read succeeded, or the bit is stray) names
/// nothing: `unreadable` lists only `null` fields. Stray high bits are ignored; no bits, no key.
#[test]
fn unreadable_names_only_null_fields() {
    let r = BindRecord {
        unreadable: !observer_common::unreadable::SOCKET,
        ..record()
    };
    assert_eq!(decoded(&r), expected());
    assert_eq!(json_of(&r).get("unreadable"), None);
    assert_eq!(json_of(&record()).get("unreadable"), None);
}

/// Written by hand at the documented offset: `unreadable` is the u32 after `snum` and its
/// padding.
#[test]
fn unreadable_hand_written_bytes() {
    let mut bytes = to_bytes(&record());
    let at = offset_of!(BindRecord, unreadable);
    bytes[at..at + 4].copy_from_slice(&(1u32 << 3).to_ne_bytes()); // BOUND
    let known = offset_of!(BindRecord, sock_known);
    bytes[known..known + 4].copy_from_slice(&(0xffu32 & !2).to_ne_bytes()); // not known::BOUND
    let e = decode(&bytes, &clock()).unwrap();
    assert_eq!(e.bound, None);
    assert_eq!(e.unreadable.keys().collect::<Vec<_>>(), ["bound"]);
    let line = serde_json::to_string(&e).unwrap();
    assert!(
        line.ends_with(r#""cgroup":null,"unreadable":["bound"]}"#),
        "{line}"
    );
    let mut fast = Vec::new();
    assert!(crate::jsonline::encode(&mut fast, &e));
    assert_eq!(std::str::from_utf8(&fast).unwrap(), line);
}

/// `connect(3, {AF_INET, 127.0.0.1:5000}, 16)` that failed with EADDRNOTAVAIL: the socket
/// holds no port after the failure (the kernel undoes the source address it picked).
fn failed_connect() -> BindRecord {
    BindRecord {
        op: OP_CONNECT,
        hook: HOOK_TP_SYS_EXIT_CONNECT,
        ret: -99,
        flags: 0,
        bound_port: 0,
        bound_addr: [0; 16],
        sockaddr: sockaddr_in(AF_INET, 5000, [127, 0, 0, 1]),
        ..record()
    }
}

#[test]
fn failed_connect_exact_json() {
    let v = json_of(&failed_connect());
    assert_eq!(
        v,
        json!({
            "type": "bind", "seq": 0, "time": TIME, "op": "connect", "pid": 4242, "tid": 4243,
            "uid": 1000, "comm": "nginx", "netns": NETNS, "family": "inet", "protocol": "tcp",
            "fd": 3, "requested": null, "bound": null,
            "remote": {"addr": "127.0.0.1", "port": 5000},
            "reuseaddr": false, "reuseport": false, "v6only": false, "freebind": false,
            "transparent": false, "bind_address_no_port": false, "bound_dev_if": 0,
            "sock_uid": 1001, "sock_ino": 123_456, "result": "EADDRNOTAVAIL", "errno": 99,
            "hook": "tracepoint:sys_exit_connect", "call_id": null, "cgroup": null,
        })
    );
    // The hand-written encoder writes the same bytes as serde.
    let e = decoded(&failed_connect());
    let mut fast = Vec::new();
    assert!(crate::jsonline::encode(&mut fast, &e));
    assert_eq!(fast, serde_json::to_vec(&e).unwrap());
}

#[test]
fn hand_written_connect_bytes_decode() {
    let mut raw = vec![0u8; BIND_RECORD_SIZE];
    let mut put = |off: usize, bytes: &[u8]| raw[off..off + bytes.len()].copy_from_slice(bytes);
    put(offset_of!(BindRecord, kind), &RECORD_BIND.to_ne_bytes());
    put(offset_of!(BindRecord, op), &4u16.to_ne_bytes());
    put(offset_of!(BindRecord, hook), &13u16.to_ne_bytes());
    put(offset_of!(BindRecord, ret), &0i32.to_ne_bytes());
    put(offset_of!(BindRecord, fd), &7i32.to_ne_bytes());
    put(offset_of!(BindRecord, addrlen), &28u32.to_ne_bytes());
    put(offset_of!(BindRecord, sock_known), &0xffu32.to_ne_bytes());
    put(offset_of!(BindRecord, sock_family), &AF_INET6.to_ne_bytes());
    put(offset_of!(BindRecord, protocol), &6u16.to_ne_bytes());
    put(offset_of!(BindRecord, sock_type), &1u16.to_ne_bytes());
    put(offset_of!(BindRecord, bound_port), &40000u16.to_ne_bytes());
    put(
        offset_of!(BindRecord, bound_addr),
        &Ipv6Addr::LOCALHOST.octets(),
    );
    put(
        offset_of!(BindRecord, sockaddr),
        &sockaddr_in6(443, Ipv6Addr::LOCALHOST, 0),
    );
    put(offset_of!(BindRecord, sockaddr_len), &28u32.to_ne_bytes());
    let e = decode(&raw, &clock()).expect("decodes");
    assert_eq!(e.op, Op::Connect);
    assert_eq!(e.hook, "tracepoint:sys_exit_connect");
    assert_eq!(e.requested, None);
    let local = Endpoint {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        port: 40000,
        scope_id: None,
    };
    assert_eq!(e.bound, Some(local));
    assert_eq!(e.remote, Remote::Inet(Endpoint { port: 443, ..local }));
    assert_eq!((e.result.as_ref(), e.fd, e.call_id), ("OK", Some(7), None));
}

#[test]
fn connect_without_a_readable_inet_sockaddr_has_a_null_remote() {
    // The copy failed (no bytes) or the caller passed AF_UNSPEC to disconnect.
    for (len, sockaddr) in [
        (0, sockaddr_in(AF_INET, 5000, [127, 0, 0, 1])),
        (16, sockaddr_in(AF_UNSPEC, 0, [10, 0, 0, 1])),
    ] {
        let r = BindRecord {
            sockaddr_len: len,
            sockaddr,
            ..failed_connect()
        };
        let v = json_of(&r);
        assert_eq!(
            (&v["remote"], &v["requested"]),
            (&json!(null), &json!(null))
        );
        assert!(v.get("unreadable").is_none());
    }
    // Other calls have no `remote` key at all.
    assert!(json_of(&record()).get("remote").is_none());
}

/// A repeat record as the kernel program writes it, byte by byte (native endian).
fn repeat_bytes(kind: u32, count: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&observer_common::REPEAT_ENDED.to_ne_bytes());
    b.extend_from_slice(&4242u32.to_ne_bytes()); // pid
    b.extend_from_slice(&4243u32.to_ne_bytes()); // tid
    b.extend_from_slice(&0xdead_beefu32.to_ne_bytes()); // run
    b.extend_from_slice(&0u32.to_ne_bytes()); // padding
    b.extend_from_slice(&count.to_ne_bytes());
    b.extend_from_slice(&TS_NS.to_ne_bytes()); // last_ns
    b
}

#[test]
fn repeat_record_decodes_from_hand_made_bytes() {
    use observer_common::{REPEAT_RECORD_SIZE, RepeatRecord};
    assert_eq!(REPEAT_RECORD_SIZE, 40);
    let bytes = repeat_bytes(observer_common::RECORD_REPEAT, 14_203);
    assert_eq!(bytes.len(), REPEAT_RECORD_SIZE);
    assert_eq!(
        parse_repeat(&bytes).unwrap(),
        RepeatRecord {
            kind: observer_common::RECORD_REPEAT,
            reason: observer_common::REPEAT_ENDED,
            pid: 4242,
            tid: 4243,
            run: 0xdead_beef,
            _pad: 0,
            count: 14_203,
            last_ns: TS_NS,
        }
    );
}

#[test]
fn repeat_record_with_another_tag_or_length_is_refused() {
    let bytes = repeat_bytes(RECORD_BIND, 1);
    assert!(matches!(
        parse_repeat(&bytes),
        Err(DecodeError::UnknownType(RECORD_BIND))
    ));
    let bytes = repeat_bytes(observer_common::RECORD_REPEAT, 1);
    assert!(matches!(
        parse_repeat(&bytes[..39]),
        Err(DecodeError::Length {
            got: 39,
            expected: 40
        })
    ));
    // A bind record is never taken for a repeat (the sizes differ).
    assert_ne!(BIND_RECORD_SIZE, observer_common::REPEAT_RECORD_SIZE);
}

#[test]
fn run_tag_names_the_event_timestamp() {
    assert_eq!(observer_common::run_tag(0x1_2345_6780), 0x1234_5678);
    assert_ne!(
        observer_common::run_tag(TS_NS),
        observer_common::run_tag(TS_NS + 16)
    );
}
