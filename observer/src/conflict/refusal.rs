//! The checks `bind()` makes before it looks for a port, for `observer why`: the address must
//! be one the namespace may bind (EADDRNOTAVAIL), a port below the namespace's
//! `ip_unprivileged_port_start` needs CAP_NET_BIND_SERVICE (EACCES), an IPv6 scope id must
//! name an interface (ENODEV), and an IPv4-mapped address cannot go on an IPV6_V6ONLY socket,
//! nor a link-local one without a scope (EINVAL). Checked in the kernel's order
//! (`net/ipv4/af_inet.c` `__inet_bind`: the address, then the port; `net/ipv6/af_inet6.c`
//! `__inet6_bind`: the port, then the address).
//!
//! The address rules are asked of the kernel itself: a probe socket in the namespace, with the
//! same family, type and options, binds the address with IP_BIND_ADDRESS_NO_PORT and port 0,
//! which runs every address check of `bind()` and takes no port (`get_port` is skipped), and
//! is closed at once. The port rule is computed: the sysctl, and the caller's capability.
//! What the probe cannot share with the caller: a cgroup `bind4`/`bind6` program or an LSM
//! hook sees the probe in the observer's cgroup, not the caller's.
//!
//! `observer why` asks [`check`] (would a bind be refused, and why); `observer watch` asks
//! [`explain`] about a failure the kernel already gave (the errno is known: the rule that gives
//! it, with what the namespace holds now). Both run the same rules below. The capability rule
//! is the kernel's own (`ns_capable(net->user_ns, CAP_NET_BIND_SERVICE)`, walked as
//! `security/commoncap.c` `cap_capable` walks it): the caller's effective set counts in the
//! user namespace that owns the network namespace, and the owner of a user namespace has every
//! capability in its children.

use crate::model::{Proto, Refusal};
use crate::netns::{Netns, in_netns};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// Who would make the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// This process, with its capabilities.
    This,
    /// A process of this uid without capabilities (uid 0: with all of them).
    Uid(u32),
    /// The thread that made a call `observer watch` saw, with its capabilities now (if it is
    /// still alive).
    Task { pid: u32, tid: u32 },
}

/// The bind asked about.
#[derive(Debug, Clone)]
pub struct Ask {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    /// IPv6 scope id (interface index), 0 for none.
    pub scope_id: u32,
    pub v6only: bool,
    pub freebind: bool,
    pub transparent: bool,
    /// `SO_BINDTODEVICE` of the socket (0: none); for the scope rules.
    pub bound_dev_if: u32,
    pub caller: Caller,
}

