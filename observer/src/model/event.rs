//! The bind event: what a `BindRecord` means, in the shape the sinks print.
//!
//! This is the serde type behind every JSON Lines `"type":"bind"` record; the table sink
//! formats the same struct. Fields the kernel could not read are `None` (JSON `null`), never a
//! made-up value.

use super::cgroup::Cgroup;
use super::conflict::Conflict;
use crate::sockopt::Opt;
use observer_common::FLAG_COUNT;
use serde::Serialize;
use serde::ser::SerializeMap as _;
use std::borrow::Cow;
use std::net::IpAddr;

/// Which call an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Bind,
    Listen,
    /// A port allocation (kernel-function backends): `requested.port` is the port asked for
    /// (0 = ephemeral), `bound` what the socket holds after it; `call_id` links it to the
    /// `bind`/`listen` it ran inside.
    GetPort,
    /// A `connect()` (by default only one failing with EADDRNOTAVAIL, EAGAIN or EADDRINUSE): `remote` is
    /// the address connected to, `bound` the local address and port the socket holds after
    /// the call, `requested` is `null`.
    Connect,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Bind => "bind",
            Op::Listen => "listen",
            Op::GetPort => "get_port",
            Op::Connect => "connect",
        }
    }
}

/// An address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The address (IPv4-mapped IPv6 addresses stay IPv6, as the caller wrote them).
    pub addr: IpAddr,
    /// Port in host byte order (0 = "pick one").
    pub port: u16,
    /// IPv6 scope id (interface index) when the caller gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<u32>,
}

/// The remote end of a `connect()`: absent from the JSON of other calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Remote {
    /// Not a connect.
    #[default]
    Absent,
    /// A connect whose sockaddr could not be read, or is no inet address (JSON `null`).
    Unknown,
    Inet(Endpoint),
}

impl Remote {
    pub fn is_absent(&self) -> bool {
        matches!(self, Remote::Absent)
    }

    pub fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Remote::Inet(ep) => Some(*ep),
            _ => None,
        }
    }
}

impl Serialize for Remote {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.endpoint().serialize(s)
    }
}

/// What the caller passed to `bind()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Requested {
    /// An `AF_INET` / `AF_INET6` sockaddr.
    Inet(Endpoint),
    /// Anything else: the address family number and how many bytes were passed.
    Other { sa_family: u16, addrlen: u32 },
}

/// Socket options as the kernel holds them after the call, one per entry of
/// `observer_common::sockopt::ALL`, in bit order; `None` = this kernel's BTF did not describe
/// the field. Written as one key per option (`"reuseaddr": true, ...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(pub [Option<bool>; FLAG_COUNT]);

impl Flags {
    /// The value of one option.
    pub fn get(&self, opt: Opt) -> Option<bool> {
        self.0[opt as usize]
    }

    /// Sets one option.
    pub fn set(&mut self, opt: Opt, value: Option<bool>) {
        self.0[opt as usize] = value;
    }

    /// Every value in bit order (the order of [`Opt::ALL`]).
    pub fn in_order(&self) -> [Option<bool>; FLAG_COUNT] {
        self.0
    }
}

impl Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(FLAG_COUNT))?;
        for (opt, value) in Opt::ALL.iter().zip(&self.0) {
            map.serialize_entry(opt.key(), value)?;
        }
        map.end()
    }
}

/// The fields of an event that are `null` because the kernel program could not read them (a
/// kernel memory read failed), by JSON key in the event's order: not the fields this kernel's
/// BTF does not describe (the start record lists those) nor fields that do not apply (a
/// `listen()` has no `requested`). Written as a list of keys, e.g. `["bound","reuseport"]`, and
/// left out when empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unreadable(u32);

impl Unreadable {
    /// Every field read.
    pub const NONE: Unreadable = Unreadable(0);
    pub const NETNS: u32 = 1 << 0;
    pub const FAMILY: u32 = 1 << 1;
    pub const PROTOCOL: u32 = 1 << 2;
    pub const REQUESTED: u32 = 1 << 3;
    pub const BOUND: u32 = 1 << 4;
    /// The first socket option (`Opt::ALL[0]`); option `i` is `FLAG0 << i`.
    pub const FLAG0: u32 = 1 << 5;
    pub const BOUND_DEV_IF: u32 = 1 << (5 + FLAG_COUNT);
    pub const SOCK_UID: u32 = 1 << (6 + FLAG_COUNT);
    pub const SOCK_INO: u32 = 1 << (7 + FLAG_COUNT);

    /// The JSON key of each bit, lowest first.
    const KEYS: [&'static str; 8 + FLAG_COUNT] = {
        let mut keys = [""; 8 + FLAG_COUNT];
        keys[0] = "netns";
        keys[1] = "family";
        keys[2] = "protocol";
        keys[3] = "requested";
        keys[4] = "bound";
        let mut i = 0;
        while i < FLAG_COUNT {
            keys[5 + i] = observer_common::sockopt::ALL[i].key;
            i += 1;
        }
        keys[5 + FLAG_COUNT] = "bound_dev_if";
        keys[6 + FLAG_COUNT] = "sock_uid";
        keys[7 + FLAG_COUNT] = "sock_ino";
        keys
    };

