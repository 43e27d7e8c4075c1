//! Loading and attaching the kernel programs: three backends, one event schema.
//!
//! - `fexit` ([`kfunc`]): BPF trampolines on `inet_bind`, `inet6_bind`, `inet_listen`,
//!   `inet_csk_get_port` and `udp_lib_get_port`.
//! - `kprobe` ([`kfunc`]): kprobe/kretprobe pairs on the same functions.
//! - `tracepoint` ([`tracepoint`]): `syscalls:sys_exit_{bind,listen}`.
//!
//! Every backend also attaches `syscalls:sys_exit_connect` (failed connects; every connect
//! with `--connects all`).
//!
//! `auto` tries them in that order and keeps, for each one skipped, the reason. Order matters
//! for honesty: privileges are checked first (a clear line instead of an EPERM from deep inside
//! aya), the programs' config is derived from BTF, and only when every program is attached (and,
//! for the kernel-function backends, seen to fire) does the caller get a [`Loaded`].

pub mod identity;
pub mod kfunc;
mod precheck;
pub mod tracepoint;

use crate::btf::{Btf, BtfError};
use crate::model::Skipped;
use crate::offsets::Resolved;
use crate::tracefs::TracefsError;
use aya::Ebpf;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// fexit, else kprobe, else tracepoint.
    Auto,
    Fexit,
    Kprobe,
    Tracepoint,
}

/// Loads the chosen backend; under `auto`, the first that loads, attaches and fires, with the
/// reasons the others were skipped in [`Loaded::skipped`].
///
/// `connects_all`: report every `connect()` and the implicit port allocations of connects
/// and sends, not only the connects that fail with EADDRNOTAVAIL, EAGAIN or EADDRINUSE.
pub fn load(choice: Choice, buffer_bytes: u32, connects_all: bool) -> Result<Loaded, LoadError> {
    check_privileges()?;
    // Our own BTF reader, once per run (`crate::kernel`); dropped before aya parses BTF
    // again in its loader, so the two never weigh on memory together.
    let btf = Btf::from_sys_fs()?;
    let mut resolved = prepare(&btf)?;
    resolved.config.connects_all = u32::from(connects_all);
    // Only `auto` skips a backend the kernel refuses; a backend asked for by name is tried in
    // full, for its own error.
    let auto = choice == Choice::Auto;
    let refusals = [
        (
            kfunc::Kind::Fexit,
            auto.then(|| precheck::fexit_refused(&btf, kfunc::FUNCTIONS[0]))
                .flatten(),
        ),
        (
            kfunc::Kind::Kprobe,
            auto.then(|| precheck::kprobe_refused(kfunc::FUNCTIONS[0]))
                .flatten(),
        ),
    ];
    drop(btf);
    match choice {
        Choice::Fexit => one_line(kfunc::Kind::Fexit, buffer_bytes, &resolved),
        Choice::Kprobe => one_line(kfunc::Kind::Kprobe, buffer_bytes, &resolved),
        Choice::Tracepoint => tracepoint::load(buffer_bytes, &resolved),
        Choice::Auto => {
            let mut skipped = Vec::new();
            for (kind, refusal) in refusals {
                if let Some(reason) = refusal {
                    skipped.push(Skipped {
                        backend: kind.name(),
                        reason,
                    });
                    continue;
                }
                match kfunc::load(kind, buffer_bytes, &resolved) {
                    Ok(mut loaded) => {
                        loaded.skipped = skipped;
                        return Ok(loaded);
                    }
                    Err(err) => skipped.push(Skipped {
                        backend: kind.name(),
                        reason: err.short(),
                    }),
                }
            }
            let mut loaded = tracepoint::load(buffer_bytes, &resolved)?;
            loaded.skipped = skipped;
            Ok(loaded)
        }
    }
}

/// A kernel-function backend asked for by name; its failure in one line, as `auto` gives it.
fn one_line(kind: kfunc::Kind, buffer_bytes: u32, r: &Resolved) -> Result<Loaded, LoadError> {
    kfunc::load(kind, buffer_bytes, r).map_err(|err| match err {
        err @ LoadError::Privilege(_) => err,
        err => LoadError::Unavailable {
            backend: kind.name(),
            reason: err.short(),
        },
    })
}

/// The kernel-specific config every backend starts from: BTF offsets and how the programs
/// recognise the collector's own calls ([`identity`]).
fn prepare(btf: &Btf) -> Result<Resolved, LoadError> {
    let mut resolved = crate::kernel::resolve(btf)?;
    identity::Identity::current().apply(&mut resolved.config);
    resolved.config.nr_bind = libc::SYS_bind as u32;
    resolved.config.nr_listen = libc::SYS_listen as u32;
    resolved.config.nr_implicit = [
        libc::SYS_connect as u32,
        libc::SYS_sendto as u32,
        libc::SYS_sendmsg as u32,
        libc::SYS_sendmmsg as u32,
    ];
    Ok(resolved)
}

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
    #[error("{0}")]
    NotFired(String),
    #[error("the {backend} backend is not available here: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
}

impl LoadError {
    /// One line for a skipped backend, e.g. `"BPF_PROG_LOAD refused: EPERM (fexit_inet_bind)"`.
    pub fn short(&self) -> String {
        use aya::programs::ProgramError;
        match self {
            LoadError::Program {
                what,
                source: ProgramError::LoadError { io_error, .. },
            } => format!(
                "BPF_PROG_LOAD refused: {} ({what})",
                crate::errno::name(io_error.raw_os_error().unwrap_or(0))
            ),
            LoadError::Program {
                what,
                source: ProgramError::SyscallError(e),
            } => format!(
                "{} refused: {} ({what})",
                e.call,
                crate::errno::name(e.io_error.raw_os_error().unwrap_or(0))
            ),
            LoadError::Program { what, source } => {
                let mut line = format!("{what}: {source}");
                let mut cause = std::error::Error::source(source);
                while let Some(err) = cause {
                    line = format!("{line}: {err}");
                    cause = err.source();
                }
                line
            }
            other => other.to_string(),
        }
    }
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
    /// Backends tried before this one (under `auto`), with the reason each was not used.
    pub skipped: Vec<Skipped>,
    /// The kernel programs fold identical repeats of a failed call (tracepoint backend,
    /// without `--every-call`).
    pub fold: bool,
}

/// `--every-call`: the tracepoint programs send every call instead of folding identical
/// repeats. Set before [`load`].
pub static EVERY_CALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn check_privileges() -> Result<(), LoadError> {
    use crate::privilege::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN};
    let Ok(sets) = crate::privilege::current() else {
        return Ok(()); // Cannot tell: let the kernel decide.
    };
    let has = |cap: u32| sets.effective & (1u64 << cap) != 0;
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