/// What the namespace says about one ask.
struct Facts {
    /// The errno of the probe bind (0: the address is accepted).
    probe: i32,
    /// The same probe with IP_FREEBIND (0 when it works), if the first was refused.
    with_freebind: Option<i32>,
    unprivileged_start: Option<u16>,
    nonlocal_bind: Option<bool>,
    /// Local addresses of the family, each with what stops it being bound, if anything.
    addrs: Vec<(IpAddr, Option<&'static str>)>,
    /// Interfaces: index and name.
    ifaces: Vec<(u32, String)>,
}

/// The refusal the kernel would give, or `None` when the checks before the port pass.
pub fn check(ask: &Ask, netns: &Netns) -> io::Result<Option<Refusal>> {
    let facts = in_netns(netns, || Ok(facts(ask)))?;
    let capable = capable(ask.caller, netns);
    let eacces = privileged(ask, &facts, &capable);
    let address = address_refusal(ask, &facts, facts.probe);
    // IPv4 checks the address first, IPv6 the port first.
    Ok(match ask.addr {
        IpAddr::V4(_) => address.or(eacces),
        IpAddr::V6(_) => eacces.or(address),
    })
}

/// The rule that gave `errno`, which the kernel returned for `ask` (EACCES, EADDRNOTAVAIL,
/// ENODEV or EINVAL), read in `netns` now; a refusal with rule
/// [`crate::model::NOT_EXPLAINED`] when what the rule reads could not be read.
pub fn explain(ask: &Ask, errno: i32, netns: &Netns) -> io::Result<Refusal> {
    let facts = in_netns(netns, || Ok(facts(ask)))?;
    if errno == libc::EACCES {
        return Ok(eacces(ask, &facts, &capable(ask.caller, netns)));
    }
    let mut r = address_refusal(ask, &facts, errno)
        .unwrap_or_else(|| generic(errno, "bind", "security_socket_bind"));
    if errno != libc::EADDRNOTAVAIL && facts.probe == 0 {
        r.facts
            .push("the kernel accepts the address for such a socket now".into());
    }
    Ok(r)
}

/// What an errno means for `call` when none of its own checks gives it: an LSM (`hook`) or a
/// cgroup program (`bpf_set_retval`) can return any errno.
pub fn generic(errno: i32, call: &str, hook: &str) -> Refusal {
    let name = crate::errno::name(errno);
    Refusal {
        errno: name.clone(),
        rule: "errno",
        text: format!(
            "{call}() returned {name} ({}), which none of its own checks in this case gives: an \
             LSM ({hook}) or a cgroup BPF program (bpf_set_retval) can return any errno",
            io::Error::from_raw_os_error(errno)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or_default()
        ),
        facts: Vec::new(),
        fixes: Vec::new(),
    }
}

fn facts(ask: &Ask) -> Facts {
    let probe = probe(ask, ask.freebind);
    let with_freebind = (probe != 0 && !ask.freebind).then(|| self::probe(ask, true));
    let v6 = ask.addr.is_ipv6() && ask.addr.to_canonical().is_ipv6();
    let sysctl = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    Facts {
        probe,
        with_freebind,
        unprivileged_start: sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .map(|v| v.min(65536) as u16),
        nonlocal_bind: sysctl(if v6 {
            "/proc/sys/net/ipv6/ip_nonlocal_bind"
        } else {
            "/proc/sys/net/ipv4/ip_nonlocal_bind"
        })
        .map(|v| v != 0),
        addrs: if v6 { v6_addrs() } else { v4_addrs() },
        ifaces: ifaces(),
    }
}

/// The address checks of `bind()`, asked of the kernel (see the module doc); the errno.
fn probe(ask: &Ask, freebind: bool) -> i32 {
    let v6 = ask.addr.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let kind = match ask.proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket() has no memory preconditions; the descriptor is owned at once.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let set = |level, name| setopt(&sock, level, name);
    set(libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
    if v6 && ask.v6only {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
    }
    if freebind {
        set(libc::IPPROTO_IP, libc::IP_FREEBIND);
    }
    if ask.transparent {
        set(libc::IPPROTO_IP, libc::IP_TRANSPARENT);
    }
    if ask.bound_dev_if != 0 {
        let ifindex = ask.bound_dev_if as libc::c_int;
        // SAFETY: `ifindex` is a valid int of the length given. A refusal (no such device)
        // shows in the bind, as the caller's would.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTOIFINDEX,
                (&ifindex as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let rc = match ask.addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data; all-zero is valid.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from(a).to_be();
            // SAFETY: `sa` is a valid sockaddr_in of the length given.
            unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = a.octets();
            sa.sin6_scope_id = ask.scope_id;
            // SAFETY: `sa` is a valid sockaddr_in6 of the length given.
            unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc == 0 { 0 } else { errno() }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn setopt(sock: &OwnedFd, level: libc::c_int, name: libc::c_int) {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int of the length given. A refused option shows in the bind.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// The IPv4 addresses of the namespace's interfaces.
fn v4_addrs() -> Vec<(IpAddr, Option<&'static str>)> {
    super::socktable::local_addrs()
        .into_iter()
        .filter(IpAddr::is_ipv4)
        .map(|a| (a, None))
        .collect()
}

/// The IPv6 addresses of the namespace (`/proc/net/if_inet6`), with the state that stops a
/// bind: tentative (duplicate address detection running, or no carrier) or DAD failed.
fn v6_addrs() -> Vec<(IpAddr, Option<&'static str>)> {
    const IFA_F_OPTIMISTIC: u32 = 0x04;
    const IFA_F_DADFAILED: u32 = 0x08;
    const IFA_F_DEPRECATED: u32 = 0x20;
    const IFA_F_TENTATIVE: u32 = 0x40;
    let text = std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let hex = cols.first()?;
            let flags = u32::from_str_radix(cols.get(4)?, 16).ok()?;
            let bits = u128::from_str_radix(hex, 16).ok()?;
            let state = if flags & IFA_F_DADFAILED != 0 {
                Some("duplicate address detection failed")
            } else if flags & IFA_F_TENTATIVE != 0 && flags & IFA_F_OPTIMISTIC == 0 {
                Some("tentative: duplicate address detection has not finished (or the link has no carrier)")
            } else if flags & IFA_F_DEPRECATED != 0 {
                // Deprecated addresses can still be bound.
                None
            } else {
                None
            };
            Some((IpAddr::V6(Ipv6Addr::from(bits)), state))
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        // The kernel lists them in hash order: sorted, the facts read the same every time.
        .into_iter()
        .collect()
}

/// Interface indexes and names of the calling thread's namespace (`if_nameindex`, which asks
/// the kernel through a socket of this thread: `/sys/class/net` shows the namespace sysfs was
/// mounted in).
fn ifaces() -> Vec<(u32, String)> {
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = list;
    // SAFETY: every entry up to the zero one is valid, with a NUL-terminated name.
    unsafe {
        while (*cur).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*cur).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*cur).if_index, name));
            cur = cur.add(1);
        }
        libc::if_freenameindex(list);
    }
    out.sort();
    out
}

/// Whether the caller has CAP_NET_BIND_SERVICE over the namespace, and how that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// `None`: it could not be read (`how` says why).
    pub has: Option<bool>,
    pub how: String,
}

