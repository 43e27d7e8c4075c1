//! A bounded soak: several processes bind, fail, listen and close at a steady high rate for
//! about a minute (`OBSERVER_SOAK_SECS`, or `cargo xtask test --soak SECS`, for longer) while
//! the observer runs with a filter, JSON output and metrics. At the end its memory has not
//! grown, nothing was lost, and its counts (summary and metrics) are the workload's own.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::scrape::metric;
use common::sock::sockaddr_in;
use common::{BOUND, Sock, in_netns, no_forks};
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Workload processes.
const CHILDREN: usize = 4;
/// Calls per second each child aims at (bind, listen), about 10k events/s in all.
const RATE: u64 = 2500;
/// The port every fourth bind asks for, held by a listener: those fail with EADDRINUSE.
const TAKEN: u16 = 40000;
/// RSS growth allowed between the first quarter of the run and its end.
const RSS_SLACK_KIB: u64 = 2048;

/// What one child did: `[binds that worked, binds that failed, listens]`.
type Counts = [u64; 3];

fn soak_secs() -> u64 {
    std::env::var("OBSERVER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// Forks a child in the caller's namespace that plays the workload until `secs` have passed
/// and writes its counts to the returned pipe.
fn spawn_child(secs: u64, seed: u64) -> (i32, OwnedFd) {
    let _guard = no_forks();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just opened and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child makes only raw system calls, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let counts = workload(secs, seed);
        // SAFETY: writes a local array, then ends the child without the parent's destructors.
        unsafe {
            libc::write(
                write_end.as_raw_fd(),
                counts.as_ptr().cast(),
                std::mem::size_of_val(&counts),
            );
            libc::_exit(0);
        }
    }
    (pid, read_end)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into `ts` only.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The child's loop: raw calls only (it was forked from a threaded process).
fn workload(secs: u64, seed: u64) -> Counts {
    let mut counts: Counts = [0; 3];
    let start = now_ns();
    let end = start + secs * 1_000_000_000;
    let mut i = seed;
    loop {
        let now = now_ns();
        if now >= end {
            return counts;
        }
        // Pace: never ahead of RATE calls per second.
        let due = start + (counts.iter().sum::<u64>()) * 1_000_000_000 / RATE;
        if due > now {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: (due - now).min(999_999_999) as libc::c_long,
            };
            // SAFETY: a plain sleep.
            unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
            continue;
        }
        i += 1;
        let tcp = i.is_multiple_of(2);
        let ty = if tcp {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        };
        let port = if i.is_multiple_of(4) { TAKEN } else { 0 };
        let sa = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        // SAFETY: raw calls on a socket owned by this loop; `sa` outlives the bind.
        unsafe {
            let fd = libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                continue;
            }
            let rc = libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if rc == 0 {
                counts[0] += 1;
                if tcp && i.is_multiple_of(3) && libc::listen(fd, 1) == 0 {
                    counts[2] += 1;
                }
            } else {
                counts[1] += 1;
            }
            libc::close(fd);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn steady_load_keeps_memory_flat_loses_nothing_and_counts_right() {
    let secs = soak_secs();
    in_netns("soak", |c| {
        // Held before the observer starts: its own bind and listen are not part of the counts.
        let holder = Sock::tcp4();
        assert_eq!(holder.bind(&format!("127.0.0.1:{TAKEN}")), 0);
        assert_eq!(holder.listen(), 0);

        let netns = c.netns.to_string();
        let guard = no_forks();
        let mut observer = Command::new(env!("CARGO_BIN_EXE_observer"))
            .args(["watch", "--json", "--netns", &netns, "--metrics"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("observer");
        drop(guard);
        let pid = observer.id();
        // Lines are counted, not parsed, so the reader keeps up with the load.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = observer.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(start)) = lines.next() {
                let _ = tx.send(start);
            }
            let (mut events, mut last) = (0u64, String::new());
            for line in lines.map_while(Result::ok) {
                if line.starts_with("{\"type\":\"bind\"") {
                    events += 1;
                } else {
                    last = line;
                }
            }
            (events, last)
        });
        let start = rx.recv_timeout(BOUND).expect("the start record");
        assert!(start.contains("\"type\":\"start\""), "{start}");

        let children: Vec<(i32, OwnedFd)> = (0..CHILDREN as u64)
            .map(|n| spawn_child(secs, n * 7))
            .collect();
        // Memory once the run has warmed up (a quarter in), and at the end.
        std::thread::sleep(Duration::from_secs(secs / 4)); // the workload's own pacing
        let early = rss_kib(pid);
        let mut total: Counts = [0; 3];
        for (child, fd) in children {
            let mut bytes = [0u8; 24];
            std::fs::File::from(fd)
                .read_exact(&mut bytes)
                .expect("a child's counts");
            let mut status = 0;
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            for (k, chunk) in bytes.chunks(8).enumerate() {
                total[k] += u64::from_ne_bytes(chunk.try_into().unwrap());
            }
        }
        let late = rss_kib(pid);
        let [ok, failed, listens] = total;
        let expected = ok + failed + listens;
        assert!(failed > 0 && listens > 0 && ok > 0, "{total:?}");

        // The metrics catch up within a tick or two of the last call.
        let attempts = |proto: &str, op: &str, result: &str| {
            format!(
                "observer_bind_attempts_total{{family=\"inet\",protocol=\"{proto}\",op=\"{op}\",result=\"{result}\"}}"
            )
        };
        let deadline = Instant::now() + BOUND;
        let seen = || {
            ["tcp", "udp"]
                .iter()
                .flat_map(|p| {
                    [("bind", "OK"), ("bind", "EADDRINUSE"), ("listen", "OK")]
                        .map(|(op, r)| metric(&attempts(p, op, r)).unwrap_or(0))
                })
                .sum::<u64>()
        };
        while seen() != expected {
            assert!(
                Instant::now() < deadline,
                "metrics count {} of {expected} calls",
                seen()
            );
            std::thread::sleep(Duration::from_millis(100)); // polling the endpoint
        }
        assert_eq!(metric("observer_events_lost_total"), Some(0));

        // SAFETY: our own child, still running (its exit is awaited below).
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = observer.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let (events, summary) = reader.join().unwrap();
        let summary: serde_json::Value = serde_json::from_str(&summary).expect("summary");
        assert_eq!(summary["type"], "summary");
        assert_eq!(summary["lost"], 0, "{summary}");
        assert_eq!(summary["events"], expected, "{summary}");
        assert_eq!(events, expected, "{summary}");
        assert_eq!(summary["results"]["OK"], ok + listens, "{summary}");
        assert_eq!(summary["results"]["EADDRINUSE"], failed, "{summary}");
        assert!(
            late <= early + RSS_SLACK_KIB,
            "observer RSS grew from {early} KiB to {late} KiB over {secs} s ({expected} events)"
        );
        eprintln!(
            "soak: {secs} s, {expected} events ({ok} binds, {failed} EADDRINUSE, {listens} listens), \
             RSS {early} -> {late} KiB"
        );
    });
}
