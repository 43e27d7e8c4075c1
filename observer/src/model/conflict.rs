//! An explanation of a failed bind or listen, as printed: the verdict, the sockets in the way
//! with the processes holding them, the kernel rule each one trips, what would have worked, and
//! for a port-0 request the ephemeral range. The `"conflict"` object of events and of
//! `observer why --json`; the rule engine that fills it is `crate::conflict`.

use serde::Serialize;
use std::net::IpAddr;

/// The answer for one bind or listen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// `"in_use"`: sockets are in the way; `"free"`: nothing is (if the call failed, the holder
    /// has gone since); `"uncertain"`: only sockets whose unread flags decide it;
    /// `"ephemeral"`: a port-0 request, see `ephemeral`; `"exhausted"`: a connect found no
    /// local port toward its destination, see `connect`; `"unavailable"`: no lookup could be
    /// made (the notes say why); `"pending"`: the event was written before its lookup ended,
    /// whose answer follows as an `"explanation"` record naming the event's `seq`;
    /// `"refused"`: a failure other than EADDRINUSE, refused by the rule `refusal` names;
    /// `"shared"`: a successful call whose socket now shares its port, see `sharing`.
    pub verdict: &'static str,
    pub holders: Vec<Holder>,
    /// Changes that would have worked, each checked against the same table.
    pub fixes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<Ephemeral>,
    /// A failed `connect()`: the port range toward its destination (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<Box<super::ConnectPorts>>,
    /// Anything the lookup could not establish.
    pub notes: Vec<String>,
    /// A failure other than EADDRINUSE: the rule of `bind()`/`listen()` that refused it (with
    /// verdict `"refused"`), or why there is no such rule to give (verdict `"unavailable"`,
    /// rule `not-explained`). Absent for EADDRINUSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<super::Refusal>,
    /// A successful bind or listen that put the socket beside sockets of other processes on
    /// its port (verdict `"shared"`): who, and what the kernel does with the traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
}

/// Sockets of other processes on the port a successful bind or listen joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sharing {
    pub protocol: Proto,
    /// `reuseport-group`, `udp-one-receiver` or `most-specific-address`.
    pub rule: &'static str,
    /// Where the traffic goes now, from the kernel's lookup.
    pub effect: String,
    pub with: Vec<Partner>,
}

/// One socket of another process on the same port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partner {
    /// As `ss` names it: LISTEN, UNCONN.
    pub state: &'static str,
    pub addr: IpAddr,
    pub port: u16,
    /// `null` when it could not be read.
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    pub uid: u32,
    pub inode: u64,
    pub owners: Vec<Owner>,
}

impl Conflict {
    /// The explanation of a failure other than EADDRINUSE: `"refused"` by `r`'s rule, or
    /// `"unavailable"` when `r` says why no rule can be named (`not-explained`).
    pub fn refused(r: super::Refusal) -> Conflict {
        Conflict {
            verdict: if r.rule == super::NOT_EXPLAINED {
                "unavailable"
            } else {
                "refused"
            },
            holders: Vec::new(),
            fixes: Vec::new(),
            ephemeral: None,
            notes: Vec::new(),
            refusal: Some(r),
            sharing: None,
            connect: None,
        }
    }

    /// An answer without holders: a verdict and why (`"unavailable"`, `"pending"`).
    pub fn with_note(verdict: &'static str, note: String) -> Conflict {
        Conflict {
            verdict,
            holders: Vec::new(),
            fixes: Vec::new(),
            ephemeral: None,
            connect: None,
            notes: vec![note],
            refusal: None,
            sharing: None,
        }
    }
}