const CAP_NET_BIND_SERVICE: u32 = 10;
// `libc::Ioctl`: the request type is `c_ulong` on glibc, `c_int` on musl (linux/nsfs.h).
const NS_GET_USERNS: libc::Ioctl = 0xb701;
const NS_GET_PARENT: libc::Ioctl = 0xb702;
const NS_GET_OWNER_UID: libc::Ioctl = 0xb704;

/// Whether the caller has CAP_NET_BIND_SERVICE over the namespace: `ns_capable(net->user_ns,
/// ...)`, in the user namespace that owns it, or as the owner of it or of one of its
/// ancestors from the parent namespace (see the module doc).
pub fn capable(caller: Caller, netns: &Netns) -> Capability {
    match caller {
        Caller::Uid(uid) => Capability {
            has: Some(uid == 0),
            how: format!("a process of uid {uid} without capabilities"),
        },
        Caller::This => task_capable("/proc/thread-self", "this process", netns),
        Caller::Task { pid, tid } => task_capable(
            &format!("/proc/{pid}/task/{tid}"),
            &format!("pid {pid}"),
            netns,
        ),
    }
}

/// The effective set and euid of a task (`/proc/.../status`).
fn cap_eff_and_euid(status: &str) -> Option<(u64, u32)> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    let eff = u64::from_str_radix(field("CapEff:")?.trim(), 16).ok()?;
    let euid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    Some((eff, euid))
}

