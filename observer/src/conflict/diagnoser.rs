//! The conflict lookup off the event path: the collector hands each EADDRINUSE event to a
//! [`Submitter`] and moves on; one worker thread diagnoses it ([`super::diagnose`]) and sends
//! it back, conflict attached, through [`Done`], which the collector's loop polls like any other
//! source. The queue is bounded: when it is full the event goes out at once without a
//! conflict, and that is counted. One worker keeps diagnosed events in the order they failed.
//!
//! A service that retries a failing bind in a loop asks the same question thousands of times
//! a second; its answer does not change that fast. So one lookup per question (namespace,
//! protocol, address, port) per [`REPEAT_WINDOW`]: the repeats within it go out at once
//! without a conflict, counted as `conflict_repeats`, and the first failure carries the answer.

use super::rules::Request;
use super::{Query, diagnose};
use crate::model::Conflict;
use crate::model::Proto;
use crate::model::{BindEvent, Op, Requested};
use crate::netns::{self, Netns};
use crate::sockopt::Opt;
use std::collections::BTreeMap;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Events waiting for a lookup, at most.
pub const QUEUE: usize = 64;

/// A question looked up is not looked up again for this long.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Questions remembered for [`REPEAT_WINDOW`], at most (older ones are forgotten first).
const RECENT_MAX: usize = 4096;

/// What a lookup answers: the failing socket's namespace, protocol, address and port.
type Question = (
    Option<u32>,
    Option<std::borrow::Cow<'static, str>>,
    Option<(std::net::IpAddr, u16)>,
);

/// Events handed over and not yet back, by sequence number: what [`Done::finish`] still owes.
type Pending = Arc<Mutex<BTreeMap<u64, BindEvent>>>;

/// The collector's side: hands events over.
pub struct Submitter {
    tx: SyncSender<(u64, BindEvent)>,
    pending: Pending,
    next: u64,
    /// Events handed over for a lookup.
    pub submitted: u64,
    /// Events that went out without a lookup because the queue was full.
    pub queue_full: u64,
    /// Events that went out without a lookup because the same question was looked up less
    /// than [`REPEAT_WINDOW`] before.
    pub repeats: u64,
    /// When each recent question was handed over.
    recent: std::collections::HashMap<Question, Duration>,
    /// The question of the previous event, and when it was handed over: a retry loop asks
    /// the same one back to back, answered here without hashing.
    last: Option<(Question, Duration)>,
}

/// The loop's side: diagnosed events coming back.
pub struct Done {
    rx: UnboundedReceiver<(u64, Conflict)>,
    pending: Pending,
}

/// Starts the worker.
pub fn start() -> std::io::Result<(Submitter, Done)> {
    start_with(conflict_of)
}

/// Starts the worker with another lookup (tests slow lookups with it).
pub fn start_with(
    lookup: impl Fn(&BindEvent) -> Conflict + Send + 'static,
) -> std::io::Result<(Submitter, Done)> {
    let (tx, rx) = sync_channel::<(u64, BindEvent)>(QUEUE);
    let (done_tx, done_rx) = unbounded_channel();
    std::thread::Builder::new()
        .name("observer-conflict".into())
        .spawn(move || {
            for (seq, event) in rx {
                if done_tx.send((seq, lookup(&event))).is_err() {
                    return;
                }
            }
        })?;
    let pending = Pending::default();
    Ok((
        Submitter {
            tx,
            pending: pending.clone(),
            next: 0,
            submitted: 0,
            queue_full: 0,
            repeats: 0,
            recent: Default::default(),
            last: None,
        },
        Done {
            rx: done_rx,
            pending,
        },
    ))
}

/// Whether an event gets a lookup: a TCP or UDP socket's EADDRINUSE.
pub fn wants(e: &BindEvent) -> bool {
    e.errno == libc::EADDRINUSE
        && e.is_inet()
        && matches!(e.protocol.as_deref(), Some("tcp" | "udp"))
}

