//! `observer demo`: attach the programs, run the scenario workload in a child process (the
//! collector never reports its own process), and check every observed call against what the
//! kernel told the workload, and every explanation of a failed call against the declared rule.
//!
//! The workload runs paced (`scenarios run --pace`): after each failed call it waits, keeping
//! its sockets, until the demo has that call's explanation (at most [`EXPLAIN_WAIT`]; a late
//! one, written as an `explanation` record after its event, counts when it comes in time), so
//! that the lookup finds the sockets in the way before the next scenario closes them.

use super::check::{self, Checked};
use super::{Scenario, StepOutcome};
use crate::backend;
use crate::collector::{self, RunOptions};
use crate::filter::Filter;
use crate::model::Summary;
use crate::model::{BindEvent, ExplanationRecord, LostRecord, StartRecord};
use crate::sink::{CollectSink, Sink};
use anyhow::{Context as _, Result, bail};
use std::cell::RefCell;
use std::io::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// How long the demo waits for the explanation of one failed call before it lets the
/// workload go on (the explanation is then judged missing, unless it comes by the end).
pub const EXPLAIN_WAIT: Duration = Duration::from_secs(10);

/// What the demo found.
pub struct DemoRun {
    pub checked: Checked,
    pub summary: Summary,
    /// The backend that observed the run.
    pub backend: String,
}

/// Runs `scenarios` (all of them when empty) under the observer.
pub fn run(names: &[String], buffer_bytes: u32, choice: backend::Choice) -> Result<DemoRun> {
    let mut args = vec![
        "scenarios".to_string(),
        "run".into(),
        "--json".into(),
        "--pace".into(),
    ];
    args.extend(names.iter().cloned());
    let observed = observe_with(choice, buffer_bytes, &args, true)?;
    let outcomes = parse_outcomes(&observed.output.stdout)?;
    let allocations = observed.backend != "tracepoint";
    Ok(DemoRun {
        checked: check::check(&outcomes, &observed.events, allocations),
        summary: observed.summary,
        backend: observed.backend,
    })
}

/// What a child observer process did, and what was seen of it.
pub struct Observed {
    pub output: std::process::Output,
    pub events: Vec<crate::model::BindEvent>,
    pub summary: Summary,
    pub backend: String,
}

/// Loads the backend, then runs this binary with `args` as the workload (in a child: the
/// collector never reports its own process) and collects every event until it ends.
pub fn observe(choice: backend::Choice, buffer_bytes: u32, args: &[String]) -> Result<Observed> {
    observe_with(choice, buffer_bytes, args, false)
}

/// A [`CollectSink`] the workload's driver reads while the collector fills it.
struct Shared(Rc<RefCell<CollectSink>>);

