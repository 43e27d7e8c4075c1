//! The kernel-function backends: fexit (BPF trampolines) and kprobe/kretprobe, on the same
//! five functions, with the same config as the tracepoint backend.
//!
//! A probe that attaches is not yet a probe that fires: a function can be inlined into its
//! callers or renamed (`.isra`, `.constprop`) on some kernels, and then the probe sits on a
//! symbol nothing calls. So after attaching, the collector makes each probed call once itself
//! (on a thread in a private network namespace; its own calls are never reported) and checks
//! the programs' `FIRED` counters; a hook that stayed silent fails the backend, so `auto`
//! falls back instead of watching nothing. The same binds check that the programs recognised
//! them as the collector's own ([`super::identity`]).

use super::{LoadError, Loaded};
use crate::kernel::{PROGRAMS, raise_memlock};
use crate::offsets::Resolved;
use aya::maps::{MapData, PerCpuArray};
use aya::programs::{FExit, KProbe, ProgramError};
use aya::{Ebpf, EbpfLoader};
use observer_common::{
    HOOK_FEXIT_INET_BIND, HOOK_FEXIT_INET_CSK_GET_PORT, HOOK_FEXIT_INET_LISTEN,
    HOOK_FEXIT_INET6_BIND, HOOK_FEXIT_UDP_LIB_GET_PORT, HOOK_KRETPROBE_INET_BIND,
    HOOK_KRETPROBE_INET_CSK_GET_PORT, HOOK_KRETPROBE_INET_LISTEN, HOOK_KRETPROBE_INET6_BIND,
    HOOK_KRETPROBE_UDP_LIB_GET_PORT,
};
use socket2::{Domain, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel functions probed, in the order of the `HOOK_*` ids of each backend.
pub const FUNCTIONS: [&str; 5] = [
    "inet_bind",
    "inet6_bind",
    "inet_listen",
    "inet_csk_get_port",
    "udp_lib_get_port",
];

/// Which of the two kernel-function backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fexit,
    Kprobe,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fexit => "fexit",
            Kind::Kprobe => "kprobe",
        }
    }

    /// The hook id of each of [`FUNCTIONS`].
    fn hooks(self) -> [u16; 5] {
        match self {
            Kind::Fexit => [
                HOOK_FEXIT_INET_BIND,
                HOOK_FEXIT_INET6_BIND,
                HOOK_FEXIT_INET_LISTEN,
                HOOK_FEXIT_INET_CSK_GET_PORT,
                HOOK_FEXIT_UDP_LIB_GET_PORT,
            ],
            Kind::Kprobe => [
                HOOK_KRETPROBE_INET_BIND,
                HOOK_KRETPROBE_INET6_BIND,
                HOOK_KRETPROBE_INET_LISTEN,
                HOOK_KRETPROBE_INET_CSK_GET_PORT,
                HOOK_KRETPROBE_UDP_LIB_GET_PORT,
            ],
        }
    }

    /// The name a hook is reported under, e.g. `"kretprobe:inet_bind"`.
    fn hook_name(self, function: &str) -> String {
        match self {
            Kind::Fexit => format!("fexit:{function}"),
            Kind::Kprobe => format!("kretprobe:{function}"),
        }
    }
}

fn program_error(what: String) -> impl FnOnce(ProgramError) -> LoadError {
    move |source| LoadError::Program { what, source }
}

/// Loads, attaches and self-tests one kernel-function backend.
pub fn load(kind: Kind, buffer_bytes: u32, resolved: &Resolved) -> Result<Loaded, LoadError> {
    raise_memlock();
    // Failed connects come from the `sys_exit_connect` tracepoint, as on the tracepoint
    // backend: its record layout is read from tracefs before the load. Without tracefs (no
    // CAP_SYS_ADMIN to mount it) the backend still works, without connects.
    let mut config = resolved.config;
    let mut no_connects = None;
    let mounted_tracefs = match crate::tracefs::ensure_mounted()
        .map_err(LoadError::from)
        .and_then(|(path, mounted)| Ok((super::tracepoint::syscall_layout(&path)?, mounted)))
    {
        Ok((ret_off, mounted)) => {
            config.exit_ret_off = ret_off;
            mounted
        }
        Err(err) => {
            no_connects = Some(err.short());
            false
        }
    };
    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", buffer_bytes)
        .load(PROGRAMS)?;
    match kind {
        Kind::Fexit => attach_fexit(&mut ebpf)?,
        Kind::Kprobe => attach_kprobe(&mut ebpf)?,
    }
    self_test(kind, &ebpf)?;
    let mut hooks: Vec<String> = FUNCTIONS.iter().map(|f| kind.hook_name(f)).collect();
    if no_connects.is_none() {
        match super::tracepoint::attach(&mut ebpf, super::tracepoint::CONNECT) {
            Ok(hook) => hooks.push(hook),
            Err(err) => no_connects = Some(err.short()),
        }
    }
    if let Some(why) = no_connects {
        eprintln!("observer: failed connects are not reported: {why}");
    }
    Ok(Loaded {
        ebpf,
        backend: kind.name(),
        hooks,
        unknown_fields: resolved.unknown.clone(),
        mounted_tracefs,
        buffer_bytes,
        skipped: Vec::new(),
        fold: false,
    })
}

