//! How a run is asked to end: SIGINT, SIGTERM and SIGHUP, caught from the first moment of
//! `watch` and `demo` (before BTF is read and programs are loaded), so that a signal during
//! start-up ends the run as soon as it starts, with its summary, instead of being lost or
//! killing the process without one.
//!
//! The handler only records the signal and writes a byte to a self-pipe, which the collector
//! polls ([`signalled_fd`]). It is installed without `SA_RESTART`, and a signal taken by any
//! other thread is passed on to the main thread, so that a write blocked on a full stdout
//! (a stopped reader) returns with `EINTR` instead of holding the stop (see
//! [`crate::stdout`]). A signal a shell made the process ignore (`cmd &` ignores SIGINT) is
//! caught too: the observer is ended by it as at any other time.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The first signal caught (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// CLOCK_MONOTONIC nanoseconds when it was caught.
static AT_NS: AtomicU64 = AtomicU64::new(0);
/// The self-pipe's write end (-1 before [`install`]).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Its read end.
static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
/// The thread that installed the handlers (the one that runs the collector and writes).
static MAIN_TID: AtomicI32 = AtomicI32::new(0);

/// The signals that end a run.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe calls here: atomics, clock_gettime, write, gettid, tgkill.
    let saved = io::Error::last_os_error().raw_os_error();
    if SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        AT_NS.store(crate::timefmt::monotonic_ns(), Ordering::SeqCst);
    }
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: a one-byte write from a static into our own non-blocking pipe; a full pipe
        // (EAGAIN) already holds a byte that wakes the reader.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
    let main = MAIN_TID.load(Ordering::SeqCst);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    if main > 0 && me != main {
        // SAFETY: tgkill to a thread of this process; the handler then runs there too, which
        // only repeats the steps above.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), main, sig) };
    }
    if let Some(errno) = saved {
        // SAFETY: errno is thread-local; restoring it keeps the interrupted code's view.
        unsafe { *libc::__errno_location() = errno };
    }
}

/// Catches [`SIGNALS`] from now on, on behalf of the calling thread (the one that will run
/// the collector). Call once, before other threads start.
pub fn install() -> io::Result<()> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    PIPE_READ.store(fds[0], Ordering::SeqCst);
    PIPE_WRITE.store(fds[1], Ordering::SeqCst);
    // SAFETY: gettid has no preconditions.
    MAIN_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C" fn(c_int)` that
        // only makes async-signal-safe calls; sa_mask blocks the other stop signals while it
        // runs. No SA_RESTART: a blocked write must return.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            for other in SIGNALS {
                libc::sigaddset(&mut action.sa_mask, other);
            }
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // A stop signal the parent left blocked would never arrive.
    // SAFETY: a sigset built here; pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// The signal caught, if any.
pub fn signal() -> Option<libc::c_int> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Nanoseconds (CLOCK_MONOTONIC) since the signal was caught.
pub fn since_ns() -> Option<u64> {
    signal()?;
    Some(crate::timefmt::monotonic_ns().saturating_sub(AT_NS.load(Ordering::SeqCst)))
}

/// The self-pipe's read end, readable once a signal was caught; `None` before [`install`].
pub fn signalled_fd() -> Option<RawFd> {
    match PIPE_READ.load(Ordering::SeqCst) {
        fd if fd >= 0 => Some(fd),
        _ => None,
    }
}

/// `SIGINT`, `SIGTERM`, `SIGHUP`.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
