//! Bad command lines: every one exits 2 with nothing on stdout and exactly one line on stderr
//! that names the problem (`usage_errors_exit_2` in watch.rs covers the first `watch` cases).
//! Nothing here loads programs: arguments are refused before anything runs.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::refused;

const NOT_ADDR: &str = "is not ADDR:PORT";

#[test]
fn why_refuses_malformed_addresses() {
    refused(&[
        (&["why", "1.2.3:80"], &["`1.2.3:80`", NOT_ADDR]),
        (&["why", "[::1:80"], &["`[::1:80`", NOT_ADDR]),
        (&["why", "host:99999"], &["`host:99999`", NOT_ADDR]),
        (
            &["why", "127.0.0.1:99999"],
            &["`127.0.0.1:99999`", NOT_ADDR],
        ),
        (&["why", ":80"], &["`:80`", NOT_ADDR]),
        (&["why", "1.2.3.4:"], &["`1.2.3.4:`", NOT_ADDR]),
        (&["why", "1.2.3.4"], &["`1.2.3.4`", NOT_ADDR]),
        (&["why", "::1:80"], &["`::1:80`", NOT_ADDR]),
        (&["why", "localhost:80"], &["`localhost:80`", NOT_ADDR]),
        (
            &["why", "[fe80::1%eth0]:80"],
            &["`[fe80::1%eth0]:80`", NOT_ADDR],
        ),
        (&["why", ""], &[NOT_ADDR]),
    ]);
}

#[test]
fn why_refuses_bad_options() {
    refused(&[
        (
            &["why"],
            &["required arguments were not provided: <ADDR:PORT>"],
        ),
        (
            &["why", "--udp"],
            &["required arguments were not provided: <ADDR:PORT>"],
        ),
        (
            &["why", "1.2.3.4:80", "extra"],
            &["unexpected argument 'extra'"],
        ),
        (&["why", "1.2.3.4:80", "--uid", "x"], &["'x'", "--uid"]),
        (
            &["why", "1.2.3.4:80", "--uid", "4294967296"],
            &["'4294967296'", "--uid"],
        ),
        (
            &["why", "1.2.3.4:80", "--v6only"],
            &["--v6only applies to IPv6 addresses only"],
        ),
        (
            &["why", "[::1]:80", "--netns", "/nonexistent/ns"],
            &[
                "--netns",
                "cannot open `/nonexistent/ns`: No such file or directory",
            ],
        ),
        (
            &["why", "[::1]:80", "--netns", "/proc/self/status"],
            &["`/proc/self/status` is not a namespace file"],
        ),
        (
            &["why", "[::1]:80", "--netns", "/proc/self/ns/uts"],
            &["not a network namespace"],
        ),
    ]);
}

#[test]
fn watch_refuses_bad_values() {
    refused(&[
        (
            &["watch", "--duration", "0"],
            &["'0'", "--duration", "positive"],
        ),
        (&["watch", "--duration", "nan"], &["'nan'", "--duration"]),
        (&["watch", "--duration", "1e10"], &["'1e10'", "--duration"]),
        (
            &["watch", "--duration"],
            &["a value is required for '--duration"],
        ),
        (&["watch", "--buffer-size", "4X"], &["unknown unit `X`"]),
        (&["watch", "--buffer-size", "2G"], &["'2G'", "power of two"]),
        (
            &["watch", "--netns", "4294967296"],
            &["'4294967296'", "--netns"],
        ),
        (&["watch", "--pid", "0"], &["'0'", "--pid"]),
        (
            &["watch", "--comm", "a-name-of-16-byt"],
            &["'a-name-of-16-byt'", "at most 15", "`a-name-of-16-by`"],
        ),
        (
            &["watch", "--backend", "foo"],
            &["'foo'", "possible values: auto, fexit, kprobe, tracepoint"],
        ),
        (
            &["watch", "--port", "-1"],
            &["invalid value '-1' for '--port <PORT>'", "0..=65535"],
        ),
        (&["watch", "--port", "70000"], &["'70000'", "0..=65535"]),
        (
            &["watch", "--pid", "-1"],
            &["invalid value '-1' for '--pid <PID>'"],
        ),
        (
            &["watch", "--duration", "-1"],
            &["not a positive number of seconds"],
        ),
        (
            &["watch", "--netns", "-5"],
            &["invalid value '-5' for '--netns <INODE>'"],
        ),
        (
            &["watch", "--metrics", "localhost"],
            &["`localhost` is not an address and port"],
        ),
        (&["watch", "--metrics-ports", "80"], &["--metrics"]),
        (
            &["watch", "--metrics", "--metrics-ports", "80,0"],
            &["`0` is not a port"],
        ),
        (&["watch", "--quiet"], &["--metrics"]),
        (&["watch", "--quiet", "--json", "--metrics"], &["--json"]),
        (&["watch", "--bogus"], &["unexpected argument '--bogus'"]),
    ]);
}

#[test]
fn a_missing_command_is_named() {
    refused(&[
        (&[], &["a command is needed: watch, scenarios, demo, why"]),
        (
            &["scenarios"],
            &["observer scenarios <COMMAND>: a command is needed: list, run, io-uring-check"],
        ),
        (
            &["scenarios", "run", "no-such-scenario"],
            &["no-such-scenario"],
        ),
    ]);
}

/// A reader that has gone (`observer scenarios list | head -0`): one error line and exit 1,
/// not a panic (Rust ignores SIGPIPE, so every write to the closed pipe is EPIPE).
#[test]
fn a_closed_stdout_is_one_error_line_not_a_panic() {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and owned here; the read end is closed at once.
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let forks = common::no_forks();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(["scenarios", "list"])
        .stdout(write)
        .output()
        .expect("running observer");
    drop(forks);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr {stderr:?}");
    assert_eq!(
        stderr,
        "observer: writing to standard output: Broken pipe (os error 32)\n"
    );
}
