//! Who holds a socket: the processes with a descriptor for its inode (from `/proc/PID/fd`,
//! as `ss -p` finds them), with their comm and command line, read once per process however
//! many of its descriptors match, the command line bounded to [`CMDLINE_MAX`] bytes before it
//! is read into memory.
//!
//! The socket options the kernel does not export through sock_diag come from the socket
//! iterators ([`super::sockflags`]). Only for a socket they do not list — a bound, not
//! listening TCP socket, which is in the kernel's bind hash alone — are they read from a
//! duplicate of the holder's descriptor ([`sockopts`], `pidfd_getfd`, needs CAP_SYS_PTRACE
//! over the holder), which on a host using cgroup v1 `net_cls`/`net_prio` rewrites the
//! socket's classid and priority index (`__receive_sock`).

use super::sockflags::SockOpts;
use crate::model::Owner;
use crate::sockopt::Opt;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;

/// The most of a command line read (the kernel's own limit is the whole argument area).
pub const CMDLINE_MAX: u64 = 4096;

/// `PROC_PID_INIT_INO`: the inode number the kernel gives the initial pid namespace
/// (`include/linux/proc_ns.h`, fixed since 3.8).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

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
        // Described on its first matching descriptor only.
        let mut this: Option<(String, String)> = None;
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
            if owners.iter().any(|o| o.pid == pid) {
                continue;
            }
            let (comm, cmdline) = this.get_or_insert_with(|| describe(pid)).clone();
            owners.push(Owner {
                pid,
                comm,
                cmdline,
                fd: fdnum,
            });
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

/// comm and command line (arguments joined by spaces, at most [`CMDLINE_MAX`] bytes read).
fn describe(pid: u32) -> (String, String) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let mut raw = Vec::new();
    let cmdline = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(CMDLINE_MAX).read_to_end(&mut raw))
        .map(|_| join_args(&raw))
        .unwrap_or_default();
    (comm, cmdline)
}

fn join_args(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether this process's `/proc` may miss processes: its pid namespace is not the initial
/// one, so processes of parent or sibling namespaces (a holder among them) are not listed.
/// `None` when the namespace cannot be read.
pub fn pid_namespace_hides_processes() -> Option<bool> {
    let ino = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    Some(ino != PROC_PID_INIT_INO)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_joined_and_empty_ones_dropped() {
        assert_eq!(
            join_args(b"nginx\0-g\0\0daemon off;\0"),
            "nginx -g daemon off;"
        );
        assert_eq!(join_args(b""), "");
    }

    #[test]
    fn only_socket_links_name_an_inode() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn cmdline_is_read_up_to_the_bound() {
        // This test process's own command line is short; the bound is what `describe` reads.
        let (comm, cmdline) = describe(std::process::id());
        assert!(!comm.is_empty());
        assert!(cmdline.len() as u64 <= CMDLINE_MAX);
    }
}
