//! Harness for the root integration tests: the real `observer` binary, real sockets in a private
//! network namespace, and expected events written as JSON.
//!
//! * [`in_netns`] runs a test body on a named thread that has its own network namespace with
//!   only `lo` up; every socket the body creates lives there (sockets keep the namespace they
//!   were created in), so tests never collide with real services or with each other.
//! * [`Observer`] starts `observer watch --json --netns <INODE>`, waits for its start record,
//!   collects its events with a bound, and stops it with SIGTERM.
//! * [`Sock`] is a socket of the calling thread; its calls return the errno (0 on success).
//! * [`bind_event`] / [`listen_event`] build the exact event a call must produce.
//!
//! Nothing sleeps: every wait is a `recv_timeout` or a `poll` bounded by [`BOUND`].
//!
//! Nothing skips silently ([`testenv`], the same file the unit tests use): a test that cannot
//! run here prints `SKIP <test>: <why>` straight to stderr (past the harness's capture), and
//! under `CI=true` or `OBSERVER_REQUIRE_ALL=1` fails instead wherever this project's machines
//! are expected to have what it needs (BTF, cgroup v2: `shared/PLATFORM.md`). What they are
//! documented not to have (fexit, kprobes) is a `SKIP` with the exact refusal asserted.
//!
//! This module owns what the others share: the bound, root check, the fork lock and errno
//! helpers. The rest lives in
//! * [`netns`] — the calling thread in its private namespace ([`Caller`], [`in_netns`]);
//! * [`sock`] — sockets of that thread ([`Sock`], [`SockId`]) and the options they set;
//! * [`nobody`] — a forked child that binds as `nobody` ([`bind_as_nobody`]);
//! * [`proc`] — a child process and its output, read on other threads ([`proc::Proc`]);
//! * [`observer`] — a running `observer watch --json` ([`Observer`]);
//! * [`expect`] — expected events and how a received one is checked ([`expect::Expect`]);
//! * [`bpfobjs`] — the BPF objects a process holds, those loaded on the host, and the pins.

#![allow(dead_code)]

pub mod bpfobjs;
pub mod cases;
pub mod expect;
pub mod netns;
pub mod nobody;
pub mod observer;
pub mod proc;
pub mod scrape;
pub mod sock;
#[path = "../../src/testenv.rs"]
pub mod testenv;

// What the tests call by name; the types they only receive stay at their module's path.
pub use self::observer::Observer;
pub use expect::{bind_event, connect_event, listen_event};
pub use netns::{Caller, in_netns};
pub use nobody::{bind_and_exit, bind_as_nobody};
pub use proc::{Stdout, refused};
pub use sock::{Sock, SockId};

/// uid and gid of `nobody`, for the unprivileged caller.
pub use ::observer::scenarios::NOBODY;
/// The socket options the observer reports (`key()` is the event's JSON key).
pub use ::observer::sockopt::Opt;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long any wait may last before the test fails.
pub const BOUND: Duration = Duration::from_secs(20);

/// Fails the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests load eBPF programs and must run as root (euid is {euid})"
    );
}

/// `fork()` copies every descriptor of this process into the child, and `spawn` does until the
/// child execs. Such a copy of an observer's stdout read end keeps that pipe open after a test
/// closed its own. Every fork and spawn here holds this lock until the copies are gone (spawn
/// returned after exec, the forked child reaped), so a test holding it knows that no other
/// process has its descriptors.
static FORK_LOCK: Mutex<()> = Mutex::new(());

/// Holds off every fork and spawn of this test process (see [`FORK_LOCK`]).
pub fn no_forks() -> MutexGuard<'static, ()> {
    FORK_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This process's `comm` and command line (arguments joined by spaces), as the owner lookup
/// reports them.
pub fn own_description() -> (String, String) {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let raw = std::fs::read("/proc/self/cmdline").unwrap();
    let args: Vec<_> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    (comm.trim_end().to_string(), args.join(" "))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn errno_of(result: std::io::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => err.raw_os_error().expect("an OS error"),
    }
}
