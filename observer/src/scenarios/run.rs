//! Performing a scenario's steps on real sockets, on a thread of its own inside a private
//! network namespace, and recording each step's outcome as the kernel reports it.

use super::{Act, Kind, NOBODY, OTHER_LOCAL_V4, Scenario, Setup, Step, TWO_PORT_RANGE};
use crate::netns;
use crate::sockopt::Opt;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// What one step did, as the kernel reports it through the socket API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Always `"step"`.
    #[serde(rename = "type")]
    pub record_type: String,
    pub scenario: String,
    /// Index of the step in the scenario (from 0).
    pub step: usize,
    pub sock: char,
    /// The call in words, e.g. `"bind 127.0.0.1:8080"`.
    pub call: String,
    /// `"bind"` / `"listen"` / `"connect"` for calls the observer reports (a connect only
    /// when it failed), `null` for others.
    pub op: Option<String>,
    /// Linux's declared result (errno, 0 = success).
    pub expect: i32,
    /// For a call declared to fail: the rule its explanation must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the kernel returned (errno, 0 = success).
    pub errno: i32,
    pub pid: u32,
    pub tid: u32,
    /// Real uid the call ran as.
    pub uid: u32,
    pub netns: u64,
    pub fd: i32,
    /// Socket inode (`fstat`).
    pub ino: u64,
    /// Address and port passed to `bind()`.
    pub requested: Option<(IpAddr, u16)>,
    /// `getsockname()` after the call, `null` when no port is bound.
    pub bound: Option<(IpAddr, u16)>,
    /// Options after the call by `getsockopt`, keyed by the observer's JSON names.
    pub options: BTreeMap<String, bool>,
}

struct Sock {
    socket: Socket,
    kind: Kind,
    uid: Option<u32>,
}

/// Runs one scenario to completion on a new thread in a new network namespace. `pace`: each
/// step's record is printed (JSON, stdout) as soon as it is made, and after a `bind`/`listen`
/// that failed the thread waits (at most [`PACE_WAIT`]) for a line on stdin before it goes
/// on, keeping every socket, and the caller's credentials, as they were at the failure: the
/// demo's observer acknowledges once it has the failure's explanation, which it looks up in
/// the scenario's namespace while the sockets in the way are still there.
pub fn run(scenario: &Scenario, pace: bool) -> io::Result<Vec<StepOutcome>> {
    let scenario = scenario.clone();
    let thread_name = format!("scn-{}", scenario.name);
    let thread_name: String = thread_name.chars().take(15).collect();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || run_here(&scenario, pace))?
        .join()
        .map_err(|_| io::Error::other("scenario thread panicked"))?
}

/// How long a paced run waits for the acknowledgement of a failed call.
pub const PACE_WAIT: Duration = Duration::from_secs(20);

fn run_here(scenario: &Scenario, pace: bool) -> io::Result<Vec<StepOutcome>> {
    let ns = netns::enter_private()?;
    match scenario.setup {
        Setup::Loopback => {}
        Setup::SecondAddress => {
            let addr: Ipv4Addr = OTHER_LOCAL_V4.parse().map_err(io::Error::other)?;
            netns::add_local_v4(1, addr)?;
        }
        // The sysctl is the namespace's own: /proc/sys/net resolves to the opener's
        // namespace, this thread's private one.
        Setup::TwoPortRange => std::fs::write(
            "/proc/sys/net/ipv4/ip_local_port_range",
            format!("{} {}", TWO_PORT_RANGE.0, TWO_PORT_RANGE.1),
        )?,
    }
    // Started from this thread, the helper is in this thread's namespace.
    let mut helper = if scenario.second_process.is_empty() {
        None
    } else {
        Some(Helper::start(scenario.name)?)
    };
    let mut socks: BTreeMap<char, Sock> = BTreeMap::new();
    let mut out = Vec::with_capacity(scenario.steps.len());
    for (i, step) in scenario.steps.iter().enumerate() {
        if scenario.second_process.contains(&step.sock)
            && let Some(helper) = helper.as_mut()
        {
            let o = helper.step(i)?;
            if pace {
                emit_and_wait(&o)?;
            }
            out.push(o);
            continue;
        }
        let uid = match &step.act {
            Act::Socket { uid, .. } => *uid,
            _ => socks.get(&step.sock).and_then(|s| s.uid),
        };
        // Paced, the wait is made as the caller still (a lookup reads its capabilities).
        let o = as_user(uid, || {
            let errno = perform(step, &mut socks);
            let o = outcome(scenario, i, step, errno, ns, socks.get(&step.sock));
            if pace {
                emit_and_wait(&o)?;
            }
            io::Result::Ok(o)
        })??;
        out.push(o);
    }
    if let Some(helper) = helper {
        helper.end()?;
    }
    Ok(out)
}

