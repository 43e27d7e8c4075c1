//! The run loop: drain the ring buffer as it fills, decode, filter, hand events to the sink,
//! report kernel-side losses as they happen, and end cleanly on a signal, a deadline or a
//! closed output.

use crate::backend::Loaded;
use crate::conflict::diagnoser::{self, Submitted};
use crate::conflict::{explain, sharing};
use crate::decode;
use crate::filter::Filter;
use crate::model::{Conflict, LostRecord, StartRecord, Summary};
use crate::ring::Ring;
use crate::sink::Sink;
use crate::timefmt::{self, Clock};
use anyhow::{Context as _, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use observer_common::{
    COUNTER_FOLD_BUSY, COUNTER_LOST, COUNTER_LOST_REPEATS, COUNTER_PAIR_FULL, COUNTER_UNPAIRED,
    HOOK_TP_SYS_EXIT_BIND, HOOK_TP_SYS_EXIT_LISTEN, RECORD_REPEAT, REPEAT_ENDED,
    REPEAT_RECORD_SIZE, RepeatRecord, run_tag,
};
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How often the ring buffer is drained without being woken, and kernel-side counters
/// (losses) are checked. The kernel programs wake the collector at most once a millisecond
/// during a burst (see `wakeup_flags` in observer-ebpf), so the last records of a burst can
/// wait this long.
const TICK: Duration = Duration::from_millis(100);

pub struct RunOptions {
    pub filter: Filter,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop when this completes. It is first polled after the start record is written, so it
    /// may start the work to observe (the demo starts its workload there).
    /// The future's output is the end reason reported in the summary.
    pub until: Option<Until>,
    /// Look up the conflict of each EADDRINUSE event off the event path (see
    /// [`crate::conflict::diagnoser`]).
    pub conflicts: bool,
}

/// How long the end of a run waits for conflict lookups in flight.
const CONFLICT_END_WAIT: Duration = Duration::from_secs(5);
/// The same after a signal, counted from the signal (the run ends within a second).
const CONFLICT_END_WAIT_STOPPED: Duration = Duration::from_millis(400);

/// A future that ends the run, yielding the reason.
pub type Until = Pin<Box<dyn Future<Output = &'static str>>>;

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    lost: u64,
    unpaired: u64,
    pair_full: u64,
    fold_busy: u64,
}

/// The run a thread's kernel program may be folding repeats into: the last failed event it
/// sent (the kernel closes a thread's run before its next event).
struct Run {
    tag: u32,
    /// `None`: the event was filtered, and so are its repeats.
    seq: Option<u64>,
    event: crate::model::BindEvent,
    event_ns: u64,
    total: u64,
}

/// Threads whose run is remembered at most (about 600 bytes each); past it they are forgotten
/// and their later repeats counted in `repeats_unknown`.
const RUNS_MAX: usize = 8192;

struct State<'a> {
    sink: &'a mut dyn Sink,
    filter: &'a Filter,
    clock: Clock,
    summary: Summary,
    /// Events per errno (0 = OK); named only once, in the summary.
    by_errno: std::collections::BTreeMap<i32, u64>,
    reported_lost: u64,
    conflicts: Option<diagnoser::Submitter>,
    /// Events held back behind one waiting for its explanation (call order).
    hold: crate::hold::Hold,
    /// The `seq` of the last event written.
    seq: u64,
    /// Failed port allocations (kernel-function backends) waiting for the `bind()` or
    /// `listen()` they ran inside, by (tid, call_id): that call's explanation is theirs.
    allocations: std::collections::HashMap<(u32, u64), u64>,
    /// A looked-up call's `seq` → the failed allocation inside it that shares its answer.
    inner: std::collections::HashMap<u64, u64>,
    cgroups: crate::cgroup::Cache,
    /// The event being handled: each record is decoded over the one before, reusing its
    /// strings, and never moved.
    event: crate::model::BindEvent,
    /// Folding is on (tracepoint backend without `--every-call`).
    fold: bool,
    /// Each thread's latest run, by tid.
    runs: std::collections::HashMap<u32, Run>,
    /// Counts taken from `RUNS` at the tick, each written before the next record of its thread
    /// that follows its event (or at the end of the drain).
    ticked: Vec<RepeatRecord>,
}

