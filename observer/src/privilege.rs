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
//! A thread started before it must be one [`on_joined_thread`] ran and joined (the
//! kernel-function backends' self-test): such a thread has finished, though the kernel may
//! still list it for a moment (see [`other_threads`]).

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

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

/// Threads [`on_joined_thread`] ran and joined, by their number in `/proc`'s pid namespace.
static JOINED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The calling thread's id as `/proc` numbers it (`/proc/thread-self` is `PID/task/TID`): the
/// same as `gettid()` unless `/proc` belongs to another pid namespace than ours.
fn proc_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Runs `f` on a thread of its own and joins it (`Err`: it panicked). Use it for the threads
/// that must come before [`drop_after_attach`]: once joined, a thread's code is done, but the
/// kernel lists it in `/proc/self/task` and counts it in `Threads:` until it releases the task
/// (`release_task`, at the very end of the thread's exit, after `pthread_join` has already
/// returned: the kernel wakes the joiner when it clears the thread's tid, early in `do_exit`).
/// The drop does not count it.
pub fn on_joined_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::Result<T> {
    let tid = std::sync::Arc::new(AtomicU32::new(0));
    let seen = tid.clone();
    let handle = std::thread::spawn(move || {
        seen.store(proc_tid().unwrap_or(0), Ordering::SeqCst);
        f()
    });
    let result = handle.join();
    let tid = tid.load(Ordering::SeqCst);
    if tid != 0 {
        JOINED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(tid);
    }
    result
}

/// The threads of this process other than the calling one and those [`on_joined_thread`]
/// joined, by their ids in `/proc` (`/proc/self/task`).
pub fn other_threads() -> io::Result<Vec<u32>> {
    let me = proc_tid().ok_or_else(|| io::Error::other("/proc/thread-self is unreadable"))?;
    let joined = JOINED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let mut others = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let name = entry?.file_name();
        let Some(tid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if tid != me && !joined.contains(&tid) {
            others.push(tid);
        }
    }
    Ok(others)
}

/// Gives up every capability the run no longer needs: all of them, or with `conflicts` the
/// ones of [`LOOKUP`] this process has. Call once the programs are attached, before any other
/// thread starts (but after those [`on_joined_thread`] ran). Returns the capabilities kept.
pub fn drop_after_attach(conflicts: bool) -> Result<u64, PrivilegeError> {
    match other_threads() {
        Ok(others) if others.is_empty() => {}
        Ok(others) => return Err(PrivilegeError::Threads(others.len() + 1)),
        Err(source) => {
            return Err(PrivilegeError::Call {
                call: "listing /proc/self/task",
                source,
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

    /// What a forked child reports back through a pipe: `[rounds, lingering, refused,
    /// unjoined_seen]`.
    fn in_child(rounds: u32) -> [u32; 4] {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child is single-threaded (fork copies only this thread); it uses
        // only its own memory and the kernel, and leaves with `_exit`, never returning into
        // the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let report = std::panic::catch_unwind(|| child_rounds(rounds)).unwrap_or([0; 4]);
            let bytes: Vec<u8> = report.iter().flat_map(|n| n.to_ne_bytes()).collect();
            // SAFETY: writes 16 bytes of `bytes` to the pipe's write end, then exits without
            // running anything of the parent's.
            unsafe {
                libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end, so that the read below ends with the
        // child.
        unsafe { libc::close(fds[1]) };
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: reads into the rest of `buf`.
            let n = unsafe { libc::read(fds[0], buf[got..].as_mut_ptr().cast(), buf.len() - got) };
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        let mut status = 0;
        // SAFETY: our own child; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        // SAFETY: our descriptor, not used after.
        unsafe { libc::close(fds[0]) };
        assert_eq!(got, 16, "the child reported nothing (status {status:#x})");
        std::array::from_fn(|i| u32::from_ne_bytes(buf[4 * i..4 * i + 4].try_into().unwrap()))
    }

    /// In the forked child: `rounds` times a thread run and joined, then the drop's check.
    fn child_rounds(rounds: u32) -> [u32; 4] {
        let (mut lingering, mut refused) = (0, 0);
        for _ in 0..rounds {
            let tid = on_joined_thread(proc_tid).unwrap().unwrap();
            // What the old check (`Threads:` of /proc/self/status is 1) tripped on.
            if std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
                lingering += 1;
            }
            if !other_threads().unwrap().is_empty() {
                refused += 1;
            }
        }
        // A thread still running is one: the check must see it.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u32>();
        let running = std::thread::spawn(move || {
            ready_tx.send(proc_tid().unwrap()).unwrap();
            let _ = rx.recv();
        });
        let tid = ready_rx.recv().unwrap();
        let seen = u32::from(other_threads().unwrap() == [tid]);
        drop(tx);
        running.join().unwrap();
        [rounds, lingering, refused, seen]
    }

    /// The drop after the kernel-function self-test failed 2 times in 5000 under load: the
    /// joined thread was still counted. Now a joined thread is never counted, and a running one
    /// always is.
    #[test]
    fn joined_threads_never_count_running_ones_do() {
        let [rounds, lingering, refused, seen] = in_child(5000);
        assert_eq!(rounds, 5000);
        assert_eq!(
            refused, 0,
            "{lingering} of {rounds} joined threads were still listed"
        );
        assert_eq!(seen, 1, "a running thread was not seen");
        // Not asserted (it depends on load): how often the kernel still listed the thread.
        eprintln!("joined threads still listed right after the join: {lingering} of {rounds}");
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
