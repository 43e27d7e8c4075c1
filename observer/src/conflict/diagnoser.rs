//! The conflict lookup off the event path: the collector hands each EADDRINUSE event to a
//! [`Submitter`] and moves on; a small pool of worker threads ([`WORKERS`]) diagnoses them
//! ([`super::diagnose`]), so that one slow namespace does not hold up the others, and sends
//! each answer back, by the event's `seq`, through [`Done`], which the collector's loop polls
//! like any other source. Keeping events in call order around a pending answer is the
//! collector's job (`crate::hold`). The queue is bounded: when it is full the event is not
//! looked up, and says so.
//!
//! The failing socket's namespace is taken hold of when the event is read, through the
//! failing thread ([`netns::Handles`]): most servers exit right after an EADDRINUSE, and the
//! lookup, which starts later, must still get in to read the sockets in the way.
//!
//! A service that retries a failing bind in a loop asks the same question thousands of times
//! a second; its answer does not change that fast. So one lookup per question (namespace,
//! protocol, address, port, and the options, device and uid the rules read) per
//! [`REPEAT_WINDOW`]: the repeats within it are written at once with `repeat_of`, the `seq`
//! of the event whose explanation applies, counted as `conflict_repeats`.

use super::rules::Request;
use super::{Query, diagnose};
use crate::model::Conflict;
use crate::model::Proto;
use crate::model::{BindEvent, Flags, Op, Requested};
use crate::netns::{self, Netns};
use crate::sockopt::Opt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Events waiting for a lookup, at most: a burst of distinct failures (a node where a
/// thousand pods fail at once) is explained rather than declined.
pub const QUEUE: usize = 1024;

/// Lookups made at once.
pub const WORKERS: usize = 4;

/// One lookup: the event, and a handle on its namespace when one could be taken.
pub struct Job {
    pub event: BindEvent,
    pub netns: Option<Netns>,
}

/// A question looked up is not looked up again for this long.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Questions remembered for [`REPEAT_WINDOW`], at most (older ones are forgotten first).
const RECENT_MAX: usize = 4096;

/// What a lookup answers: the failing socket's namespace, the errno, whether it is a
/// connect's, the request the rules judge, the IPv6 scope id, and for the rules that read the
/// caller (EACCES: its capabilities; EPERM: its cgroup; a success: who else shares the port)
/// the caller's pid.
type Question = (Option<u32>, i32, bool, Option<Request>, Option<u32>, u32);

/// The event that asked a question first, within the window.
#[derive(Debug, Clone)]
struct Asked {
    /// When it was handed over (coarse monotonic).
    at: Duration,
    seq: u64,
    time: Arc<str>,
    flags: Flags,
}

/// What [`Submitter::submit`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Handed over: its answer comes back through [`Done`] under the event's `seq`.
    Lookup,
    /// The same question was handed over less than [`REPEAT_WINDOW`] before, by this event.
    Repeat {
        of: u64,
        time: Arc<str>,
        /// The options the answer does not depend on differ between the two.
        flags_differ: bool,
    },
    /// Not looked up: [`QUEUE`] lookups are already waiting.
    QueueFull,
}

/// The collector's side: hands events over.
pub struct Submitter {
    tx: SyncSender<Job>,
    /// Namespaces of recent failures, held open.
    handles: netns::Handles,
    /// Lookups handed over and not yet answered.
    in_flight: Arc<AtomicUsize>,
    /// EADDRINUSE events handed over for a lookup.
    pub submitted: u64,
    /// Other failures handed over for a lookup (`super::explain`).
    pub refusals_submitted: u64,
    /// Successful calls handed over to learn whether they share their port.
    pub shares_submitted: u64,
    /// Events not looked up because the queue was full.
    pub queue_full: u64,
    /// Events written with `repeat_of` instead of a lookup.
    pub repeats: u64,
    /// The first event of each recent question.
    recent: std::collections::HashMap<Question, Asked>,
    /// The question of the previous event: a retry loop asks the same one back to back,
    /// answered here without hashing.
    last: Option<(Question, Asked)>,
}

