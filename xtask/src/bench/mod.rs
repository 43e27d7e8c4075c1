//! `cargo xtask bench`: what the observer costs the programs it watches, as ratios taken in
//! one run (these machines are shared and noisy, so absolute times from different runs do not
//! compare). Each round runs every load under every watcher, in turn, and the medians are
//! compared; the throughput run and the start times come after. Writes `BENCH.md`.

mod report;
mod scale;
mod tracer;

use crate::util::{cargo, run};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use tracer::{Tracer, pinned};

/// The CPU the load runs on.
const LOAD_CPU: usize = 0;

/// One timed loop of the load generator.
#[derive(Clone, Copy)]
pub struct Load {
    pub mode: &'static str,
    pub label: &'static str,
    pub iterations: u64,
}

pub const LOADS: [Load; 4] = [
    Load {
        mode: "failbind",
        label: "failing bind (EADDRINUSE)",
        iterations: 1_000_000,
    },
    Load {
        mode: "realbind",
        label: "socket + bind(port 0) + close",
        iterations: 100_000,
    },
    Load {
        mode: "connect",
        label: "socket + connect + close (loopback)",
        iterations: 30_000,
    },
    Load {
        mode: "getpid",
        label: "getpid() (everyone else)",
        iterations: 5_000_000,
    },
];

/// How many times the full-rate run is made.
pub(crate) const THROUGHPUT_RUNS: usize = 3;

pub struct Options {
    pub rounds: usize,
    /// Seconds of the throughput run.
    pub seconds: f64,
    /// Run the scale part (`observer why` on a big host, a storm of failures).
    pub scale: bool,
    /// Only the scale part, printed and not written to BENCH.md (for working on it).
    pub only_scale: bool,
    /// Only this load's rows (its `mode`), printed and not written to BENCH.md.
    pub only_load: Option<String>,
}

/// ns per call for one load under one watcher, one sample per round.
pub struct Samples {
    pub load: Load,
    pub tracer: Tracer,
    pub ns: Vec<f64>,
}

/// What one mode of the observer delivered during the timed rounds (summed summaries).
#[derive(Default, Clone, Copy)]
pub struct Delivered {
    /// Records received from the kernel (events and repeat records).
    pub records: u64,
    /// Events written.
    pub events: u64,
    /// Calls folded into repeat records.
    pub repeats: u64,
    /// Calls lost.
    pub lost: u64,
}

/// The full-rate run with the observer writing JSON Lines to a file.
pub struct Throughput {
    /// `--every-call`, or folding (the default).
    pub every_call: bool,
    pub seconds: f64,
    pub produced: u64,
    pub received: u64,
    /// Events written, calls folded into repeat records, calls filtered out (other
    /// processes' binds during the run).
    pub events: u64,
    pub repeats: u64,
    pub filtered: u64,
    pub lost: u64,
    /// Collector CPU per record received: user (its own work) and system (the kernel's, mostly
    /// the write of its output).
    pub user_ns_per_event: f64,
    pub system_ns_per_event: f64,
    pub max_rss_bytes: u64,
    /// Call order around pending explanations (the summary's `events_held`, `hold_max_ms`,
    /// `explanations_late`): events written behind one waiting for its lookup, the longest
    /// wait, and explanations that came as their own record.
    pub held: u64,
    pub hold_max_ms: u64,
    pub late: u64,
}

