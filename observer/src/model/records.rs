//! The run's own records: the start record (what is attached, what was skipped), the lost
//! record (what the kernel had no room for) and the summary (what the run saw and missed).

use serde::Serialize;

/// The first record: written once the programs are attached, so a reader that sees it knows
/// every later call is observed.
#[derive(Debug, Clone, Serialize)]
pub struct StartRecord {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub time: String,
    /// Observer version.
    pub version: &'static str,
    /// The backend in use, e.g. `"tracepoint"`.
    pub backend: &'static str,
    /// The kernel hooks attached, e.g. `"tracepoint:sys_exit_bind"`.
    pub hooks: Vec<String>,
    /// Backends not used, each with the reason.
    pub skipped_backends: Vec<Skipped>,
    /// `uname -r`.
    pub kernel: String,
    /// The collector's pid (its own calls are not reported).
    pub pid: u32,
    /// Socket fields this kernel's BTF did not describe: reported as `null` in every event.
    pub unknown_fields: Vec<String>,
    /// Ring buffer size in bytes.
    pub buffer_bytes: u32,
    /// The capabilities the observer keeps for the rest of the run (its effective set once
    /// the programs are attached), e.g. `["CAP_DAC_READ_SEARCH","CAP_SYS_PTRACE","CAP_SYS_ADMIN"]`.
    pub capabilities: Vec<String>,
}

/// A backend that was not used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub backend: &'static str,
    pub reason: String,
}

/// Records the kernel had no room for since the previous report.
#[derive(Debug, Clone, Serialize)]
pub struct LostRecord {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub time: String,
    /// Newly lost records.
    pub count: u64,
    /// Lost since start.
    pub total: u64,
}

/// An explanation that came after its event: the lookup took longer than the collector holds
/// later events back for it (their order is kept; see `crate::collector`), so the event went
/// out with a `"pending"` conflict and its answer follows here.
#[derive(Debug, Clone, Serialize)]
pub struct ExplanationRecord {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub time: String,
    /// The `seq` of the event explained.
    pub of: u64,
    /// That event's time, as it was written.
    pub event_time: String,
    pub conflict: super::Conflict,
}

/// Calls folded in the kernel: `count` more calls identical to event `of` (same thread, op, fd,
/// requested address and failure, each within a second of the one before), the last at
/// `time`. A run of repeats is reported at least every tick (100 ms) while it lasts and once
/// more when it ends.
#[derive(Debug, Clone, Serialize)]
pub struct Repeat {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// When the last of these calls returned.
    pub time: String,
    /// The `seq` of the event repeated; `null` when the collector no longer knew it.
    pub of: Option<u64>,
    pub pid: u32,
    pub tid: u32,
    /// Calls folded into this record.
    pub count: u64,
    /// Calls folded into the run so far, this record's included.
    pub total: u64,
    /// Seconds from the event repeated to the last of these calls.
    pub span_secs: f64,
    /// `"tick"` (the run may go on) or `"ended"` (the thread made another call).
    pub reason: &'static str,
}

/// The last record: what the run saw and what it missed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub time: String,
    pub duration_secs: f64,
    /// Records received from the kernel.
    pub received: u64,
    /// Events printed (received, decoded and passing the filters).
    pub events: u64,
    /// Calls folded into repeat records (`"type":"repeat"`) and written: with `events`,
    /// `filtered` and `lost`, every call observed.
    pub repeats: u64,
    /// Of `repeats`, those whose event the collector no longer knew (`"of": null`).
    pub repeats_unknown: u64,
    /// Failed calls sent unfolded because another thread's run held their thread's slot.
    pub fold_busy: u64,
    /// Calls the filters dropped: events, and folded repeats of a dropped event.
    pub filtered: u64,
    /// Calls whose record the ring buffer had no room for (an event, or each call a repeat
    /// record counted).
    pub lost: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Calls whose entry was not seen (started before attach, or the pairing map evicted it).
    pub unpaired: u64,
    /// Calls the pairing map could not hold.
    pub pair_full: u64,
    /// Events (as `events` counts them) with a field the kernel could not read: those whose
    /// `unreadable` names one.
    pub read_errors: u64,
    /// Events per result, e.g. `{"OK": 10, "EADDRINUSE": 2}`.
    pub results: std::collections::BTreeMap<String, u64>,
    /// Why the run ended: `"signal"`, `"duration"`, `"output closed"`.
    pub reason: String,
    /// EADDRINUSE events handed to the conflict lookup.
    pub conflict_lookups: u64,
    /// Failed events printed without an explanation because the lookup queue was full.
    pub conflict_queue_full: u64,
    /// Failed events written with `repeat_of` instead of a lookup of their own: the same
    /// question was looked up less than a second before (a retry loop asks it again and again).
    pub conflict_repeats: u64,
    /// Failed calls other than EADDRINUSE handed to the lookup (EADDRNOTAVAIL, EACCES,
    /// ENODEV: in the namespace; EPERM: the cgroup programs); the others are explained from
    /// the event alone.
    pub refusal_lookups: u64,
    /// Failed calls other than EADDRINUSE explained by a rule (`conflict.verdict` `refused`).
    pub refusals_explained: u64,
    /// Failed calls other than EADDRINUSE whose explanation says why no rule could be named
    /// (`conflict.verdict` `unavailable`, `refusal.rule` `not-explained`).
    pub refusals_unexplained: u64,
    /// Successful calls that put their socket beside other processes' sockets on the port
    /// (`conflict.verdict` `shared`).
    pub port_shares: u64,
    /// Successful calls looked up to learn whether they share their port (TCP listen with
    /// SO_REUSEPORT, UDP bind with SO_REUSEADDR or SO_REUSEPORT).
    pub share_lookups: u64,
    /// Lookups still unfinished at the end (their events printed without a conflict).
    pub conflict_unfinished: u64,
    /// Explanations written as their own record, after their event, because the lookup took
    /// longer than the collector holds events back for it.
    pub explanations_late: u64,
    /// Events written later than they were read because an event before them waited for its
    /// explanation (call order is kept).
    pub events_held: u64,
    /// The longest time an event was held back, in milliseconds.
    pub hold_max_ms: u64,
    /// Events whose cgroup id could not be turned into a path (`"path": null`).
    pub cgroup_unresolved: u64,
}