/// Prints `o` as a JSON line; after a failed `bind`/`listen`, waits for a line on stdin.
fn emit_and_wait(o: &StepOutcome) -> io::Result<()> {
    use std::io::Write as _;
    let mut line = serde_json::to_vec(o).map_err(io::Error::other)?;
    line.push(b'\n');
    {
        let mut out = io::stdout().lock();
        out.write_all(&line)?;
        out.flush()?;
    }
    if o.op.is_some() && o.errno != 0 {
        wait_for_line(PACE_WAIT)?;
    }
    Ok(())
}

/// Reads one line from stdin, waiting at most `limit` (end of input counts as a line).
fn wait_for_line(limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let mut fds = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count, a timeout.
        let ready =
            unsafe { libc::poll(&mut fds, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ready == 0 {
            return Ok(());
        }
        // SAFETY: reads at most one byte into `byte`.
        let n = unsafe { libc::read(libc::STDIN_FILENO, byte.as_mut_ptr().cast(), 1) };
        if n <= 0 || byte[0] == b'\n' {
            return Ok(());
        }
    }
}

/// The second process of a scenario: `observer scenarios serve-steps NAME`, started in the
/// scenario's namespace, performing the steps it is sent by index.
struct Helper {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: io::BufReader<std::process::ChildStdout>,
}

impl Helper {
    fn start(name: &str) -> io::Result<Helper> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["scenarios", "serve-steps", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let to = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no helper stdin"))?;
        let from = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no helper stdout"))?;
        Ok(Helper {
            child,
            to,
            from: io::BufReader::new(from),
        })
    }

    fn step(&mut self, index: usize) -> io::Result<StepOutcome> {
        use std::io::{BufRead as _, Write as _};
        writeln!(self.to, "{index}")?;
        self.to.flush()?;
        let mut line = String::new();
        if self.from.read_line(&mut line)? == 0 {
            return Err(io::Error::other("the scenario's second process ended"));
        }
        serde_json::from_str(&line).map_err(io::Error::other)
    }

    /// Closes its input (it closes its sockets and exits) and waits for it.
    fn end(self) -> io::Result<()> {
        let Helper {
            mut child,
            to,
            from,
        } = self;
        drop(to);
        drop(from);
        let status = child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the scenario's second process: {status}"
            )))
        }
    }
}

/// `observer scenarios serve-steps NAME`: performs the steps of scenario `name` whose index
/// comes on stdin, one a line, in this process and its namespace, each answered by its
/// record on stdout; ends at the end of input.
pub fn serve_steps(scenario: &Scenario) -> io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let ns = netns::current_inode()?;
    let mut socks: BTreeMap<char, Sock> = BTreeMap::new();
    let stdin = io::stdin();
    let mut out = io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let i: usize = line
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad step {line}")))?;
        let step = scenario
            .steps
            .get(i)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no step {i}")))?;
        let uid = match &step.act {
            Act::Socket { uid, .. } => *uid,
            _ => socks.get(&step.sock).and_then(|s| s.uid),
        };
        let errno = as_user(uid, || perform(step, &mut socks))?;
        let o = outcome(scenario, i, step, errno, ns, socks.get(&step.sock));
        serde_json::to_writer(&mut out, &o).map_err(io::Error::other)?;
        writeln!(out)?;
        out.flush()?;
    }
    Ok(())
}

