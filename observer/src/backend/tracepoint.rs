//! The tracepoint backend: `syscalls:sys_{enter,exit}_{bind,listen}`, paired per thread.

use super::{LoadError, Loaded, PROGRAMS, check_privileges, prepare, raise_memlock};
use crate::tracefs;
use aya::EbpfLoader;
use aya::programs::TracePoint;
use std::path::Path;

/// The tracepoints of this backend (tracepoint name = program name).
const TRACEPOINTS: [&str; 4] = [
    "sys_enter_bind",
    "sys_exit_bind",
    "sys_enter_listen",
    "sys_exit_listen",
];

/// Loads and attaches the tracepoint backend. `buffer_bytes` must be a power-of-two multiple
/// of the page size.
pub fn load(buffer_bytes: u32) -> Result<Loaded, LoadError> {
    check_privileges()?;
    let (tracefs_path, mounted_tracefs) = tracefs::ensure_mounted()?;
    let resolved = prepare()?;
    let mut config = resolved.config;
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
        skipped: Vec::new(),
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
