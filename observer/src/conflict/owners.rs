//! Who holds a socket: the processes with a descriptor for its inode, with their comm and
//! command line, read once per process however many of its descriptors match, the command
//! line bounded to [`CMDLINE_MAX`] bytes before it is read into memory.
//!
//! The descriptors are found by the `iter/task_file` kernel program ([`super::kiter`]),
//! which walks every open file on the host in the kernel and reports only the sockets of the
//! namespace and port asked about: a few loads per unrelated descriptor, where reading
//! `/proc/PID/fd` (as `ss -p` does) costs a `readlink` each — seconds on a host with a
//! million descriptors. `/proc` is the fallback when the program cannot serve: this process
//! is in a pid namespace that is not the host's (the kernel's pids would not be ours), or
//! the kernel refused the program.
//!
//! The socket options the kernel does not export through sock_diag come from the socket
//! iterators ([`super::sockflags`]). A socket they do not list (a bound, not listening TCP
//! socket, which is in the kernel's bind hash alone) has them read by this walk, from the
//! socket its owner's descriptor names ([`Found::opts`]). Only when owners come from `/proc`
//! are they read from a duplicate of the holder's descriptor ([`sockopts`], `pidfd_getfd`,
//! needs CAP_SYS_PTRACE over the holder), which on a host using cgroup v1
//! `net_cls`/`net_prio` rewrites the socket's classid and priority index (`__receive_sock`).

use super::kiter::{self, Program};
use super::sockflags::SockOpts;
use crate::model::Owner;
use crate::sockopt::Opt;
use aya::maps::Array;
use observer_common::{OwnerQuery, OwnerRecord};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

/// The most of a command line read (the kernel's own limit is the whole argument area).
pub const CMDLINE_MAX: u64 = 4096;

/// `PROC_PID_INIT_INO`: the inode number the kernel gives the initial pid namespace
/// (`include/linux/proc_ns.h`, fixed since 3.8).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// Processes of the namespace whose files are walked one by one before the walk of every file
/// on the host; with more, the one walk of everything costs less than the links.
const CANDIDATES_MAX: usize = 64;

/// Where the sockets asked about are: their network namespace and local port, which is what
/// the kernel walk filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The network namespace's inode (`net.ns.inum`).
    pub netns_ino: u64,
    pub port: u16,
}

/// Socket inode → the processes holding it, by pid.
pub type ByInode = HashMap<u64, Vec<Owner>>;

/// Owners, and why the kernel walk did not serve if it did not (`None`: it served, or it was
/// not asked because this pid namespace is not the host's).
pub struct Found {
    pub owners: ByInode,
    /// The options of each socket, read by the kernel walk from the socket a descriptor names
    /// (empty when owners came from `/proc`).
    pub opts: HashMap<u64, SockOpts>,
    pub fallback: Option<String>,
}

/// Processes holding each of `inodes` (inode → owners, by pid), all of them sockets in
/// `scope`. Inodes nobody holds are absent. Processes that end during the search are
/// skipped.
pub fn find(inodes: &BTreeSet<u64>, scope: Scope) -> Found {
    if inodes.is_empty() {
        return Found {
            owners: ByInode::new(),
            opts: HashMap::new(),
            fallback: None,
        };
    }
    find_after(inodes, scope, walk(scope))
}

/// What the kernel walk found before the sockets asked about were known: the descriptors of
/// `scope`'s port, in every process or only in those with a thread in the namespace.
pub enum Walked {
    /// This pid namespace is not the host's: the kernel's pids would not be ours.
    NotAsked,
    /// The walk could not serve, and why.
    Failed(String),
    /// The files of the namespace's processes only: complete unless a socket asked about has
    /// a holder elsewhere ([`complete`]).
    Namespace(Vec<OwnerRecord>),
    /// Every file on the host.
    Host(Vec<OwnerRecord>),
}

/// The kernel walk for `scope`, which needs only the namespace and the port: a lookup starts
/// it while it reads the socket table, and [`find_after`] finishes it.
pub fn walk(scope: Scope) -> Walked {
    if pid_namespace_hides_processes() != Some(false) {
        return Walked::NotAsked;
    }
    from_kernel(scope).unwrap_or_else(Walked::Failed)
}

