//! Capabilities: which ones the observer holds, and giving up, once the programs are attached,
//! every one the rest of the run does not need.
//!
//! Attaching needs `CAP_BPF` and `CAP_PERFMON`. Once attached, reading the ring buffer (a
//! shared mapping) and the counter map (`BPF_MAP_LOOKUP_ELEM` on a descriptor already open)
//! needs none, so `watch --no-conflicts` keeps none. The conflict lookup keeps [`LOOKUP`]:
//! `CAP_SYS_ADMIN` to `setns()` into the failing socket's network namespace, `CAP_SYS_PTRACE`
//! to open other processes' `/proc/PID/ns/net`, read their `/proc/PID/fd` links and take a
//! descriptor with `pidfd_getfd`, and `CAP_DAC_READ_SEARCH` to list `/proc/PID/fd` of
//! processes of other users. (The kernel accepts `CAP_SYS_ADMIN` in place of `CAP_BPF` and
//! `CAP_PERFMON`, which is how the lookup still loads its socket iterators after the drop.)
//!
//! [`drop_after_attach`] sets `no_new_privs`, empties the ambient and inheritable sets, shrinks
//! the bounding set when it may (`CAP_SETPCAP`; otherwise whoever started us chose it), and
//! sets the effective and permitted sets to what is kept. Capabilities belong to threads, so it
//! refuses to run once a second thread exists: threads started later inherit the reduced sets.

use std::io;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What the conflict lookup needs after attach (see the module doc).
pub const LOOKUP: [u32; 3] = [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN];

/// The documented set (README "Capabilities", granted by `deploy/`): attaching (`CAP_BPF`,
/// `CAP_PERFMON`; `CAP_DAC_READ_SEARCH` for tracefs when not uid 0) and the lookup.
pub const DOCUMENTED: [u32; 5] = [
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    CAP_SYS_ADMIN,
    CAP_PERFMON,
    CAP_BPF,
];

/// Capability names by number, as `<linux/capability.h>` has them (up to Linux 6.18).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "dropping capabilities: {0} threads are running; the drop must come before any other \
         thread starts (capabilities belong to threads)"
    )]
    Threads(usize),
    #[error("dropping capabilities: {call}: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("dropping capabilities: the kernel left {what} {mask:#x}, expected {want:#x}")]
    Left {
        what: &'static str,
        mask: u64,
        want: u64,
    },
}

/// The three capability sets of the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn call_err(call: &'static str) -> PrivilegeError {
    PrivilegeError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

/// The calling thread's capability sets.
pub fn current() -> Result<Sets, PrivilegeError> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a version-3 header and room for the two data words it asks the kernel to write.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(call_err("capget"));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Sets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

fn set(sets: Sets) -> Result<(), PrivilegeError> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let split = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let data: [Data; 2] = std::array::from_fn(|i| Data {
        effective: split(sets.effective, i),
        permitted: split(sets.permitted, i),
        inheritable: split(sets.inheritable, i),
    });
    // SAFETY: a version-3 header and the two data words the kernel reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(call_err("capset"));
    }
    Ok(())
}

/// The names of the capabilities in `mask`, lowest number first (`CAP_<n>` for numbers newer
/// than this list).
pub fn names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| match NAMES.get(bit as usize) {
            Some(name) => (*name).to_string(),
            None => format!("CAP_{bit}"),
        })
        .collect()
}

/// The mask of `caps`.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, cap| m | (1u64 << cap))
}

/// Threads of this process, from `/proc/self/status`.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let n = status.lines().find_map(|l| l.strip_prefix("Threads:"))?;
    n.trim().parse().ok()
}

/// Gives up every capability the run no longer needs: all of them, or with `conflicts` the
/// ones of [`LOOKUP`] this process has. Call once the programs are attached, before any other
/// thread starts. Returns the capabilities kept.
pub fn drop_after_attach(conflicts: bool) -> Result<u64, PrivilegeError> {
    match threads() {
        Some(1) => {}
        Some(n) => return Err(PrivilegeError::Threads(n)),
        None => {
            return Err(PrivilegeError::Call {
                call: "reading /proc/self/status",
                source: io::Error::last_os_error(),
            });
        }
    }
    let before = current()?;
    let keep = if conflicts {
        mask(&LOOKUP) & before.permitted
    } else {
        0
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(call_err("PR_SET_NO_NEW_PRIVS"));
    }
    if before.effective & (1u64 << CAP_SETPCAP) != 0 {
        shrink_bounding_set(keep)?;
    }
    // SAFETY: prctl with integer arguments only. EINVAL: a kernel before 4.3, without ambient
    // capabilities, so none to clear.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(call_err("PR_CAP_AMBIENT_CLEAR_ALL"));
    }
    let want = Sets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    };
    set(want)?;
    let after = current()?;
    for (what, mask, want) in [
        ("effective", after.effective, want.effective),
        ("permitted", after.permitted, want.permitted),
        ("inheritable", after.inheritable, want.inheritable),
    ] {
        if mask != want {
            return Err(PrivilegeError::Left { what, mask, want });
        }
    }
    Ok(keep)
}

/// Drops from the bounding set every capability not in `keep`, up to the kernel's last one.
fn shrink_bounding_set(keep: u64) -> Result<(), PrivilegeError> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
        .min(63);
    for cap in (0..=last).filter(|cap| keep & (1u64 << cap) == 0) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            // EINVAL: past the kernel's last capability (cap_last_cap unreadable).
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(call_err("PR_CAPBSET_DROP"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_numbers() {
        assert_eq!(
            names(mask(&LOOKUP)),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
        );
        assert_eq!(
            names(mask(&[CAP_BPF, CAP_PERFMON])),
            ["CAP_PERFMON", "CAP_BPF"]
        );
        assert_eq!(
            names(1u64 << 40 | 1u64 << 41),
            ["CAP_CHECKPOINT_RESTORE", "CAP_41"]
        );
        assert!(names(0).is_empty());
    }

    #[test]
    fn current_matches_proc_status() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |name: &str| {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim();
            u64::from_str_radix(hex, 16).unwrap()
        };
        let sets = current().unwrap();
        assert_eq!(sets.effective, field("CapEff:"));
        assert_eq!(sets.permitted, field("CapPrm:"));
        assert_eq!(sets.inheritable, field("CapInh:"));
    }
}
