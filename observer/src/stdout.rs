//! Standard output for `watch`: buffered, and never able to hold a stop.
//!
//! A reader that stops reading (a stopped `less`, a stalled log shipper) fills the pipe and a
//! plain `write` then blocks for as long as it likes, signal or not. Here every write first
//! waits for room with `poll` in short steps; while no stop was asked for it waits as long as
//! it takes (the kernel's ring buffer absorbs the delay and counts what it drops), and once a
//! signal was caught ([`crate::stop`]) it waits for room at most [`STOP_GRACE`] in all, then
//! gives up:
//! from then on what the run still writes is dropped and counted ([`unwritten_lines`]), so the
//! run ends within a second and says on stderr how much of its output is missing.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a stopped run still waits for a blocked output.
pub const STOP_GRACE: Duration = Duration::from_millis(200);

/// How long one `poll` waits before the stop is checked again.
const POLL_STEP_MS: libc::c_int = 50;

/// Lines handed to the output after it gave up.
static UNWRITTEN_LINES: AtomicU64 = AtomicU64::new(0);
/// Bytes likewise.
static UNWRITTEN_BYTES: AtomicU64 = AtomicU64::new(0);

/// Lines (and bytes) of output dropped because the output was blocked when the run stopped.
pub fn unwritten_lines() -> (u64, u64) {
    (
        UNWRITTEN_LINES.load(Ordering::Relaxed),
        UNWRITTEN_BYTES.load(Ordering::Relaxed),
    )
}

/// File descriptor 1, buffered (64 KiB), written as described above.
pub struct Stdout {
    fd: libc::c_int,
    buf: Vec<u8>,
    gave_up: bool,
    /// Milliseconds spent waiting for room since a stop was asked for.
    blocked_after_stop_ms: u64,
}

/// Bytes buffered before they are written.
const CAPACITY: usize = 64 * 1024;

impl Stdout {
    pub fn new() -> Stdout {
        Stdout::on(libc::STDOUT_FILENO)
    }

    /// The same over another descriptor (tests).
    pub fn on(fd: libc::c_int) -> Stdout {
        Stdout {
            fd,
            buf: Vec::with_capacity(CAPACITY),
            gave_up: false,
            blocked_after_stop_ms: 0,
        }
    }

    fn drop_counted(data: &[u8]) {
        UNWRITTEN_BYTES.fetch_add(data.len() as u64, Ordering::Relaxed);
        let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
        UNWRITTEN_LINES.fetch_add(lines, Ordering::Relaxed);
    }

    /// Writes all of `data`, or gives up as described in the module doc.
    fn write_out(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.gave_up || self.blocked_after_stop_ms >= STOP_GRACE.as_millis() as u64 {
                self.gave_up = true;
                Self::drop_counted(data);
                return Ok(());
            }
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, POLL_STEP_MS) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if ready == 0 {
                if crate::stop::signal().is_some() {
                    self.blocked_after_stop_ms += POLL_STEP_MS as u64;
                }
                continue;
            }
            // SAFETY: `data` is valid for reads of its length.
            let n = unsafe { libc::write(self.fd, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    // A signal (the stop) or a descriptor another process made non-blocking.
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    _ => return Err(err),
                }
            }
            data = &data[n as usize..];
        }
        Ok(())
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}

impl Write for Stdout {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > CAPACITY {
            self.flush()?;
        }
        if data.len() >= CAPACITY {
            self.write_out(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_out(&buf);
        self.buf = buf;
        self.buf.clear();
        result
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd as _;

    #[test]
    fn writes_everything_in_order_through_a_slow_pipe() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the read end is ours alone.
        let mut read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut read_end, &mut got).unwrap();
            got
        });
        let mut out = Stdout::on(fds[1]);
        out.write_all(b"one\n").unwrap();
        out.write_all(&vec![b'x'; 3 * CAPACITY]).unwrap();
        out.write_all(b"two\n").unwrap();
        drop(out);
        // SAFETY: our own descriptor, no longer used.
        unsafe { libc::close(fds[1]) };
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 4 + 3 * CAPACITY + 4);
        assert!(got.starts_with(b"one\nxx") && got.ends_with(b"xxtwo\n"));
        assert_eq!(unwritten_lines(), (0, 0));
    }
}