/// [`find`], given what [`walk`] found for the same `scope`.
pub fn find_after(inodes: &BTreeSet<u64>, scope: Scope, walked: Walked) -> Found {
    // Looked up once per record: 100k sockets in the way are 100k records.
    let wanted: HashSet<u64> = inodes.iter().copied().collect();
    let kernel = match walked {
        Walked::NotAsked => None,
        Walked::Failed(why) => Some(Err(why)),
        Walked::Host(records) => Some(Ok(records)),
        Walked::Namespace(records) if complete(&records, &wanted) => Some(Ok(records)),
        // A holder outside the namespace's processes: every file on the host.
        Walked::Namespace(_) => Some(
            kiter::object()
                .and_then(|mut loaded| {
                    let loaded = loaded.as_mut().ok_or("the iterator object is not loaded")?;
                    set_query(&mut loaded.ebpf, scope)?;
                    kiter::run(&mut loaded.ebpf, Program::TaskFile)
                })
                .map(|raw| parse_owners(&raw)),
        ),
    };
    match kernel {
        Some(Ok(records)) => Found {
            owners: owners_of(&records, &wanted, describe),
            opts: records
                .iter()
                .filter(|r| wanted.contains(&r.ino) && r.known != 0)
                .map(|r| (r.ino, SockOpts::from_bits(r.flags, r.known)))
                .collect(),
            fallback: None,
        },
        Some(Err(why)) => Found {
            owners: from_proc(inodes),
            opts: HashMap::new(),
            fallback: Some(why),
        },
        None => Found {
            owners: from_proc(inodes),
            opts: HashMap::new(),
            fallback: None,
        },
    }
}

/// Points `iter/task_file` at `scope` (`OWNER_QUERY`). The caller holds the object's lock
/// until its walk is read.
fn set_query(ebpf: &mut aya::Ebpf, scope: Scope) -> Result<(), String> {
    if scope.netns_ino == 0 {
        return Err("the network namespace's inode could not be read".into());
    }
    let netns_ino = u32::try_from(scope.netns_ino)
        .map_err(|_| format!("network namespace inode {} is not 32-bit", scope.netns_ino))?;
    let map = ebpf
        .map_mut("OWNER_QUERY")
        .ok_or("map OWNER_QUERY missing from the object")?;
    let mut query: Array<_, OwnerQuery> =
        Array::try_from(map).map_err(|e| format!("map OWNER_QUERY: {e}"))?;
    let q = OwnerQuery {
        netns_ino,
        port: u32::from(scope.port),
    };
    query
        .set(0, q, 0)
        .map_err(|e| format!("writing OWNER_QUERY: {e}"))
}

/// The kernel walk (`iter/task_file`).
fn from_kernel(scope: Scope) -> Result<Walked, String> {
    let config = crate::kernel::resolved().map_err(|e| e.to_string())?.config;
    if !config.task_tgid.is_known() || !config.inode_mode.is_known() {
        return Err("this kernel's BTF lacks task_struct.tgid or inode.i_mode".into());
    }
    let mut loaded = kiter::object()?;
    let loaded = loaded.as_mut().ok_or("the iterator object is not loaded")?;
    loaded.task_file.clone()?;
    set_query(&mut loaded.ebpf, scope)?;
    // First the files of the processes with a thread in the namespace, where owners nearly
    // always are: on a host with a million descriptors elsewhere, a few loads per task instead
    // of per descriptor. A socket none of them holds (passed to, or inherited by, a process
    // of another namespace, or held by nobody) needs the walk of every file.
    let mut candidates: Vec<u32> = kiter::run(&mut loaded.ebpf, Program::Task)?
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    if candidates.len() <= CANDIDATES_MAX {
        let mut records = Vec::new();
        let mut failed = false;
        for &pid in &candidates {
            match kiter::run_for_pid(&mut loaded.ebpf, Program::TaskFile, pid) {
                Ok(raw) => records.extend(parse_owners(&raw)),
                // Gone since: nothing of it to find.
                Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {}
                Err(_) => failed = true,
            }
        }
        if !failed {
            return Ok(Walked::Namespace(records));
        }
    }
    let raw = kiter::run(&mut loaded.ebpf, Program::TaskFile)?;
    Ok(Walked::Host(parse_owners(&raw)))
}

/// Whether `records` name every descriptor of each of `inodes`: each descriptor table entry
/// holds one reference to the socket's file and the iterator one more while it looks, so a
/// socket whose references are one more than its entries found has no holder elsewhere. A
/// thread blocked in `accept()` on a shared descriptor table holds one too: that socket is
/// then looked for everywhere, as is one whose count could not be read.
fn complete(records: &[OwnerRecord], inodes: &HashSet<u64>) -> bool {
    // Entries and whether every record agrees on the references, per inode: one pass over
    // the records (100k connections on a port are 100k inodes).
    let mut by_inode: HashMap<u64, (u64, Option<u64>, bool)> = HashMap::new();
    for r in records.iter().filter(|r| inodes.contains(&r.ino)) {
        let (entries, refs, agree) = by_inode.entry(r.ino).or_insert((0, None, true));
        *entries += 1;
        *agree &= refs.is_none_or(|seen| seen == r.refs);
        *refs = Some(r.refs);
    }
    inodes.iter().all(|ino| {
        by_inode
            .get(ino)
            .is_some_and(|&(entries, refs, agree)| agree && refs == Some(entries + 1))
    })
}

