//! The socket table of a network namespace, from the kernel's `NETLINK_SOCK_DIAG` (what `ss`
//! reads): every TCP socket that holds a port (listening, bound-only, connected, TIME_WAIT) or
//! every UDP socket, IPv4 and IPv6, with state, owner uid, inode, bound device, TIME_WAIT time
//! left and, where the kernel exports it, IPV6_V6ONLY.
//!
//! A lookup for one port asks the kernel for that local port only, with the bytecode filter
//! `ss` sends for `sport = :PORT` (`INET_DIAG_REQ_BYTECODE`, one `INET_DIAG_BC_S_COND`): the
//! kernel then copies out only the sockets on the port, so the cost of a lookup does not grow
//! with the connections on other ports.
//!
//! Netlink sockets see the namespace they were created in, so the caller runs the dump inside
//! the target namespace (`crate::netns::in_netns`).

use super::rules::{TCP_BOUND_INACTIVE, TCP_CLOSE};
use crate::model::Proto;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_SKV6ONLY: u16 = 11;
/// Request attribute carrying a filter program (`include/uapi/linux/inet_diag.h`).
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter op "local address and port match this `inet_diag_hostcond`": what `ss` sends, and
/// older than `INET_DIAG_BC_S_EQ`.
const INET_DIAG_BC_S_COND: u8 = 7;
/// The same for the remote address and port.
const INET_DIAG_BC_D_COND: u8 = 8;
/// Filter ops "local port at least / at most" (the port in the next op's `no`).
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
/// `sizeof(struct inet_diag_req_v2)`.
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;

/// One socket as `inet_diag` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSock {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    pub state: u8,
    /// Sent by the kernel only for IPv6 sockets in LISTEN or CLOSE; `Some(false)` for IPv4.
    pub v6only: Option<bool>,
    pub bound_dev_if: u32,
    pub uid: u32,
    /// 0 for TIME_WAIT and request sockets.
    pub inode: u64,
    /// Milliseconds until the timer fires (for TIME_WAIT: until the socket goes away).
    pub expires_ms: u32,
    /// The socket cookie (`sock_gen_cookie`), as the socket iterator programs report it too.
    pub cookie: u64,
    /// The remote address and port (unspecified and 0 for an unconnected socket).
    pub dst: IpAddr,
    pub dport: u16,
}

/// Every socket of `proto` (IPv4 and IPv6) in the calling thread's network namespace whose
/// local port is `port`, or every one of them for `None`.
pub fn dump(proto: Proto, port: Option<u16>) -> io::Result<Vec<DiagSock>> {
    let filter = port.map(sport_filter);
    let mut all = dump_family(proto, libc::AF_INET as u8, filter.as_deref())?;
    all.extend(dump_family(proto, libc::AF_INET6 as u8, filter.as_deref())?);
    Ok(all)
}

/// Every socket of `proto` (IPv4 and IPv6) in the calling thread's network namespace whose
/// local port is in `lo..=hi` (the kernel filters, as for `ss 'sport >= :LO and sport <=
/// :HI'`): one walk of the kernel's tables for a port and its neighbours.
pub fn dump_range(proto: Proto, lo: u16, hi: u16) -> io::Result<Vec<DiagSock>> {
    let filter = range_filter(lo, hi);
    let mut all = dump_family(proto, libc::AF_INET as u8, Some(&filter))?;
    all.extend(dump_family(proto, libc::AF_INET6 as u8, Some(&filter))?);
    Ok(all)
}

/// Every socket of `proto` (IPv4 and IPv6) in the calling thread's network namespace whose
/// remote port is `dport` (the kernel filters, as for `ss dport = :PORT`), plus every one
/// with remote port 0 (listening, bound-only): what stands between a `connect()` to that
/// port and a local port.
pub fn dump_toward(proto: Proto, dport: u16) -> io::Result<Vec<DiagSock>> {
    let filter = cond_filter(INET_DIAG_BC_D_COND, dport);
    let mut all = dump_family(proto, libc::AF_INET as u8, Some(&filter))?;
    all.extend(dump_family(proto, libc::AF_INET6 as u8, Some(&filter))?);
    if dport != 0 {
        let idle = cond_filter(INET_DIAG_BC_D_COND, 0);
        all.extend(dump_family(proto, libc::AF_INET as u8, Some(&idle))?);
        all.extend(dump_family(proto, libc::AF_INET6 as u8, Some(&idle))?);
    }
    Ok(all)
}

