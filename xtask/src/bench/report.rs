//! `BENCH.md`: the machine, the ratio table, the throughput run, the start times, and each
//! target of issue 7 with whether this run met it.

use super::tracer::Tracer;
use super::{LOADS, Samples, Throughput, median};
use std::fmt::Write as _;
use std::time::Duration;

pub struct Input<'a> {
    pub samples: &'a [Samples],
    /// The full-rate runs.
    pub throughput: &'a [Throughput],
    pub attach: &'a [Duration],
    pub rounds: usize,
    /// Records the observer delivered and lost during the timed rounds above.
    pub timed: (u64, u64),
    /// The scale part, when it ran.
    pub scale: Option<(&'a [super::scale::WhyResult], &'a super::scale::StormResult)>,
}

fn ns(input: &Input<'_>, mode: &str, tracer: Tracer) -> Option<f64> {
    input
        .samples
        .iter()
        .find(|s| s.load.mode == mode && s.tracer == tracer)
        .map(|s| median(&s.ns))
}

fn ratio(input: &Input<'_>, mode: &str, tracer: Tracer) -> Option<f64> {
    Some(ns(input, mode, tracer)? / ns(input, mode, Tracer::None)?)
}

/// The load table of some loads alone (`--only-load`), with each ratio to the floor too.
pub fn loads_only(samples: &[Samples], rounds: usize) -> String {
    let input = Input {
        samples,
        throughput: &[],
        attach: &[],
        rounds,
        timed: (0, 0),
        scale: None,
    };
    let mut out = String::new();
    load_table(&mut out, &input);
    for load in LOADS {
        if let (Some(obs), Some(floor)) = (
            ns(&input, load.mode, Tracer::Observer),
            ns(&input, load.mode, Tracer::Floor),
        ) {
            let _ = writeln!(
                out,
                "\n{}: observer {:+.1}% against the floor (medians of {rounds} rounds)",
                load.label,
                (obs / floor - 1.0) * 100.0
            );
        }
    }
    out
}

fn load_table(out: &mut String, input: &Input<'_>) {
    let tracers: Vec<Tracer> = [
        Tracer::None,
        Tracer::Floor,
        Tracer::Observer,
        Tracer::Bpftrace,
    ]
    .into_iter()
    .filter(|t| input.samples.iter().any(|s| s.tracer == *t))
    .collect();
    let _ = write!(out, "| load (ns per call) |");
    for t in &tracers {
        let _ = write!(out, " {} |", t.label());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(tracers.len()));
    for load in LOADS {
        if !input.samples.iter().any(|s| s.load.mode == load.mode) {
            continue;
        }
        let _ = write!(out, "| {} |", load.label);
        for &t in &tracers {
            match (ns(input, load.mode, t), ratio(input, load.mode, t)) {
                (Some(v), Some(r)) if t != Tracer::None => {
                    let _ = write!(out, " {v:.0} ({r:.2}×) |");
                }
                (Some(v), _) => {
                    let _ = write!(out, " {v:.0} |");
                }
                _ => out.push_str(" – |"),
            }
        }
        let _ = writeln!(out);
    }
}

