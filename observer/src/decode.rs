//! From ring-buffer bytes to a [`BindEvent`]: the one place that interprets a `BindRecord`.
//!
//! Records come from another program (the kernel side), so nothing here trusts them: lengths
//! are checked, unknown tags and families are reported as such, and no input can panic.

use crate::errno;
use crate::model::{BindEvent, Endpoint, Flags, Op, Remote, Requested, Unreadable};
use crate::timefmt::Clock;
use observer_common::{
    BindRecord, HOOK_FEXIT_INET_BIND, HOOK_FEXIT_INET_CSK_GET_PORT, HOOK_FEXIT_INET_LISTEN,
    HOOK_FEXIT_INET6_BIND, HOOK_FEXIT_UDP_LIB_GET_PORT, HOOK_KRETPROBE_INET_BIND,
    HOOK_KRETPROBE_INET_CSK_GET_PORT, HOOK_KRETPROBE_INET_LISTEN, HOOK_KRETPROBE_INET6_BIND,
    HOOK_KRETPROBE_UDP_LIB_GET_PORT, HOOK_TP_SYS_EXIT_BIND, HOOK_TP_SYS_EXIT_CONNECT,
    HOOK_TP_SYS_EXIT_LISTEN, OP_BIND, OP_CONNECT, OP_GET_PORT, OP_LISTEN, RECORD_BIND,
    SOCKADDR_LEN, SOCKADDR_STORAGE_LEN, known, unreadable,
};
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const AF_UNSPEC: u16 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_RAW: u16 = 3;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("unknown record type {0}")]
    UnknownType(u32),
    #[error("unknown op {0}")]
    UnknownOp(u16),
}

/// Copies the bytes into a `BindRecord` after checking the length and the type tag.
pub fn parse_record(bytes: &[u8]) -> Result<BindRecord, DecodeError> {
    let record: BindRecord = parse_wire(bytes)?;
    if record.kind != RECORD_BIND {
        return Err(DecodeError::UnknownType(record.kind));
    }
    Ok(record)
}

/// Copies the bytes into a `RepeatRecord` after checking the length and the type tag.
pub fn parse_repeat(bytes: &[u8]) -> Result<observer_common::RepeatRecord, DecodeError> {
    let record: observer_common::RepeatRecord = parse_wire(bytes)?;
    if record.kind != observer_common::RECORD_REPEAT {
        return Err(DecodeError::UnknownType(record.kind));
    }
    Ok(record)
}

