//! Sockets of the calling thread (and so of its network namespace): [`Sock`] makes the calls a
//! test asserts on and returns their errno; [`SockId`] is what identifies a socket in an event.
//! Options are set with the library's `Opt::sockopt` table.

use super::{Opt, errno_of, last_error};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

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
        let (level, name) = opt.sockopt(self.id.family == "inet6");
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

    /// `connect(addr)` (blocking): 0 on success, else the errno.
    pub fn connect(&self, addr: &str) -> i32 {
        errno_of(self.inner.connect(&parse_addr(addr).into()))
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

/// `"127.0.0.1:5000"` or `"[::1]:5000"` as an address; panics on anything else.
pub(super) fn parse_addr(addr: &str) -> SocketAddr {
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

/// `addr` as the kernel's `sockaddr_in`, for tests that call `bind()` raw (forked children,
/// tight loops).
pub fn sockaddr_in(addr: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}