pub fn render(input: &Input<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench`. Machine: {}, {} CPUs; kernel {}. Load pinned to CPU 0, \
         watcher to CPU 1; medians of {} interleaved rounds; ratios are to \"no observer\" in \
         the same run.\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        input.rounds
    );
    load_table(&mut out, input);
    let (received, lost) = input.timed;
    let _ = writeln!(
        out,
        "\nDuring these rounds the observer delivered {received} records and lost {lost} \
         (a lost record costs the kernel program less than a delivered one, so losses would \
         flatter the figures above)."
    );

    let runs = input.throughput;
    let _ = writeln!(
        out,
        "\nThroughput: the failing-bind loop at full speed for {:.0} s, the observer writing \
         JSON Lines to a file; {} runs.\n",
        runs.first().map_or(0.0, |t| t.seconds),
        runs.len()
    );
    let _ = writeln!(
        out,
        "| calls made | records received | lost | collector CPU per event (user + system) | \
         collector peak RSS | events held for call order | longest hold | late explanations |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} ns ({:.0} + {:.0}) | {:.1} MiB | {} | {} ms | {} |",
            t.produced,
            t.received,
            t.lost,
            t.user_ns_per_event + t.system_ns_per_event,
            t.user_ns_per_event,
            t.system_ns_per_event,
            t.max_rss_bytes as f64 / (1024.0 * 1024.0),
            t.held,
            t.hold_max_ms,
            t.late
        );
    }
    let _ = writeln!(
        out,
        "\nEvents are written in call order: the first failure of the loop waits for its \
         conflict lookup, and the events read after it wait behind it (at most 500 ms and 4096 \
         events; then it goes out with a pending conflict and its answer follows as an \
         `explanation` record). The columns above say how many events waited, the longest \
         wait, and how many answers came late."
    );
    let _ = writeln!(
        out,
        "\nUser time is the collector's own work (drain, decode, JSON); system time is mostly \
         the kernel copying its output into the page cache. These Firecracker VMs back guest \
         memory lazily and take freed pages back within seconds, so a write into a new \
         page-cache page costs a host fault (dd: about 370 MB/s to a new file, 4 GB/s over \
         one it wrote just before). The bench therefore has the observer overwrite a file it \
         wrote just before, as a long-running observer's log on a bare-metal host costs; \
         into fresh pages the same run loses events. They also reclaim idle page cache within \
         seconds; the observer writes whole pages into a file, so overwriting a reclaimed page \
         does not read it back from disk."
    );
    let mut attach: Vec<f64> = input.attach.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    attach.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "\nStart (launch to `start` record): median {:.0} ms, worst {:.0} ms over {} launches.\n",
        median(&attach),
        attach.last().copied().unwrap_or(0.0),
        attach.len()
    );

    let _ = writeln!(out, "| target | this run | met |");
    let _ = writeln!(out, "|---|---:|:---:|");
    let mut target = |name: &str, value: String, met: bool| {
        let _ = writeln!(
            out,
            "| {name} | {value} | {} |",
            if met { "yes" } else { "no" }
        );
    };
    let fail = ratio(input, "failbind", Tracer::Observer).unwrap_or(f64::INFINITY);
    target(
        "failing bind ≤ 1.5× without observer",
        format!("{fail:.2}×"),
        fail <= 1.5,
    );
    if let (Some(obs), Some(floor)) = (
        ns(input, "connect", Tracer::Observer),
        ns(input, "connect", Tracer::Floor),
    ) {
        let over = obs / floor - 1.0;
        target(
            "socket + connect + close within 5% of the floor",
            format!("{:+.1}%", over * 100.0),
            over <= 0.05,
        );
    }
    let getpid = ratio(input, "getpid", Tracer::Observer).unwrap_or(f64::INFINITY);
    target(
        "getpid() ≤ 10% slower",
        format!("{:+.1}%", (getpid - 1.0) * 100.0),
        getpid <= 1.10,
    );
    let lost: Vec<String> = runs.iter().map(|t| t.lost.to_string()).collect();
    target(
        "no loss at full rate",
        format!("{} lost", lost.join(" / ")),
        runs.iter().all(|t| t.lost == 0),
    );
    let per_event = |f: fn(&Throughput) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (user, system) = (
        per_event(|t| t.user_ns_per_event),
        per_event(|t| t.system_ns_per_event),
    );
    let cpu = per_event(|t| t.user_ns_per_event + t.system_ns_per_event);
    target(
        "collector CPU ≤ 400 ns per event",
        format!("{cpu:.0} ns (median; {user:.0} user + {system:.0} system)"),
        cpu <= 400.0,
    );
    let rss = runs.iter().map(|t| t.max_rss_bytes).max().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    target(
        "peak RSS ≤ 24 MiB",
        format!("{rss:.1} MiB (largest)"),
        rss <= 24.0,
    );
    let worst = attach.last().copied().unwrap_or(f64::INFINITY);
    target(
        "attached ≤ 300 ms after launch",
        format!("{worst:.0} ms (worst)"),
        worst <= 300.0,
    );
    if let Some((why, storm)) = input.scale {
        scale(&mut out, why, storm);
    }
    out
}

/// The scale part alone (`--only-scale`).
pub fn scale_only(why: &[super::scale::WhyResult], storm: &super::scale::StormResult) -> String {
    let mut out = String::new();
    scale(&mut out, why, storm);
    out
}

/// The scale part: `why` on a big host beside `ss`, and the storm of failures.
fn scale(out: &mut String, why: &[super::scale::WhyResult], storm: &super::scale::StormResult) {
    let _ = writeln!(
        out,
        "\n## Scale\n\n`observer why 127.0.0.1:PORT --netns ...` for a port in a private \
         namespace (median of 3 runs), beside `ss -tlnp sport = :PORT` in the same namespace \
         (what a person would otherwise run; `-p` also reads every descriptor on the host). \
         The descriptors are dups of /dev/null held by processes of their own; the \
         connections are on loopback.\n"
    );
    let _ = writeln!(
        out,
        "| case | `why` | `why` peak RSS | table lines | JSON bytes | `ss -tlnp` | why / ss |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for w in why {
        let _ = writeln!(
            out,
            "| {} | {:.0} ms | {:.1} MiB | {} | {} | {:.0} ms | {:.2} |",
            w.label,
            w.why_ms,
            w.why_rss_mib,
            w.lines,
            w.json_bytes,
            w.ss_ms,
            w.why_ms / w.ss_ms.max(0.001)
        );
    }
    let _ = writeln!(
        out,
        "\n`observer watch` while {} namespaces each fail one bind at once (EADDRINUSE \
         against a listener in the same namespace): {} failures seen, {} ({:.1} %) explained \
         within {} s of the start, {} explained in all, the last after {:.0} ms; {} lost.",
        storm.namespaces,
        storm.failures,
        storm.explained_in_window,
        100.0 * storm.explained_in_window as f64 / storm.namespaces.max(1) as f64,
        super::scale::STORM_WINDOW.as_secs(),
        storm.explained,
        storm.last_ms,
        storm.lost
    );
    for (note, n) in &storm.unexplained {
        let _ = writeln!(out, "- not explained ({n}): {note}");
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
