//! The kernel programs as this process loads them: the object `build.rs` built, the running
//! kernel's layout derived from its BTF once per run, and the memlock limit old kernels charge
//! maps to. Below the backends (which attach the programs) and the diagnosis (which runs the
//! socket iterators of the same object).
//!
//! BTF is parsed by two readers. Ours (`crate::btf`) finds the field locations the programs
//! read; it is parsed once per run, by whoever needs the layout first, and only the derived
//! [`Resolved`] is kept (the parsed types are several MiB). aya's own reader resolves program
//! attach points (fexit, iterators): aya 0.14's `EbpfLoader::new()` parses the kernel's BTF in
//! its constructor, whatever `.btf()` is told afterwards, so each loader costs one parse that
//! this crate cannot avoid; the observer makes at most two loaders a run (the backend's, and
//! the iterators' on the first lookup that needs them).

use crate::btf::{Btf, BtfError};
use crate::offsets::{self, Resolved};
use std::sync::OnceLock;

/// The programs, built by `build.rs`.
pub(crate) static PROGRAMS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

static RESOLVED: OnceLock<Resolved> = OnceLock::new();

/// The field locations of the running kernel, from `btf` on the first call of the run and
/// from the cache afterwards.
pub fn resolve(btf: &Btf) -> Result<Resolved, BtfError> {
    if let Some(r) = RESOLVED.get() {
        return Ok(r.clone());
    }
    let r = offsets::resolve(btf)?;
    Ok(RESOLVED.get_or_init(|| r).clone())
}

/// The field locations of the running kernel, parsing its BTF only when nothing in this run
/// has yet.
pub fn resolved() -> Result<Resolved, BtfError> {
    match RESOLVED.get() {
        Some(r) => Ok(r.clone()),
        None => resolve(&Btf::from_sys_fs()?),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (raising it past the hard limit needs
/// CAP_SYS_RESOURCE there); newer ones charge the memory cgroup and ignore it (6.18 loads with
/// a memlock limit of 0 and no CAP_SYS_RESOURCE). Failure is not fatal: an old kernel then
/// refuses the maps with EPERM, reported with its own message.
pub(crate) fn raise_memlock() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit; setrlimit only reads it.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}

/// The bpf(2) system call on `attr`, a zero-padded prefix of `union bpf_attr` with the fields
/// of `cmd` set: for the commands aya 0.14 does not make (iterator links with link info,
/// program queries). Returns what the call returns (a new descriptor, or 0).
pub(crate) fn bpf<const N: usize>(cmd: libc::c_long, attr: &mut [u64; N]) -> std::io::Result<i64> {
    // SAFETY: `attr` is valid for the kernel to read and write for the size passed, which is
    // its size; the kernel checks that the bytes past the fields it knows are zero, and reads
    // or writes only within it (and where its pointers point).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