fn task_capable(dir: &str, who: &str, netns: &Netns) -> Capability {
    let unread = |why: String| Capability {
        has: None,
        how: format!("{who}'s capabilities could not be read: {why}"),
    };
    let Ok(status) = std::fs::read_to_string(format!("{dir}/status")) else {
        return unread("it has exited".into());
    };
    let Some((eff, euid)) = cap_eff_and_euid(&status) else {
        return unread("its status has no CapEff/Uid".into());
    };
    let own = match std::fs::metadata(format!("{dir}/ns/user")) {
        Ok(m) => ns_id(&m),
        Err(err) => return unread(format!("its user namespace: {err}")),
    };
    let owner = match netns_owner(netns) {
        Ok(fd) => fd,
        Err(err) => {
            return unread(format!(
                "the user namespace owning the network namespace: {err}"
            ));
        }
    };
    let has = eff & (1 << CAP_NET_BIND_SERVICE) != 0;
    match walk_userns(owner, own, euid) {
        Ok(Walk::Same) => Capability {
            has: Some(has),
            how: format!(
                "{who} {} CAP_NET_BIND_SERVICE in its effective set, in the user namespace that \
                 owns the network namespace",
                if has { "has" } else { "lacks" }
            ),
        },
        Ok(Walk::Ancestor) => Capability {
            has: Some(has),
            how: format!(
                "{who} {} CAP_NET_BIND_SERVICE in its effective set, in an ancestor of the user \
                 namespace that owns the network namespace",
                if has { "has" } else { "lacks" }
            ),
        },
        Ok(Walk::Owner) => Capability {
            has: Some(true),
            how: format!(
                "{who}'s euid {euid} owns the user namespace (or an ancestor of it) that owns the \
                 network namespace: it has every capability there"
            ),
        },
        Ok(Walk::Outside) => Capability {
            has: Some(false),
            how: format!(
                "{who} is in a user namespace that is neither the one owning the network \
                 namespace nor an ancestor of it: it has no capability over it"
            ),
        },
        Err(err) => unread(format!("walking the user namespaces: {err}")),
    }
}

/// A namespace file's identity: (device, inode).
fn ns_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (m.dev(), m.ino())
}

