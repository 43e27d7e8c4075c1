//! The scenario workload: each documented claim about `bind()` from the notes in
//! `shared/seeds/`, played for real with `socket2` in a private network namespace.
//!
//! A [`Scenario`] declares the note it comes from, the note's claim, and a list of socket
//! operations with the result Linux gives for each. [`run`] performs them and records what the
//! kernel returned and what it then reports through `getsockname`/`getsockopt` — an account of
//! the calls that does not depend on the observer, so the observer can be checked against it.

pub mod catalog;
pub mod check;
pub mod connect;
pub mod demo;
pub mod report;
mod run;
pub mod uring;

pub use run::{StepOutcome, run, serve_steps};

use crate::sockopt::Opt;

/// The kind of socket a step creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
}

/// One socket operation. Sockets are named by a letter (`'A'`, `'B'`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Create socket `sock`, as `uid` when given (the thread switches to that uid for the
    /// socket's creation and every later call on it).
    Socket { kind: Kind, uid: Option<u32> },
    /// Set an option to 1.
    Set(Opt),
    /// `bind(addr, port)`.
    Bind { addr: &'static str, port: u16 },
    /// `listen(128)`.
    Listen,
    /// `connect(addr, port)` (TCP, loopback only).
    Connect { addr: &'static str, port: u16 },
    /// `accept()` on `sock`, the new connection becoming socket `into`.
    Accept { into: char },
    /// `close()`.
    Close,
    /// Reads until end of stream (the peer closed).
    ReadEof,
    /// Waits (bounded) until a connection on `port` in this namespace is in TIME_WAIT.
    AwaitTimeWait { port: u16 },
}

impl Act {
    /// The observer reports these calls whatever their result.
    pub fn is_observed(&self) -> bool {
        matches!(self, Act::Bind { .. } | Act::Listen)
    }

    /// The observer reports this call when it ends with `errno` (0 = success): a bind or
    /// listen always, a connect only when it fails (successful connects are events only with
    /// `--connects all`).
    pub fn is_observed_with(&self, errno: i32) -> bool {
        self.is_observed() || (matches!(self, Act::Connect { .. }) && errno != 0)
    }
}

/// One step: an operation on a socket and Linux's result for it (0 = success, else errno).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub sock: char,
    pub act: Act,
    pub expect: i32,
    /// For a call that fails: the rule the observer's explanation must name (the
    /// `conflict.holders[].rule.name` of an EADDRINUSE, the `conflict.refusal.rule` of any
    /// other errno).
    pub rule: Option<&'static str>,
}

/// Extra setup of the scenario's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Loopback only.
    Loopback,
    /// Loopback plus [`OTHER_LOCAL_V4`] as a second local address on `lo`.
    SecondAddress,
    /// Loopback, with the namespace's `ip_local_port_range` narrowed to [`TWO_PORT_RANGE`]:
    /// two connections to one destination use it up.
    TwoPortRange,
}

/// The ephemeral range of [`Setup::TwoPortRange`].
pub const TWO_PORT_RANGE: (u16, u16) = (40000, 40001);

/// A local address other than 127.0.0.1, added to `lo` in scenarios that need one (TEST-NET-1,
/// RFC 5737: never routed, and local only inside the scenario's namespace).
pub const OTHER_LOCAL_V4: &str = "192.0.2.10";
/// An address no interface has (TEST-NET-2, RFC 5737).
pub const NON_LOCAL_V4: &str = "198.51.100.7";
/// The uid unprivileged steps run as (`nobody`).
pub const NOBODY: u32 = 65534;

/// A documented claim, played for real.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// The seed note it comes from (file name in `shared/seeds/`).
    pub note: &'static str,
    /// What the note claims, in one line.
    pub claim: &'static str,
    /// What Linux does, in one line (the rule behind the expected results).
    pub linux: &'static str,
    /// Whether Linux agrees with the claim.
    pub claim_holds: bool,
    pub setup: Setup,
    pub steps: Vec<Step>,
    /// Sockets created and used by a second process (a helper the scenario's thread starts
    /// in its namespace), not by the scenario's thread.
    pub second_process: &'static [char],
}

/// Finds scenarios by name; unknown names are an error naming them.
pub fn select(names: &[String]) -> Result<Vec<Scenario>, String> {
    let all = catalog::all();
    if names.is_empty() {
        return Ok(all);
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !all.iter().any(|s| s.name == n.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown scenario {} (see `observer scenarios list`)",
            unknown.join(", ")
        ));
    }
    Ok(all
        .into_iter()
        .filter(|s| names.iter().any(|n| n == s.name))
        .collect())
}