/// A wire record (`BindRecord`, `RepeatRecord`: `repr(C)` integers and byte arrays, every bit
/// pattern valid) copied out of exactly its size in bytes.
fn parse_wire<T: Copy + WireRecord>(bytes: &[u8]) -> Result<T, DecodeError> {
    let expected = std::mem::size_of::<T>();
    if bytes.len() != expected {
        return Err(DecodeError::Length {
            got: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length is exactly the size of `T`, plain data for which every bit pattern is
    // valid (`WireRecord`); `read_unaligned` makes no alignment assumption.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The wire records: `repr(C)` plain data, valid for every bit pattern.
trait WireRecord {}
impl WireRecord for BindRecord {}
impl WireRecord for observer_common::RepeatRecord {}

/// Decodes one ring-buffer record into a new event.
pub fn decode(bytes: &[u8], clock: &Clock) -> Result<BindEvent, DecodeError> {
    let mut event = BindEvent::blank();
    decode_into(bytes, clock, &mut event)?;
    Ok(event)
}

/// `decode`, overwriting `e` (an event the caller is done with) in place: its strings are
/// reused and the event is never moved, so the event path allocates and copies nothing per
/// record beyond what it writes. `cgroup` and `conflict` are cleared for the caller to fill.
/// On error `e` is left partly written.
pub fn decode_into(bytes: &[u8], clock: &Clock, e: &mut BindEvent) -> Result<(), DecodeError> {
    let r = parse_record(bytes)?;
    let op = match r.op {
        OP_BIND => Op::Bind,
        OP_LISTEN => Op::Listen,
        OP_GET_PORT => Op::GetPort,
        OP_CONNECT => Op::Connect,
        other => return Err(DecodeError::UnknownOp(other)),
    };
    let tracepoint = matches!(
        r.hook,
        HOOK_TP_SYS_EXIT_BIND | HOOK_TP_SYS_EXIT_LISTEN | HOOK_TP_SYS_EXIT_CONNECT
    );
    let has = |bit: u32| r.sock_known & bit != 0;
    let sock = has(known::SOCK);
    e.requested = match op {
        Op::Bind => parse_sockaddr(&r.sockaddr, r.sockaddr_len, r.addrlen),
        Op::Listen | Op::Connect => None,
        // The port asked for, on the address the socket holds (set before the allocation).
        Op::GetPort => (sock && has(known::FAMILY) && has(known::BOUND))
            .then(|| Requested::Inet(bound_endpoint(r.sock_family, &r.bound_addr, r.snum))),
    };
    // A connect's sockaddr is where it connects to (the same slot of the record as a bind's
    // request).
    e.remote = match op {
        Op::Connect => match parse_sockaddr(&r.sockaddr, r.sockaddr_len, r.addrlen) {
            Some(Requested::Inet(ep)) => Remote::Inet(ep),
            _ => Remote::Unknown,
        },
        _ => Remote::Absent,
    };
    e.family = (sock && has(known::FAMILY)).then(|| family_name(r.sock_family));
    let inet = sock && has(known::FAMILY) && matches!(r.sock_family, AF_INET | AF_INET6);
    let holds_addr = inet && has(known::BOUND) && holds_address(r.sock_family, &r.bound_addr);
    e.bound = if r.sock_type == SOCK_RAW {
        // A raw socket keeps its protocol number where others keep the port: it has an
        // address at most.
        (sock && has(known::FAMILY) && has(known::BOUND) && r.bound_addr != [0; 16])
            .then(|| bound_endpoint(r.sock_family, &r.bound_addr, 0))
    } else if sock && has(known::FAMILY) && has(known::BOUND) && r.bound_port != 0 {
        Some(bound_endpoint(r.sock_family, &r.bound_addr, r.bound_port))
    } else {
        // No port, but an address: `__inet_bind`/`__inet6_bind` set the receive address and
        // skip the port allocation under IP_BIND_ADDRESS_NO_PORT (the port comes at
        // connect()), and getsockname() then says ADDR:0. A wildcard address with no port is
        // what an unbound socket holds: nothing. Not for a port allocation: the address is set
        // before it runs (and cleared if it fails), so inside it the socket holds no port, and
        // the address is the `requested` one.
        (holds_addr && op != Op::GetPort).then(|| bound_endpoint(r.sock_family, &r.bound_addr, 0))
    };
    // A port allocation returns 0 or 1 ("not available"), which both of its callers turn
    // into EADDRINUSE; show it as that.
    let ret = if op == Op::GetPort && r.ret > 0 {
        -libc::EADDRINUSE
    } else {
        r.ret
    };
    let errno = ret.checked_neg().unwrap_or(i32::MAX).max(0);
    clock.format_monotonic_into(r.ts_ns, &mut e.time);
    comm(&r.comm, &mut e.comm);
    e.record_type = "bind";
    e.op = op;
    e.pid = r.pid;
    e.tid = r.tid;
    e.uid = r.uid;
    e.netns = (sock && has(known::NETNS)).then_some(r.netns);
    // `sk_protocol` is an IP protocol number only on inet sockets (an AF_UNIX socket holds
    // the 0 its caller passed, a netlink socket its netlink protocol).
    e.protocol = (inet && has(known::PROTOCOL)).then(|| protocol_name(r.protocol));
    e.fd = (tracepoint || has(known::FD)).then_some(r.fd);
    e.flags = flags(&r, sock, inet);
    e.bound_dev_if = (sock && has(known::DEV_IF)).then_some(r.bound_dev_if);
    e.sock_uid = (sock && has(known::SK_UID)).then_some(r.sk_uid);
    e.sock_ino = (sock && has(known::INODE)).then_some(r.ino);
    e.result = if ret >= 0 {
        Cow::Borrowed("OK")
    } else {
        errno::name(errno)
    };
    e.errno = errno;
    e.hook = hook_name(r.hook);
    e.cgroup = None;
    e.cgroup_id = r.cgroup_id;
    e.call_id = (!tracepoint && r.call_id != 0).then_some(r.call_id);
    e.unreadable = unreadable_fields(r.unreadable, e);
    e.conflict = None;
    Ok(())
}

/// The fields of `e` that are `null` because of the reads the record's `unreadable` bits say
/// failed (a field that is `null` for another reason, or was read after all, is not named).
fn unreadable_fields(lost: u32, e: &BindEvent) -> Unreadable {
    use unreadable as k;
    // The socket was out of reach: every socket field is lost with it.
    let socket = lost & k::SOCKET;
    let any = |bits: u32| lost & (bits | k::SOCKET) != 0;
    let mut out = 0;
    let mut mark = |null: bool, bit: u32| {
        if null {
            out |= bit;
        }
    };
    mark(e.netns.is_none() && any(k::NETNS), Unreadable::NETNS);
    mark(e.family.is_none() && any(k::FAMILY), Unreadable::FAMILY);
    // Named only with a known inet family.
    mark(
        e.protocol.is_none() && any(k::PROTOCOL | k::FAMILY),
        Unreadable::PROTOCOL,
    );
    // A port allocation's request is the socket's address with the port asked for.
    let requested = match e.op {
        Op::Bind => lost & k::REQUESTED,
        Op::Listen | Op::Connect => 0,
        Op::GetPort => lost & (k::FAMILY | k::BOUND) | socket,
    };
    mark(
        e.requested.is_none() && requested != 0,
        Unreadable::REQUESTED,
    );
    mark(
        e.bound.is_none() && any(k::BOUND | k::FAMILY),
        Unreadable::BOUND,
    );
    for (i, value) in e.flags.in_order().iter().enumerate() {
        // The `inet_sock` options need the family (see `flags`).
        let inet_only = matches!(
            observer_common::sockopt::ALL[i].field,
            observer_common::sockopt::KernelField::InetFlag { .. }
        );
        let bits = k::flag(1 << i) | if inet_only { k::FAMILY } else { 0 };
        mark(value.is_none() && any(bits), Unreadable::FLAG0 << i);
    }
    mark(
        e.bound_dev_if.is_none() && any(k::DEV_IF),
        Unreadable::BOUND_DEV_IF,
    );
    mark(e.sock_uid.is_none() && any(k::SK_UID), Unreadable::SOCK_UID);
    mark(e.sock_ino.is_none() && any(k::INODE), Unreadable::SOCK_INO);
    Unreadable::of(out)
}

/// Whether `addr` (as `BindRecord::bound_addr` holds it) is a specific address, not the
/// wildcard.
fn holds_address(family: u16, addr: &[u8; 16]) -> bool {
    if family == AF_INET6 {
        *addr != [0; 16]
    } else {
        addr[..4] != [0; 4]
    }
}

/// The caller's sockaddr, from the `len` bytes the kernel program copied. `None` when there
/// is none to show: a length `bind()` refuses before it reads the address (`addrlen` taken
/// as the kernel's `int`, below 0 or over `sizeof(struct sockaddr_storage)`: EINVAL in
/// `move_addr_to_kernel`), whatever bytes came with it, or fewer than 2 bytes copied.
pub fn parse_sockaddr(raw: &[u8; SOCKADDR_LEN], len: u32, addrlen: u32) -> Option<Requested> {
    if (addrlen as i32) < 0 || addrlen > SOCKADDR_STORAGE_LEN {
        return None;
    }
    let len = (len as usize).min(SOCKADDR_LEN);
    let raw = &raw[..len];
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = raw.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match family {
        // The kernel reads an AF_UNSPEC sockaddr_in as AF_INET when the address is INADDR_ANY
        // (compatibility with old callers), so show what it will use.
        AF_INET | AF_UNSPEC
            if len >= 8 && addrlen >= 16 && (family == AF_INET || raw[4..8] == [0; 4]) =>
        {
            Some(Requested::Inet(Endpoint {
                addr: IpAddr::V4(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7])),
                port: port?,
                scope_id: None,
            }))
        }
        AF_INET6 if len >= 24 && addrlen >= 24 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[8..24]);
            let scope = raw
                .get(24..28)
                .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
                .filter(|s| *s != 0);
            Some(Requested::Inet(Endpoint {
                addr: IpAddr::V6(Ipv6Addr::from(octets)),
                port: port?,
                scope_id: scope,
            }))
        }
        other => Some(Requested::Other {
            sa_family: other,
            addrlen,
        }),
    }
}

