//! The observer in a pid namespace of its own, as in `docker run` without `--pid=host`: its
//! `getpid()` is 1 there, while the kernel programs see its pid in the initial namespace. Its
//! own calls must still be recognised (and not reported), and everyone else's reported.
//!
//! `unshare --pid --fork --mount-proc --kill-child observer watch --json`: unshare forks the
//! observer as pid 1 of a new pid namespace with its own `/proc`, and kills it if unshare
//! dies first (a failed test leaves nothing behind).

#[allow(unused_imports)]
mod common;

use common::proc::{Next, Proc};
use common::{BOUND, Sock, Stdout, bind_event, in_netns};
use serde_json::{Value, json};
use std::time::Instant;

const UNSHARE: [&str; 5] = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"))
}

/// The next stdout line of `p` as JSON, or a panic with its stderr.
fn next(p: &mut Proc, deadline: Instant, waiting_for: &str) -> Value {
    match p.next_line(deadline) {
        Next::Line(line) => record(&line),
        other => panic!(
            "waiting for {waiting_for}: {other:?} (bound {BOUND:?}); stderr:\n{}",
            p.stderr()
        ),
    }
}

/// The only child of `pid` (unshare's forked observer), as the initial namespace numbers it.
fn only_child(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let children: Vec<u32> = text
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(children.len(), 1, "{path}: {text:?}");
    children[0]
}