/// The loop's side: answers coming back, by event `seq`.
pub struct Done {
    rx: UnboundedReceiver<(u64, Conflict)>,
    in_flight: Arc<AtomicUsize>,
}

/// Starts the workers, and loads the iterator programs ahead of the first lookup, which would
/// otherwise spend its time budget on a parse of the kernel's BTF while its event waits.
pub fn start() -> std::io::Result<(Submitter, Done)> {
    std::thread::Builder::new()
        .name("observer-preload".into())
        .spawn(|| {
            // A failure is the first lookup's to report, in its notes.
            drop(super::kiter::object());
        })?;
    start_with(WORKERS, |job| lookup(&job.event, job.netns.clone()))
}

/// Starts `workers` workers with another lookup (tests slow lookups with it).
pub fn start_with(
    workers: usize,
    lookup: impl Fn(&Job) -> Conflict + Send + Sync + 'static,
) -> std::io::Result<(Submitter, Done)> {
    let (tx, rx) = sync_channel::<Job>(QUEUE);
    let (done_tx, done_rx) = unbounded_channel();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let lookup = Arc::new(lookup);
    for n in 0..workers {
        let (rx, done_tx, lookup) = (rx.clone(), done_tx.clone(), lookup.clone());
        std::thread::Builder::new()
            .name(format!("observer-look{n}"))
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    let Ok(job) = job else { return };
                    if done_tx.send((job.event.seq, lookup(&job))).is_err() {
                        return;
                    }
                }
            })?;
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    Ok((
        Submitter {
            tx,
            handles: Default::default(),
            in_flight: in_flight.clone(),
            submitted: 0,
            refusals_submitted: 0,
            shares_submitted: 0,
            queue_full: 0,
            repeats: 0,
            recent: Default::default(),
            last: None,
        },
        Done {
            rx: done_rx,
            in_flight,
        },
    ))
}

/// Whether an event gets a lookup: a TCP or UDP socket's failed `bind()` or `listen()` with
/// EADDRINUSE. A failed port allocation (`get_port`, kernel-function backends) runs inside
/// the `bind()` or `listen()` reported right after it, with the same `call_id`: that event
/// carries the explanation.
///
/// And a `connect()` that found no local port: TCP's EADDRNOTAVAIL (none free toward its
/// destination, [`super::connect`]) and UDP's EAGAIN (`inet_autobind`: the unbound socket's
/// port-0 bind found none free in the range, [`super::ephemeral`]).
pub fn wants(e: &BindEvent) -> bool {
    let tcp_connect = e.op == Op::Connect
        && e.errno == libc::EADDRNOTAVAIL
        && e.protocol.as_deref() == Some("tcp");
    let connect = e.is_inet() && (tcp_connect || is_udp_autobind(e));
    connect
        || e.errno == libc::EADDRINUSE
            && !matches!(e.op, Op::GetPort | Op::Connect)
            && e.is_inet()
            && matches!(e.protocol.as_deref(), Some("tcp" | "udp"))
}

