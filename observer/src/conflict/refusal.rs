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
    let eacces = privileged(ask, &facts, capable);
    let address = address_refusal(ask, &facts);
    // IPv4 checks the address first, IPv6 the port first.
    Ok(match ask.addr {
        IpAddr::V4(_) => address.or(eacces),
        IpAddr::V6(_) => eacces.or(address),
    })
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

/// Whether the caller has CAP_NET_BIND_SERVICE over the namespace: in the user namespace
/// that owns it (or an ancestor of it: the initial one).
fn capable(caller: Caller, _netns: &Netns) -> Option<bool> {
    const CAP_NET_BIND_SERVICE: u32 = 10;
    match caller {
        Caller::Uid(uid) => Some(uid == 0),
        Caller::This => {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let eff = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
            Some(eff & (1 << CAP_NET_BIND_SERVICE) != 0)
        }
    }
}

fn privileged(ask: &Ask, facts: &Facts, capable: Option<bool>) -> Option<Refusal> {
    let start = facts.unprivileged_start?;
    if ask.port == 0 || ask.port >= start || capable != Some(false) {
        return None;
    }
    let who = match ask.caller {
        Caller::Uid(uid) => format!("a process of uid {uid} without capabilities"),
        Caller::This => "this process".into(),
    };
    Some(Refusal {
        errno: "EACCES".into(),
        rule: "privileged-port",
        text: format!(
            "port {} is below net.ipv4.ip_unprivileged_port_start ({start}) of this network \
             namespace, and {who} lacks CAP_NET_BIND_SERVICE in the user namespace that owns it",
            ask.port
        ),
        facts: vec![format!("net.ipv4.ip_unprivileged_port_start = {start} (covers IPv6 too)")],
        fixes: vec![
            "give the process CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; a binary: setcap cap_net_bind_service=+ep)".into(),
            format!("sysctl -w net.ipv4.ip_unprivileged_port_start={} in this namespace", ask.port),
            format!("a port from {start} up"),
        ],
    })
}

fn address_refusal(ask: &Ask, facts: &Facts) -> Option<Refusal> {
    let shown = |a: IpAddr| match (a, ask.scope_id) {
        (IpAddr::V6(v6), s) if s != 0 => format!("{v6}%{s}"),
        (a, _) => a.to_string(),
    };
    match facts.probe {
        0 => None,
        libc::EADDRNOTAVAIL => Some(not_local(ask, facts, shown(ask.addr))),
        libc::ENODEV => Some(Refusal {
            errno: "ENODEV".into(),
            rule: "unknown-scope",
            text: format!(
                "scope id {} names no interface of this network namespace",
                ask.scope_id
            ),
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

fn invalid(ask: &Ask) -> Refusal {
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
    } else if link_local && ask.scope_id == 0 {
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
