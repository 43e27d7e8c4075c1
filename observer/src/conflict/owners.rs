//! Who holds a socket: the processes with a descriptor for its inode (from `/proc/PID/fd`,
//! as `ss -p` finds them), their comm and command line, and the socket options the kernel does
//! not export through sock_diag (SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY), read from a
//! duplicate of the holder's descriptor (`pidfd_getfd`, needs CAP_SYS_PTRACE over the holder).

use crate::model::Owner;
use crate::sockopt::Opt;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Processes holding each of `inodes` (inode → owners, by pid). Inodes nobody holds are
/// absent. Processes that end during the scan are skipped.
pub fn find(inodes: &BTreeSet<u64>) -> BTreeMap<u64, Vec<Owner>> {
    let mut found: BTreeMap<u64, Vec<Owner>> = BTreeMap::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(ino) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(l.to_str()?))
                .filter(|ino| inodes.contains(ino))
            else {
                continue;
            };
            let Some(fdnum) = fd.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let owners = found.entry(ino).or_default();
            if !owners.iter().any(|o| o.pid == pid) {
                owners.push(describe(pid, fdnum));
            }
        }
    }
    found
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn describe(pid: u32, fd: i32) -> Owner {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Owner {
        pid,
        comm,
        cmdline,
        fd,
    }
}

/// Socket options read from a holder's descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockOpts {
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    /// Only for IPv6 sockets.
    pub v6only: Option<bool>,
}

/// Reads the options of socket `inode` through `owner`'s descriptor. Fails when the process
/// is gone, the descriptor now names another file, or we may not take it.
pub fn sockopts(owner: &Owner, inode: u64, v6: bool) -> io::Result<SockOpts> {
    let fd = take_fd(owner.pid, owner.fd)?;
    if fd_inode(&fd)? != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the descriptor was reused for another file",
        ));
    }
    let get = |opt: Opt| getsockopt_bool(&fd, opt, v6);
    Ok(SockOpts {
        reuseaddr: get(Opt::ReuseAddr).ok(),
        reuseport: get(Opt::ReusePort).ok(),
        v6only: if v6 { get(Opt::V6Only).ok() } else { None },
    })
}

/// A duplicate, in this process, of descriptor `fd` of process `pid`.
fn take_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) has no memory-safety preconditions.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned only here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd(2) on our own pidfd; it returns a new descriptor or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned only here (pidfd_getfd sets O_CLOEXEC).
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

fn fd_inode(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat writes only into `st`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

fn getsockopt_bool(fd: &OwnedFd, opt: Opt, v6: bool) -> io::Result<bool> {
    let (level, name) = opt.sockopt(v6);
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writing an int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value != 0)
}