/// The records `iter/task_file` wrote.
fn parse_owners(raw: &[u8]) -> Vec<OwnerRecord> {
    raw.chunks_exact(std::mem::size_of::<OwnerRecord>())
        .map(|c| OwnerRecord {
            tgid: u32::from_ne_bytes(c[0..4].try_into().unwrap()),
            fd: u32::from_ne_bytes(c[4..8].try_into().unwrap()),
            ino: u64::from_ne_bytes(c[8..16].try_into().unwrap()),
            refs: u64::from_ne_bytes(c[16..24].try_into().unwrap()),
            flags: u32::from_ne_bytes(c[24..28].try_into().unwrap()),
            known: u32::from_ne_bytes(c[28..32].try_into().unwrap()),
        })
        .collect()
}

/// Owners of `inodes` among `records`: one per process and socket (its first descriptor),
/// each process described once.
fn owners_of(
    records: &[OwnerRecord],
    inodes: &HashSet<u64>,
    describe: impl Fn(u32) -> (String, String),
) -> ByInode {
    let mut found: ByInode = ByInode::new();
    let mut described: HashMap<u32, (Arc<str>, Arc<str>)> = HashMap::new();
    for r in records.iter().filter(|r| inodes.contains(&r.ino)) {
        let owners = found.entry(r.ino).or_default();
        if owners.iter().any(|o| o.pid == r.tgid) {
            continue;
        }
        let (comm, cmdline) = described
            .entry(r.tgid)
            .or_insert_with(|| {
                let (comm, cmdline) = describe(r.tgid);
                (comm.into(), cmdline.into())
            })
            .clone();
        owners.push(Owner {
            pid: r.tgid,
            comm,
            cmdline,
            fd: i32::try_from(r.fd).unwrap_or(i32::MAX),
        });
    }
    found
}

/// Processes holding each of `inodes`, from `/proc` alone: for sockets on many ports, which
/// the kernel walk (one port at a time) does not serve.
pub fn find_in_proc(inodes: &BTreeSet<u64>) -> ByInode {
    if inodes.is_empty() {
        return ByInode::new();
    }
    from_proc(inodes)
}

/// The `/proc/PID/fd` scan.
fn from_proc(inodes: &BTreeSet<u64>) -> ByInode {
    let mut found: ByInode = ByInode::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        // Described on its first matching descriptor only.
        let mut this: Option<(Arc<str>, Arc<str>)> = None;
        for fd in fds.flatten() {
            let Some(ino) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(l.to_str()?))
                .filter(|ino| inodes.contains(ino))
            else {
                continue;
            };
            let Some(fdnum) = fd.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let owners = found.entry(ino).or_default();
            if owners.iter().any(|o| o.pid == pid) {
                continue;
            }
            let (comm, cmdline) = this
                .get_or_insert_with(|| {
                    let (comm, cmdline) = describe(pid);
                    (comm.into(), cmdline.into())
                })
                .clone();
            owners.push(Owner {
                pid,
                comm,
                cmdline,
                fd: fdnum,
            });
        }
    }
    found
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// comm and command line (arguments joined by spaces, at most [`CMDLINE_MAX`] bytes read).
fn describe(pid: u32) -> (String, String) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let mut raw = Vec::new();
    let cmdline = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(CMDLINE_MAX).read_to_end(&mut raw))
        .map(|_| join_args(&raw))
        .unwrap_or_default();
    (comm, cmdline)
}

fn join_args(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether this process's `/proc` may miss processes: its pid namespace is not the initial
/// one, so processes of parent or sibling namespaces (a holder among them) are not listed.
/// `None` when the namespace cannot be read.
pub fn pid_namespace_hides_processes() -> Option<bool> {
    let ino = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    Some(ino != PROC_PID_INIT_INO)
}

/// Reads the options of socket `inode` through `owner`'s descriptor. Fails when the process
/// is gone, the descriptor now names another file, or we may not take it.
pub fn sockopts(owner: &Owner, inode: u64, v6: bool) -> io::Result<SockOpts> {
    let fd = take_fd(owner.pid, owner.fd)?;
    if fd_inode(&fd)? != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the descriptor was reused for another file",
        ));
    }
    let get = |opt: Opt| getsockopt_bool(&fd, opt, v6);
    Ok(SockOpts {
        reuseaddr: get(Opt::ReuseAddr).ok(),
        reuseport: get(Opt::ReusePort).ok(),
        v6only: if v6 { get(Opt::V6Only).ok() } else { None },
    })
}