impl Submitter {
    /// Hands a copy of `event` over for a lookup, or says why not: a repeat of a recent
    /// question (counted, with the event that asked it), or a full queue (counted).
    pub fn submit(&mut self, event: &BindEvent) -> Submitted {
        let scope = match &event.requested {
            Some(Requested::Inet(ep)) => ep.scope_id,
            _ => None,
        };
        let caller = match event.errno {
            // Each process sharing a port asks about the others.
            0 | libc::EACCES | libc::EPERM => event.pid,
            _ => 0,
        };
        let question: Question = (
            event.netns,
            event.errno,
            event.op == Op::Connect,
            request_of(event),
            scope,
            caller,
        );
        // The coarse clock is plenty for a one-second window; `Instant::now()` here was 5% of
        // the collector's time per event under a failure flood.
        let now = Duration::from_nanos(crate::timefmt::monotonic_coarse_ns());
        let recent = match &self.last {
            Some((last, asked)) if *last == question => Some(asked.clone()),
            _ => self.recent.get(&question).cloned(),
        };
        if let Some(asked) = recent
            && now.saturating_sub(asked.at) < REPEAT_WINDOW
        {
            self.repeats += 1;
            let repeat = Submitted::Repeat {
                of: asked.seq,
                time: asked.time.clone(),
                flags_differ: asked.flags != event.flags,
            };
            self.last = Some((question, asked));
            return repeat;
        }
        // A flood of distinct failures must cost the event path next to nothing: with QUEUE
        // events waiting and one in the worker, decline without copying anything.
        if self.in_flight.load(Ordering::Relaxed) > QUEUE {
            self.queue_full += 1;
            return Submitted::QueueFull;
        }
        let netns = event.netns.and_then(|ino| {
            self.handles
                .get(event.pid, event.tid, u64::from(ino), now.as_nanos() as u64)
        });
        let job = Job {
            event: event.clone(),
            netns,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                if wants(event) {
                    self.submitted += 1;
                } else if event.errno == 0 {
                    self.shares_submitted += 1;
                } else {
                    self.refusals_submitted += 1;
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queue_full += 1;
                return Submitted::QueueFull;
            }
        }
        if self.recent.len() >= RECENT_MAX {
            self.recent
                .retain(|_, asked| now.saturating_sub(asked.at) < REPEAT_WINDOW);
            if self.recent.len() >= RECENT_MAX {
                self.recent.clear();
            }
        }
        let asked = Asked {
            at: now,
            seq: event.seq,
            time: Arc::from(event.time.as_str()),
            flags: event.flags,
        };
        self.recent.insert(question.clone(), asked.clone());
        self.last = Some((question, asked));
        Submitted::Lookup
    }

    /// Lookups handed over and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Lets go of namespace handles unused for a while (called at every tick).
    pub fn tick(&mut self) {
        self.handles.expire(crate::timefmt::monotonic_coarse_ns());
    }
}

impl Done {
    /// The next answer: the `seq` of the event it explains, and the conflict. Pends while
    /// none is ready.
    pub async fn next(&mut self) -> (u64, Conflict) {
        match self.rx.recv().await {
            Some(answer) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                answer
            }
            None => std::future::pending().await,
        }
    }

    /// At the end of a run: the answers still owed, waiting for them at most `bound` in all.
    /// Returns those that came and how many lookups did not finish.
    pub async fn finish(
        mut self,
        submitter: Submitter,
        bound: Duration,
    ) -> (Vec<(u64, Conflict)>, u64) {
        drop(submitter);
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + bound;
        while self.in_flight.load(Ordering::Relaxed) > 0 {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(answer) => out.push(answer),
                Err(_) => break,
            }
        }
        (out, self.in_flight.load(Ordering::Relaxed) as u64)
    }
}

/// Whether `e` is a UDP connect whose autobind found no port (`inet_autobind`'s EAGAIN).
fn is_udp_autobind(e: &BindEvent) -> bool {
    e.op == Op::Connect && e.errno == libc::EAGAIN && e.protocol.as_deref() == Some("udp")
}

