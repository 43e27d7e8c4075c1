//! The scale part of `cargo xtask bench`: what an explanation costs on a big host. `observer
//! why` for a port with one listener while the host holds many unrelated descriptors, and for
//! a port with many established or TIME_WAIT sockets on it — wall time, peak memory and how
//! much it prints — beside `ss -tlnp sport = :PORT` in the same namespace, the reference a
//! person would otherwise use; then `observer watch` while a thousand namespaces each fail a
//! bind at once: how many of those failures carry their explanation within 10 s, and when the
//! last one came. The big host is built by `bench-scale` (`xtask/src/bin/bench-scale.rs`).

use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The port every case asks about.
const PORT: u16 = 8300;
/// Descriptors per holder process (under the 20000 hard limit here).
const FDS_PER_PROC: usize = 19_000;
/// How long any set-up may take.
const SETUP_BOUND: Duration = Duration::from_secs(120);
/// Namespaces failing at once.
pub const STORM: usize = 1000;
/// The time within which a storm's failures should carry their explanation.
pub const STORM_WINDOW: Duration = Duration::from_secs(10);
/// Runs of each timed command (the median is reported).
const RUNS: usize = 3;

/// One case of the `why` table.
pub struct WhyCase {
    pub label: &'static str,
    pub extra_fds: usize,
    pub established: usize,
    pub timewait: usize,
}

pub const CASES: [WhyCase; 6] = [
    WhyCase {
        label: "1 listener",
        extra_fds: 0,
        established: 0,
        timewait: 0,
    },
    WhyCase {
        label: "1 listener, 100k other descriptors on the host",
        extra_fds: 100_000,
        established: 0,
        timewait: 0,
    },
    WhyCase {
        label: "1 listener, 1M other descriptors on the host",
        extra_fds: 1_000_000,
        established: 0,
        timewait: 0,
    },
    WhyCase {
        label: "10k established connections on the port",
        extra_fds: 0,
        established: 10_000,
        timewait: 0,
    },
    WhyCase {
        label: "100k established connections on the port",
        extra_fds: 0,
        established: 100_000,
        timewait: 0,
    },
    WhyCase {
        label: "100k TIME_WAIT sockets on the port",
        extra_fds: 0,
        established: 0,
        timewait: 100_000,
    },
];

pub struct WhyResult {
    pub label: &'static str,
    /// Median wall time of `observer why`.
    pub why_ms: f64,
    /// Largest peak RSS of those runs.
    pub why_rss_mib: f64,
    /// Lines of its table output, bytes of its JSON.
    pub lines: usize,
    pub json_bytes: usize,
    /// Median wall time of `ss -tlnp sport = :PORT` in the same namespace.
    pub ss_ms: f64,
}

pub struct StormResult {
    pub namespaces: usize,
    /// EADDRINUSE events seen.
    pub failures: usize,
    /// Of those, explained (a conflict in the event or an explanation record after it)
    /// within [`STORM_WINDOW`] of the start of the storm.
    pub explained_in_window: usize,
    /// Explained at all before the observer stopped.
    pub explained: usize,
    /// From the start of the storm to the last explanation.
    pub last_ms: f64,
    /// The notes of the failures that were not explained, with how many said each.
    pub unexplained: Vec<(String, usize)>,
    pub lost: u64,
}

/// A child that prints `ready ...` and ends when its standard input closes.
struct Helper {
    child: Child,
    ready: String,
}

impl Helper {
    fn start(bin: &Path, args: &[String]) -> Result<Helper> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} {}", bin.display(), args.join(" ")))?;
        let stdout = child.stdout.take().context("helper stdout")?;
        let ready = first_line(stdout, SETUP_BOUND)
            .with_context(|| format!("{} {} did not get ready", bin.display(), args.join(" ")))?;
        if !ready.starts_with("ready") {
            bail!("{}: {ready}", args.join(" "));
        }
        Ok(Helper { child, ready })
    }

    /// The pid after `ready` (the world's, whose namespace the cases look in).
    fn pid(&self) -> Result<u32> {
        self.ready
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no pid in {:?}", self.ready))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing its input ends it; then it is reaped.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The first line of `out`, waited for on a thread, at most `bound`.
fn first_line(out: ChildStdout, bound: Duration) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(bound).context("no line in time")?;
    Ok(line.trim().to_string())
}

/// Runs `cmd` to its end; returns its wall time, peak RSS in bytes and its output.
fn timed(cmd: &mut Command) -> Result<(Duration, u64, Vec<u8>)> {
    let began = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child, which
    // `Child::wait` is then not asked to reap.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child by pid, writing into locals.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if rc < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let wall = began.elapsed();
    let out = reader.join().unwrap_or_default();
    std::mem::forget(child);
    Ok((wall, usage.ru_maxrss as u64 * 1024, out))
}