impl State<'_> {
    fn handle(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.summary.received += 1;
        if bytes.len() == REPEAT_RECORD_SIZE
            && u32::from_ne_bytes(bytes[..4].try_into().unwrap_or_default()) == RECORD_REPEAT
        {
            match crate::decode::parse_repeat(bytes) {
                Ok(r) => {
                    self.release_ticked(Some(r.tid))?;
                    return self.repeat(&r);
                }
                Err(_) => {
                    self.summary.decode_errors += 1;
                    return Ok(());
                }
            }
        }
        // The thread's counts taken at the tick come before its records that follow them.
        if !self.ticked.is_empty() && bytes.len() >= 24 {
            let tid = u32::from_ne_bytes(bytes[20..24].try_into().unwrap_or_default());
            self.release_ticked(Some(tid))?;
        }
        let event = &mut self.event;
        if let Err(err) = decode::decode_into(bytes, &self.clock, event) {
            self.summary.decode_errors += 1;
            if self.summary.decode_errors == 1 {
                eprintln!("observer: undecodable record ({err}); counting further ones");
            }
            return Ok(());
        }
        if event.cgroup_id != 0 {
            event.cgroup = Some(self.cgroups.get(event.cgroup_id, event.pid));
        }
        // A failed call the kernel program may fold repeats of (see `fold` in observer-ebpf).
        let opens_run = self.fold
            && event.errno != 0
            && matches!(
                u16::from_ne_bytes([bytes[6], bytes[7]]),
                HOOK_TP_SYS_EXIT_BIND | HOOK_TP_SYS_EXIT_LISTEN
            );
        if !self.filter.matches(event) {
            self.summary.filtered += 1;
            if opens_run {
                self.open_run(bytes, None);
            }
            return Ok(());
        }
        self.summary.events += 1;
        // Events written with a field the kernel could not read (it names them).
        self.summary.read_errors += u64::from(!self.event.unreadable.is_empty());
        self.seq += 1;
        self.event.seq = self.seq;
        if opens_run {
            self.open_run(bytes, Some(self.seq));
        }
        let event = &mut self.event;
        *self.by_errno.entry(event.errno).or_default() += 1;
        let now = timefmt::monotonic_coarse_ns();
        if self.conflicts.is_some()
            && let Some(key) = port_allocation_failure(event)
        {
            // Explained by the `bind()` or `listen()` it ran inside, reported right after it.
            // (Bounded: a call whose record was lost leaves its allocation here.)
            if self.allocations.len() >= crate::hold::HOLD_MAX {
                self.allocations.clear();
            }
            self.allocations.insert(key, event.seq);
            self.hold.wait(event, now);
            return Ok(());
        }
        // A failure other than EADDRINUSE that the event alone explains: at once (it still
        // waits behind an earlier event that waits, in `hold.write`).
        let mut plan = None;
        if self.conflicts.is_some() && explain::wants(event) {
            match explain::plan(event) {
                explain::Plan::Now(c) => {
                    count_refusal(&mut self.summary, &c);
                    event.conflict = Some(*c);
                }
                explain::Plan::Lookup => plan = Some(explain::Plan::Lookup),
            }
        }
        if let Some(submitter) = self.conflicts.as_mut()
            && (diagnoser::wants(event) || plan.is_some() || sharing::wants(event))
        {
            let inner = event
                .call_id
                .and_then(|id| self.allocations.remove(&(event.tid, id)));
            match submitter.submit(event) {
                Submitted::Lookup => {
                    // It waits for its answer, which comes through `Done` by its `seq`.
                    self.hold.wait(event, now);
                    if let Some(inner) = inner {
                        self.inner.insert(event.seq, inner);
                    }
                    return Ok(());
                }
                Submitted::Repeat {
                    of,
                    time,
                    flags_differ,
                } => {
                    event.repeat_of = Some(of);
                    event.repeat_time = Some(time);
                    event.repeat_flags_differ = flags_differ;
                }
                Submitted::QueueFull => {
                    event.conflict = Some(Conflict::with_note(
                        "unavailable",
                        format!(
                            "not looked up: {} lookups were already waiting",
                            diagnoser::QUEUE
                        ),
                    ));
                }
            }
            if let Some(inner) = inner {
                let (of, time, differ) = (
                    event.repeat_of,
                    event.repeat_time.clone(),
                    event.repeat_flags_differ,
                );
                let conflict = event.conflict.clone();
                self.hold.settle(inner, now, &mut *self.sink, |e| {
                    e.repeat_of = of;
                    e.repeat_time = time;
                    e.repeat_flags_differ = differ;
                    e.conflict = conflict;
                })?;
            }
        }
        let result = self.hold.write(event, now, &mut *self.sink);
        // The next record is decoded over this one: what only some events have must not stay.
        event.repeat_of = None;
        event.repeat_time = None;
        event.repeat_flags_differ = false;
        event.conflict = None;
        result
    }

    /// A lookup's answer, attached to its event or written after it (and to the failed port
    /// allocation that ran inside it).
    fn answer(&mut self, seq: u64, conflict: Conflict) -> io::Result<()> {
        count_refusal(&mut self.summary, &conflict);
        let clock = self.clock;
        if let Some(inner) = self.inner.remove(&seq) {
            self.hold.answer(
                inner,
                conflict.clone(),
                timefmt::monotonic_coarse_ns(),
                || timefmt::format_unix_ns(clock.unix_ns(timefmt::monotonic_ns())),
                &mut *self.sink,
            )?;
        }
        self.hold.answer(
            seq,
            conflict,
            timefmt::monotonic_coarse_ns(),
            || timefmt::format_unix_ns(clock.unix_ns(timefmt::monotonic_ns())),
            &mut *self.sink,
        )
    }

    /// Remembers the event just decoded (`bytes`) as its thread's run.
    fn open_run(&mut self, bytes: &[u8], seq: Option<u64>) {
        let ts = u64::from_ne_bytes(bytes[8..16].try_into().unwrap_or_default());
        if self.runs.len() >= RUNS_MAX && !self.runs.contains_key(&self.event.tid) {
            self.runs.clear();
        }
        self.runs.insert(
            self.event.tid,
            Run {
                tag: run_tag(ts),
                seq,
                event: self.event.clone(),
                event_ns: ts,
                total: 0,
            },
        );
    }

    /// Writes a count of folded calls as a repeat record of its event.
    fn repeat(&mut self, r: &RepeatRecord) -> io::Result<()> {
        let reason = if r.reason == REPEAT_ENDED {
            "ended"
        } else {
            "tick"
        };
        let time = {
            let mut t = String::new();
            self.clock.format_monotonic_into(r.last_ns, &mut t);
            t
        };
        let now = timefmt::monotonic_coarse_ns();
        let Some(run) = self.runs.get_mut(&r.tid).filter(|run| run.tag == r.run) else {
            self.summary.repeats += r.count;
            self.summary.repeats_unknown += r.count;
            let repeat = crate::model::Repeat {
                record_type: "repeat",
                time,
                of: None,
                pid: r.pid,
                tid: r.tid,
                count: r.count,
                total: r.count,
                span_secs: 0.0,
                reason,
            };
            let blank = crate::model::BindEvent::blank();
            return self.hold.write_repeat(repeat, &blank, now, &mut *self.sink);
        };
        run.total += r.count;
        let Some(seq) = run.seq else {
            self.summary.filtered += r.count;
            return Ok(());
        };
        self.summary.repeats += r.count;
        *self.by_errno.entry(run.event.errno).or_default() += r.count;
        let repeat = crate::model::Repeat {
            record_type: "repeat",
            time,
            of: Some(seq),
            pid: r.pid,
            tid: r.tid,
            count: r.count,
            total: run.total,
            span_secs: r.last_ns.saturating_sub(run.event_ns) as f64 / 1e9,
            reason,
        };
        self.hold
            .write_repeat(repeat, &run.event, now, &mut *self.sink)
    }

    /// Writes the counts taken at the tick for thread `tid` (every thread: `None`) whose
    /// event has been read.
    fn release_ticked(&mut self, tid: Option<u32>) -> io::Result<()> {
        let mut i = 0;
        while i < self.ticked.len() {
            let r = self.ticked[i];
            let known = self.runs.get(&r.tid).is_some_and(|run| run.tag == r.run);
            if tid.is_none_or(|t| t == r.tid) && (known || tid.is_none()) {
                self.ticked.swap_remove(i);
                self.repeat(&r)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn report_lost(&mut self, lost: u64) -> io::Result<()> {
        if lost > self.reported_lost {
            let record = LostRecord {
                record_type: "lost",
                time: timefmt::format_unix_ns(self.clock.unix_ns(timefmt::monotonic_ns())),
                count: lost - self.reported_lost,
                total: lost,
            };
            self.reported_lost = lost;
            self.sink.lost(&record)?;
        }
        Ok(())
    }

    /// Hands the running totals to the sink (metrics keep them current).
    fn progress(&mut self, c: Counters) -> io::Result<()> {
        c.store(&mut self.summary);
        self.sink.progress(&self.summary)
    }
}

impl Counters {
    fn store(self, summary: &mut Summary) {
        summary.lost = self.lost;
        summary.unpaired = self.unpaired;
        summary.pair_full = self.pair_full;
        summary.fold_busy = self.fold_busy;
    }
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> Counters {
    let sum = |index: u32| {
        map.get(&index, 0)
            .map(|values| values.iter().sum::<u64>())
            .unwrap_or(0)
    };
    Counters {
        lost: sum(COUNTER_LOST) + sum(COUNTER_LOST_REPEATS),
        unpaired: sum(COUNTER_UNPAIRED),
        pair_full: sum(COUNTER_PAIR_FULL),
        fold_busy: sum(COUNTER_FOLD_BUSY),
    }
}

/// Drains the queued records. Returns the sink's error, if any.
fn drain(ring: &mut Ring, state: &mut State<'_>) -> io::Result<()> {
    ring.drain(|record| state.handle(record))?;
    state.sink.flush()
}

/// The tick's drain: what is queued, then the counts of runs still open (or stopped) taken
/// from `RUNS`, then what was queued before they were taken (their events among it).
fn drain_with_runs(
    ring: &mut Ring,
    runs: Option<&crate::runs::Runs>,
    state: &mut State<'_>,
) -> io::Result<()> {
    ring.drain(|record| state.handle(record))?;
    if let Some(runs) = runs {
        runs.take(&mut state.ticked);
        ring.drain(|record| state.handle(record))?;
        state.release_ticked(None)?;
    }
    state.sink.flush()
}

/// Runs until a signal, the deadline, or a closed output. Returns the summary it printed.
pub async fn run(mut loaded: Loaded, sink: &mut dyn Sink, mut opts: RunOptions) -> Result<Summary> {
    let started = Instant::now();
    let clock = Clock::now();
    let ring = match loaded
        .ebpf
        .take_map("EVENTS")
        .context("map EVENTS missing")?
    {
        Map::RingBuf(data) => Ring::new(data),
        _ => Err(io::Error::other("map EVENTS is not a ring buffer")),
    }
    .context("opening the ring buffer")?;
    let counters = PerCpuArray::<MapData, u64>::try_from(
        loaded
            .ebpf
            .take_map("COUNTERS")
            .context("map COUNTERS missing")?,
    )
    .context("opening the counters")?;
    let fold = loaded.fold;
    let runs = match fold {
        true => Some(crate::runs::Runs::map(
            loaded.ebpf.map("RUNS").context("map RUNS missing")?,
        )?),
        false => None,
    };
    // SAFETY: the ring owns its map fd (aya's `MapData` holds an `OwnedFd`) and the
    // `AsyncFd` owns the ring, so the fd stays open and the same until the `AsyncFd` is
    // dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("polling the ring buffer: {err}"))?;
    // Signals are caught by `crate::stop` from the start of the command; its self-pipe says
    // when one came (at once, if it came during start-up).
    let stop = match crate::stop::signalled_fd() {
        // SAFETY: the pipe's read end is never closed (it lives as long as the process), and
        // the AsyncFd only watches it.
        Some(fd) => Some(
            unsafe { AsyncFd::register_with_interest(StopFd(fd), Interest::READABLE) }
                .map_err(|err| anyhow::anyhow!("polling for signals: {err}"))?,
        ),
        None => None,
    };
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(TICK);

    let (submitter, mut done) = match opts.conflicts {
        true => {
            let (s, d) = diagnoser::start().context("starting the conflict lookup")?;
            (Some(s), Some(d))
        }
        false => (None, None),
    };
    let mut state = State {
        sink,
        filter: &opts.filter,
        clock,
        summary: Summary {
            record_type: "summary",
            ..Summary::default()
        },
        by_errno: Default::default(),
        reported_lost: 0,
        conflicts: submitter,
        hold: Default::default(),
        seq: 0,
        allocations: Default::default(),
        inner: Default::default(),
        cgroups: crate::cgroup::Cache::new(),
        event: crate::model::BindEvent::blank(),
        fold,
        runs: Default::default(),
        ticked: Vec::new(),
    };
    let start = StartRecord {
        record_type: "start",
        time: timefmt::format_unix_ns(clock.unix_ns(timefmt::monotonic_ns())),
        version: env!("CARGO_PKG_VERSION"),
        backend: loaded.backend,
        hooks: loaded.hooks.clone(),
        skipped_backends: loaded.skipped.clone(),
        kernel: kernel_release(),
        pid: std::process::id(),
        unknown_fields: loaded.unknown_fields.clone(),
        buffer_bytes: loaded.buffer_bytes,
        capabilities: crate::privilege::current()
            .map(|sets| crate::privilege::names(sets.effective))
            .unwrap_or_default(),
    };

    let outcome: io::Result<&'static str> = async {
        state.sink.start(&start)?;
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    drain(guard.get_inner_mut(), &mut state)?;
                    guard.clear_ready();
                }
                _ = ticker.tick() => {
                    drain_with_runs(ring.get_mut(), runs.as_ref(), &mut state)?;
                    state.clock.follow();
                    state.hold.flush(timefmt::monotonic_coarse_ns(), &mut *state.sink)?;
                    if let Some(submitter) = state.conflicts.as_mut() {
                        submitter.tick();
                    }
                    let c = read_counters(&counters);
                    state.report_lost(c.lost)?;
                    state.progress(c)?;
                }
                (seq, conflict) = diagnosed(&mut done) => {
                    state.answer(seq, conflict)?;
                    state.sink.flush()?;
                }
                _ = hold_expiry(state.hold.deadline()) => {
                    state.hold.flush(timefmt::monotonic_coarse_ns(), &mut *state.sink)?;
                    state.sink.flush()?;
                }
                _ = stopped(&stop) => return Ok("signal"),
                _ = sleep_until(deadline) => return Ok("duration"),
                reason = until(&mut opts.until) => return Ok(reason),
            }
        }
    }
    .await;

    let reason = match outcome {
        Ok(reason) => reason,
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => "output closed",
        Err(err) => return Err(err).context("writing events"),
    };
    // Records already queued were observed before the end: deliver them, then stop.
    let mut end: io::Result<()> = Ok(());
    if reason != "output closed" {
        end = drain_with_runs(ring.get_mut(), runs.as_ref(), &mut state);
    }
    if let (Some(submitter), Some(done)) = (state.conflicts.take(), done) {
        state.summary.conflict_lookups = submitter.submitted;
        state.summary.refusal_lookups = submitter.refusals_submitted;
        state.summary.share_lookups = submitter.shares_submitted;
        state.summary.conflict_queue_full = submitter.queue_full;
        state.summary.conflict_repeats = submitter.repeats;
        // A signal asks for an end within a second: lookups get what is left of it.
        let wait = match crate::stop::since_ns() {
            Some(ns) => CONFLICT_END_WAIT_STOPPED.saturating_sub(Duration::from_nanos(ns)),
            None => CONFLICT_END_WAIT,
        };
        let (answers, unfinished) = done.finish(submitter, wait).await;
        state.summary.conflict_unfinished = unfinished;
        if end.is_ok() && reason != "output closed" {
            end = answers
                .into_iter()
                .try_for_each(|(seq, conflict)| state.answer(seq, conflict));
        }
    }
    if end.is_ok() && reason != "output closed" {
        let time = timefmt::format_unix_ns(state.clock.unix_ns(timefmt::monotonic_ns()));
        end = state
            .hold
            .end(timefmt::monotonic_coarse_ns(), &time, &mut *state.sink);
    }
    state.summary.explanations_late = state.hold.late_explanations;
    state.summary.events_held = state.hold.held;
    state.summary.hold_max_ms = state.hold.max_ns / 1_000_000;
    let c = read_counters(&counters);
    if end.is_ok() && reason != "output closed" {
        end = state.report_lost(c.lost);
    }
    let mut summary = state.summary;
    summary.results = state
        .by_errno
        .iter()
        .map(|(errno, n)| (crate::errno::name(*errno).into_owned(), *n))
        .collect();
    summary.time = timefmt::format_unix_ns(state.clock.unix_ns(timefmt::monotonic_ns()));
    summary.duration_secs = started.elapsed().as_secs_f64();
    c.store(&mut summary);
    summary.cgroup_unresolved = state.cgroups.unresolved;
    summary.reason = reason.to_string();
    if end.is_ok() && reason != "output closed" {
        end = state.sink.summary(&summary);
    }
    match end {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err).context("writing events"),
        _ => Ok(summary),
    }
}

