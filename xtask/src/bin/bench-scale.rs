//! The scale part of the benchmark builds a big host on this small one: `cargo xtask bench`
//! starts these, waits for their `ready` line, measures, and ends them by closing their
//! standard input (each then exits, its descriptors and sockets with it).
//!
//! - `bench-scale fds N`: holds N unrelated descriptors (dups of /dev/null; RLIMIT_NOFILE's
//!   hard limit here is 20000, so a million take about fifty of these).
//! - `bench-scale world PORT ESTABLISHED TIMEWAIT`: a private network namespace (loopback only)
//!   with a listener on 127.0.0.1:PORT, ESTABLISHED connections to it held open and TIMEWAIT
//!   connections closed by the server first (TIME_WAIT sockets on PORT); the sockets are spread
//!   over forked workers, each under the descriptor limit. Prints `ready PID` (PID's
//!   `/proc/PID/ns/net` is the namespace).
//! - `bench-scale storm N PORT`: N threads, each in a network namespace of its own with a
//!   listener on 127.0.0.1:PORT, then one bind to the same address that fails with EADDRINUSE,
//!   all released at once. Prints `ready` after the binds.

#[path = "../loopback.rs"]
mod loopback;

use loopback::{check, private_loopback, sockaddr};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::ExitCode;

/// Descriptors a worker holds at most (two per established connection).
const PER_WORKER: usize = 18_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-scale: {err}");
            ExitCode::from(2)
        }
    }
}

fn num(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["fds", n] => fds(num(n)?).map_err(|e| format!("fds: {e}")),
        ["world", port, est, tw] => {
            world(num(port)? as u16, num(est)?, num(tw)?).map_err(|e| format!("world: {e}"))
        }
        ["storm", n, port] => storm(num(n)?, num(port)? as u16).map_err(|e| format!("storm: {e}")),
        _ => {
            Err("usage: bench-scale fds N | world PORT ESTABLISHED TIMEWAIT | storm N PORT".into())
        }
    }
}

fn raise_nofile() -> io::Result<()> {
    // SAFETY: getrlimit/setrlimit read and write a local rlimit.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        check(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
        lim.rlim_cur = lim.rlim_max;
        check(libc::setrlimit(libc::RLIMIT_NOFILE, &lim)).map(drop)
    }
}

/// Blocks until standard input ends.
fn wait_stdin() {
    let mut sink = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut sink);
}

fn ready(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn fds(n: usize) -> io::Result<()> {
    raise_nofile()?;
    let null = std::fs::File::open("/dev/null")?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(null.try_clone()?);
    }
    ready("ready")?;
    wait_stdin();
    drop(held);
    Ok(())
}

fn tcp() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the fd is owned at once.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setopt(fd: &OwnedFd, level: i32, name: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int of the length given.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn bind(fd: &OwnedFd, sa: &libc::sockaddr_in) -> libc::c_int {
    use std::os::fd::AsRawFd as _;
    loopback::bind(fd.as_raw_fd(), sa)
}

fn listener(port: u16) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let l = tcp()?;
    check(bind(&l, &sockaddr([127, 0, 0, 1], port)))?;
    // SAFETY: listen() on a socket owned here.
    check(unsafe { libc::listen(l.as_raw_fd(), 4096) })?;
    Ok(l)
}

