//! A stop that always stops, as root with the real binary: SIGTERM with a reader that stopped
//! reading in the middle of a flood, a signal during start-up (also SIGINT that a shell made
//! the process ignore, and SIGHUP), tiny descriptor limits, and `--metrics 127.0.0.1:0`.

#[allow(unused_imports)]
mod common;

use common::proc::{Next, Proc};
use common::{BOUND, Stdout, in_netns};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

/// How long a signalled run may take to end.
const STOP_WITHIN: Duration = Duration::from_secs(1);

fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn sigterm_ends_a_run_whose_reader_stopped_reading_within_a_second() {
    in_netns("stop-blocked", |caller| {
        let netns = caller.netns.to_string();
        let mut observer = Proc::spawn(
            &["watch", "--json", "--no-conflicts", "--netns", &netns],
            Stdout::CloseWhenTold,
        );
        let deadline = Instant::now() + BOUND;
        match observer.next_line(deadline) {
            Next::Line(line) => assert_eq!(record(&line)["type"], "start"),
            other => panic!("{other:?}: {}", observer.stderr()),
        }
        // The reader reads nothing more: a flood fills the pipe (64 KiB, some hundred
        // records) many times over, and the observer sits on a full pipe.
        const BINDS: u64 = 5000;
        for _ in 0..BINDS {
            drop(TcpListener::bind("127.0.0.1:0").unwrap());
        }
        // Bounded wait until its main thread waits for room on stdout (in poll(2) or
        // write(2), x86_64 numbers 7 and 1; idle, it would be in epoll_wait), so the signal
        // really meets a blocked output.
        let syscall = format!("/proc/{}/syscall", observer.pid());
        let blocked = Instant::now() + BOUND;
        loop {
            let now = std::fs::read_to_string(&syscall).unwrap_or_default();
            let number = now.split_whitespace().next().unwrap_or_default();
            if number == libc::SYS_poll.to_string() || number == libc::SYS_write.to_string() {
                break;
            }
            assert!(
                Instant::now() < blocked,
                "never blocked on its output: {now}"
            );
            std::thread::yield_now();
        }
        let sent = Instant::now();
        observer.signal(libc::SIGTERM);
        let status = observer.wait_exit(sent + BOUND);
        let took = sent.elapsed();
        observer.close_stdout();
        let (status2, _, stderr) = observer.wait_end(Instant::now() + BOUND);
        assert_eq!(status, Some(status2));
        assert!(status2.success(), "{status2:?}: {stderr}");
        assert!(took < STOP_WITHIN, "ended {took:?} after SIGTERM; {stderr}");
        // What it could not write is counted, and the summary it could not write is on stderr.
        let lines: Vec<&str> = stderr.lines().collect();
        let blocked_line = lines
            .iter()
            .find(|l| l.starts_with("observer: stopped by SIGTERM while the output was blocked: "))
            .unwrap_or_else(|| panic!("{stderr}"));
        let unwritten: u64 = blocked_line
            .split_whitespace()
            .nth(9)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{blocked_line}"));
        // Each bind to port 0 by TcpListener is a bind and a listen: two events.
        assert!(
            unwritten > 0 && unwritten <= 2 * BINDS + 1,
            "{blocked_line}"
        );
        let summary = lines
            .iter()
            .find(|l| l.contains(" repeats folded (") && l.ends_with("(signal)"))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            summary.starts_with(&format!(
                "observer: {} events, 0 repeats folded (",
                2 * BINDS
            )),
            "{summary}"
        );
    });
}