/// A socket in the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub protocol: Proto,
    /// `"inet"` or `"inet6"`.
    pub family: &'static str,
    /// As `ss` names it: LISTEN, BOUND (bound, not listening), ESTABLISHED, TIME_WAIT, UNCONN...
    pub state: &'static str,
    /// TIME_WAIT only: milliseconds until the kernel drops it (in a group: the soonest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_left_ms: Option<u32>,
    pub addr: IpAddr,
    pub port: u16,
    /// `null` when it could not be read (no owner process, or no access to it).
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    /// IPv6 sockets only.
    pub v6only: Option<bool>,
    /// `SO_BINDTODEVICE` interface, `null` when unbound.
    pub bound_dev: Option<String>,
    /// Owner uid; `null` for TIME_WAIT (no owner).
    pub uid: Option<u32>,
    /// `null` for TIME_WAIT.
    pub inode: Option<u64>,
    pub owners: Vec<Owner>,
    /// Why `owners` is empty, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_note: Option<&'static str>,
    pub overlap: Named<Overlap>,
    pub rule: Named<Rule>,
    /// The kernel function whose check refuses the port.
    pub kernel_check: &'static str,
    /// False when the socket is in the way only for some values of its unread flags.
    pub certain: bool,
    /// Sockets like this one (same state, address, port, options, device, uid, owning
    /// processes, overlap and rule), this object being the first of them; 1 with `why --all`.
    /// In a group, `time_left_ms` is the soonest any of them goes.
    pub count: u64,
}

/// A rule by name, with its sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Named<T> {
    pub name: T,
    pub text: &'static str,
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    /// Shared by every socket of the process (100k connections of one server are 100k
    /// owners and one description).
    pub comm: std::sync::Arc<str>,
    /// Arguments joined by spaces (empty for kernel threads).
    pub cmdline: std::sync::Arc<str>,
    /// One of its descriptors for the socket.
    pub fd: i32,
}

/// The port range and its use, for one address and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ephemeral {
    /// `net.ipv4.ip_local_port_range` (inclusive; IPv6 uses it too).
    pub range: [u16; 2],
    /// `net.ipv4.ip_local_reserved_ports`, as the sysctl prints it.
    pub reserved: String,
    /// Ports of the range that are reserved.
    pub reserved_in_range: u32,
    /// Ports of the range the requested socket could not take (some socket is in the way).
    pub in_use: u32,
    /// Ports of the range neither reserved nor in use.
    pub free: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// How two addresses overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    SameAddress,
    Wildcard,
    DualStack,
}

/// Why the flags did not let two overlapping sockets share the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    NoReuseFlags,
    ReuseaddrBothSides,
    ReuseaddrVsListener,
    ReuseportBothSides,
    ReuseportSameUid,
    TimeWaitKeepsFlags,
}

impl Rule {
    /// The rule's name as serde writes it (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NoReuseFlags => "no-reuse-flags",
            Rule::ReuseaddrBothSides => "reuseaddr-both-sides",
            Rule::ReuseaddrVsListener => "reuseaddr-vs-listener",
            Rule::ReuseportBothSides => "reuseport-both-sides",
            Rule::ReuseportSameUid => "reuseport-same-uid",
            Rule::TimeWaitKeepsFlags => "time-wait-keeps-flags",
        }
    }
}

/// The answer of `observer why --json`: the bind asked about and its explanation.
#[derive(Debug, Serialize)]
pub struct WhyRecord<'a> {
    #[serde(rename = "type")]
    /// Always `"why"`.
    pub record_type: &'static str,
    /// The bind asked about: protocol, address, port, options and owner uid.
    pub protocol: Proto,
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub uid: u32,
    /// `"OK"`, `"UNCERTAIN"`, or the errno `bind()` would return (`"EADDRINUSE"`,
    /// `"EADDRNOTAVAIL"`, `"EACCES"`, ...).
    pub result: &'a str,
    /// Why the bind is refused before any port is looked at (absent otherwise, and then the
    /// port is looked up: `conflict`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'a super::Refusal>,
    /// The explanation, as in events (absent when `refusal` is there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<&'a Conflict>,
}

#[cfg(test)]
impl Holder {
    /// Test fixture: a listening TCP socket on 0.0.0.0:5000 with SO_REUSEADDR, in the way by
    /// `rule`, with no owner.
    pub fn wildcard_listener(rule: Rule) -> Holder {
        Holder {
            protocol: Proto::Tcp,
            family: "inet",
            state: "LISTEN",
            time_left_ms: None,
            addr: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 5000,
            reuseaddr: Some(true),
            reuseport: Some(false),
            v6only: None,
            bound_dev: None,
            uid: Some(0),
            inode: Some(98),
            owners: Vec::new(),
            owner_note: None,
            overlap: Named {
                name: Overlap::Wildcard,
                text: Overlap::Wildcard.sentence(),
            },
            rule: Named {
                name: rule,
                text: rule.sentence(),
            },
            kernel_check: "inet_bhash2_addr_any_conflict",
            certain: true,
            count: 1,
        }
    }
}
