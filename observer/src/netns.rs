//! Private network namespaces: the scenario workload plays each scenario in one (loopback up,
//! any extra local address added to `lo`, so that no scenario touches a real service or sends
//! a packet anywhere but loopback), and the kernel-function self-test makes its test binds in
//! one. Below the backends, the scenarios and the diagnosis, which all use it.
//!
//! Network namespaces belong to threads: [`enter_private`] moves only the calling thread, and
//! every socket created on that thread afterwards lives in the new namespace.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Moves the calling thread into a new network namespace with `lo` up; returns its inode.
pub fn enter_private() -> io::Result<u64> {
    enter_empty()?;
    set_up("lo")?;
    current_inode()
}

/// Moves the calling thread into a new network namespace and leaves `lo` down: enough for
/// binds to the wildcard address, and needs only CAP_SYS_ADMIN (bringing `lo` up needs
/// CAP_NET_ADMIN too).
pub fn enter_empty() -> io::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; it affects only this thread's
    // network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Inode of the calling thread's network namespace (what events carry as `netns`).
pub fn current_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Where a namespace is: the caller's own, a namespace file (`/proc/PID/ns/net`,
/// `/run/netns/NAME`), or a descriptor already open on one (which stays valid after every
/// process in the namespace has gone, as long as the namespace itself lives).
#[derive(Debug, Clone)]
pub enum Netns {
    Current,
    Path(PathBuf),
    /// An open namespace descriptor and the namespace's inode.
    Handle(Arc<OwnedFd>, u64),
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netns::Current => f.write_str("of this thread"),
            Netns::Path(p) => write!(f, "{}", p.display()),
            Netns::Handle(_, ino) => write!(f, "{ino}"),
        }
    }
}

/// Opens the namespace file `path` if its inode is `ino`.
pub fn open_if(path: &Path, ino: u64) -> io::Result<Netns> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.ino() != ino {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not network namespace {ino}", path.display()),
        ));
    }
    Ok(Netns::Handle(Arc::new(OwnedFd::from(file)), ino))
}

/// Runs `f` in the network namespace `ns` (on a new thread unless it is the current one).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let opened;
    let fd = match ns {
        Netns::Current => return f(),
        Netns::Path(path) => {
            opened = std::fs::File::open(path)?;
            opened.as_raw_fd()
        }
        Netns::Handle(fd, _) => fd.as_raw_fd(),
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns affects only this thread, which ends when `f` returns; `fd`
                // stays open for the whole scope (`opened` or the handle outlive it).
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Handles on the network namespaces of recent failures, taken through the failing thread as
/// soon as its event is read: most servers exit right after an EADDRINUSE, and a lookup that
/// starts later would find no way in. Each is kept [`HANDLE_KEEP`] after its last use (a
/// crash-looping service fails in the same namespace again and again), and at most
/// [`HANDLES_MAX`] are kept: an open handle keeps a namespace alive, and the observer must not
/// keep a dead one for long.
#[derive(Default)]
pub struct Handles {
    open: std::collections::HashMap<u64, (Netns, u64)>,
}

/// How long a namespace handle is kept after its last use.
pub const HANDLE_KEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Namespace handles kept at most.
pub const HANDLES_MAX: usize = 256;

impl Handles {
    /// A handle on namespace `ino`: the one kept, or one opened now through thread `tid` of
    /// `pid`. `None` when that thread has gone or is in another namespace (the lookup then
    /// looks for another task in it). `now` is monotonic nanoseconds.
    pub fn get(&mut self, pid: u32, tid: u32, ino: u64, now: u64) -> Option<Netns> {
        if let Some((ns, used)) = self.open.get_mut(&ino) {
            *used = now;
            return Some(ns.clone());
        }
        let ns = open_if(Path::new(&format!("/proc/{pid}/task/{tid}/ns/net")), ino).ok()?;
        if self.open.len() >= HANDLES_MAX {
            self.expire(now);
        }
        if self.open.len() >= HANDLES_MAX {
            // All recently used: the least recently used goes.
            let oldest = self.open.iter().min_by_key(|(_, (_, used))| *used);
            if let Some(&oldest) = oldest.map(|(ino, _)| ino) {
                self.open.remove(&oldest);
            }
        }
        self.open.insert(ino, (ns.clone(), now));
        Some(ns)
    }

    /// Lets go of the handles unused for [`HANDLE_KEEP`].
    pub fn expire(&mut self, now: u64) {
        let keep = HANDLE_KEEP.as_nanos() as u64;
        self.open
            .retain(|_, (_, used)| now.saturating_sub(*used) < keep);
    }

    /// Handles held now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Whether this process's pid namespace is the initial one (`PROC_PID_INIT_INO` in the
/// kernel's `include/linux/proc_ns.h`): outside it, `/proc` shows only part of the host's
/// processes.
pub fn in_initial_pid_ns() -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO)
}

/// The namespace file of the thread `tid` of `pid`, if its inode is `ino`; else the first
/// task on the host whose namespace has inode `ino`. `None` when no process is in it any
/// more.
pub fn find_netns(pid: u32, tid: u32, ino: u64) -> Option<PathBuf> {
    let is = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.ino() == ino);
    let own = PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net"));
    if is(&own) {
        return Some(own);
    }
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(tasks) = std::fs::read_dir(proc_entry.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let p = task.path().join("ns/net");
            if is(&p) {
                return Some(p);
            }
        }
    }
    None
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// `request` is one of libc's `SIOC*` constants, whose type differs between glibc and musl
/// (and so does `libc::Ioctl`): the cast makes one call site serve both.
fn ioctl(fd: &OwnedFd, request: u64, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid, writable ifreq for the duration of the call.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            request as libc::Ioctl,
            req as *mut libc::ifreq,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings an interface up.
fn set_up(name: &str) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(name)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
}

/// Adds an IPv4 address to loopback as the alias `lo:<n>` (a /32: the address alone becomes
/// local, no route to anywhere else appears).
pub fn add_local_v4(alias: u8, addr: Ipv4Addr) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(&format!("lo:{alias}"))?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in the ifreq union's sockaddr member (both 16 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
    let mut mask = req;
    let sin_mask = libc::sockaddr_in {
        sin_addr: libc::in_addr { s_addr: u32::MAX },
        ..sin
    };
    // SAFETY: as above.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin_mask as *const libc::sockaddr_in).cast::<u8>(),
            (&mut mask.ifr_ifru.ifru_netmask as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut mask)
}
