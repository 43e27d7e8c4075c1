//! The tracepoint backend: `syscalls:sys_exit_{bind,listen,connect}`. Only the exits: the programs
//! read the call's arguments from the task's saved user registers, so there is no entry
//! program and no per-thread pairing (half the cost for every `bind()`, and no state for a
//! thread to leave behind).

use super::{LoadError, Loaded};
use crate::kernel::{PROGRAMS, raise_memlock};
use crate::offsets::Resolved;
use crate::tracefs;
use aya::EbpfLoader;
use aya::programs::TracePoint;
use std::path::Path;

/// The tracepoints of this backend (tracepoint name = program name).
const TRACEPOINTS: [&str; 3] = ["sys_exit_bind", "sys_exit_listen", CONNECT];

/// The tracepoint every backend attaches for failed connects (the kernel-function backends
/// too: a tracepoint loads wherever they do, and gives the same record).
pub(super) const CONNECT: &str = "sys_exit_connect";

/// Loads and attaches the tracepoint backend. `buffer_bytes` must be a power-of-two multiple
/// of the page size.
pub fn load(buffer_bytes: u32, resolved: &Resolved) -> Result<Loaded, LoadError> {
    let (tracefs_path, mounted_tracefs) = tracefs::ensure_mounted()?;
    let mut config = resolved.config;
    config.exit_ret_off = syscall_layout(&tracefs_path)?;
    let regs = [config.regs_arg0, config.regs_arg1, config.regs_arg2];
    if regs
        .iter()
        .any(|l| l.bit_size != 64 || l.bit_offset % 8 != 0)
    {
        return Err(LoadError::Layout(
            "this kernel's BTF has no 64-bit pt_regs.di/si/dx, where the tracepoint programs \
             read the system call arguments (x86-64 only)"
                .into(),
        ));
    }
    raise_memlock();
    let fold = !super::EVERY_CALL.load(std::sync::atomic::Ordering::Relaxed);

    let mut ebpf = EbpfLoader::new()
        // These programs need no CO-RE relocation (every offset is in CONFIG). aya 0.14 has
        // already parsed the kernel's BTF in `EbpfLoader::new()` (see `crate::kernel`); this
        // only drops that copy before the load instead of relocating against it.
        .btf(None)
        .override_global("CONFIG", &config, true)
        .override_global("FOLD", &u32::from(fold), true)
        .map_max_entries("EVENTS", buffer_bytes)
        .load(PROGRAMS)?;
    let mut hooks = Vec::new();
    for name in TRACEPOINTS {
        hooks.push(attach(&mut ebpf, name)?);
    }
    super::identity::check_with_bind(&ebpf)?;
    Ok(Loaded {
        ebpf,
        backend: "tracepoint",
        hooks,
        unknown_fields: resolved.unknown.clone(),
        mounted_tracefs,
        buffer_bytes,
        skipped: Vec::new(),
        fold,
    })
}

/// Loads the program `name` and attaches it to `syscalls:name`; returns the hook's name.
pub(super) fn attach(ebpf: &mut aya::Ebpf, name: &str) -> Result<String, LoadError> {
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
    Ok(format!("tracepoint:{name}"))
}

/// Offset of `ret` in the exit tracepoints' records, checked to be the same 8-byte slot in
/// all three.
pub(super) fn syscall_layout(tracefs: &Path) -> Result<u32, LoadError> {
    let ret = tracefs::field(tracefs, "syscalls", "sys_exit_bind", "ret")?;
    let listen_ret = tracefs::field(tracefs, "syscalls", "sys_exit_listen", "ret")?;
    let connect_ret = tracefs::field(tracefs, "syscalls", CONNECT, "ret")?;
    if ret.size != 8 || listen_ret != ret || connect_ret != ret {
        return Err(LoadError::Layout(format!(
            "unexpected syscall exit tracepoint layout: bind ret {ret:?}, listen ret \
             {listen_ret:?}, connect ret {connect_ret:?}"
        )));
    }
    Ok(ret.offset)
}