/// Counts an explanation of a failure other than EADDRINUSE once its answer is known.
fn count_refusal(summary: &mut Summary, c: &Conflict) {
    summary.port_shares += u64::from(c.sharing.is_some());
    match (&c.refusal, c.verdict) {
        (Some(_), "refused") => summary.refusals_explained += 1,
        (Some(_), _) => summary.refusals_unexplained += 1,
        (None, _) => {}
    }
}

/// A failed port allocation (`get_port`, kernel-function backends) that the call it ran inside
/// will explain: its (tid, call_id).
fn port_allocation_failure(e: &crate::model::BindEvent) -> Option<(u32, u64)> {
    let call = e.call_id?;
    (e.op == crate::model::Op::GetPort && e.errno == libc::EADDRINUSE && e.is_inet())
        .then_some((e.tid, call))
}

/// Completes when the oldest held event has waited its time (coarse monotonic nanoseconds).
async fn hold_expiry(deadline: Option<u64>) {
    match deadline {
        Some(at) => {
            let wait = at.saturating_sub(timefmt::monotonic_coarse_ns());
            // The coarse clock lags by up to a tick: never wake before the deadline it reads.
            tokio::time::sleep(Duration::from_nanos(wait) + Duration::from_millis(5)).await
        }
        None => std::future::pending().await,
    }
}

