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

#![allow(dead_code)]

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any wait may last before the test fails.
pub const BOUND: Duration = Duration::from_secs(20);

/// uid and gid of `nobody`, for the unprivileged caller.
pub const NOBODY: u32 = 65534;

/// Fails the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests load eBPF programs and must run as root (euid is {euid})"
    );
}

// ---------------------------------------------------------------------------------------------
// The caller: a thread in a private network namespace
// ---------------------------------------------------------------------------------------------

/// Who makes the calls: the identity fields every event of this caller carries.
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// The thread name, truncated to 15 bytes as the kernel's `comm` is.
    pub comm: String,
    /// Inode of the caller's network namespace.
    pub netns: u64,
}

/// Runs `body` on a new thread named `name`, inside a new network namespace where only `lo`
/// (127.0.0.0/8 and ::1) is up. A panic in `body` fails the test with its own message.
pub fn in_netns<R: Send>(name: &str, body: impl FnOnce(&Caller) -> R + Send) -> R {
    require_root();
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, || {
                enter_private_netns();
                let caller = Caller {
                    pid: std::process::id(),
                    // SAFETY: gettid has no preconditions.
                    tid: unsafe { libc::gettid() } as u32,
                    // SAFETY: getuid has no preconditions.
                    uid: unsafe { libc::getuid() },
                    comm: truncate_comm(name),
                    netns: thread_netns(),
                };
                body(&caller)
            })
            .expect("spawning the test thread");
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The kernel keeps 15 bytes of a thread name (`TASK_COMM_LEN` - 1).
fn truncate_comm(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// Moves the calling thread into a new network namespace and brings its `lo` up.
fn enter_private_netns() {
    // SAFETY: unshare with CLONE_NEWNET affects only the calling thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", last_error());
    let sock = raw_socket(libc::AF_INET, libc::SOCK_DGRAM);
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq naming "lo"; the fd is a socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    assert_eq!(rc, 0, "SIOCGIFFLAGS lo: {}", last_error());
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    assert_eq!(rc, 0, "SIOCSIFFLAGS lo up: {}", last_error());
}

/// Inode of the calling thread's network namespace.
fn thread_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat /proc/thread-self/ns/net")
        .ino()
}