fn bound_endpoint(family: u16, addr: &[u8; 16], port: u16) -> Endpoint {
    let addr = if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    Endpoint {
        addr,
        port,
        scope_id: None,
    }
}

/// The options as read. Those kept in `inet_sock` (IP_FREEBIND, IP_TRANSPARENT,
/// IP_BIND_ADDRESS_NO_PORT) only for an inet socket: the program reads them at their offset
/// past `struct sock`, which in another family's socket is some other field.
fn flags(r: &BindRecord, sock: bool, inet: bool) -> Flags {
    use observer_common::sockopt::KernelField;
    Flags(observer_common::sockopt::ALL.map(|o| {
        let applies = inet || !matches!(o.field, KernelField::InetFlag { .. });
        (sock && applies && r.flags_known & o.bit != 0).then_some(r.flags & o.bit != 0)
    }))
}

/// The `comm` up to its first NUL, with invalid UTF-8 replaced, into `out`.
fn comm(raw: &[u8], out: &mut String) {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    out.clear();
    let raw = &raw[..end];
    if raw.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. (Nearly every comm is ASCII; `from_utf8` was a few
        // percent of the collector's time under a flood.)
        out.push_str(unsafe { std::str::from_utf8_unchecked(raw) });
    } else {
        out.push_str(&String::from_utf8_lossy(raw));
    }
}