async fn diagnosed(done: &mut Option<diagnoser::Done>) -> (u64, Conflict) {
    match done {
        Some(done) => done.next().await,
        None => std::future::pending().await,
    }
}

/// The self-pipe of `crate::stop`, as tokio polls it (it stays open for the process).
struct StopFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for StopFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Completes once a stop signal was caught; never without `crate::stop::install`.
async fn stopped(stop: &Option<AsyncFd<StopFd>>) {
    match stop {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(stop: &mut Option<Until>) -> &'static str {
    match stop {
        Some(stop) => stop.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Completes when stdout is a pipe or socket whose reader has gone (EPOLLERR), so that an
/// idle `observer watch | head -1` ends when `head` does, not at the next bind on the host.
/// Never completes for a file or a terminal.
pub fn stdout_closed() -> Until {
    struct Stdout;
    impl std::os::fd::AsRawFd for Stdout {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            libc::STDOUT_FILENO
        }
    }
    Box::pin(async {
        // SAFETY: fstat writes only into `st`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let is_stream = unsafe { libc::fstat(libc::STDOUT_FILENO, &mut st) } == 0
            && matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK);
        if is_stream {
            // SAFETY: fd 1 stays open for the whole process; the registration only watches it
            // and is removed when the AsyncFd drops, without closing the fd.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(Stdout, Interest::ERROR) } {
                if fd.ready(Interest::ERROR).await.is_ok() {
                    return "output closed";
                }
            }
        }
        std::future::pending().await
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