/// Runs `f` with this thread's real and effective uid/gid set to `uid` (saved ids stay 0, so
/// the thread can switch back). Raw syscalls on purpose: glibc's `setuid` would change every
/// thread of the process.
fn as_user<T>(uid: Option<u32>, f: impl FnOnce() -> T) -> io::Result<T> {
    let Some(uid) = uid else { return Ok(f()) };
    let set = |id: u32| -> io::Result<()> {
        // SAFETY: raw set{res}gid/uid syscalls with plain integer arguments; they change only
        // the calling thread's credentials.
        unsafe {
            if libc::syscall(libc::SYS_setresgid, id, id, 0) != 0
                || libc::syscall(libc::SYS_setresuid, id, id, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    set(uid)?;
    let result = f();
    // Back to root: allowed because the saved uid is still 0.
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) } != 0
        || unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(result)
}

fn errno_of(result: io::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => err.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn sockaddr(addr: &str, port: u16) -> io::Result<SockAddr> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {addr}")))?;
    Ok(SockAddr::from(SocketAddr::new(ip, port)))
}

/// Performs one step; returns the errno (0 = success).
fn perform(step: &Step, socks: &mut BTreeMap<char, Sock>) -> i32 {
    if let Act::Socket { kind, uid } = step.act {
        let (domain, ty, proto) = match kind {
            Kind::Tcp4 => (Domain::IPV4, Type::STREAM, Protocol::TCP),
            Kind::Tcp6 => (Domain::IPV6, Type::STREAM, Protocol::TCP),
            Kind::Udp4 => (Domain::IPV4, Type::DGRAM, Protocol::UDP),
            Kind::Udp6 => (Domain::IPV6, Type::DGRAM, Protocol::UDP),
        };
        return match Socket::new(domain, ty, Some(proto)) {
            Ok(socket) => {
                socks.insert(step.sock, Sock { socket, kind, uid });
                0
            }
            Err(err) => err.raw_os_error().unwrap_or(libc::EIO),
        };
    }
    if let Act::AwaitTimeWait { port } = step.act {
        return errno_of(await_time_wait(port));
    }
    if let Act::Close = step.act {
        return if socks.remove(&step.sock).is_some() {
            0
        } else {
            libc::EBADF
        };
    }
    let Some(sock) = socks.get(&step.sock) else {
        return libc::EBADF;
    };
    let s = &sock.socket;
    match &step.act {
        Act::Set(opt) => errno_of(set_option(s, sock.kind, *opt)),
        Act::Bind { addr, port } => errno_of(sockaddr(addr, *port).and_then(|a| s.bind(&a))),
        Act::Listen => errno_of(s.listen(128)),
        Act::Connect { addr, port } => errno_of(sockaddr(addr, *port).and_then(|a| s.connect(&a))),
        Act::Accept { into } => match s.accept() {
            Ok((socket, _)) => {
                let (kind, uid) = (sock.kind, sock.uid);
                socks.insert(*into, Sock { socket, kind, uid });
                0
            }
            Err(err) => err.raw_os_error().unwrap_or(libc::EIO),
        },
        Act::ReadEof => errno_of(read_eof(s)),
        Act::Socket { .. } | Act::Close | Act::AwaitTimeWait { .. } => unreachable_errno(),
    }
}

/// Handled above; kept total without a panic.
fn unreachable_errno() -> i32 {
    libc::EINVAL
}

fn set_option(s: &Socket, kind: Kind, opt: Opt) -> io::Result<()> {
    let (level, name) = opt.sockopt(is_v6(kind));
    setsockopt_int(s, level, name, 1)
}

fn is_v6(kind: Kind) -> bool {
    matches!(kind, Kind::Tcp6 | Kind::Udp6)
}

fn setsockopt_int(s: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid int for the duration of the call; the length matches.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt_bool(s: &Socket, level: i32, name: i32) -> Option<bool> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid and writable; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value != 0)
}