/// The `NSpid:` line of a process: its pid in each pid namespace from ours down to its own.
fn nspid(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("an NSpid line");
    line.split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// `observer watch --json` in a pid namespace of its own, past its start record.
struct Contained {
    p: Proc,
    /// Its pid in the initial namespace (the number its events would carry).
    host_pid: u32,
    deadline: Instant,
}

impl Contained {
    fn start() -> Contained {
        // No filter: the observer's own calls would show up if they were not recognised.
        let mut p = Proc::spawn_via(&UNSHARE, &["watch", "--json"], Stdout::Read);
        let deadline = Instant::now() + BOUND;
        let start = next(&mut p, deadline, "the start record");
        assert_eq!(start["type"], "start", "{start}");
        // Its own pid, in its own namespace.
        assert_eq!(start["pid"], 1, "{start}");
        let host_pid = only_child(p.pid());
        assert_ne!(host_pid, 1);
        assert_eq!(nspid(host_pid), [host_pid, 1]);
        Contained {
            p,
            host_pid,
            deadline,
        }
    }

    /// Events up to the first of `pid`/`tid`, which it returns; the host's other processes
    /// may bind meanwhile, but none of the events may be the observer's own.
    fn event_of(&mut self, pid: u32, tid: u32) -> Value {
        loop {
            let r = next(&mut self.p, self.deadline, "an event");
            assert_eq!(r["type"], "bind", "{r}");
            assert_ne!(r["pid"], self.host_pid, "the observer's own call: {r}");
            if r["pid"] == pid && r["tid"] == tid {
                return r;
            }
        }
    }

    /// SIGTERM, then every record to the summary (none the observer's own) and a clean exit.
    fn stop(mut self) {
        // SAFETY: kill(2) on the observer, the child of our own unreaped child (unshare, which
        // waits for it), so the pid is still its own.
        assert_eq!(
            unsafe { libc::kill(self.host_pid as libc::pid_t, libc::SIGTERM) },
            0
        );
        let summary = loop {
            let r = next(&mut self.p, self.deadline, "the summary");
            assert_ne!(r["pid"], self.host_pid, "the observer's own call: {r}");
            if r["type"] == "summary" {
                break r;
            }
        };
        assert_eq!(summary["reason"], "signal", "{summary}");
        assert_eq!(summary["lost"], 0, "{summary}");
        let (status, rest, stderr) = self.p.wait_end(self.deadline);
        assert!(status.success(), "unshare/observer: {status:?}\n{stderr}");
        assert!(rest.is_empty(), "after the summary: {rest:?}");
    }
}

/// `got` and `want` equal in every field but `time` and `seq`.
fn assert_same(got: &Value, want: &Value) {
    let (mut got, mut want) = (got.clone(), want.clone());
    for key in ["time", "seq"] {
        got.as_object_mut().unwrap().remove(key);
        want.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(got, want);
}

#[test]
fn another_process_bind_is_reported_from_another_pid_namespace() {
    in_netns("pidns-bind", |c| {
        let mut obs = Contained::start();
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:0"), 0);
        let port = s.local().port();
        let want = bind_event(c, &s, "127.0.0.1:0").bound(&format!("127.0.0.1:{port}"));
        // The programs give the host's pids, not the observer's namespace's: the event names
        // the caller by its pid here (no pid namespace between this test and the host).
        assert_eq!(want.json()["pid"], std::process::id());
        assert_same(&obs.event_of(c.pid, c.tid), &want.json());
        obs.stop();
    });
}

/// A second observer's start-up check (its `bind(-1)`, see `backend::identity`) is a call like
/// any other: the first observer reports it, exactly. The second one, which made it, does not
/// (it would fail to start instead), nor does the first report any call of its own.
#[test]
fn each_observer_hides_only_its_own_calls() {
    let mut first = Contained::start();
    let second = Contained::start();
    let want = json!({
        "type": "bind",
        "op": "bind",
        "pid": second.host_pid,
        "tid": second.host_pid,
        "uid": 0,
        "comm": "observer",
        "netns": null,
        "family": null,
        "protocol": null,
        "fd": -1,
        "requested": null,
        "bound": null,
        "reuseaddr": null,
        "reuseport": null,
        "v6only": null,
        "freebind": null,
        "transparent": null,
        "bind_address_no_port": null,
        "bound_dev_if": null,
        "sock_uid": null,
        "sock_ino": null,
        "result": "EBADF",
        "errno": 9,
        "hook": "tracepoint:sys_exit_bind",
        "call_id": null,
        "cgroup": common::expect::own_cgroup(),
        "conflict": {
            "verdict": "refused",
            "holders": [],
            "fixes": [],
            "notes": [],
            "refusal": {
                "errno": "EBADF",
                "rule": "errno",
                "text": "the descriptor is not open (net/socket.c __sys_bind: EBADF before the socket is looked at)",
                "facts": [],
                "fixes": [],
            },
        },
    });
    assert_same(&first.event_of(second.host_pid, second.host_pid), &want);
    second.stop();
    first.stop();
}

/// `observer why` from a pid namespace of its own, about a port this test process holds: the
/// holder is alive but not in that namespace's `/proc`, and the answer says exactly that
/// rather than calling it gone.
#[test]
fn why_in_a_pid_namespace_says_the_owner_is_not_visible() {
    in_netns("pidns-why", |_| {
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:0"), 0);
        assert_eq!(s.listen(), 0);
        let port = s.local().port();
        // The namespace, as a descriptor the contained observer inherits (no O_CLOEXEC).
        // SAFETY: open(2) on a NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0);
        let netns = format!("/proc/self/fd/{fd}");
        let addr = format!("127.0.0.1:{port}");
        let mut p = Proc::spawn_via(
            &UNSHARE,
            &["why", &addr, "--netns", &netns, "--json"],
            Stdout::Read,
        );
        let (status, out, stderr) = p.wait_end(Instant::now() + BOUND);
        // SAFETY: our own descriptor, opened above.
        unsafe { libc::close(fd) };
        assert_eq!(status.code(), Some(3), "{out:?} {stderr}");
        let v = record(&out[0]);
        let holders = v["conflict"]["holders"].as_array().unwrap();
        assert_eq!(holders.len(), 1, "{v}");
        assert_eq!(holders[0]["state"], "LISTEN", "{v}");
        assert_eq!(holders[0]["owners"], json!([]), "{v}");
        assert_eq!(
            holders[0]["owner_note"],
            "no process visible from this pid namespace has a descriptor for it (its owner may \
             be a process this pid namespace cannot see, or the kernel)",
            "{v}"
        );
        let notes = v["conflict"]["notes"].as_array().unwrap();
        assert!(
            notes.iter().any(|n| n
                .as_str()
                .unwrap()
                .starts_with("1 socket(s) in the way have no descriptor in this /proc")),
            "{v}"
        );
    });
}