fn dump_family(proto: Proto, family: u8, filter: Option<&[u8]>) -> io::Result<Vec<DiagSock>> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned only here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = request(proto, family, filter);
    // SAFETY: the buffer is valid for its length; a zero-initialised sockaddr_nl (pid 0 = the
    // kernel) is a valid destination.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            sock.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if parse_batch(&buf[..n as usize], proto, &mut out).map_err(|e| no_handler(e, proto))? {
            return Ok(out);
        }
    }
}

/// ENOENT from sock_diag: the kernel has no handler for the protocol (`inet_diag_lock_handler`
/// after its `request_module` found nothing): say which module it is rather than "No such
/// file or directory".
fn no_handler(err: io::Error, proto: Proto) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOENT) {
        return err;
    }
    let module = match proto {
        Proto::Tcp => "tcp_diag",
        Proto::Udp => "udp_diag",
    };
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "the kernel has no sock_diag handler for {} sockets (module {module} not loaded and \
             not loadable here: modprobe {module})",
            match proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
            }
        ),
    )
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for every socket of every state, with `filter`
/// (a bytecode attribute, e.g. [`sport_filter`]) the sockets it keeps.
fn request(proto: Proto, family: u8, filter: Option<&[u8]>) -> Vec<u8> {
    let len = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN + filter.map_or(0, <[u8]>::len);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    let protocol = match proto {
        Proto::Tcp => libc::IPPROTO_TCP,
        Proto::Udp => libc::IPPROTO_UDP,
    };
    m.extend_from_slice(&[family, protocol as u8, 0, 0]);
    // Every state, including TCP_BOUND_INACTIVE (bound, not listening, not connected).
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ignored by a dump.
    m.resize(NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN, 0);
    if let Some(f) = filter {
        m.extend_from_slice(f);
    }
    m
}

/// The `INET_DIAG_REQ_BYTECODE` attribute for "local port is `port`": one
/// `inet_diag_bc_op { code, yes, no }` followed by its `inet_diag_hostcond { family,
/// prefix_len, port }` (AF_UNSPEC and prefix 0: any address). The kernel runs it as: on a
/// match skip `yes` bytes (to the end: accept), else `no` bytes (past the end: reject), which
/// its audit (`inet_diag_bc_audit`) allows up to the program length + 4.
fn sport_filter(port: u16) -> Vec<u8> {
    cond_filter(INET_DIAG_BC_S_COND, port)
}

/// [`sport_filter`] for another condition: `INET_DIAG_BC_D_COND` matches the remote end.
fn cond_filter(code: u8, port: u16) -> Vec<u8> {
    const OP: usize = 4;
    const HOSTCOND: usize = 8;
    let prog = OP + HOSTCOND;
    let mut a = Vec::with_capacity(4 + prog);
    a.extend_from_slice(&((4 + prog) as u16).to_ne_bytes());
    a.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    a.push(code);
    a.push(prog as u8); // yes
    a.extend_from_slice(&((prog + 4) as u16).to_ne_bytes()); // no
    a.push(libc::AF_UNSPEC as u8);
    a.push(0); // prefix_len
    a.extend_from_slice(&[0, 0]); // padding before the int
    // The kernel compares it with the host-order port (`entry->sport`).
    a.extend_from_slice(&i32::from(port).to_ne_bytes());
    a
}

