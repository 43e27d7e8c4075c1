//! Loading and attaching the kernel programs: the tracepoint backend.
//!
//! Order matters for honesty: privileges are checked first (a clear line instead of an EPERM
//! from deep inside aya), the programs' config is derived from BTF and tracefs, and only when
//! every program is attached does the caller get a [`Loaded`] to announce as started.

use crate::btf::{Btf, BtfError};
use crate::offsets;
use crate::tracefs::{self, TracefsError};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use std::path::Path;

/// The programs, built by `build.rs`.
pub(crate) static PROGRAMS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// The tracepoints of this backend: (tracepoint name, program name).
const TRACEPOINTS: [&str; 4] = [
    "sys_enter_bind",
    "sys_exit_bind",
    "sys_enter_listen",
    "sys_exit_listen",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "missing {0}: run as root, or grant CAP_BPF and CAP_PERFMON (kernels before 5.8: CAP_SYS_ADMIN)"
    )]
    Privilege(String),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("reading the kernel's BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("{0}")]
    Layout(String),
    #[error("loading the programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// Programs loaded and attached.
pub struct Loaded {
    /// Keeps the programs attached while alive; dropping it detaches them.
    pub ebpf: Ebpf,
    pub backend: &'static str,
    /// e.g. `"tracepoint:sys_exit_bind"`.
    pub hooks: Vec<String>,
    /// Socket fields this kernel does not describe.
    pub unknown_fields: Vec<String>,
    /// True when this run mounted tracefs.
    pub mounted_tracefs: bool,
    pub buffer_bytes: u32,
}

/// Loads and attaches the tracepoint backend. `buffer_bytes` must be a power-of-two multiple
/// of the page size.
pub fn load_tracepoint(buffer_bytes: u32) -> Result<Loaded, LoadError> {
    check_privileges()?;
    let (tracefs_path, mounted_tracefs) = tracefs::ensure_mounted()?;
    let btf = Btf::from_sys_fs()?;
    let resolved = offsets::resolve(&btf)?;
    let mut config = resolved.config;
    config.collector_tgid = std::process::id();
    let (args, ret) = syscall_layout(&tracefs_path)?;
    config.enter_args_off = args;
    config.exit_ret_off = ret;
    raise_memlock();

    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", buffer_bytes)
        .load(PROGRAMS)?;
    let mut hooks = Vec::new();
    for name in TRACEPOINTS {
        let program: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::Layout(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(|source| LoadError::Program {
                what: format!("program {name}"),
                source,
            })?;
        program.load().map_err(|source| LoadError::Program {
            what: format!("loading {name}"),
            source,
        })?;
        program
            .attach("syscalls", name)
            .map_err(|source| LoadError::Program {
                what: format!("attaching syscalls:{name}"),
                source,
            })?;
        if name.starts_with("sys_exit") {
            hooks.push(format!("tracepoint:{name}"));
        }
    }
    Ok(Loaded {
        ebpf,
        backend: "tracepoint",
        hooks,
        unknown_fields: resolved.unknown,
        mounted_tracefs,
        buffer_bytes,
    })
}

/// Offsets of the first syscall argument and of `ret`, checked against every tracepoint the
/// programs read (they read `fd`, `umyaddr`, `addrlen` as consecutive 8-byte slots).
fn syscall_layout(tracefs: &Path) -> Result<(u32, u32), LoadError> {
    let fd = tracefs::field(tracefs, "syscalls", "sys_enter_bind", "fd")?;
    let addr = tracefs::field(tracefs, "syscalls", "sys_enter_bind", "umyaddr")?;
    let len = tracefs::field(tracefs, "syscalls", "sys_enter_bind", "addrlen")?;
    let listen_fd = tracefs::field(tracefs, "syscalls", "sys_enter_listen", "fd")?;
    let ret = tracefs::field(tracefs, "syscalls", "sys_exit_bind", "ret")?;
    let listen_ret = tracefs::field(tracefs, "syscalls", "sys_exit_listen", "ret")?;
    let consecutive = [fd, addr, len, listen_fd, ret, listen_ret]
        .iter()
        .all(|f| f.size == 8)
        && addr.offset == fd.offset + 8
        && len.offset == fd.offset + 16
        && listen_fd.offset == fd.offset
        && listen_ret.offset == ret.offset;
    if !consecutive {
        return Err(LoadError::Layout(format!(
            "unexpected syscall tracepoint layout: fd {fd:?}, umyaddr {addr:?}, addrlen {len:?}, \
             listen fd {listen_fd:?}, ret {ret:?}, listen ret {listen_ret:?}"
        )));
    }
    Ok((fd.offset, ret.offset))
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process, from `/proc/self/status`.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn check_privileges() -> Result<(), LoadError> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // Cannot tell: let the kernel decide.
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Privilege(missing.join(" and ")))
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it. Failure is not
/// fatal: the load then reports EPERM with its own message.
fn raise_memlock() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit; setrlimit only reads it.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}