/// A duplicate, in this process, of descriptor `fd` of process `pid`.
fn take_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) has no memory-safety preconditions.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned only here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd(2) on our own pidfd; it returns a new descriptor or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned only here (pidfd_getfd sets O_CLOEXEC).
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

fn fd_inode(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: fstat writes only into `st`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

fn getsockopt_bool(fd: &OwnedFd, opt: Opt, v6: bool) -> io::Result<bool> {
    let (level, name) = opt.sockopt(v6);
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writing an int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_joined_and_empty_ones_dropped() {
        assert_eq!(
            join_args(b"nginx\0-g\0\0daemon off;\0"),
            "nginx -g daemon off;"
        );
        assert_eq!(join_args(b""), "");
    }

    #[test]
    fn kernel_records_give_one_owner_per_process_and_socket_described_once() {
        let rec = |tgid, fd, ino| OwnerRecord {
            tgid,
            fd,
            ino,
            refs: 0,
            flags: 0,
            known: 0,
        };
        let mut raw = Vec::new();
        for r in [
            rec(7, 3, 100),
            rec(7, 9, 100),
            rec(7, 4, 200),
            rec(8, 5, 100),
            rec(9, 6, 300),
        ] {
            raw.extend_from_slice(&r.tgid.to_ne_bytes());
            raw.extend_from_slice(&r.fd.to_ne_bytes());
            raw.extend_from_slice(&r.ino.to_ne_bytes());
            raw.extend_from_slice(&r.refs.to_ne_bytes());
            // Socket 200 has SO_REUSEPORT (bit 1), all three options read.
            let flags: u32 = if r.ino == 200 { 2 } else { 0 };
            raw.extend_from_slice(&flags.to_ne_bytes());
            raw.extend_from_slice(&7u32.to_ne_bytes());
        }
        // A torn tail is ignored.
        raw.extend_from_slice(&[1, 2, 3]);
        let records = parse_owners(&raw);
        assert_eq!(records.len(), 5);
        assert_eq!(
            SockOpts::from_bits(records[2].flags, records[2].known),
            SockOpts {
                reuseaddr: Some(false),
                reuseport: Some(true),
                v6only: Some(false)
            }
        );
        let described = std::cell::RefCell::new(Vec::new());
        let found = owners_of(&records, &HashSet::from([100, 200]), |pid| {
            described.borrow_mut().push(pid);
            (format!("c{pid}"), format!("cmd {pid}"))
        });
        assert_eq!(*described.borrow(), [7, 8]);
        type Seen = (u32, i32, String);
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort_by_key(|(ino, _)| *ino);
        let summary: Vec<(u64, Vec<Seen>)> = found
            .into_iter()
            .map(|(ino, os)| {
                (
                    ino,
                    os.into_iter()
                        .map(|o| (o.pid, o.fd, o.comm.to_string()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (100, vec![(7, 3, "c7".into()), (8, 5, "c8".into())]),
                (200, vec![(7, 4, "c7".into())]),
            ]
        );
    }

    #[test]
    fn a_partial_walk_is_complete_only_when_the_references_add_up() {
        let rec = |fd, ino, refs| OwnerRecord {
            tgid: 7,
            fd,
            ino,
            refs,
            flags: 0,
            known: 0,
        };
        let wanted = HashSet::from([100, 200]);
        // Two entries for 100 (refs 3 = 2 + the iterator's), one for 200.
        assert!(complete(
            &[rec(3, 100, 3), rec(4, 100, 3), rec(5, 200, 2)],
            &wanted
        ));
        // Someone else holds 200 too.
        assert!(!complete(
            &[rec(3, 100, 3), rec(4, 100, 3), rec(5, 200, 3)],
            &wanted
        ));
        // 200 not found at all; a count that could not be read.
        assert!(!complete(&[rec(3, 100, 2)], &wanted));
        assert!(!complete(&[rec(3, 100, 2), rec(5, 200, 0)], &wanted));
    }

    #[test]
    fn only_socket_links_name_an_inode() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn cmdline_is_read_up_to_the_bound() {
        // This test process's own command line is short; the bound is what `describe` reads.
        let (comm, cmdline) = describe(std::process::id());
        assert!(!comm.is_empty());
        assert!(cmdline.len() as u64 <= CMDLINE_MAX);
    }
}