/// Waits (bounded) until `pid` catches `sig` (its handler is installed: /proc's SigCgt).
fn wait_caught(pid: u32, sig: libc::c_int) {
    let deadline = Instant::now() + BOUND;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (sig - 1)) != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never caught signal {sig}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_signal_during_start_up_ends_the_run_with_its_summary() {
    for (sig, ignored) in [
        (libc::SIGTERM, false),
        (libc::SIGINT, true),
        (libc::SIGHUP, false),
    ] {
        let mut observer = Proc::spawn_with(
            &["watch", "--json", "--no-conflicts", "--netns", "1"],
            Stdout::Read,
            |command| {
                if ignored {
                    // As `observer watch &` from a script starts it.
                    // SAFETY: signal(2) only, between fork and exec.
                    unsafe {
                        command.pre_exec(|| {
                            libc::signal(libc::SIGINT, libc::SIG_IGN);
                            Ok(())
                        })
                    };
                }
            },
        );
        // The handler is installed first thing; BTF and the programs take far longer, so the
        // signal arrives before the start record.
        wait_caught(observer.pid(), sig);
        observer.signal(sig);
        let (status, out, stderr) = observer.wait_end(Instant::now() + BOUND);
        assert!(status.success(), "signal {sig}: {status:?}: {stderr}");
        let types: Vec<Value> = out.iter().map(|l| record(l)["type"].clone()).collect();
        assert_eq!(
            types,
            ["start", "summary"],
            "signal {sig}: {out:?} {stderr}"
        );
        assert_eq!(record(&out[1])["reason"], "signal", "{out:?}");
    }
}

#[test]
fn no_descriptor_limit_makes_it_panic() {
    for limit in [4u64, 8, 16, 20, 21, 22, 32, 63, 64, 80] {
        let mut observer = Proc::spawn_with(
            &["watch", "--json", "--no-conflicts", "--netns", "1"],
            Stdout::Read,
            move |command| {
                // SAFETY: setrlimit(2) only, between fork and exec.
                unsafe {
                    command.pre_exec(move || {
                        let lim = libc::rlimit {
                            rlim_cur: limit,
                            rlim_max: limit,
                        };
                        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                        Ok(())
                    })
                };
            },
        );
        match observer.next_line(Instant::now() + BOUND) {
            Next::Line(line) => {
                assert_eq!(record(&line)["type"], "start", "limit {limit}");
                observer.signal(libc::SIGTERM);
                let (status, out, stderr) = observer.wait_end(Instant::now() + BOUND);
                assert!(status.success(), "limit {limit}: {status:?}: {stderr}");
                assert_eq!(record(out.last().unwrap())["type"], "summary");
            }
            Next::End => {
                let (status, _, stderr) = observer.wait_end(Instant::now() + BOUND);
                assert_eq!(status.code(), Some(1), "limit {limit}: {status:?} {stderr}");
                assert_eq!(status.signal(), None);
                let lines: Vec<&str> = stderr.lines().collect();
                assert_eq!(lines.len(), 1, "limit {limit}: {stderr}");
                assert!(
                    lines[0].starts_with("observer: ")
                        && (lines[0].contains("Too many open files")
                            || lines[0].contains(&format!("descriptor limit is {limit} "))),
                    "limit {limit}: {stderr}"
                );
                // Each cause once.
                let parts: Vec<&str> = lines[0].split(": ").collect();
                let mut unique = parts.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), parts.len(), "limit {limit}: {stderr}");
            }
            other => panic!("limit {limit}: {other:?}: {}", observer.stderr()),
        }
    }
}

#[test]
fn metrics_on_port_zero_says_the_port_it_got() {
    in_netns("stop-metrics", |caller| {
        let netns = caller.netns.to_string();
        let mut observer = Proc::spawn(
            &[
                "watch",
                "--json",
                "--netns",
                &netns,
                "--metrics",
                "127.0.0.1:0",
            ],
            Stdout::Read,
        );
        match observer.next_line(Instant::now() + BOUND) {
            Next::Line(line) => assert_eq!(record(&line)["type"], "start"),
            other => panic!("{other:?}: {}", observer.stderr()),
        }
        let stderr = observer.stderr().to_string();
        let url = stderr
            .lines()
            .find_map(|l| l.strip_prefix("observer: serving metrics at http://"))
            .unwrap_or_else(|| panic!("{stderr}"));
        let addr: SocketAddrV4 = url.trim_end_matches("/metrics").parse().unwrap();
        assert_eq!(*addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0, "{stderr}");
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        observer.signal(libc::SIGINT);
        let (status, _, stderr) = observer.wait_end(Instant::now() + BOUND);
        assert!(status.success(), "{status:?}: {stderr}");
    });
}