/// The request an event describes: the requested address for a bind, the bound one for a
/// listen (an unbound socket's listen autobinds: port 0), the remote one for a connect; for a
/// UDP connect's failed autobind, the port-0 bind it made (on the address the socket holds:
/// the wildcard, or one bound with IP_BIND_ADDRESS_NO_PORT).
fn request_of(e: &BindEvent) -> Option<Request> {
    let any = || crate::model::Endpoint {
        addr: if e.family.as_deref() == Some("inet6") {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        },
        port: 0,
        scope_id: None,
    };
    let ep = match (e.op, &e.requested, &e.bound) {
        (Op::Connect, _, bound) if is_udp_autobind(e) => crate::model::Endpoint {
            port: 0,
            ..bound.unwrap_or_else(any)
        },
        (Op::Connect, _, _) => e.remote.endpoint()?,
        (Op::Bind, Some(Requested::Inet(ep)), _) => *ep,
        (Op::Listen, _, Some(ep)) => *ep,
        (Op::Listen, _, None) => any(),
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

/// The lookup for one event, entering its namespace through the handle taken when it was
/// read, else through a task found in it now; failures become a conflict with verdict
/// `"unavailable"` and the reason in its notes. A failure other than EADDRINUSE is explained
/// by `super::explain` (a refusal).
pub fn lookup(e: &BindEvent, netns: Option<Netns>) -> Conflict {
    let unavailable = |note: String| Conflict::with_note("unavailable", note);
    if e.errno == 0 {
        return super::sharing::lookup(e, way_in(e, netns));
    }
    if !wants(e) {
        // EPERM reads the cgroup tree only: no namespace to enter.
        let ns = if e.errno == libc::EPERM {
            Ok(Netns::Current)
        } else {
            way_in(e, netns)
        };
        return super::explain::lookup(e, ns);
    }
    let Some(request) = request_of(e) else {
        return unavailable("the event has no address to look up".into());
    };
    let netns = match way_in(e, netns) {
        Ok(ns) => ns,
        Err(why) => return unavailable(why),
    };
    if e.op == Op::Connect && !is_udp_autobind(e) {
        // The socket's own address and port, when it kept them after the failure (bound
        // before the call).
        let bound = e.bound.filter(|b| !b.addr.is_unspecified());
        let ask = super::connect::Ask {
            dst: std::net::SocketAddr::new(request.addr, request.port),
            source: bound.map(|b| b.addr),
            bound_port: e.bound.map(|b| b.port).filter(|&p| p != 0),
            exclude_inode: e.sock_ino,
        };
        return super::connect::explain(&ask, &netns)
            .unwrap_or_else(|err| unavailable(err.to_string()));
    }
    let query = Query {
        request,
        netns,
        exclude_inode: e.sock_ino,
        all: false,
    };
    let mut conflict = diagnose(&query).unwrap_or_else(|err| unavailable(err.to_string()));
    if conflict.verdict == "free" {
        conflict
            .notes
            .push("the socket in the way has gone since the failure".into());
    }
    conflict
}

/// The failing socket's namespace: the handle taken when the event was read, else a task
/// found in it now; or why there is no way in.
fn way_in(e: &BindEvent, netns: Option<Netns>) -> Result<Netns, String> {
    let Some(ino) = e.netns else {
        return Err("the event has no network namespace".into());
    };
    match netns {
        Some(ns) => Ok(ns),
        // Twice: the failing thread may exit between being found and being opened; the
        // second search finds another task in the namespace.
        None => (0..2)
            .find_map(|_| {
                netns::find_netns(e.pid, e.tid, u64::from(ino))
                    .and_then(|path| netns::open_if(&path, u64::from(ino)).ok())
            })
            .ok_or_else(|| no_way_in(e, ino)),
    }
}

/// [`lookup`] without a handle (the namespace is found now).
pub fn conflict_of(e: &BindEvent) -> Conflict {
    lookup(e, None)
}

/// Why no lookup could enter the failing socket's namespace, exactly.
fn no_way_in(e: &BindEvent, ino: u32) -> String {
    let own = format!("/proc/{}/task/{}/ns/net", e.pid, e.tid);
    let meta = std::fs::metadata(&own);
    let thread = match meta {
        Ok(_) => "the failing thread is in another namespace now",
        Err(_) => "the failing thread has exited",
    };
    match meta {
        // Not found can also mean not allowed to look.
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{own}: {err} (looking into another process's namespace needs CAP_SYS_PTRACE)")
        }
        _ if !netns::in_initial_pid_ns() => format!(
            "no way into network namespace {ino} is left: {thread} and no process visible from \
             this pid namespace is in it (processes outside it cannot be seen)"
        ),
        _ => format!(
            "no way into network namespace {ino} is left: {thread} and no process is in it any \
             more"
        ),
    }
}

#[cfg(test)]
#[path = "diagnoser_tests.rs"]
mod tests;