/// One connection to the listener from source address `src` (the port chosen by connect, so
/// that each 4-tuple is unique), and the listener's side of one connection.
fn connect_accept(l: &OwnedFd, src: [u8; 4], port: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsRawFd as _;
    let c = tcp()?;
    setopt(&c, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)?;
    check(bind(&c, &sockaddr(src, 0)))?;
    let dst = sockaddr([127, 0, 0, 1], port);
    // SAFETY: `dst` is a valid sockaddr_in of the length given.
    check(unsafe {
        libc::connect(
            c.as_raw_fd(),
            (&dst as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    // SAFETY: accept() with no address wanted.
    let a = check(unsafe {
        libc::accept4(
            l.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok((c, unsafe { OwnedFd::from_raw_fd(a) }))
}

/// The source address of connection `i`: 127.0.1.1 and up (all of 127/8 is local), 20000
/// connections each, well inside the ephemeral range of one address.
fn source(i: usize) -> [u8; 4] {
    [127, 0, 1, (1 + i / 20_000) as u8]
}

/// What one worker does: `established` connections held open, `timewait` closed by the
/// listener's side first, from connection number `first` on.
fn work(
    l: &OwnedFd,
    port: u16,
    first: usize,
    established: usize,
    timewait: usize,
) -> io::Result<Vec<OwnedFd>> {
    let mut held = Vec::with_capacity(2 * established);
    for i in 0..established {
        let (c, a) = connect_accept(l, source(first + i), port)?;
        held.push(c);
        held.push(a);
    }
    for i in 0..timewait {
        let (c, a) = connect_accept(l, source(first + established + i), port)?;
        // The side that closes first keeps the TIME_WAIT: the listener's, on PORT.
        drop(a);
        drop(c);
    }
    Ok(held)
}

fn world(port: u16, established: usize, timewait: usize) -> io::Result<()> {
    raise_nofile()?;
    private_loopback()?;
    // Room for every TIME_WAIT asked for (the namespace's default is half the host's table).
    std::fs::write(
        "/proc/sys/net/ipv4/tcp_max_tw_buckets",
        (timewait + 1024).to_string(),
    )?;
    let l = listener(port)?;
    // TIME_WAIT sockets hold no descriptor: the first worker makes them all.
    let workers = established.div_ceil(PER_WORKER / 2).max(1);
    let mut children = Vec::new();
    let mut first = 0;
    for w in 0..workers {
        let est = (established - first.min(established)).min(PER_WORKER / 2);
        let tw = if w == 0 { timewait } else { 0 };
        let mut pipe = [0; 2];
        // SAFETY: `pipe` has room for two descriptors.
        check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: the child runs only this function's loop and then `_exit`s.
        let pid = check(unsafe { libc::fork() })?;
        if pid == 0 {
            let code = match work(&l, port, first, est, tw) {
                Ok(held) => {
                    // SAFETY: writes one byte to the pipe: "done".
                    unsafe { libc::write(pipe[1], b"k".as_ptr().cast(), 1) };
                    // Hold the sockets until the parent ends us (SIGKILL from its drop).
                    loop {
                        // SAFETY: pause() has no preconditions.
                        unsafe { libc::pause() };
                        let _ = &held;
                    }
                }
                Err(err) => {
                    eprintln!("bench-scale: worker {w}: {err}");
                    1
                }
            };
            // SAFETY: ends the child without the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: the write end is the child's now.
        unsafe { libc::close(pipe[1]) };
        let mut done = [0u8; 1];
        // SAFETY: reading one byte into a local buffer; the read end is closed after.
        let got = unsafe { libc::read(pipe[0], done.as_mut_ptr().cast(), 1) };
        // SAFETY: closing our read end.
        unsafe { libc::close(pipe[0]) };
        children.push(pid);
        if got != 1 {
            end(&children);
            return Err(io::Error::other(format!("worker {w} failed")));
        }
        first += est;
    }
    ready(&format!("ready {}", std::process::id()))?;
    wait_stdin();
    end(&children);
    drop(l);
    Ok(())
}

/// Ends this process's own workers, by pid, and reaps them.
fn end(children: &[i32]) {
    for &pid in children {
        // SAFETY: our own unreaped children: the pids cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

fn storm(n: usize, port: u16) -> io::Result<()> {
    raise_nofile()?;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<(OwnedFd, OwnedFd)>>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
    let mut threads = Vec::new();
    for _ in 0..n {
        let (barrier, tx, stop_rx) = (barrier.clone(), tx.clone(), stop_rx.clone());
        threads.push(std::thread::spawn(move || {
            let made = private_loopback().and_then(|()| {
                let l = listener(port)?;
                let other = tcp()?;
                Ok((l, other))
            });
            barrier.wait();
            let result = made.and_then(|(l, other)| {
                let rc = bind(&other, &sockaddr([127, 0, 0, 1], port));
                let err = io::Error::last_os_error();
                match rc {
                    0 => Err(io::Error::other("the conflicting bind succeeded")),
                    _ if err.raw_os_error() == Some(libc::EADDRINUSE) => Ok((l, other)),
                    _ => Err(err),
                }
            });
            let _ = tx.send(result);
            // Keep the namespace (and the listener in the way) until told.
            let _ = stop_rx.lock().map(|rx| rx.recv());
        }));
    }
    drop(tx);
    let mut held = Vec::new();
    for result in rx.iter().take(n) {
        held.push(result?);
    }
    ready("ready")?;
    wait_stdin();
    drop(stop_tx);
    for t in threads {
        let _ = t.join();
    }
    drop(held);
    Ok(())
}