fn attach_fexit(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let btf = aya::Btf::from_sys_fs()
        .map_err(|err| LoadError::Layout(format!("reading the kernel's BTF for aya: {err}")))?;
    for function in FUNCTIONS {
        let name = format!("fexit_{function}");
        let program: &mut FExit = ebpf
            .program_mut(&name)
            .ok_or_else(|| LoadError::Layout(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(program_error(format!("program {name}")))?;
        program
            .load(function, &btf)
            .map_err(program_error(name.clone()))?;
        program
            .attach()
            .map_err(program_error(format!("attaching fexit:{function}")))?;
    }
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for function in FUNCTIONS {
        for prefix in ["kprobe", "kretprobe"] {
            let name = format!("{prefix}_{function}");
            let program: &mut KProbe = ebpf
                .program_mut(&name)
                .ok_or_else(|| {
                    LoadError::Layout(format!("program {name} missing from the object"))
                })?
                .try_into()
                .map_err(program_error(format!("program {name}")))?;
            program.load().map_err(program_error(name.clone()))?;
            program
                .attach(function, 0)
                .map_err(program_error(format!("attaching {prefix}:{function}")))?;
        }
    }
    Ok(())
}

/// Per-hook run counts, summed over CPUs.
fn fired(ebpf: &Ebpf, hooks: &[u16]) -> Result<Vec<u64>, LoadError> {
    let map = ebpf
        .map("FIRED")
        .ok_or_else(|| LoadError::Layout("map FIRED missing from the object".into()))?;
    let map = PerCpuArray::<&MapData, u64>::try_from(map)
        .map_err(|err| LoadError::Layout(format!("map FIRED: {err}")))?;
    Ok(hooks
        .iter()
        .map(|h| {
            map.get(&u32::from(*h), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        })
        .collect())
}

/// Makes each probed call once and fails unless every hook ran. IPv6 may be disabled on the
/// machine: then `inet6_bind` cannot be exercised and is not required.
fn self_test(kind: Kind, ebpf: &Ebpf) -> Result<(), LoadError> {
    let hooks = kind.hooks();
    let before = fired(ebpf, &hooks)?;
    let own_before = super::identity::own_calls(ebpf)?;
    // A thread of its own (it enters another network namespace), joined before the
    // capabilities are dropped, which counts no thread but the main one and this.
    let v6 = crate::privilege::on_joined_thread(exercise)
        .map_err(|_| LoadError::NotFired("the self-test thread panicked".into()))?
        .map_err(|err| LoadError::NotFired(format!("self-test binds failed: {err}")))?;
    let after = fired(ebpf, &hooks)?;
    // Those binds were ours: none may become an event.
    super::identity::expect_recognised(ebpf, own_before, "its self-test binds")?;
    let silent: Vec<String> = FUNCTIONS
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(f, (b, a))| a <= b && (v6 || **f != "inet6_bind"))
        .map(|(f, _)| kind.hook_name(f))
        .collect();
    if silent.is_empty() {
        Ok(())
    } else {
        Err(LoadError::NotFired(format!(
            "{} attached but never fired on a test bind (inlined or renamed on this kernel?)",
            silent.join(", ")
        )))
    }
}

/// In a private network namespace: TCP bind(port 0) and listen, UDP bind(port 0), and an IPv6
/// bind when IPv6 exists. Returns whether the IPv6 bind was made.
fn exercise() -> std::io::Result<bool> {
    // Wildcard binds only: `lo` may stay down, so the self-test needs CAP_SYS_ADMIN alone.
    crate::netns::enter_empty()?;
    let any4 = SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let tcp = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    tcp.bind(&any4)?;
    tcp.listen(1)?;
    let udp = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    udp.bind(&any4)?;
    let v6 = match Socket::new(Domain::IPV6, Type::STREAM, None) {
        Ok(s) => {
            s.bind(&SockAddr::from(SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                0,
            ))))?;
            true
        }
        Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => false,
        Err(err) => return Err(err),
    };
    Ok(v6)
}
