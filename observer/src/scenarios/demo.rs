//! `observer demo`: attach the programs, run the scenario workload in a child process (the
//! collector never reports its own process), and check every observed call against what the
//! kernel told the workload.

use super::check::{self, Checked};
use super::{Scenario, StepOutcome};
use crate::backend;
use crate::collector::{self, RunOptions};
use crate::filter::Filter;
use crate::model::Summary;
use crate::sink::CollectSink;
use anyhow::{Context as _, Result, bail};
use std::cell::RefCell;
use std::rc::Rc;

/// What the demo found.
pub struct DemoRun {
    pub checked: Checked,
    pub summary: Summary,
    /// The backend that observed the run.
    pub backend: String,
}

/// Runs `scenarios` (all of them when empty) under the observer.
pub fn run(names: &[String], buffer_bytes: u32, choice: backend::Choice) -> Result<DemoRun> {
    let mut args = vec!["scenarios".to_string(), "run".into(), "--json".into()];
    args.extend(names.iter().cloned());
    let observed = observe(choice, buffer_bytes, &args)?;
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
    let loaded = backend::load(choice, buffer_bytes, false)?;
    for skipped in &loaded.skipped {
        eprintln!("observer: skipped {}: {}", skipped.backend, skipped.reason);
    }
    let backend_name = loaded.backend.to_string();
    let exe = std::env::current_exe().context("finding the observer binary")?;
    let output: Rc<RefCell<Option<std::io::Result<std::process::Output>>>> = Rc::default();
    let slot = output.clone();
    let args = args.to_vec();
    // Polled only once the programs are attached: the workload starts after that.
    let workload = async move {
        // A plain child waited for on a thread: tokio's process support would set up its
        // signal handling, which the collector does not use (see `crate::stop`).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::process::Command::new(exe)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let result = match spawned {
            Ok(child) => {
                let running = Running(Some(child.id()));
                std::thread::spawn(move || {
                    let _ = tx.send(child.wait_with_output());
                });
                let result = rx
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the workload's waiter ended")));
                std::mem::forget(running);
                result
            }
            Err(err) => Err(err),
        };
        *slot.borrow_mut() = Some(result);
        "workload finished"
    };
    let mut sink = CollectSink::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let opts = RunOptions {
        filter: Filter::default(),
        duration: None,
        until: Some(Box::pin(workload)),
        conflicts: false,
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
    Ok(Observed {
        output,
        events: sink.events,
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

/// Runs scenarios in this process without the observer.
pub fn run_workload(scenarios: &[Scenario]) -> Result<Vec<StepOutcome>> {
    let mut all = Vec::new();
    for scenario in scenarios {
        let outcomes = super::run(scenario)
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