pub fn bench(opts: &Options) -> Result<()> {
    let bpftrace = match crate::setup::apt_install(&["bpftrace"]) {
        Ok(()) => true,
        Err(err) => {
            eprintln!("xtask: bpftrace unavailable ({err:#}); its column is left out");
            false
        }
    };
    run(cargo().args(["build", "--release", "--package", "observer"]))?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "xtask",
        "--bin",
        "bench-load",
        "--bin",
        "bench-scale",
    ]))?;
    let root = crate::root()?;
    let bins = root.join("target/release");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).context("creating target/bench")?;
    let observer = bins.join("observer");
    let load_bin = bins.join("bench-load");

    if opts.only_scale {
        let scale_bin = bins.join("bench-scale");
        let why = scale::why_cases(&observer, &scale_bin)?;
        let storm = scale::storm(&observer, &scale_bin)?;
        print!("{}", report::scale_only(&why, &storm));
        return Ok(());
    }
    let mut tracers = vec![Tracer::None, Tracer::Observer, Tracer::EveryCall];
    if bpftrace {
        tracers.insert(1, Tracer::Floor);
        tracers.push(Tracer::Bpftrace);
    }
    let loads: Vec<Load> = LOADS
        .iter()
        .copied()
        .filter(|l| opts.only_load.as_deref().is_none_or(|m| m == l.mode))
        .collect();
    if loads.is_empty() {
        bail!(
            "no load named {:?} (the loads: {})",
            opts.only_load,
            LOADS.map(|l| l.mode).join(", ")
        );
    }
    let mut samples: Vec<Samples> = loads
        .iter()
        .flat_map(|load| {
            tracers.iter().map(|&tracer| Samples {
                load: *load,
                tracer,
                ns: Vec::new(),
            })
        })
        .collect();
    let mut attach = Vec::new();
    let mut timed: Vec<(Tracer, Delivered)> = Vec::new();
    for round in 1..=opts.rounds {
        eprintln!("xtask: bench round {round} of {}", opts.rounds);
        for &tracer in &tracers {
            // Room for the JSON of one round's loads (about 550 bytes per event).
            let room = if tracer.is_observer() {
                loads
                    .iter()
                    // Neither makes an event (a connect that succeeds is none).
                    .filter(|l| l.mode != "getpid" && l.mode != "connect")
                    .map(|l| l.iterations * 600)
                    .sum()
            } else {
                0
            };
            let running = tracer::start(tracer, &observer, &dir, room)?;
            if let (true, Some(r)) = (tracer.is_observer(), &running) {
                attach.push(r.attach);
            }
            for load in &loads {
                let (_, ns) = load_run(&load_bin, load.mode, &load.iterations.to_string())?;
                let slot = samples
                    .iter_mut()
                    .find(|s| s.tracer == tracer && s.load.mode == load.mode)
                    .context("sample slot")?;
                slot.ns.push(ns);
            }
            if let Some(running) = running {
                let stopped = tracer::stop(running)?;
                if tracer.is_observer() {
                    // A lost record costs the program less than a delivered one: say how many.
                    let summary = delivered(&stopped.output)?;
                    let d = match timed.iter_mut().find(|(t, _)| *t == tracer) {
                        Some((_, d)) => d,
                        None => {
                            timed.push((tracer, Delivered::default()));
                            &mut timed.last_mut().context("just pushed")?.1
                        }
                    };
                    d.records += summary.get("received");
                    d.events += summary.get("events");
                    d.repeats += summary.get("repeats");
                    d.lost += summary.get("lost");
                }
            }
        }
    }
    if opts.only_load.is_some() {
        print!("{}", report::loads_only(&samples, opts.rounds));
        return Ok(());
    }
    // The full-rate run is the noisiest measure here (one hiccup of the VM, and the ring
    // overflows): three of them, each reported.
    let mut runs = Vec::new();
    for every_call in [false, true] {
        for run in 1..=THROUGHPUT_RUNS {
            eprintln!(
                "xtask: bench throughput run {run} of {THROUGHPUT_RUNS} ({} s{})",
                opts.seconds,
                if every_call { ", --every-call" } else { "" }
            );
            runs.push(throughput(
                &observer,
                &load_bin,
                &dir,
                opts.seconds,
                every_call,
            )?);
        }
    }

    let scale = match opts.scale {
        true => {
            let scale_bin = bins.join("bench-scale");
            Some((
                scale::why_cases(&observer, &scale_bin)?,
                scale::storm(&observer, &scale_bin)?,
            ))
        }
        false => None,
    };

    let text = report::render(&report::Input {
        samples: &samples,
        throughput: &runs,
        attach: &attach,
        rounds: opts.rounds,
        timed: &timed,
        scale: scale.as_ref().map(|(w, s)| (w.as_slice(), s)),
    });
    print!("{text}");
    std::fs::write(root.join("BENCH.md"), &text).context("writing BENCH.md")?;
    eprintln!("xtask: wrote BENCH.md");
    Ok(())
}

/// Runs the load generator once; returns (calls, ns per call).
fn load_run(bin: &Path, mode: &str, bound: &str) -> Result<(u64, f64)> {
    let out = pinned(&mut Command::new(bin), LOAD_CPU)
        .args([mode, &LOAD_CPU.to_string(), bound])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "bench-load {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let field = |name: &str| -> Result<f64> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bench-load printed no {name}: {stdout:?}"))
    };
    Ok((field("calls")? as u64, field("ns_per_call")?))
}

/// The failing-bind loop at full speed for `seconds`, the observer writing JSON to a file.
fn throughput(
    observer: &Path,
    load_bin: &Path,
    dir: &Path,
    seconds: f64,
    every_call: bool,
) -> Result<Throughput> {
    // About 550 bytes per event at up to 2 million events a second.
    let room = (seconds * 2e6 * 600.0) as u64;
    let (tracer, room) = match every_call {
        true => (Tracer::EveryCall, room),
        false => (Tracer::Observer, 64 << 20),
    };
    let running =
        tracer::start(tracer, observer, dir, room)?.context("the observer did not start")?;
    let (calls, _) = load_run(load_bin, "failbind", &format!("{seconds}s"))?;
    // The listener's bind and listen, and the first conflicting bind, come before the loop.
    let produced = calls + 3;
    let stopped = tracer::stop(running)?;
    let summary = delivered(&stopped.output)?;
    let (received, lost) = (summary.get("received"), summary.get("lost"));
    // Per record delivered with `--every-call` (one per call); folding, per call made (a few
    // records stand for millions of calls).
    let per = if every_call { received } else { produced };
    let per_event = |d: std::time::Duration| d.as_nanos() as f64 / per.max(1) as f64;
    Ok(Throughput {
        every_call,
        seconds,
        produced,
        received,
        events: summary.get("events"),
        repeats: summary.get("repeats"),
        filtered: summary.get("filtered"),
        lost,
        user_ns_per_event: per_event(stopped.user),
        system_ns_per_event: per_event(stopped.system),
        max_rss_bytes: stopped.max_rss_bytes,
        held: summary.get("events_held"),
        hold_max_ms: summary.get("hold_max_ms"),
        late: summary.get("explanations_late"),
    })
}

/// The observer's summary record.
struct SummaryRecord(serde_json::Value);

impl SummaryRecord {
    /// A count of the summary (0 when absent).
    fn get(&self, key: &str) -> u64 {
        self.0.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
    }
}

/// The observer's summary record: its last line, so only the end of the output (gigabytes
/// after a full-rate run) is read.
fn delivered(path: &PathBuf) -> Result<SummaryRecord> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().context("output size")?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))
        .context("seeking to the end of the output")?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&tail);
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("\"type\":\"summary\""))
        .with_context(|| format!("no summary record in {}", path.display()))?;
    serde_json::from_str(last)
        .map(SummaryRecord)
        .context("parsing the summary record")
}

/// Median of the samples (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
