//! How the kernel programs recognise the collector's own calls, in whatever pid namespace it
//! runs, and the start-up check that they do.
//!
//! The programs see the caller's tgid in the initial pid namespace (`bpf_get_current_pid_tgid`).
//! Our `getpid()` is that number only when we run in the initial pid namespace. In another one
//! (`docker run` without `--pid=host`, `unshare --pid`) it is our number there, and the one the
//! kernel sees is invisible to us. So the programs are told either our tgid (initial
//! namespace: one comparison per call, as before) or our pid namespace and our tgid in it,
//! which `bpf_get_ns_current_pid_tgid` checks (see `is_collector` in observer-ebpf).
//!
//! Whichever it is, the collector then makes one call of its own and checks that the programs
//! counted it as ours (`COUNTER_OWN_CALLS`): a collector whose own calls would show up as
//! events fails to start instead.

use super::LoadError;
use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray};
use observer_common::{COUNTER_OWN_CALLS, Config};
use std::os::unix::fs::MetadataExt as _;

/// `PROC_PID_INIT_INO` (`include/linux/proc_ns.h`): the inode of the initial pid namespace,
/// the same on every kernel since 3.8.
pub const INIT_PIDNS_INO: u64 = 0xEFFF_FFFC;

/// Who we are, for the programs' config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `Config::collector_tgid`.
    pub tgid: u32,
    /// `Config::collector_pidns_dev`.
    pub pidns_dev: u32,
    /// `Config::collector_pidns_ino`.
    pub pidns_ino: u32,
    /// `Config::collector_ns_tgid`.
    pub ns_tgid: u32,
}

impl Identity {
    /// From our pid namespace file's device and inode (`stat /proc/self/ns/pid`; `None` when
    /// it could not be read) and our `getpid()`.
    pub fn of(pidns: Option<(u64, u64)>, pid: u32) -> Identity {
        let by_tgid = Identity {
            tgid: pid,
            pidns_dev: 0,
            pidns_ino: 0,
            ns_tgid: 0,
        };
        let Some((dev, ino)) = pidns else {
            // No /proc: nothing better to say than our pid (right in the initial namespace,
            // and the start-up check fails loudly anywhere else).
            return by_tgid;
        };
        if ino == INIT_PIDNS_INO {
            return by_tgid;
        }
        // The kernel's dev_t is major << 20 | minor (`MKDEV`); stat encodes it otherwise.
        let kernel_dev = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
        match (u32::try_from(kernel_dev), u32::try_from(ino)) {
            (Ok(pidns_dev), Ok(pidns_ino)) => Identity {
                tgid: 0,
                pidns_dev,
                pidns_ino,
                ns_tgid: pid,
            },
            // Not a namespace file the kernel could have made (its dev_t and inum are 32
            // bits): the start-up check will say so.
            _ => by_tgid,
        }
    }

    /// This process.
    pub fn current() -> Identity {
        let pidns = std::fs::metadata("/proc/self/ns/pid")
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Identity::of(pidns, std::process::id())
    }

    /// Writes it into the programs' config.
    pub fn apply(self, config: &mut Config) {
        config.collector_tgid = self.tgid;
        config.collector_pidns_dev = self.pidns_dev;
        config.collector_pidns_ino = self.pidns_ino;
        config.collector_ns_tgid = self.ns_tgid;
    }

    /// How the programs recognise us, for an error message.
    fn describe(self) -> String {
        if self.tgid != 0 {
            format!("by its pid {}", self.tgid)
        } else {
            format!(
                "by its pid namespace (inode {}) and its pid {} there",
                self.pidns_ino, self.ns_tgid
            )
        }
    }
}

/// How many of our own calls the programs have recognised so far, summed over CPUs.
pub fn own_calls(ebpf: &Ebpf) -> Result<u64, LoadError> {
    let map = ebpf
        .map("COUNTERS")
        .ok_or_else(|| LoadError::Layout("map COUNTERS missing from the object".into()))?;
    let map = PerCpuArray::<&MapData, u64>::try_from(map)
        .map_err(|err| LoadError::Layout(format!("map COUNTERS: {err}")))?;
    Ok(map
        .get(&COUNTER_OWN_CALLS, 0)
        .map(|v| v.iter().sum())
        .unwrap_or(0))
}

/// Fails unless the programs counted a call of ours made since `before` (their count then).
pub fn expect_recognised(ebpf: &Ebpf, before: u64, what: &str) -> Result<(), LoadError> {
    let after = own_calls(ebpf)?;
    if after > before {
        return Ok(());
    }
    let identity = Identity::current();
    Err(LoadError::NotFired(format!(
        "the kernel programs did not take {what} for the observer's (they know it {}): its \
         own calls would be reported as events",
        identity.describe()
    )))
}

/// For the tracepoint backend: `bind(-1, NULL, 0)`, which fails at once with EBADF but passes
/// through `sys_exit_bind`, and the check that the program knew it was ours.
pub fn check_with_bind(ebpf: &Ebpf) -> Result<(), LoadError> {
    let before = own_calls(ebpf)?;
    // SAFETY: bind(2) with an invalid descriptor and no address: the kernel returns EBADF
    // before it looks at anything else.
    let _ebadf = unsafe { libc::bind(-1, std::ptr::null(), 0) };
    expect_recognised(ebpf, before, "its bind(-1) check")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_namespace_is_named_by_tgid() {
        let id = Identity::of(Some((4, INIT_PIDNS_INO)), 4242);
        assert_eq!(
            id,
            Identity {
                tgid: 4242,
                pidns_dev: 0,
                pidns_ino: 0,
                ns_tgid: 0
            }
        );
    }

    #[test]
    fn another_namespace_is_named_by_namespace_and_inner_pid() {
        // nsfs's device is an anonymous one: major 0. stat's encoding puts minor bits past 8
        // above the major; the kernel's dev_t keeps the minor in the low 20 bits.
        let dev = libc::makedev(0, 0x1234);
        let id = Identity::of(Some((dev, 4_026_532_500)), 1);
        assert_eq!(
            id,
            Identity {
                tgid: 0,
                pidns_dev: 0x1234,
                pidns_ino: 4_026_532_500,
                ns_tgid: 1
            }
        );
        let dev = libc::makedev(3, 7);
        assert_eq!(Identity::of(Some((dev, 5)), 9).pidns_dev, 3 << 20 | 7);
    }

    #[test]
    fn unreadable_namespace_falls_back_to_the_pid() {
        assert_eq!(Identity::of(None, 77).tgid, 77);
        // An inode the kernel cannot have made (inum is 32 bits).
        assert_eq!(Identity::of(Some((4, 1 << 40)), 77).tgid, 77);
    }

    #[test]
    fn this_process_is_in_the_namespace_proc_says() {
        let id = Identity::current();
        let ino = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
        if ino == INIT_PIDNS_INO {
            assert_eq!(id.tgid, std::process::id());
        } else {
            assert_eq!((id.tgid, u64::from(id.pidns_ino)), (0, ino));
            assert_eq!(id.ns_tgid, std::process::id());
        }
    }
}
