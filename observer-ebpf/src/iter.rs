//! `iter/tcp` and `iter/udp`: for every TCP or UDP socket of the reader's network namespace,
//! including those no descriptor reaches (TIME_WAIT, kernel-owned sockets), which sock_diag
//! shows without options, its cookie and the options kept in `sock_common`, written to the
//! iterator's seq file as `SockFlagsRecord`s.
//!
//! `iter/task_file`: who holds the sockets in the way. It walks every open file of every
//! process in the kernel and writes an `OwnerRecord` only for a descriptor naming a socket of
//! the namespace and port in `OWNER_QUERY`, so finding a holder's owner costs a few loads per
//! descriptor on the host instead of a `readlink` of each `/proc/PID/fd` entry. `iter/task`
//! names the processes with a thread in that namespace, whose files are walked first.

use aya_ebpf::helpers::generated;
use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use core::ffi::c_void;
use observer_common::{CONFIG_VERSION, OwnerQuery, OwnerRecord, SockFlagsRecord};

use crate::{cfg, config, read};

/// The namespace and port `task_socket_owners` reports; the collector writes it before each
/// walk (one walk at a time).
#[map]
static OWNER_QUERY: Array<OwnerQuery> = Array::with_max_entries(1, 0);

/// Its context is `struct bpf_iter__task { meta; task }`; `task` is NULL at the end. Writes
/// the tgid (a `u32`) of each task in the `OWNER_QUERY` namespace.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn tasks_in_netns(ctx: *mut c_void) -> i32 {
    let _ = try_tasks_in_netns(ctx);
    0
}

#[inline(always)]
fn try_tasks_in_netns(ctx: *mut c_void) -> Result<(), ()> {
    let query = owner_query()?;
    let slots = ctx as *const u64;
    // SAFETY: the verifier checks these context loads against the iterator's context type.
    let (meta, task) = unsafe { (*slots as *const u64, *slots.add(1) as *const u8) };
    if meta.is_null() || task.is_null() {
        return Err(());
    }
    let tgid = read::task_in_netns(task, query.netns_ino, config()).ok_or(())?;
    seq_write(meta, &tgid);
    Ok(())
}

/// The query of this walk, unless there is none (or the config is not ours).
#[inline(always)]
fn owner_query() -> Result<OwnerQuery, ()> {
    if cfg(&config().version) != CONFIG_VERSION {
        return Err(());
    }
    match OWNER_QUERY.get(0).copied() {
        Some(q) if q.netns_ino != 0 => Ok(q),
        _ => Err(()),
    }
}

/// Writes `value` to the seq file of the iterator whose `bpf_iter_meta` is `meta`.
#[inline(always)]
fn seq_write<T>(meta: *const u64, value: &T) {
    // SAFETY: `meta` is the kernel's non-NULL `bpf_iter_meta`, whose first member is the seq
    // file.
    let seq = unsafe { *meta } as *mut c_void;
    // SAFETY: `value` lives for the call; the length is its size.
    unsafe {
        generated::bpf_seq_write(
            seq.cast(),
            (value as *const T).cast(),
            core::mem::size_of::<T>() as u32,
        )
    };
}

/// Its context is `struct bpf_iter__task_file { meta; task; u32 fd __aligned(8); file }`:
/// four 8-byte slots; `task` and `file` are NULL at the end of the iteration.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub extern "C" fn task_socket_owners(ctx: *mut c_void) -> i32 {
    let _ = try_task_socket_owners(ctx);
    0
}

#[inline(always)]
fn try_task_socket_owners(ctx: *mut c_void) -> Result<(), ()> {
    let query = owner_query()?;
    let slots = ctx as *const u64;
    // SAFETY: the verifier checks these context loads against the iterator's context type.
    let (meta, task, fd, file) = unsafe {
        (
            *slots as *const u64,
            *slots.add(1) as *const u8,
            *slots.add(2) as u32,
            *slots.add(3) as *const u8,
        )
    };
    if meta.is_null() || task.is_null() || file.is_null() {
        return Err(());
    }
    let owned = read::socket_owner(task, file, &query, config()).ok_or(())?;
    let record = OwnerRecord {
        tgid: owned.tgid,
        fd,
        ino: owned.ino,
        refs: owned.refs,
        flags: owned.flags.0,
        known: owned.flags.1,
    };
    seq_write(meta, &record);
    Ok(())
}

/// TCP. Its context is `struct bpf_iter__tcp { meta; sk_common; uid }`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn tcp_sock_flags(ctx: *mut c_void) -> i32 {
    write_flags(ctx)
}

/// UDP. Its context is `struct bpf_iter__udp { meta; udp_sk; uid; bucket }`; a `udp_sock`
/// starts with its `sock_common`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/udp")]
pub extern "C" fn udp_sock_flags(ctx: *mut c_void) -> i32 {
    write_flags(ctx)
}

/// Both contexts start with two 8-byte slots: the meta pointer (whose first member is the seq
/// file) and the socket (NULL at the end of the iteration).
#[inline(always)]
fn write_flags(ctx: *mut c_void) -> i32 {
    if cfg(&config().version) != CONFIG_VERSION {
        return 0;
    }
    let slots = ctx as *const u64;
    // SAFETY: the verifier checks these context loads against the iterator's context type.
    let (meta, sk) = unsafe { (*slots as *const u64, *slots.add(1) as *mut c_void) };
    if sk.is_null() || meta.is_null() {
        return 0;
    }
    let (flags, known) = read::common_flags(sk as *const u8, config());
    let record = SockFlagsRecord {
        // SAFETY: the helper takes the non-NULL socket pointer the kernel passed.
        cookie: unsafe { generated::bpf_get_socket_cookie(sk) },
        flags,
        known,
    };
    seq_write(meta, &record);
    0
}