fn raw_socket(family: libc::c_int, ty: libc::c_int) -> OwnedFd {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", last_error());
    // SAFETY: `fd` was just opened and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
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

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn errno_of(result: std::io::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => err.raw_os_error().expect("an OS error"),
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// A socket option the observer reports, with the JSON key it reports it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    ReuseAddr,
    ReusePort,
    V6Only,
    FreeBind,
    Transparent,
    BindAddressNoPort,
}

impl Opt {
    pub const ALL: [Opt; 6] = [
        Opt::ReuseAddr,
        Opt::ReusePort,
        Opt::V6Only,
        Opt::FreeBind,
        Opt::Transparent,
        Opt::BindAddressNoPort,
    ];

    /// The event's JSON key for this option.
    pub fn key(self) -> &'static str {
        match self {
            Opt::ReuseAddr => "reuseaddr",
            Opt::ReusePort => "reuseport",
            Opt::V6Only => "v6only",
            Opt::FreeBind => "freebind",
            Opt::Transparent => "transparent",
            Opt::BindAddressNoPort => "bind_address_no_port",
        }
    }

    /// `(level, name)` for setsockopt.
    fn sockopt(self) -> (libc::c_int, libc::c_int) {
        match self {
            Opt::ReuseAddr => (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            Opt::ReusePort => (libc::SOL_SOCKET, libc::SO_REUSEPORT),
            Opt::V6Only => (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            Opt::FreeBind => (libc::IPPROTO_IP, libc::IP_FREEBIND),
            Opt::Transparent => (libc::IPPROTO_IP, libc::IP_TRANSPARENT),
            Opt::BindAddressNoPort => (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT),
        }
    }
}

/// What identifies a socket in an event.
#[derive(Debug, Clone)]
pub struct SockId {
    pub family: &'static str,
    pub protocol: &'static str,
    pub fd: i32,
    /// Inode of the socket, from `fstat` on its fd.
    pub ino: u64,
    /// Owner of the socket (the creator's fsuid).
    pub uid: u32,
}

impl AsRef<SockId> for SockId {
    fn as_ref(&self) -> &SockId {
        self
    }
}

/// A socket of the calling thread (and so of its network namespace).
pub struct Sock {
    inner: socket2::Socket,
    id: SockId,
}

impl AsRef<SockId> for Sock {
    fn as_ref(&self) -> &SockId {
        &self.id
    }
}

impl Sock {
    pub fn tcp4() -> Sock {
        Sock::new(socket2::Domain::IPV4, socket2::Type::STREAM, "inet", "tcp")
    }
    pub fn tcp6() -> Sock {
        Sock::new(socket2::Domain::IPV6, socket2::Type::STREAM, "inet6", "tcp")
    }
    pub fn udp4() -> Sock {
        Sock::new(socket2::Domain::IPV4, socket2::Type::DGRAM, "inet", "udp")
    }
    pub fn udp6() -> Sock {
        Sock::new(socket2::Domain::IPV6, socket2::Type::DGRAM, "inet6", "udp")
    }

    fn new(
        domain: socket2::Domain,
        ty: socket2::Type,
        family: &'static str,
        protocol: &'static str,
    ) -> Sock {
        let inner = socket2::Socket::new(domain, ty, None).expect("socket");
        let fd = inner.as_raw_fd();
        let id = SockId {
            family,
            protocol,
            fd,
            ino: fd_inode(fd),
            // SAFETY: geteuid has no preconditions.
            uid: unsafe { libc::geteuid() },
        };
        Sock { inner, id }
    }

    /// Sets (`on`) or clears an option; panics if the kernel refuses.
    pub fn set(self, opt: Opt, on: bool) -> Sock {
        let (level, name) = opt.sockopt();
        let value: libc::c_int = on.into();
        // SAFETY: `value` is a c_int that outlives the call; its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.id.fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt {opt:?}={on}: {}", last_error());
        self
    }

    /// `bind(addr)`: 0 on success, else the errno.
    pub fn bind(&self, addr: &str) -> i32 {
        errno_of(self.inner.bind(&parse_addr(addr).into()))
    }

    /// `listen(128)`: 0 on success, else the errno.
    pub fn listen(&self) -> i32 {
        errno_of(self.inner.listen(128))
    }

    /// `getsockname`.
    pub fn local(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .expect("getsockname")
            .as_socket()
            .expect("an inet address")
    }

    pub fn fd(&self) -> i32 {
        self.id.fd
    }
}

fn parse_addr(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| panic!("`{addr}` is not an address:port"))
}

fn fd_inode(fd: RawFd) -> u64 {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    assert_eq!(rc, 0, "fstat: {}", last_error());
    st.st_ino
}

// ---------------------------------------------------------------------------------------------
// An unprivileged caller: a child forked from the test thread (so in its network namespace)
// ---------------------------------------------------------------------------------------------

/// What a child that dropped to `nobody` did.
#[derive(Debug)]
pub struct ChildBind {
    /// The child as a caller (pid = tid = the child's pid, uid nobody, the thread's comm).
    pub caller: Caller,
    /// The child's socket.
    pub sock: SockId,
    /// 0 or the errno of its `bind()`.
    pub errno: i32,
}

/// Forks a child that becomes uid/gid `nobody`, creates a TCP socket and binds it to `addr`,
/// reports back through a pipe and exits. Must be called on an [`in_netns`] thread.
pub fn bind_as_nobody(parent: &Caller, addr: SocketAddrV4) -> ChildBind {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let no_forks = no_forks();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", last_error());
    // SAFETY: both were just opened and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only makes async-signal-safe system calls and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", last_error());
    if pid == 0 {
        let report = child_bind(&sa);
        // SAFETY: writes the report from a local array, then ends the child without running
        // any of the parent's atexit handlers or destructors.
        unsafe {
            libc::write(
                write_end.as_raw_fd(),
                report.as_ptr().cast(),
                std::mem::size_of_val(&report),
            );
            libc::_exit(0);
        }
    }
    drop(write_end);
    let pidfd = pidfd_open(pid as u32);
    let exited = wait_pidfd(&pidfd, BOUND);
    if !exited {
        // SAFETY: our own unreaped child: the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    drop(no_forks);
    assert!(exited, "the child {pid} did not exit within {BOUND:?}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child {pid} ended with wait status {status:#x}"
    );
    let mut bytes = [0u8; 32];
    std::fs::File::from(read_end)
        .read_exact(&mut bytes)
        .expect("reading the child's report");
    let word = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let (stage, errno, fd, ino) = (word(0), word(1), word(2), word(3));
    assert_eq!(
        stage,
        0,
        "the child failed at {} with errno {errno}",
        ["", "setgroups", "setgid", "setuid", "socket", "fstat"][stage as usize]
    );
    ChildBind {
        caller: Caller {
            pid: pid as u32,
            tid: pid as u32,
            uid: NOBODY,
            comm: parent.comm.clone(),
            netns: parent.netns,
        },
        sock: SockId {
            family: "inet",
            protocol: "tcp",
            fd: fd as i32,
            ino,
            uid: NOBODY,
        },
        errno: errno as i32,
    }
}

/// The child's side: `[stage, errno, fd, ino]`, stage 0 when it got as far as `bind()`.
fn child_bind(sa: &libc::sockaddr_in) -> [u64; 4] {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u64;
    // Raw system calls: they change the credentials of this (single) thread only, with no
    // library machinery after fork.
    // SAFETY: plain system calls on values owned here.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
            return [1, errno(), 0, 0];
        }
        if libc::syscall(libc::SYS_setgid, NOBODY) != 0 {
            return [2, errno(), 0, 0];
        }
        if libc::syscall(libc::SYS_setuid, NOBODY) != 0 {
            return [3, errno(), 0, 0];
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return [4, errno(), 0, 0];
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return [5, errno(), 0, 0];
        }
        let rc = libc::bind(
            fd,
            (sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let bind_errno = if rc == 0 { 0 } else { errno() };
        [0, bind_errno, fd as u64, st.st_ino]
    }
}

fn pidfd_open(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open(2) on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open({pid}): {}", last_error());
    // SAFETY: a new descriptor owned here only.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Waits until the process behind `pidfd` exits, at most `bound`. True if it did.
fn wait_pidfd(pidfd: &OwnedFd, bound: Duration) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Expected events
// ---------------------------------------------------------------------------------------------

/// One expected `"type":"bind"` record, every field but `time` (checked for shape only).
#[derive(Debug, Clone)]
pub struct Expect(Map<String, Value>);

/// The event of a `bind(requested)` call by `caller` on `sock`; by default it succeeded, left
/// nothing bound and every option clear: state what differs with the methods below.
pub fn bind_event(caller: &Caller, sock: impl AsRef<SockId>, requested: &str) -> Expect {
    Expect::new(caller, sock.as_ref(), "bind", endpoint(requested))
}

/// The event of a `listen()` call (no requested address).
pub fn listen_event(caller: &Caller, sock: impl AsRef<SockId>) -> Expect {
    Expect::new(caller, sock.as_ref(), "listen", Value::Null)
}

fn endpoint(addr: &str) -> Value {
    let addr = parse_addr(addr);
    json!({"addr": addr.ip().to_string(), "port": addr.port()})
}

impl Expect {
    fn new(caller: &Caller, sock: &SockId, op: &str, requested: Value) -> Expect {
        let mut v = json!({
            "type": "bind",
            "op": op,
            "pid": caller.pid,
            "tid": caller.tid,
            "uid": caller.uid,
            "comm": caller.comm,
            "netns": caller.netns,
            "family": sock.family,
            "protocol": sock.protocol,
            "fd": sock.fd,
            "requested": requested,
            "bound": null,
            "bound_dev_if": 0,
            "sock_uid": sock.uid,
            "sock_ino": sock.ino,
            "result": "OK",
            "errno": 0,
            "hook": format!("tracepoint:sys_exit_{op}"),
        });
        let map = v.as_object_mut().unwrap();
        for opt in Opt::ALL {
            map.insert(opt.key().into(), false.into());
        }
        Expect(map.clone())
    }

    /// What the socket holds after the call, e.g. `"127.0.0.1:5000"`.
    pub fn bound(mut self, addr: &str) -> Expect {
        self.0.insert("bound".into(), endpoint(addr));
        self
    }

    /// This option is set on the socket after the call.
    pub fn flag(mut self, opt: Opt) -> Expect {
        self.0.insert(opt.key().into(), true.into());
        self
    }

    /// The call failed with this errno (`result` is its name).
    pub fn fails(mut self, name: &str, errno: i32) -> Expect {
        self.0.insert("result".into(), name.into());
        self.0.insert("errno".into(), errno.into());
        self
    }

    pub fn json(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// A child process with its output read on other threads
// ---------------------------------------------------------------------------------------------

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
}

impl Proc {
    pub fn spawn(args: &[&str], stdout: Stdout) -> Proc {
        let no_forks = no_forks();
        let mut child = Command::new(env!("CARGO_BIN_EXE_observer"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the observer binary");
        drop(no_forks);
        let pidfd = pidfd_open(child.id());
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx_err = tx.clone();
        std::thread::spawn(move || read_stdout(out, tx, stdout));
        std::thread::spawn(move || read_stderr(err, tx_err));
        Proc {
            child,
            pidfd,
            rx,
            stderr: String::new(),
            stdout_done: false,
            stderr_done: false,
            status: None,
        }
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

fn read_stdout(out: std::process::ChildStdout, tx: Sender<Msg>, mode: Stdout) {
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
                if start && mode == Stdout::CloseAfterStart {
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

// ---------------------------------------------------------------------------------------------
// The observer
// ---------------------------------------------------------------------------------------------

/// A running `observer watch --json`, past its start record.
pub struct Observer {
    proc: Proc,
    /// The start record.
    pub start: Value,
    /// Every record after the start record, for failure messages.
    records: Vec<Value>,
    /// The bind records handed out by [`Observer::expect`].
    events: Vec<Value>,
    /// Wall clock when the observer was started, in Unix microseconds.
    started_us: i64,
}

impl Observer {
    /// `observer watch --json --netns <caller's netns> <extra...>`, started and ready.
    pub fn watch(caller: &Caller, extra: &[&str]) -> Observer {
        let netns = caller.netns.to_string();
        let mut args = vec!["watch", "--json", "--netns", &netns];
        args.extend_from_slice(extra);
        Observer::start(&args, Stdout::Read)
    }

    /// `observer <args>`, waiting (bounded) for its start record.
    pub fn start(args: &[&str], stdout: Stdout) -> Observer {
        require_root();
        let started_us = unix_micros_now();
        let mut proc = Proc::spawn(args, stdout);
        let deadline = Instant::now() + BOUND;
        let start = match proc.next_line(deadline) {
            Next::Line(line) => parse_record(&line),
            other => {
                let status = proc.wait_exit(Instant::now());
                panic!(
                    "no start record from `observer {}` ({other:?}, exit {status:?}); stderr:\n{}",
                    args.join(" "),
                    proc.stderr()
                )
            }
        };
        assert_eq!(start["type"], "start", "first record: {start}");
        assert_eq!(start["pid"], proc.pid(), "start record pid: {start}");
        assert_eq!(start["backend"], "tracepoint", "{start}");
        assert_eq!(
            start["hooks"],
            json!(["tracepoint:sys_exit_bind", "tracepoint:sys_exit_listen"]),
            "{start}"
        );
        assert_eq!(
            start["unknown_fields"],
            json!([]),
            "this kernel's BTF lacks fields the tests assert: {start}"
        );
        Observer {
            proc,
            start,
            records: Vec::new(),
            events: Vec::new(),
            started_us,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The next record, or a panic that says what arrived so far.
    fn next_record(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        match self.proc.next_line(deadline) {
            Next::Line(line) => {
                let record = parse_record(&line);
                self.records.push(record.clone());
                record
            }
            other => {
                let status = self.proc.wait_exit(Instant::now());
                panic!(
                    "waiting for {waiting_for}: {other:?} (bound {BOUND:?}, exit {status:?})\n\
                     records so far:\n{}\nstderr:\n{}",
                    self.dump(),
                    self.proc.stderr()
                )
            }
        }
    }

    fn dump(&self) -> String {
        if self.records.is_empty() {
            return "  (none)".into();
        }
        self.records
            .iter()
            .map(|r| format!("  {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (bounded) for exactly the next `expected.len()` events and compares each, in
    /// order, field by field.
    pub fn expect(&mut self, expected: &[Expect]) {
        let deadline = Instant::now() + BOUND;
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let what = format!("{} events, {} so far", expected.len(), got.len());
            let record = self.next_record(deadline, &what);
            match record["type"].as_str() {
                Some("bind") => got.push(record),
                _ => panic!(
                    "unexpected record while {what}: {record}\nall:\n{}",
                    self.dump()
                ),
            }
        }
        check_times(&got, self.started_us);
        for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
            compare_event(i, &want.json(), got);
        }
        self.events.extend(got);
    }

    /// SIGTERM, then reads to the summary (reason `"signal"`): no event may arrive besides
    /// those [`Observer::expect`] took. Returns the summary.
    pub fn stop(mut self) -> Value {
        self.proc.signal(libc::SIGTERM);
        let summary = self.end(true);
        assert_eq!(summary["reason"], "signal", "summary: {summary}");
        summary
    }

    /// Waits for the observer to end by itself (e.g. `--duration`); events it prints on the
    /// way are not checked.
    pub fn finish(mut self) -> Value {
        self.end(false)
    }

    /// Reads to the summary and checks it, the exit status and that nothing follows. With
    /// `strict`, no event may arrive besides those [`Observer::expect`] took, and the summary
    /// must count exactly those.
    fn end(&mut self, strict: bool) -> Value {
        let deadline = Instant::now() + BOUND;
        let mut extra = Vec::new();
        let summary = loop {
            let record = self.next_record(deadline, "the summary record");
            match record["type"].as_str() {
                Some("summary") => break record,
                Some("bind") => extra.push(record),
                _ => panic!("unexpected record: {record}\nall:\n{}", self.dump()),
            }
        };
        let (status, rest, stderr) = self.proc.wait_end(deadline);
        assert!(
            status.success(),
            "observer exited with {status:?} (signal {:?}); stderr:\n{stderr}",
            status.signal()
        );
        assert!(rest.is_empty(), "output after the summary: {rest:?}");
        assert_eq!(summary["lost"], 0, "summary: {summary}");
        assert_eq!(summary["decode_errors"], 0, "summary: {summary}");
        if strict {
            assert!(
                extra.is_empty(),
                "events beyond the expected ones:\n{}",
                extra
                    .iter()
                    .map(|r| format!("  {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert_eq!(summary["events"], self.events.len(), "summary: {summary}");
            let mut results: BTreeMap<String, u64> = BTreeMap::new();
            for event in &self.events {
                *results
                    .entry(event["result"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            assert_eq!(summary["results"], json!(results), "summary: {summary}");
        }
        summary
    }

    /// For a closed output: waits (bounded) for the end of the observer, returns its status
    /// and its stderr.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + BOUND;
        match self.proc.wait_exit(deadline) {
            Some(status) => {
                let stderr = self.proc.stderr().to_string();
                (status, stderr)
            }
            None => panic!(
                "observer {} still running after {BOUND:?}; stderr:\n{}",
                self.pid(),
                self.proc.stderr()
            ),
        }
    }

    /// For [`Stdout::CloseAfterStart`]: waits (bounded) until the read end is closed.
    pub fn wait_stdout_closed(&mut self) {
        match self.proc.next_line(Instant::now() + BOUND) {
            Next::Closed => {}
            other => panic!("expected the closed stdout, got {other:?}"),
        }
    }
}

fn parse_record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"))
}

/// Microseconds since the Unix epoch, now.
fn unix_micros_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    since.as_micros() as i64
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (RFC 3339, UTC, microseconds) to Unix microseconds.
fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape = b.len() == 27
        && [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ]
        .iter()
        .all(|&(i, c)| b[i] == c);
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| text.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, us) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us)
}

/// Checks each event's `time`: RFC 3339 UTC with microseconds, within the run (from `since`
/// to now, give or take a second) and never before the previous event's.
fn check_times(events: &[Value], since_us: i64) {
    let now_us = unix_micros_now();
    let mut previous = since_us - 1_000_000;
    for event in events {
        let text = event["time"].as_str().unwrap_or_default();
        let Some(t) = parse_time(text) else {
            panic!("bad time {:?} in {event}", event["time"]);
        };
        assert!(
            t >= previous && t <= now_us + 1_000_000,
            "time {text} out of order or outside the run (started {since_us} us, now {now_us} \
             us): {event}"
        );
        previous = t;
    }
}

/// Compares one event with the expected one: every field but `time` exactly.
fn compare_event(index: usize, want: &Value, got: &Value) {
    let mut got = got.clone();
    got.as_object_mut().unwrap().remove("time");
    if *want != got {
        let (w, g) = (want.as_object().unwrap(), got.as_object().unwrap());
        let mut keys: Vec<&String> = w.keys().chain(g.keys()).collect();
        keys.sort();
        keys.dedup();
        let diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| w.get(*k) != g.get(*k))
            .map(|k| {
                format!(
                    "  {k}: expected {}, got {}",
                    w.get(k).map_or("(absent)".into(), Value::to_string),
                    g.get(k).map_or("(absent)".into(), Value::to_string)
                )
            })
            .collect();
        panic!(
            "event #{index} differs:\n{}\nexpected: {want}\ngot:      {got}",
            diffs.join("\n")
        );
    }
}