/// The bytecode for "local port from `lo` to `hi`": `INET_DIAG_BC_S_GE` then
/// `INET_DIAG_BC_S_LE`, each an op followed by one whose `no` holds the port
/// (`net/ipv4/inet_diag.c` `inet_diag_bc_run`, `valid_port_comparison`). A failed comparison
/// jumps 4 bytes past the end, which rejects the socket.
fn range_filter(lo: u16, hi: u16) -> Vec<u8> {
    const PROG: usize = 16;
    let mut a = Vec::with_capacity(4 + PROG);
    a.extend_from_slice(&((4 + PROG) as u16).to_ne_bytes());
    a.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    for (code, port, left) in [
        (INET_DIAG_BC_S_GE, lo, PROG),
        (INET_DIAG_BC_S_LE, hi, PROG / 2),
    ] {
        a.push(code);
        a.push(8); // yes: the next comparison
        a.extend_from_slice(&((left + 4) as u16).to_ne_bytes()); // no: past the end
        a.extend_from_slice(&[0, 0]);
        a.extend_from_slice(&port.to_ne_bytes());
    }
    a
}

/// Parses one `recv()` worth of messages; true at the end of the dump. Public for the fuzz
/// target (`fuzz/`): its bytes come from the kernel.
pub fn parse_batch(mut b: &[u8], proto: Proto, out: &mut Vec<DiagSock>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(b[4..6].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated sock_diag message",
            ));
        }
        let payload = &b[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let error = payload
                    .get(0..4)
                    .map_or(0, |e| i32::from_ne_bytes(e.try_into().unwrap()));
                // The kernel sends -errno. Anything else (0 is an acknowledgement; i32::MIN
                // has no negation) names no failure: say what came.
                return Err(match error.checked_neg() {
                    Some(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
                    _ => io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("sock_diag error message with error {error}"),
                    ),
                });
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(s) = parse_msg(payload, proto) {
                    out.push(s);
                }
            }
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(false)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One `inet_diag_msg` and its attributes.
fn parse_msg(p: &[u8], proto: Proto) -> Option<DiagSock> {
    if p.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let u32_at = |o: usize| u32::from_ne_bytes(p[o..o + 4].try_into().unwrap());
    let family = p[0];
    // `inet_diag_sockid`: sport, dport, src[4], dst[4] (IPv4 in the first word of each).
    let ip_at = |o: usize| {
        if family == libc::AF_INET as u8 {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[o..o + 4]).unwrap()))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[o..o + 16]).unwrap()))
        }
    };
    let addr = ip_at(8);
    let mut v6only = (family == libc::AF_INET as u8).then_some(false);
    let mut attrs = &p[INET_DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let aty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if alen < 4 || alen > attrs.len() {
            break;
        }
        if aty == INET_DIAG_SKV6ONLY && alen >= 5 {
            v6only = Some(attrs[4] != 0);
        }
        attrs = &attrs[align4(alen).min(attrs.len())..];
    }
    Some(DiagSock {
        proto,
        addr,
        port: u16::from_be_bytes([p[4], p[5]]),
        state: p[1],
        v6only,
        bound_dev_if: u32_at(40),
        uid: u32_at(64),
        inode: u64::from(u32_at(68)),
        expires_ms: u32_at(52),
        cookie: u64::from(u32_at(44)) | u64::from(u32_at(48)) << 32,
        dst: ip_at(24),
        dport: u16::from_be_bytes([p[6], p[7]]),
    })
}