impl Sink for Shared {
    fn start(&mut self, s: &StartRecord) -> std::io::Result<()> {
        self.0.borrow_mut().start(s)
    }
    fn event(&mut self, e: &BindEvent) -> std::io::Result<()> {
        self.0.borrow_mut().event(e)
    }
    fn explanation(&mut self, x: &ExplanationRecord) -> std::io::Result<()> {
        self.0.borrow_mut().explanation(x)
    }
    fn lost(&mut self, l: &LostRecord) -> std::io::Result<()> {
        self.0.borrow_mut().lost(l)
    }
    fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        self.0.borrow_mut().summary(s)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (at most [`EXPLAIN_WAIT`]) until the event of the failed step `line` (a workload
/// record) is in `sink` with its final explanation.
async fn explained(line: &str, sink: &RefCell<CollectSink>) {
    let Ok(o) = serde_json::from_str::<StepOutcome>(line) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + EXPLAIN_WAIT;
    loop {
        let done = {
            let sink = sink.borrow();
            check::last_event_of(&o, &sink.events)
                .is_some_and(|e| check::is_final(check::explanation_of(&sink.events, e)))
        };
        if done || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A failed `bind`/`listen` of the workload, which waits for its acknowledgement.
fn waits_for_ack(line: &str) -> bool {
    serde_json::from_str::<StepOutcome>(line).is_ok_and(|o| o.op.is_some() && o.errno != 0)
}

/// Loads the backend and runs the workload `args` under it, as [`observe`]; `paced`: the
/// workload is a paced scenario run whose failed calls are acknowledged once explained, and
/// the collector looks up explanations.
fn observe_with(
    choice: backend::Choice,
    buffer_bytes: u32,
    args: &[String],
    paced: bool,
) -> Result<Observed> {
    let loaded = backend::load(choice, buffer_bytes, false)?;
    for skipped in &loaded.skipped {
        eprintln!("observer: skipped {}: {}", skipped.backend, skipped.reason);
    }
    let backend_name = loaded.backend.to_string();
    let exe = std::env::current_exe().context("finding the observer binary")?;
    let output: Rc<RefCell<Option<std::io::Result<std::process::Output>>>> = Rc::default();
    let slot = output.clone();
    let args = args.to_vec();
    let collected: Rc<RefCell<CollectSink>> = Rc::default();
    let events = collected.clone();
    // Polled only once the programs are attached: the workload starts after that.
    let workload = async move {
        // A plain child waited for on a thread: tokio's process support would set up its
        // signal handling, which the collector does not use (see `crate::stop`).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stdin = if paced {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        };
        let spawned = std::process::Command::new(exe)
            .args(&args)
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let result = match spawned {
            Ok(mut child) => {
                let running = Running(Some(child.id()));
                // Paced: its records are read as they come, each failure acknowledged once
                // explained; `stdout` is then what was read.
                let mut ack = child.stdin.take();
                let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
                // Taken only when paced: otherwise `wait_with_output` reads it (a pipe taken
                // and dropped here would end the workload with EPIPE).
                if let Some(out) = child.stdout.take_if(|_| paced) {
                    std::thread::spawn(move || {
                        use std::io::BufRead as _;
                        for line in std::io::BufReader::new(out).lines() {
                            let Ok(line) = line else { break };
                            if lines_tx.send(line).is_err() {
                                break;
                            }
                        }
                    });
                } else {
                    drop(lines_tx);
                }
                std::thread::spawn(move || {
                    let _ = tx.send(child.wait_with_output());
                });
                let mut stdout = Vec::new();
                while let Some(line) = lines.recv().await {
                    if waits_for_ack(&line) {
                        explained(&line, &events).await;
                        if let Some(pipe) = ack.as_mut() {
                            // A workload that has gone is seen by its waiter.
                            let _ = pipe.write_all(b"\n").and_then(|()| pipe.flush());
                        }
                    }
                    stdout.extend_from_slice(line.as_bytes());
                    stdout.push(b'\n');
                }
                drop(ack);
                let result = rx
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the workload's waiter ended")));
                std::mem::forget(running);
                result.map(|mut out| {
                    if paced {
                        out.stdout = stdout;
                    }
                    out
                })
            }
            Err(err) => Err(err),
        };
        *slot.borrow_mut() = Some(result);
        "workload finished"
    };
    let mut sink = Shared(collected.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let opts = RunOptions {
        filter: Filter::default(),
        duration: None,
        until: Some(Box::pin(workload)),
        conflicts: paced,
    };
    let summary = runtime.block_on(collector::run(loaded, &mut sink, opts))?;
    let output = output
        .borrow_mut()
        .take()
        .context("the workload did not run")?
        .context("starting the workload")?;
    if !output.status.success() && output.stdout.is_empty() {
        bail!(
            "the workload failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    drop(sink);
    let events = std::mem::take(&mut collected.borrow_mut().events);
    Ok(Observed {
        output,
        events,
        summary,
        backend: backend_name,
    })
}

/// The workload's `step` records (other record types are skipped).
pub fn parse_outcomes(stdout: &[u8]) -> Result<Vec<StepOutcome>> {
    let text = std::str::from_utf8(stdout).context("workload output is not UTF-8")?;
    let mut outcomes = Vec::new();
    for line in text.lines().filter(|l| l.contains("\"type\":\"step\"")) {
        outcomes
            .push(serde_json::from_str(line).with_context(|| format!("bad step record {line}"))?);
    }
    Ok(outcomes)
}

/// Runs scenarios in this process without the observer (`pace`: see [`super::run`]).
pub fn run_workload(scenarios: &[Scenario], pace: bool) -> Result<Vec<StepOutcome>> {
    let mut all = Vec::new();
    for scenario in scenarios {
        let outcomes = super::run(scenario, pace)
            .with_context(|| format!("scenario {}: setting up", scenario.name))?;
        all.extend(outcomes);
    }
    Ok(all)
}

/// A workload still running when the run ends (a signal): killed, as its results are no use.
struct Running(Option<u32>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on our own child, not yet reaped (its waiter thread reaps it only
            // after it exits, and this runs only while that has not been seen).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}