/// `nsenter --net=/proc/PID/ns/net <args>`.
fn in_netns(pid: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net")).args(args);
    cmd
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub fn why_cases(observer: &Path, scale_bin: &Path) -> Result<Vec<WhyResult>> {
    let mut results = Vec::new();
    for case in &CASES {
        eprintln!("xtask: bench scale: {}", case.label);
        let mut holders = Vec::new();
        let mut left = case.extra_fds;
        while left > 0 {
            let n = left.min(FDS_PER_PROC);
            holders.push(Helper::start(scale_bin, &["fds".into(), n.to_string()])?);
            left -= n;
        }
        let world = Helper::start(
            scale_bin,
            &[
                "world".into(),
                PORT.to_string(),
                case.established.to_string(),
                case.timewait.to_string(),
            ],
        )?;
        let pid = world.pid()?;
        let netns = format!("/proc/{pid}/ns/net");
        let addr = format!("127.0.0.1:{PORT}");
        let mut walls = Vec::new();
        let mut rss = 0;
        let mut lines = 0;
        for _ in 0..RUNS {
            let (wall, peak, out) =
                timed(Command::new(observer).args(["why", &addr, "--netns", &netns]))?;
            walls.push(wall);
            rss = rss.max(peak);
            lines = out.iter().filter(|&&b| b == b'\n').count();
        }
        let (_, _, json) =
            timed(Command::new(observer).args(["why", &addr, "--netns", &netns, "--json"]))?;
        let filter = format!("sport = :{PORT}");
        let mut ss = Vec::new();
        for _ in 0..RUNS {
            ss.push(timed(&mut in_netns(pid, &["ss", "-tlnp", &filter]))?.0);
        }
        results.push(WhyResult {
            label: case.label,
            why_ms: median_ms(walls),
            why_rss_mib: rss as f64 / (1024.0 * 1024.0),
            lines,
            json_bytes: json.len(),
            ss_ms: median_ms(ss),
        });
        drop(world);
        drop(holders);
    }
    Ok(results)
}

/// What the storm's observer output says about one failure.
#[derive(Default)]
struct Failure {
    /// When its explanation arrived (the event with a conflict, or its explanation record).
    explained_at: Option<Duration>,
    /// The notes of an answer that explains nothing (`unavailable`).
    unexplained: Option<String>,
}

pub fn storm(observer: &Path, scale_bin: &Path) -> Result<StormResult> {
    eprintln!("xtask: bench scale: {STORM} namespaces failing at once");
    let mut watch = Command::new(observer)
        .args(["watch", "--json", "--comm", "bench-scale", "--errors"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting observer watch")?;
    let stdout = watch.stdout.take().context("observer stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(SETUP_BOUND).context("no start record")?;
    if !first.contains("\"type\":\"start\"") {
        bail!("observer's first line: {first}");
    }
    let began = Instant::now();
    let storm = Helper::start(
        scale_bin,
        &["storm".into(), STORM.to_string(), "7000".into()],
    )?;
    let mut failures: std::collections::BTreeMap<u64, Failure> = Default::default();
    let deadline = began + STORM_WINDOW + Duration::from_secs(10);
    let done = |f: &std::collections::BTreeMap<u64, Failure>| {
        f.len() == STORM
            && f.values()
                .all(|x| x.explained_at.is_some() || x.unexplained.is_some())
    };
    while !done(&failures) {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        let v: serde_json::Value = serde_json::from_str(&line).context("observer output")?;
        let at = began.elapsed();
        let answer = match v["type"].as_str() {
            Some("bind") if v["errno"] == libc::EADDRINUSE => {
                v["seq"].as_u64().map(|s| (s, &v["conflict"]))
            }
            Some("explanation") => v["of"].as_u64().map(|s| (s, &v["conflict"])),
            _ => None,
        };
        let Some((seq, conflict)) = answer else {
            continue;
        };
        let f = failures.entry(seq).or_default();
        match conflict["verdict"].as_str() {
            Some("in_use" | "uncertain" | "free") => f.explained_at = Some(at),
            Some("unavailable") => {
                f.unexplained = Some(conflict["notes"].to_string());
            }
            _ => {}
        }
    }
    drop(storm);
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    let mut lost = 0;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if line.contains("\"type\":\"summary\"") {
            let v: serde_json::Value = serde_json::from_str(&line).context("summary")?;
            lost = v["lost"].as_u64().unwrap_or(0);
        }
    }
    let _ = watch.wait();
    let _ = reader.join();
    let mut unexplained: std::collections::BTreeMap<String, usize> = Default::default();
    for f in failures.values() {
        if f.explained_at.is_none() {
            *unexplained
                .entry(f.unexplained.clone().unwrap_or_else(|| "no answer".into()))
                .or_default() += 1;
        }
    }
    Ok(StormResult {
        namespaces: STORM,
        failures: failures.len(),
        explained_in_window: failures
            .values()
            .filter(|f| f.explained_at.is_some_and(|at| at <= STORM_WINDOW))
            .count(),
        explained: failures
            .values()
            .filter(|f| f.explained_at.is_some())
            .count(),
        last_ms: failures
            .values()
            .filter_map(|f| f.explained_at)
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        unexplained: unexplained.into_iter().collect(),
        lost,
    })
}