impl Submitter {
    /// Takes a copy of `event` for a lookup (true), or declines: a repeat of a recent
    /// question, or the queue is full (counted). A declined event is written as it is.
    pub fn submit(&mut self, event: &BindEvent) -> bool {
        let question: Question = (
            event.netns,
            event.protocol.clone(),
            request_of(event).map(|r| (r.addr, r.port)),
        );
        // The coarse clock is plenty for a one-second window; `Instant::now()` here was 5% of
        // the collector's time per event under a failure flood.
        let now = Duration::from_nanos(crate::timefmt::monotonic_coarse_ns());
        if let Some((last, asked)) = &self.last
            && *last == question
            && now.saturating_sub(*asked) < REPEAT_WINDOW
        {
            self.repeats += 1;
            return false;
        }
        if let Some(asked) = self.recent.get(&question)
            && now.saturating_sub(*asked) < REPEAT_WINDOW
        {
            self.last = Some((question, *asked));
            self.repeats += 1;
            return false;
        }
        if self.recent.len() >= RECENT_MAX {
            self.recent
                .retain(|_, asked| now.saturating_sub(*asked) < REPEAT_WINDOW);
            if self.recent.len() >= RECENT_MAX {
                self.recent.clear();
            }
        }
        self.recent.insert(question.clone(), now);
        self.last = Some((question, now));
        // A flood of failures must cost the event path next to nothing: with QUEUE events
        // waiting and one in the worker, decline it without copying anything.
        if lock(&self.pending).len() > QUEUE {
            self.queue_full += 1;
            return false;
        }
        let seq = self.next;
        self.next += 1;
        lock(&self.pending).insert(seq, event.clone());
        match self.tx.try_send((seq, event.clone())) {
            Ok(()) => {
                self.submitted += 1;
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                lock(&self.pending).remove(&seq);
                self.queue_full += 1;
                false
            }
        }
    }
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, BTreeMap<u64, BindEvent>> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Done {
    /// The next diagnosed event; pends while none is ready.
    pub async fn next(&mut self) -> BindEvent {
        loop {
            let Some((seq, conflict)) = self.rx.recv().await else {
                return std::future::pending().await;
            };
            if let Some(mut event) = lock(&self.pending).remove(&seq) {
                event.conflict = Some(conflict);
                return event;
            }
        }
    }

    /// At the end of a run: the events still in the worker, waiting for each at most `bound`
    /// in all; those not back by then come without a conflict. Returns them and how many
    /// lookups did not finish.
    pub async fn finish(mut self, submitter: Submitter, bound: Duration) -> (Vec<BindEvent>, u64) {
        drop(submitter);
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + bound;
        while !lock(&self.pending).is_empty() {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(event) => out.push(event),
                Err(_) => break,
            }
        }
        let late: Vec<BindEvent> = std::mem::take(&mut *lock(&self.pending))
            .into_values()
            .collect();
        let unfinished = late.len() as u64;
        out.extend(late);
        (out, unfinished)
    }
}

/// The request an event describes: the requested address for a bind, the bound one for a
/// listen (an unbound socket's listen autobinds: port 0).
fn request_of(e: &BindEvent) -> Option<Request> {
    let ep = match (e.op, &e.requested, &e.bound) {
        (Op::Bind, Some(Requested::Inet(ep)), _) => *ep,
        (Op::Listen, _, Some(ep)) => *ep,
        (Op::Listen, _, None) => crate::model::Endpoint {
            addr: if e.family.as_deref() == Some("inet6") {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            },
            port: 0,
            scope_id: None,
        },
        _ => return None,
    };
    Some(Request {
        proto: if e.protocol.as_deref() == Some("udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        },
        addr: ep.addr,
        port: ep.port,
        reuseaddr: e.flags.get(Opt::ReuseAddr).unwrap_or(false),
        reuseport: e.flags.get(Opt::ReusePort).unwrap_or(false),
        v6only: e.flags.get(Opt::V6Only).unwrap_or(false),
        bound_dev_if: e.bound_dev_if.unwrap_or(0),
        uid: e.sock_uid.unwrap_or(e.uid),
    })
}

/// The lookup for one event; failures become a conflict with verdict `"unavailable"` and the
/// reason in its notes.
pub fn conflict_of(e: &BindEvent) -> Conflict {
    let unavailable = |note: String| Conflict {
        verdict: "unavailable",
        holders: Vec::new(),
        fixes: Vec::new(),
        ephemeral: None,
        notes: vec![note],
    };
    let Some(request) = request_of(e) else {
        return unavailable("the event has no address to look up".into());
    };
    let Some(ino) = e.netns else {
        return unavailable("the event has no network namespace".into());
    };
    let Some(path) = netns::find_netns(e.pid, e.tid, u64::from(ino)) else {
        // Not found can also mean not allowed to look: say which.
        let own = format!("/proc/{}/task/{}/ns/net", e.pid, e.tid);
        return unavailable(match std::fs::metadata(&own) {
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                format!(
                    "{own}: {err} (looking into another process's namespace needs CAP_SYS_PTRACE)"
                )
            }
            _ => format!("the network namespace {ino} has no process left in it"),
        });
    };
    let query = Query {
        request,
        netns: Netns::Path(path),
        exclude_inode: e.sock_ino,
    };
    let mut conflict = diagnose(&query).unwrap_or_else(|err| unavailable(err.to_string()));
    if conflict.verdict == "free" {
        conflict
            .notes
            .push("the socket in the way has gone since the failure".into());
    }
    conflict
}

#[cfg(test)]
#[path = "diagnoser_tests.rs"]
mod tests;