/// The state as `ss` names it.
pub fn state_name(proto: Proto, state: u8) -> &'static str {
    match (proto, state) {
        (Proto::Udp, TCP_CLOSE) => "UNCONN",
        (Proto::Tcp, TCP_CLOSE | TCP_BOUND_INACTIVE) => "BOUND",
        (_, 1) => "ESTABLISHED",
        (_, 2) => "SYN_SENT",
        (_, 3) => "SYN_RECV",
        (_, 4) => "FIN_WAIT1",
        (_, 5) => "FIN_WAIT2",
        (_, 6) => "TIME_WAIT",
        (_, 8) => "CLOSE_WAIT",
        (_, 9) => "LAST_ACK",
        (_, 10) => "LISTEN",
        (_, 11) => "CLOSING",
        (_, 12) => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Interface name of `index` in the calling thread's namespace.
pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The addresses of the calling thread's namespace (`getifaddrs`), IPv4 then IPv6, without
/// link-local IPv6 ones (a bind to those needs a scope id). Empty if they cannot be read.
pub fn local_addrs() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`, freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                let a = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if !a.is_unicast_link_local() {
                    out.push(IpAddr::V6(a));
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort_by_key(|a| a.is_ipv6());
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of type `ty` whose payload is `payload`.
    fn message(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.resize(NLMSG_HDRLEN, 0);
        m.extend_from_slice(payload);
        m
    }

    fn error_of(payload: &[u8]) -> io::Error {
        let mut out = Vec::new();
        let err = parse_batch(&message(NLMSG_ERROR, payload), Proto::Tcp, &mut out)
            .expect_err("an error message");
        assert!(out.is_empty());
        err
    }

    /// A kernel without the protocol's diag module answers ENOENT: the error names the module.
    #[test]
    fn a_missing_diag_handler_names_its_module() {
        let err = no_handler(error_of(&(-libc::ENOENT).to_ne_bytes()), Proto::Udp);
        assert_eq!(
            err.to_string(),
            "the kernel has no sock_diag handler for UDP sockets (module udp_diag not loaded and \
             not loadable here: modprobe udp_diag)"
        );
        let eperm = no_handler(io::Error::from_raw_os_error(libc::EPERM), Proto::Tcp);
        assert_eq!(eperm.raw_os_error(), Some(libc::EPERM));
    }

    /// Found by the `sockdiag` fuzz target: an error of i32::MIN overflowed its negation.
    #[test]
    fn error_messages_name_the_errno_or_say_what_came() {
        let eperm = error_of(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(eperm.raw_os_error(), Some(libc::EPERM));
        for (payload, text) in [
            (i32::MIN.to_ne_bytes().to_vec(), "error -2147483648"),
            (0i32.to_ne_bytes().to_vec(), "error 0"),
            (5i32.to_ne_bytes().to_vec(), "error 5"),
            (Vec::new(), "error 0"),
        ] {
            let err = error_of(&payload);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            assert!(err.to_string().ends_with(text), "{err}");
        }
    }

    /// The layout of `include/uapi/linux/inet_diag.h`: nlattr { u16 len, u16 type },
    /// inet_diag_bc_op { u8 code, u8 yes, u16 no }, inet_diag_hostcond { u8 family,
    /// u8 prefix_len, (2 bytes padding), int port }.
    #[test]
    fn port_filter_is_the_kernels_s_cond_bytecode() {
        let mut want = Vec::new();
        want.extend_from_slice(&16u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[7, 12]);
        want.extend_from_slice(&16u16.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&8080i32.to_ne_bytes());
        assert_eq!(sport_filter(8080), want);

        let all = request(Proto::Tcp, libc::AF_INET6 as u8, None);
        assert_eq!(all.len(), 72);
        assert_eq!(&all[0..4], &72u32.to_ne_bytes());
        assert_eq!(
            &all[16..20],
            &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 0, 0]
        );
        assert_eq!(&all[20..24], &u32::MAX.to_ne_bytes());
        let one = request(Proto::Udp, libc::AF_INET as u8, Some(&sport_filter(8080)));
        assert_eq!(one.len(), 88);
        assert_eq!(&one[0..4], &88u32.to_ne_bytes());
        assert_eq!(
            &one[16..18],
            &[libc::AF_INET as u8, libc::IPPROTO_UDP as u8]
        );
        assert_eq!(&one[72..], &want[..]);
    }

    #[test]
    fn truncated_messages_are_invalid_data() {
        let mut m = message(SOCK_DIAG_BY_FAMILY, &[0; INET_DIAG_MSG_LEN]);
        m.truncate(m.len() - 1);
        let err = parse_batch(&m, Proto::Udp, &mut Vec::new()).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
