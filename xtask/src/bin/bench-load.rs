//! The benchmark's load: tight loops of raw system calls on one CPU, in a private network
//! namespace with only loopback, timed from inside. `cargo xtask bench` runs it with and
//! without an observer attached and compares the times it prints.
//!
//! `bench-load MODE CPU ITERATIONS|SECONDSs` prints one line: `calls=N ns_per_call=X`.
//! Modes: `failbind` (bind() failing with EADDRINUSE against a listener), `realbind`
//! (socket + bind(127.0.0.1:0) + close), `connect` (socket + connect to a loopback listener +
//! close; the listener accepts and closes its end), `getpid`.

#[path = "../loopback.rs"]
mod loopback;

use loopback::{bind, check, private_loopback, sockaddr};
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How the loop is bounded.
#[derive(Clone, Copy)]
enum Bound {
    Calls(u64),
    Time(Duration),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-load: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let [mode, cpu, bound] = args else {
        return Err(
            "usage: bench-load failbind|realbind|connect|getpid CPU ITERATIONS|SECONDSs".into(),
        );
    };
    let cpu: usize = cpu.parse().map_err(|_| format!("bad CPU {cpu:?}"))?;
    let bound = match bound.strip_suffix('s') {
        Some(secs) => Bound::Time(Duration::from_secs_f64(
            secs.parse()
                .map_err(|_| format!("bad duration {bound:?}"))?,
        )),
        None => Bound::Calls(bound.parse().map_err(|_| format!("bad count {bound:?}"))?),
    };
    pin(cpu).map_err(|e| format!("pinning to CPU {cpu}: {e}"))?;
    private_loopback().map_err(|e| format!("private network namespace: {e}"))?;
    let (calls, elapsed) = match mode.as_str() {
        "failbind" => failbind(bound),
        "realbind" => realbind(bound),
        "connect" => connect(bound),
        "getpid" => Ok(timed(bound, || {
            // SAFETY: getpid has no preconditions; the raw syscall avoids any libc caching.
            unsafe { libc::syscall(libc::SYS_getpid) };
        })),
        other => return Err(format!("unknown mode {other:?}")),
    }
    .map_err(|e| format!("{mode}: {e}"))?;
    let ns = elapsed.as_nanos() as f64 / calls.max(1) as f64;
    Ok(format!("calls={calls} ns_per_call={ns:.1}"))
}

/// Runs `f` until the bound, checking the clock only every 1024 calls.
fn timed(bound: Bound, mut f: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..1024 {
            f();
        }
        calls += 1024;
        let done = match bound {
            Bound::Calls(n) => calls >= n,
            Bound::Time(t) => start.elapsed() >= t,
        };
        if done {
            return (calls, start.elapsed());
        }
    }
}

fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(
            0,
            size_of::<libc::cpu_set_t>(),
            &set,
        ))
        .map(drop)
    }
}

/// 127.0.0.1:`port`.
fn loopback(port: u16) -> libc::sockaddr_in {
    sockaddr([127, 0, 0, 1], port)
}

fn tcp_socket() -> io::Result<i32> {
    // SAFETY: socket() has no memory preconditions.
    check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })
}

fn failbind(bound: Bound) -> io::Result<(u64, Duration)> {
    let listener = tcp_socket()?;
    let sa = loopback(8080);
    check(bind(listener, &sa))?;
    // SAFETY: listen() on a socket this process owns.
    check(unsafe { libc::listen(listener, 16) })?;
    let other = tcp_socket()?;
    if bind(other, &sa) == 0 {
        return Err(io::Error::other("the conflicting bind succeeded"));
    }
    let mut unexpected = 0u64;
    let result = timed(bound, || {
        if bind(other, &sa) == 0 || io::Error::last_os_error().raw_os_error() != Some(98) {
            unexpected += 1;
        }
    });
    if unexpected > 0 {
        return Err(io::Error::other(format!(
            "{unexpected} binds did not fail with EADDRINUSE"
        )));
    }
    Ok(result)
}

fn realbind(bound: Bound) -> io::Result<(u64, Duration)> {
    let sa = loopback(0);
    let mut failed = 0u64;
    let result = timed(bound, || match tcp_socket() {
        Ok(fd) => {
            if bind(fd, &sa) != 0 {
                failed += 1;
            }
            // SAFETY: closing the socket created just above.
            unsafe { libc::close(fd) };
        }
        Err(_) => failed += 1,
    });
    if failed > 0 {
        return Err(io::Error::other(format!(
            "{failed} socket/bind calls failed"
        )));
    }
    Ok(result)
}

/// `SO_LINGER` on with a zero timeout: `close()` resets the connection instead of leaving a
/// TIME_WAIT, so the loop never runs out of ports toward its listener.
fn abort_on_close(fd: i32) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid `struct linger` of the length given.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// socket + connect(127.0.0.1:8081) + close, the listener accepting and closing each
/// connection in the same loop (on loopback the handshake is done when `connect()` returns):
/// what every outgoing connection pays, the path a `sys_exit_connect` program sits on.
fn connect(bound: Bound) -> io::Result<(u64, Duration)> {
    let listener = tcp_socket()?;
    let sa = loopback(8081);
    check(bind(listener, &sa))?;
    // SAFETY: listen() on a socket this process owns.
    check(unsafe { libc::listen(listener, 128) })?;
    let mut failed = 0u64;
    let once = || -> io::Result<()> {
        let fd = tcp_socket()?;
        let result = (|| {
            abort_on_close(fd)?;
            // SAFETY: `sa` is a valid sockaddr_in of the length given.
            check(unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })?;
            // SAFETY: accept() on the listener, without asking for the peer's address.
            let peer = check(unsafe {
                libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut())
            })?;
            // SAFETY: closing the accepted socket.
            unsafe { libc::close(peer) };
            Ok(())
        })();
        // SAFETY: closing the socket created above.
        unsafe { libc::close(fd) };
        result
    };
    let result = timed(bound, || {
        if once().is_err() {
            failed += 1;
        }
    });
    if failed > 0 {
        return Err(io::Error::other(format!("{failed} connects failed")));
    }
    Ok(result)
}