fn fd_ns_id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    // SAFETY: fstat writes a stat of the open descriptor into `st`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// `ioctl(fd, request)` returning a new namespace descriptor.
fn ns_ioctl(fd: &OwnedFd, request: libc::Ioctl) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS / NS_GET_PARENT take no argument and return a new descriptor,
    // owned at once.
    let new = unsafe { libc::ioctl(fd.as_raw_fd(), request) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The user namespace owning the network namespace (`NS_GET_USERNS`).
fn netns_owner(netns: &Netns) -> io::Result<OwnedFd> {
    let file;
    let fd = match netns {
        Netns::Current => {
            file = std::fs::File::open("/proc/thread-self/ns/net")?;
            file.as_raw_fd()
        }
        Netns::Path(p) => {
            file = std::fs::File::open(p)?;
            file.as_raw_fd()
        }
        Netns::Handle(fd, _) => fd.as_raw_fd(),
    };
    // SAFETY: as in `ns_ioctl`; `fd` stays open for the call.
    let new = unsafe { libc::ioctl(fd, NS_GET_USERNS) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Where the caller's user namespace stands to the one owning the network namespace.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The same: its effective set counts.
    Same,
    /// An ancestor: its effective set counts (a capability in a parent counts in children).
    Ancestor,
    /// The caller's euid owns the target (or an ancestor below the caller's): all capabilities.
    Owner,
    /// Neither: no capability.
    Outside,
}

/// `cap_capable`'s walk from the target user namespace up to the caller's.
fn walk_userns(target: OwnedFd, own: (u64, u64), euid: u32) -> io::Result<Walk> {
    let mut ns = target;
    let mut first = true;
    // User namespaces nest 32 deep at most.
    for _ in 0..40 {
        if fd_ns_id(&ns)? == own {
            return Ok(if first { Walk::Same } else { Walk::Ancestor });
        }
        let parent = match ns_ioctl(&ns, NS_GET_PARENT) {
            Ok(p) => p,
            // The initial namespace (no parent), or one outside this process's view: the
            // caller's is not above it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) => {
                return Ok(Walk::Outside);
            }
            Err(e) => return Err(e),
        };
        if fd_ns_id(&parent)? == own {
            let mut uid: libc::uid_t = 0;
            // SAFETY: NS_GET_OWNER_UID writes a uid_t to the pointer given.
            let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
            if rc == 0 && uid == euid {
                return Ok(Walk::Owner);
            }
        }
        ns = parent;
        first = false;
    }
    Ok(Walk::Outside)
}

/// The privileged-port rule for `why`: refused only when the caller certainly lacks the
/// capability.
fn privileged(ask: &Ask, facts: &Facts, capable: &Capability) -> Option<Refusal> {
    let start = facts.unprivileged_start?;
    if ask.port == 0 || ask.port >= start || capable.has != Some(false) {
        return None;
    }
    Some(privileged_port(ask, start, &capable.how))
}

fn privileged_port(ask: &Ask, start: u16, how: &str) -> Refusal {
    Refusal {
        errno: "EACCES".into(),
        rule: "privileged-port",
        text: format!(
            "port {} is below net.ipv4.ip_unprivileged_port_start ({start}) of this network \
             namespace, and the caller needs CAP_NET_BIND_SERVICE in the user namespace that \
             owns it: {how}",
            ask.port
        ),
        facts: vec![format!("net.ipv4.ip_unprivileged_port_start = {start} (covers IPv6 too)")],
        fixes: vec![
            "give the process CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; a binary: setcap cap_net_bind_service=+ep)".into(),
            format!("sysctl -w net.ipv4.ip_unprivileged_port_start={} in this namespace", ask.port),
            format!("a port from {start} up"),
        ],
    }
}

/// An EACCES the kernel gave: the privileged-port rule when it applies, else said to come from
/// elsewhere (an LSM, a cgroup program), not a rule made up.
fn eacces(ask: &Ask, facts: &Facts, capable: &Capability) -> Refusal {
    let Some(start) = facts.unprivileged_start else {
        return Refusal {
            errno: "EACCES".into(),
            rule: crate::model::NOT_EXPLAINED,
            text: "net.ipv4.ip_unprivileged_port_start of the namespace could not be read".into(),
            facts: Vec::new(),
            fixes: Vec::new(),
        };
    };
    let fact = format!("net.ipv4.ip_unprivileged_port_start = {start} (covers IPv6 too)");
    let elsewhere = |why: String| Refusal {
        errno: "EACCES".into(),
        rule: "refused-elsewhere",
        text: format!(
            "{why}: the privileged-port rule did not refuse it; an LSM (security_socket_bind: \
             AppArmor, SELinux, ...) or a cgroup BPF program (bpf_set_retval) did"
        ),
        facts: vec![fact.clone(), capable.how.clone()],
        fixes: Vec::new(),
    };
    if ask.port == 0 || ask.port >= start {
        return elsewhere(format!(
            "port {} is not below net.ipv4.ip_unprivileged_port_start ({start})",
            ask.port
        ));
    }
    match capable.has {
        Some(false) => privileged_port(ask, start, &capable.how),
        None => {
            let mut r = privileged_port(ask, start, &capable.how);
            r.text.push_str(" (so whether it lacked it is not known)");
            r
        }
        Some(true) => Refusal {
            errno: "EACCES".into(),
            rule: "refused-elsewhere",
            text: format!(
                "port {} is below net.ipv4.ip_unprivileged_port_start ({start}), and the caller \
                 holds CAP_NET_BIND_SERVICE over the namespace now: either it lacked it when it \
                 called (capabilities can change), or an LSM (security_socket_bind) or a cgroup \
                 BPF program (bpf_set_retval) refused",
                ask.port
            ),
            facts: vec![fact, capable.how.clone()],
            fixes: Vec::new(),
        },
    }
}

/// The address rule that gives `errno` (the probe's, or the one the kernel gave the caller).
fn address_refusal(ask: &Ask, facts: &Facts, errno: i32) -> Option<Refusal> {
    let shown = |a: IpAddr| match (a, ask.scope_id) {
        (IpAddr::V6(v6), s) if s != 0 => format!("{v6}%{s}"),
        (a, _) => a.to_string(),
    };
    match errno {
        0 => None,
        libc::EADDRNOTAVAIL => Some(not_local(ask, facts, shown(ask.addr))),
        libc::ENODEV => Some(Refusal {
            errno: "ENODEV".into(),
            rule: "unknown-scope",
            text: if ask.scope_id != 0 {
                format!(
                    "scope id {} names no interface of this network namespace",
                    ask.scope_id
                )
            } else {
                format!(
                    "the socket's bound device (index {}) is no interface of this network namespace",
                    ask.bound_dev_if
                )
            },
            facts: vec![interfaces(facts)],
            fixes: vec![
                "the index of one of those interfaces as the scope id: [ADDR%INDEX]:PORT".into(),
            ],
        }),
        libc::EINVAL => Some(invalid(ask)),
        other => Some(Refusal {
            errno: crate::errno::name(other),
            rule: "address-check",
            text: format!(
                "the kernel refuses the address {} for this socket",
                shown(ask.addr)
            ),
            facts: Vec::new(),
            fixes: Vec::new(),
        }),
    }
}

fn interfaces(facts: &Facts) -> String {
    let list: Vec<String> = facts
        .ifaces
        .iter()
        .map(|(i, n)| format!("{n} ({i})"))
        .collect();
    format!("interfaces: {}", list.join(", "))
}

/// The EINVAL rules of the address (pure: what the call passed decides them).
pub fn invalid(ask: &Ask) -> Refusal {
    let mapped = matches!(ask.addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
    let link_local = matches!(ask.addr, IpAddr::V6(a) if a.is_unicast_link_local());
    let (rule, text, fixes) = if mapped && ask.v6only {
        (
            "mapped-on-v6only",
            "an IPv4-mapped address cannot be bound on an IPV6_V6ONLY socket".to_string(),
            vec![
                "clear IPV6_V6ONLY on this socket, or bind an AF_INET socket to the IPv4 address"
                    .to_string(),
            ],
        )
    } else if link_local && ask.scope_id == 0 && ask.bound_dev_if == 0 {
        (
            "link-local-needs-scope",
            "a link-local address needs a scope id (the interface it is on)".to_string(),
            vec!["give the interface as the scope id (sin6_scope_id: [ADDR%INDEX]:PORT), or bind the socket to it with SO_BINDTODEVICE first".to_string()],
        )
    } else if matches!(ask.addr, IpAddr::V6(a) if a.is_multicast()) && ask.proto == Proto::Tcp {
        (
            "multicast-on-tcp",
            "a TCP socket cannot bind a multicast address".to_string(),
            Vec::new(),
        )
    } else {
        (
            "address-check",
            "the kernel refuses the address for this socket (EINVAL)".to_string(),
            Vec::new(),
        )
    };
    Refusal {
        errno: "EINVAL".into(),
        rule,
        text,
        facts: Vec::new(),
        fixes,
    }
}

fn not_local(ask: &Ask, facts: &Facts, shown: String) -> Refusal {
    let v6 = ask.addr.to_canonical().is_ipv6();
    let family = if v6 { "IPv6" } else { "IPv4" };
    let own = facts.addrs.iter().find(|(a, _)| *a == ask.addr);
    let text = match own {
        Some((_, Some(state))) => {
            format!("{shown} is an address of this network namespace, but {state}")
        }
        _ if facts.probe == 0 => format!(
            "{shown} was not an address this socket could bind when the call was made; the \
             kernel accepts it now (added since, or its duplicate address detection has finished)"
        ),
        _ => format!("{shown} is not an address of this network namespace"),
    };
    let list: Vec<String> = facts
        .addrs
        .iter()
        .map(|(a, state)| match state {
            Some(s) => format!("{a} ({s})"),
            None => a.to_string(),
        })
        .collect();
    let mut fix_list = Vec::new();
    if facts.with_freebind == Some(0) {
        fix_list.push(
            "set IP_FREEBIND on this socket (checked: the kernel then accepts the address)"
                .to_string(),
        );
        if !ask.transparent {
            fix_list.push("or IP_TRANSPARENT (needs CAP_NET_ADMIN)".to_string());
        }
        fix_list.push(format!(
            "or sysctl -w net.{}.ip_nonlocal_bind=1 in this namespace{}",
            if v6 { "ipv6" } else { "ipv4" },
            if v6 {
                " (the IPv4 one does not apply to IPv6)"
            } else {
                ""
            }
        ));
    }
    fix_list.push(if v6 {
        "bind [::] or one of the addresses above".to_string()
    } else {
        "bind 0.0.0.0 or one of the addresses above".to_string()
    });
    let mut facts_out = vec![format!(
        "{family} addresses here: {}",
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    )];
    if let Some(on) = facts.nonlocal_bind {
        facts_out.push(format!(
            "net.{}.ip_nonlocal_bind = {}",
            if v6 { "ipv6" } else { "ipv4" },
            u8::from(on)
        ));
    }
    Refusal {
        errno: "EADDRNOTAVAIL".into(),
        rule: if matches!(own, Some((_, Some(_)))) {
            "address-not-ready"
        } else {
            "address-not-local"
        },
        text,
        facts: facts_out,
        fixes: fix_list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(port: u16) -> Ask {
        Ask {
            proto: Proto::Tcp,
            addr: "127.0.0.1".parse().unwrap(),
            port,
            scope_id: 0,
            v6only: false,
            freebind: false,
            transparent: false,
            bound_dev_if: 0,
            caller: Caller::Task { pid: 7, tid: 7 },
        }
    }

    fn facts(start: Option<u16>) -> Facts {
        Facts {
            probe: 0,
            with_freebind: None,
            unprivileged_start: start,
            nonlocal_bind: Some(false),
            addrs: Vec::new(),
            ifaces: Vec::new(),
        }
    }

    fn cap(has: Option<bool>) -> Capability {
        Capability {
            has,
            how: "how".into(),
        }
    }

    #[test]
    fn eacces_rules() {
        let f = facts(Some(1024));
        assert_eq!(
            eacces(&ask(80), &f, &cap(Some(false))).rule,
            "privileged-port"
        );
        let unknown = eacces(&ask(80), &f, &cap(None));
        assert_eq!(unknown.rule, "privileged-port");
        assert!(
            unknown
                .text
                .ends_with("how (so whether it lacked it is not known)")
        );
        assert_eq!(
            eacces(&ask(80), &f, &cap(Some(true))).rule,
            "refused-elsewhere"
        );
        // At or above the start, and port 0, the rule does not apply: no rule is made up.
        for port in [0, 1024, 8080] {
            let r = eacces(&ask(port), &f, &cap(Some(false)));
            assert_eq!(r.rule, "refused-elsewhere", "{port}");
            assert!(
                r.text
                    .contains("the privileged-port rule did not refuse it")
            );
        }
        assert_eq!(
            eacces(&ask(80), &facts(None), &cap(Some(false))).rule,
            "not-explained"
        );
        // `why`: refused only when the caller certainly lacks it.
        assert!(privileged(&ask(80), &f, &cap(None)).is_none());
        assert!(privileged(&ask(80), &f, &cap(Some(false))).is_some());
        assert!(privileged(&ask(1024), &f, &cap(Some(false))).is_none());
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nUid:\t1000\t65534\t0\t0\nCapEff:\t0000000000000400\n";
        assert_eq!(cap_eff_and_euid(status), Some((0x400, 65534)));
        assert_eq!(cap_eff_and_euid("Uid:\t0\n"), None);
    }

    #[test]
    fn own_user_namespace_is_the_owner_of_a_private_netns() {
        // A network namespace made by this thread is owned by this thread's user namespace.
        let caller = Caller::This;
        let c = capable(caller, &Netns::Current);
        assert!(c.has.is_some(), "{c:?}");
        assert!(
            c.how
                .contains("in the user namespace that owns the network namespace"),
            "{c:?}"
        );
    }
}
