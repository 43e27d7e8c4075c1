//! Another process as the caller: a child forked from an [`in_netns`] thread (so in its network
//! namespace) that drops to `nobody` ([`bind_as_nobody`]) or moves into a cgroup of the test's
//! ([`bind_in_cgroup`]), binds one TCP socket and reports what it got.
//!
//! [`in_netns`]: super::in_netns

use super::proc::{pidfd_open, wait_pidfd};
use super::{BOUND, Caller, NOBODY, SockId, last_error, no_forks};
use std::io::Read;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// What the child does before it binds.
enum Setup {
    /// Nothing: binds as the test does (root), then exits at once, as a server that cannot
    /// get its port does.
    AsIs,
    /// Becomes uid/gid `nobody`.
    Nobody,
    /// Writes itself into this `cgroup.procs` file (NUL-terminated path).
    Cgroup(std::ffi::CString),
}

/// Forks a child that becomes uid/gid `nobody`, creates a TCP socket and binds it to `addr`,
/// reports back through a pipe and exits. Must be called on an [`in_netns`] thread.
pub fn bind_as_nobody(parent: &Caller, addr: SocketAddrV4) -> ChildBind {
    fork_bind(parent, addr, Setup::Nobody)
}

/// Forks a child (root, like the test) that binds like [`bind_as_nobody`] and exits. Must be
/// called on an [`in_netns`] thread.
pub fn bind_and_exit(parent: &Caller, addr: SocketAddrV4) -> ChildBind {
    fork_bind(parent, addr, Setup::AsIs)
}

/// Forks a child (root, like the test) that moves into the cgroup v2 directory `cgroup`,
/// then binds like [`bind_as_nobody`]. Must be called on an [`in_netns`] thread.
pub fn bind_in_cgroup(parent: &Caller, addr: SocketAddrV4, cgroup: &std::path::Path) -> ChildBind {
    use std::os::unix::ffi::OsStrExt as _;
    let procs = cgroup.join("cgroup.procs");
    let procs = std::ffi::CString::new(procs.as_os_str().as_bytes()).unwrap();
    fork_bind(parent, addr, Setup::Cgroup(procs))
}

fn fork_bind(parent: &Caller, addr: SocketAddrV4, setup: Setup) -> ChildBind {
    let sa = super::sock::sockaddr_in(addr);
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
        let report = child_bind(&sa, &setup);
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
        [
            "",
            "setgroups",
            "setgid",
            "setuid",
            "socket",
            "fstat",
            "cgroup.procs"
        ][stage as usize]
    );
    let uid = match setup {
        Setup::Nobody => NOBODY,
        Setup::Cgroup(_) | Setup::AsIs => parent.uid,
    };
    ChildBind {
        caller: Caller {
            pid: pid as u32,
            tid: pid as u32,
            uid,
            comm: parent.comm.clone(),
            netns: parent.netns,
        },
        sock: SockId {
            family: "inet",
            protocol: "tcp",
            fd: fd as i32,
            ino,
            uid,
        },
        errno: errno as i32,
    }
}

/// The child's side: `[stage, errno, fd, ino]`, stage 0 when it got as far as `bind()`.
fn child_bind(sa: &libc::sockaddr_in, setup: &Setup) -> [u64; 4] {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u64;
    // Raw system calls: they change the credentials of this (single) thread only, with no
    // library machinery after fork.
    // SAFETY: plain system calls on values owned here.
    unsafe {
        match setup {
            Setup::AsIs => {}
            Setup::Cgroup(procs) => {
                // "0" moves the writing process.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return [6, errno(), 0, 0];
                }
                libc::close(fd);
            }
            Setup::Nobody => {
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
                    return [1, errno(), 0, 0];
                }
                if libc::syscall(libc::SYS_setgid, NOBODY) != 0 {
                    return [2, errno(), 0, 0];
                }
                if libc::syscall(libc::SYS_setuid, NOBODY) != 0 {
                    return [3, errno(), 0, 0];
                }
            }
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
