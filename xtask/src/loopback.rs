//! What the benchmark's helper binaries (`bench-load`, `bench-scale`) share: a private network
//! namespace with only loopback up, IPv4 socket addresses, and the raw `bind()`. Included by
//! path into each (they are separate binaries; xtask itself does not use it).

use std::io;

/// `rc` as a result: the value when not negative, else errno.
pub fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A new network namespace for this thread (and what it forks afterwards), with `lo` up: the
/// load never touches the host's ports.
pub fn private_loopback() -> io::Result<()> {
    // SAFETY: plain syscalls on memory owned here; the socket is closed before returning.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNET))?;
        let fd = check(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0))?;
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(()) }
    }
}

/// `addr:port` as a `sockaddr_in`.
pub fn sockaddr(addr: [u8; 4], port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(addr);
    sa
}

/// `bind(fd, sa)`, returning what the system call returns.
pub fn bind(fd: libc::c_int, sa: &libc::sockaddr_in) -> libc::c_int {
    // SAFETY: `sa` is a valid sockaddr_in of the length given.
    unsafe {
        libc::bind(
            fd,
            (sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    }
}
