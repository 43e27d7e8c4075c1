//! A child process (`observer ...`) with its stdout and stderr read on other threads and
//! delivered as lines through one channel, so every wait on it is bounded; and the pidfd
//! helpers that wait (bounded) for a child's exit; [`run_observer`] runs one to its end, and
//! [`refused`] checks that bad command lines are refused as usage errors.

use super::{BOUND, last_error, no_forks};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A pidfd for `pid`, our own unreaped child.
pub(super) fn pidfd_open(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open(2) on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open({pid}): {}", last_error());
    // SAFETY: a new descriptor owned here only.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Waits until the process behind `pidfd` exits, at most `bound`. True if it did.
pub(super) fn wait_pidfd(pidfd: &OwnedFd, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            1 => return true,
            0 => return false,
            _ if last_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => panic!("poll on a pidfd: {}", last_error()),
        }
    }
}

enum Msg {
    Out(String),
    /// stdout reached end of file.
    OutEnd,
    /// The reader closed stdout after the start record (see [`Stdout::CloseAfterStart`]).
    OutClosed,
    Err(String),
    ErrEnd,
}

/// What to do with the child's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Read it to the end.
    Read,
    /// Close the read end right after the start record.
    CloseAfterStart,
    /// Read up to the start record, then close the read end when [`Proc::close_stdout`] says
    /// so (the observer stays blocked on nothing until then).
    CloseWhenTold,
}

/// One line of stdout, or why there is none.
#[derive(Debug)]
pub enum Next {
    Line(String),
    End,
    Closed,
    Timeout,
}

/// A child process (`observer ...`) whose stdout and stderr lines arrive through one channel.
pub struct Proc {
    child: Child,
    pidfd: OwnedFd,
    rx: Receiver<Msg>,
    stderr: String,
    stdout_done: bool,
    stderr_done: bool,
    status: Option<ExitStatus>,
    /// Tells the stdout reader to close the read end ([`Stdout::CloseWhenTold`]).
    close: Option<Sender<()>>,
}

impl Proc {
    pub fn spawn(args: &[&str], stdout: Stdout) -> Proc {
        Proc::spawn_via(&[], args, stdout)
    }

    /// `<via...> observer <args...>`: started by a wrapper that execs it (`setpriv`), so the
    /// child's pid is the observer's.
    pub fn spawn_via(via: &[&str], args: &[&str], stdout: Stdout) -> Proc {
        Proc::spawn_inner(via, args, Stdio::piped(), stdout, |_| {})
    }

    /// `observer <args...>` with `setup` applied to the command first (a `pre_exec` that sets
    /// a limit or a signal disposition).
    pub fn spawn_with(args: &[&str], stdout: Stdout, setup: impl FnOnce(&mut Command)) -> Proc {
        Proc::spawn_inner(&[], args, Stdio::piped(), stdout, setup)
    }

    /// `observer <args...>` writing its stdout into `file` (stdout lines are then not read:
    /// [`Proc::next_line`] says [`Next::End`]).
    pub fn spawn_into(args: &[&str], file: std::fs::File) -> Proc {
        Proc::spawn_inner(&[], args, Stdio::from(file), Stdout::Read, |_| {})
    }

    fn spawn_inner(
        via: &[&str],
        args: &[&str],
        out: Stdio,
        stdout: Stdout,
        setup: impl FnOnce(&mut Command),
    ) -> Proc {
        let observer = env!("CARGO_BIN_EXE_observer");
        let mut command = match via.split_first() {
            None => Command::new(observer),
            Some((wrapper, wrapper_args)) => {
                let mut c = Command::new(wrapper);
                c.args(wrapper_args).arg(observer);
                c
            }
        };
        setup(&mut command);
        let no_forks = no_forks();
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the observer binary");
        drop(no_forks);
        let pidfd = pidfd_open(child.id());
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take();
        let err = child.stderr.take().unwrap();
        let tx_err = tx.clone();
        let (close, close_rx) = match stdout {
            Stdout::CloseWhenTold => {
                let (close, close_rx) = mpsc::channel();
                (Some(close), Some(close_rx))
            }
            _ => (None, None),
        };
        match out {
            Some(out) => {
                std::thread::spawn(move || read_stdout(out, tx, stdout, close_rx));
            }
            None => {
                let _ = tx.send(Msg::OutEnd);
            }
        }
        std::thread::spawn(move || read_stderr(err, tx_err));
        Proc {
            child,
            pidfd,
            rx,
            stderr: String::new(),
            stdout_done: false,
            stderr_done: false,
            status: None,
            close,
        }
    }