#[inline]
pub fn family_name(family: u16) -> Cow<'static, str> {
    Cow::Borrowed(match family {
        AF_INET => "inet",
        AF_INET6 => "inet6",
        1 => "unix",
        16 => "netlink",
        17 => "packet",
        other => return Cow::Owned(format!("af{other}")),
    })
}

#[inline]
pub fn protocol_name(protocol: u16) -> Cow<'static, str> {
    Cow::Borrowed(match protocol {
        0 => "ip",
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        255 => "raw",
        262 => "mptcp",
        other => return Cow::Owned(other.to_string()),
    })
}

pub fn hook_name(hook: u16) -> &'static str {
    match hook {
        HOOK_TP_SYS_EXIT_BIND => "tracepoint:sys_exit_bind",
        HOOK_TP_SYS_EXIT_LISTEN => "tracepoint:sys_exit_listen",
        HOOK_TP_SYS_EXIT_CONNECT => "tracepoint:sys_exit_connect",
        HOOK_FEXIT_INET_BIND => "fexit:inet_bind",
        HOOK_FEXIT_INET6_BIND => "fexit:inet6_bind",
        HOOK_FEXIT_INET_LISTEN => "fexit:inet_listen",
        HOOK_FEXIT_INET_CSK_GET_PORT => "fexit:inet_csk_get_port",
        HOOK_FEXIT_UDP_LIB_GET_PORT => "fexit:udp_lib_get_port",
        HOOK_KRETPROBE_INET_BIND => "kretprobe:inet_bind",
        HOOK_KRETPROBE_INET6_BIND => "kretprobe:inet6_bind",
        HOOK_KRETPROBE_INET_LISTEN => "kretprobe:inet_listen",
        HOOK_KRETPROBE_INET_CSK_GET_PORT => "kretprobe:inet_csk_get_port",
        HOOK_KRETPROBE_UDP_LIB_GET_PORT => "kretprobe:udp_lib_get_port",
        _ => "unknown",
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