/// The six options the observer reports, read back through `getsockopt`.
fn options(sock: &Sock) -> BTreeMap<String, bool> {
    let v6 = is_v6(sock.kind);
    Opt::ALL
        .iter()
        .filter_map(|&opt| {
            // An IPv4 socket has no IPV6_V6ONLY; the kernel's flag for it is clear.
            let value = if opt == Opt::V6Only && !v6 {
                Some(false)
            } else {
                let (level, name) = opt.sockopt(v6);
                getsockopt_bool(&sock.socket, level, name)
            };
            value.map(|v| (opt.key().to_string(), v))
        })
        .collect()
}

fn read_eof(s: &Socket) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 256];
    let mut reader: &Socket = s;
    loop {
        if reader.read(&mut buf)? == 0 {
            return Ok(());
        }
    }
}

/// Waits until this namespace has a TCP socket in TIME_WAIT on local `port` (bounded: the
/// kernel moves the socket there as soon as it processes the peer's FIN, which on loopback is
/// immediate, but not synchronous with our `close`).
fn await_time_wait(port: u16) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let wanted = format!(":{port:04X} ");
    loop {
        for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = std::fs::read_to_string(table)?;
            // Columns: sl local_address rem_address st ...; TIME_WAIT is state 06.
            let found = text.lines().skip(1).any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3 && format!("{} ", cols[1]).ends_with(&wanted) && cols[3] == "06"
            });
            if found {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        std::thread::yield_now();
    }
}

fn describe(step: &Step) -> String {
    match &step.act {
        Act::Socket { kind, uid } => {
            let kind = match kind {
                Kind::Tcp4 => "tcp4",
                Kind::Tcp6 => "tcp6",
                Kind::Udp4 => "udp4",
                Kind::Udp6 => "udp6",
            };
            match uid {
                Some(NOBODY) => format!("socket {kind} as nobody"),
                Some(uid) => format!("socket {kind} as uid {uid}"),
                None => format!("socket {kind}"),
            }
        }
        Act::Set(opt) => format!("set {}", opt.name()),
        Act::Bind { addr, port } if addr.contains(':') => format!("bind [{addr}]:{port}"),
        Act::Bind { addr, port } => format!("bind {addr}:{port}"),
        Act::Listen => "listen".into(),
        Act::Connect { addr, port } => format!("connect {addr}:{port}"),
        Act::Accept { into } => format!("accept -> {into}"),
        Act::Close => "close".into(),
        Act::ReadEof => "read until the peer closes".into(),
        Act::AwaitTimeWait { port } => format!("wait for TIME_WAIT on :{port}"),
    }
}

fn outcome(
    scenario: &Scenario,
    index: usize,
    step: &Step,
    errno: i32,
    netns: u64,
    sock: Option<&Sock>,
) -> StepOutcome {
    let fd = sock.map_or(-1, |s| s.socket.as_raw_fd());
    let ino = sock
        .and_then(|s| std::fs::metadata(format!("/proc/self/fd/{}", s.socket.as_raw_fd())).ok())
        .map_or(0, |m| m.ino());
    let bound = sock
        .and_then(|s| s.socket.local_addr().ok())
        .and_then(|a| a.as_socket())
        .filter(|a| a.port() != 0)
        .map(|a| (a.ip(), a.port()));
    let requested = match &step.act {
        Act::Bind { addr, port } => addr.parse().ok().map(|a| (a, *port)),
        _ => None,
    };
    let op = match step.act {
        Act::Bind { .. } => Some("bind".to_string()),
        Act::Listen => Some("listen".to_string()),
        Act::Connect { .. } if step.act.is_observed_with(errno) => Some("connect".to_string()),
        _ => None,
    };
    // SAFETY: these calls have no preconditions.
    let (pid, tid, uid) = unsafe { (libc::getpid() as u32, libc::gettid() as u32, libc::getuid()) };
    StepOutcome {
        record_type: "step".into(),
        scenario: scenario.name.into(),
        step: index,
        sock: step.sock,
        call: describe(step),
        op,
        expect: step.expect,
        rule: step.rule.map(str::to_string),
        errno,
        pid,
        tid,
        uid: sock.and_then(|s| s.uid).unwrap_or(uid),
        netns,
        fd,
        ino,
        requested,
        bound,
        options: sock.map(options).unwrap_or_default(),
    }
}
