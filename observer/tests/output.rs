//! `observer watch --json >> log`: JSON Lines into a regular file, as a host keeps them. Into a
//! file the sink cuts its chunk writes at page boundaries of the file (so that the kernel never
//! reads a page back from disk to overwrite part of it); what lands must still be every record,
//! whole and in order, after what the file held.

#[allow(unused_imports)]
mod common;

use common::proc::Proc;
use common::{BOUND, Sock, in_netns};
use serde_json::Value;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;
use std::time::Instant;

/// Failing binds made under the observer: enough JSON for several 64 KiB chunks.
const FAILURES: usize = 600;

#[test]
fn json_appended_to_a_file_is_whole_and_in_order() {
    in_netns("file-output", |c| {
        let path = std::env::temp_dir().join(format!("observer-output-{}.jsonl", c.tid));
        std::fs::write(&path, "a line the file held before\n").expect("writing the log file");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("opening the log file for appending");
        let netns = c.netns.to_string();
        let mut proc = Proc::spawn_into(
            &[
                "watch",
                "--json",
                "--netns",
                &netns,
                "--no-conflicts",
                "--every-call",
            ],
            log,
        );
        wait_for_start(&path, &mut proc);

        let listener = Sock::tcp4();
        assert_eq!(listener.bind("127.0.0.1:5000"), 0);
        assert_eq!(listener.listen(), 0);
        let late = Sock::tcp4();
        for _ in 0..FAILURES {
            assert_eq!(late.bind("127.0.0.1:5000"), libc::EADDRINUSE);
        }
        proc.signal(libc::SIGINT);
        let (status, _, stderr) = proc.wait_end(Instant::now() + BOUND);
        assert!(
            status.success(),
            "observer exit {status:?}; stderr:\n{stderr}"
        );

        let text = std::fs::read_to_string(&path).expect("reading the log file");
        std::fs::remove_file(&path).expect("removing the log file");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("a line the file held before"));
        let records: Vec<Value> = lines
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("line {} is not a JSON record ({e}): {line}", i + 2))
            })
            .collect();
        assert!(text.ends_with('\n'), "the file ends with a whole line");
        let types: Vec<&str> = records
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(types[0], "start");
        assert_eq!(types[types.len() - 1], "summary");
        let events = &records[1..records.len() - 1];
        assert_eq!(
            events.len(),
            2 + FAILURES,
            "every call, nothing else: {types:?}"
        );
        let fields = |e: &Value| {
            (
                e["op"].as_str().unwrap().to_string(),
                e["fd"].as_i64().unwrap(),
                e["tid"].as_u64().unwrap(),
                e["requested"]["port"].as_u64(),
                e["errno"].as_i64().unwrap(),
            )
        };
        let tid = u64::from(c.tid);
        let (listener_fd, late_fd) = (i64::from(listener.fd()), i64::from(late.fd()));
        assert_eq!(
            fields(&events[0]),
            ("bind".into(), listener_fd, tid, Some(5000), 0)
        );
        assert_eq!(
            fields(&events[1]),
            ("listen".into(), listener_fd, tid, None, 0)
        );
        for (i, e) in events[2..].iter().enumerate() {
            assert_eq!(
                fields(e),
                (
                    "bind".into(),
                    late_fd,
                    tid,
                    Some(5000),
                    libc::EADDRINUSE as i64
                ),
                "failure {i}: {e}"
            );
        }
        let summary = &records[records.len() - 1];
        assert_eq!(summary["events"], (2 + FAILURES) as u64, "{summary}");
        assert_eq!(summary["lost"], 0, "{summary}");
    });
}

/// Waits (bounded) until the file holds the observer's start record: woken by inotify on each
/// write, not by polling.
fn wait_for_start(path: &Path, proc: &mut Proc) {
    // SAFETY: inotify_init1 has no preconditions; the fd it returns is ours alone.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(
        raw >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a new fd owned by nothing else.
    let inotify = unsafe { OwnedFd::from_raw_fd(raw) };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    let wd =
        unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_path.as_ptr(), libc::IN_MODIFY) };
    assert!(
        wd >= 0,
        "inotify_add_watch: {}",
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + BOUND;
    loop {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("reading the log file");
        if text.lines().any(|l| l.starts_with(r#"{"type":"start""#)) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no start record in {} after {BOUND:?}; stderr:\n{}",
            path.display(),
            proc.stderr()
        );
        let mut pfd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) };
        let mut events = [0u8; 4096];
        // SAFETY: reads into a buffer of the given size (nonblocking; the events only wake us).
        unsafe {
            libc::read(
                inotify.as_raw_fd(),
                events.as_mut_ptr().cast(),
                events.len(),
            )
        };
    }
}