    /// Closes the read end of stdout ([`Stdout::CloseWhenTold`]); the reader reports it as
    /// [`Next::Closed`].
    pub fn close_stdout(&mut self) {
        let close = self
            .close
            .take()
            .expect("stdout was not started as CloseWhenTold");
        close.send(()).expect("the stdout reader is gone");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to this child (ours and not yet reaped, so the pid is still its own).
    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.status.is_none(), "signal after the child was reaped");
        // SAFETY: kill(2) on our own unreaped child.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}): {}", self.pid(), last_error());
    }

    /// The next stdout line, waiting until `deadline`; stderr lines are kept on the way.
    pub fn next_line(&mut self, deadline: Instant) -> Next {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Out(line)) => return Next::Line(line),
                Ok(Msg::OutEnd) => {
                    self.stdout_done = true;
                    return Next::End;
                }
                Ok(Msg::OutClosed) => {
                    self.stdout_done = true;
                    return Next::Closed;
                }
                Ok(Msg::Err(line)) => self.stderr.push_str(&line),
                Ok(Msg::ErrEnd) => self.stderr_done = true,
                Err(RecvTimeoutError::Timeout) => return Next::Timeout,
                Err(RecvTimeoutError::Disconnected) => return Next::End,
            }
        }
    }

    /// Everything the child wrote on stderr so far.
    pub fn stderr(&mut self) -> &str {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Err(line) => self.stderr.push_str(&line),
                Msg::ErrEnd => self.stderr_done = true,
                _ => {}
            }
        }
        &self.stderr
    }

    /// Waits for the child to exit, at most until `deadline`; `None` if it did not.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        if self.status.is_none()
            && wait_pidfd(
                &self.pidfd,
                deadline.saturating_duration_since(Instant::now()),
            )
        {
            self.status = Some(self.child.wait().expect("waitpid"));
        }
        self.status
    }

    /// Waits for the exit and the end of both outputs; returns the status, the stdout lines
    /// left and all of stderr. Panics after `deadline`.
    pub fn wait_end(&mut self, deadline: Instant) -> (ExitStatus, Vec<String>, String) {
        let Some(status) = self.wait_exit(deadline) else {
            panic!(
                "observer {} still running after {BOUND:?}; stderr: {}",
                self.pid(),
                self.stderr()
            );
        };
        let mut out = Vec::new();
        while !(self.stdout_done && self.stderr_done) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Out(line)) => out.push(line),
                Ok(Msg::OutEnd | Msg::OutClosed) => self.stdout_done = true,
                Ok(Msg::Err(line)) => self.stderr.push_str(&line),
                Ok(Msg::ErrEnd) => self.stderr_done = true,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("outputs of the exited observer still open after {BOUND:?}")
                }
            }
        }
        (status, out, self.stderr.clone())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Only after a failure: the child is ours and unreaped, so these name it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_stdout(
    out: std::process::ChildStdout,
    tx: Sender<Msg>,
    mode: Stdout,
    close: Option<Receiver<()>>,
) {
    let mut reader = BufReader::new(out);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Msg::OutEnd);
                return;
            }
            Ok(_) => {
                let start = line.starts_with(r#"{"type":"start""#);
                let _ = tx.send(Msg::Out(line));
                if start && mode != Stdout::Read {
                    if let Some(close) = close {
                        // Dropped sender (the test failed): close all the same.
                        let _ = close.recv();
                    }
                    drop(reader);
                    let _ = tx.send(Msg::OutClosed);
                    return;
                }
            }
        }
    }
}

fn read_stderr(err: std::process::ChildStderr, tx: Sender<Msg>) {
    let mut reader = BufReader::new(err);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Msg::ErrEnd);
                return;
            }
            Ok(_) => {
                let _ = tx.send(Msg::Err(line));
            }
        }
    }
}

/// Runs `observer <args>` to its end (bounded); returns the status, stdout lines and stderr.
pub fn run_observer(args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    Proc::spawn(args, Stdout::Read).wait_end(Instant::now() + BOUND)
}

/// Bad usage: runs each command line and checks that it exits 2 with nothing on stdout and
/// exactly one `observer: ...` line on stderr, ending with where to look (`(see `observer
/// --help`)` or a more precise place) and containing every mention.
pub fn refused(cases: &[(&[&str], &[&str])]) {
    for (args, mentions) in cases {
        let (status, stdout, stderr) = run_observer(args);
        let what = format!("observer {}: stderr {stderr:?}", args.join(" "));
        assert_eq!(status.code(), Some(2), "{what}");
        assert!(stdout.is_empty(), "{what}: stdout {stdout:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line");
        assert!(lines[0].starts_with("observer: "), "{what}");
        assert!(lines[0].contains(" (see `observer "), "{what}");
        assert!(lines[0].ends_with("`)"), "{what}");
        for mention in *mentions {
            assert!(lines[0].contains(mention), "{what}: no {mention:?}");
        }
    }
}