    /// The fields of `bits` (of the constants above).
    pub fn of(bits: u32) -> Unreadable {
        Unreadable(bits & ((1 << Self::KEYS.len()) - 1))
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Their JSON keys, in the event's order.
    pub fn keys(self) -> impl Iterator<Item = &'static str> {
        Self::KEYS
            .iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, key)| *key)
    }
}

impl Serialize for Unreadable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.keys())
    }
}

/// One `bind()` or `listen()` attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindEvent {
    /// Always `"bind"`: the JSON Lines record type.
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// The event's number in this run (1, 2, ...: every event written, in call order); an
    /// explanation written after its event (`"type":"explanation"`) and a repeated failure
    /// (`repeat_of`) name an event by it.
    pub seq: u64,
    /// Wall-clock time of the call's return, RFC 3339 with microseconds, UTC.
    pub time: String,
    pub op: Op,
    pub pid: u32,
    pub tid: u32,
    /// Real uid of the calling process.
    pub uid: u32,
    pub comm: String,
    /// Network namespace inode of the socket.
    pub netns: Option<u32>,
    /// `"inet"`, `"inet6"`, or `"af<N>"` for other socket families.
    pub family: Option<Cow<'static, str>>,
    /// `"tcp"`, `"udp"`, or another IANA protocol name / number; `None` for a socket that is
    /// not `inet`/`inet6` (whose protocol numbers mean something else, or nothing: `AF_UNIX`).
    pub protocol: Option<Cow<'static, str>>,
    /// The fd the call named; `None` when the call did not come from the `bind`/`listen`
    /// system call (io_uring, the kernel itself), which only kernel-function hooks see.
    pub fd: Option<i32>,
    /// What the caller asked for (`None` for `listen()`, for an address length the kernel
    /// refuses before reading the address, or when the sockaddr could not be read).
    pub requested: Option<Requested>,
    /// What the socket holds after the call: its port, or with port 0 the address it holds
    /// (`IP_BIND_ADDRESS_NO_PORT`). `None` when it holds neither, or unknown.
    pub bound: Option<Endpoint>,
    /// `connect()` only: the address and port connected to, from the caller's sockaddr
    /// (absent for other calls; `null` when the sockaddr could not be read or is not inet).
    #[serde(skip_serializing_if = "Remote::is_absent")]
    pub remote: Remote,
    #[serde(flatten)]
    pub flags: Flags,
    /// Interface index the socket is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub bound_dev_if: Option<u32>,
    /// Owner uid of the socket (`sk_uid`).
    pub sock_uid: Option<u32>,
    /// Socket inode (as in `/proc/<pid>/fd` and `ss -e`).
    pub sock_ino: Option<u64>,
    /// `"OK"` or the errno name, e.g. `"EADDRINUSE"`.
    pub result: Cow<'static, str>,
    /// 0 on success, the positive errno on failure.
    pub errno: i32,
    /// Kernel hook that produced the event, e.g. `"tracepoint:sys_exit_bind"`.
    pub hook: &'static str,
    /// One user action: a `get_port` event and the `bind`/`listen` it ran inside share it
    /// (with `tid`). `None` from the tracepoint backend, which sees no port allocation.
    pub call_id: Option<u64>,
    /// The caller's cgroup (path, container, pod), `None` when the kernel gave no cgroup id.
    pub cgroup: Option<std::sync::Arc<Cgroup>>,
    /// The caller's cgroup id as the kernel program read it (0: none); the collector turns it
    /// into `cgroup`.
    #[serde(skip)]
    pub cgroup_id: u64,
    /// The fields that are `null` because the kernel could not read them (absent when none).
    #[serde(skip_serializing_if = "Unreadable::is_empty")]
    pub unreadable: Unreadable,
    /// A failure that asks the question an earlier event's lookup answered less than a second
    /// before (a retry): that event's `seq`; its explanation applies (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_of: Option<u64>,
    /// With `repeat_of`: the time of that event, for the table (not in JSON, which has `seq`).
    #[serde(skip)]
    pub repeat_time: Option<std::sync::Arc<str>>,
    /// With `repeat_of`: true when this call's socket options differ from that event's in
    /// options the explanation does not depend on (absent when they are the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeat_flags_differ: bool,
    /// For EADDRINUSE: what is in the way, looked up after the failure (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<Conflict>,
}

impl BindEvent {
    /// An event with nothing known, for `decode::decode_into` to fill.
    pub fn blank() -> BindEvent {
        BindEvent {
            record_type: "bind",
            seq: 0,
            time: String::new(),
            op: Op::Bind,
            pid: 0,
            tid: 0,
            uid: 0,
            comm: String::new(),
            netns: None,
            family: None,
            protocol: None,
            fd: None,
            requested: None,
            bound: None,
            remote: Remote::Absent,
            flags: Flags::default(),
            bound_dev_if: None,
            sock_uid: None,
            sock_ino: None,
            result: Cow::Borrowed(""),
            errno: 0,
            hook: "",
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

    /// The socket family as the kernel names it: `AF_INET` = 2, `AF_INET6` = 10.
    pub fn is_inet(&self) -> bool {
        matches!(self.family.as_deref(), Some("inet" | "inet6"))
    }

    /// The requested port, when the caller passed an inet sockaddr.
    pub fn requested_port(&self) -> Option<u16> {
        match &self.requested {
            Some(Requested::Inet(ep)) => Some(ep.port),
            _ => None,
        }
    }
}
