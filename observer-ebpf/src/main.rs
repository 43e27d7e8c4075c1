//! The observer's kernel programs: the tracepoint backend.
//!
//! `sys_enter_bind` / `sys_enter_listen` remember the call's arguments per thread (including a
//! copy of the caller's sockaddr, which only exists in user memory at entry); `sys_exit_bind` /
//! `sys_exit_listen` pair with them, walk from the current task to the socket the fd names, read
//! what the kernel now holds for it, and queue one `BindRecord` on the ring buffer.
//!
//! No kernel struct offset is compiled in: every field is read through a `FieldLoc` that the
//! collector derived from the running kernel's BTF and wrote into `CONFIG` before load.
//!
//! The kernel-function backends live beside it: `fexit` and `kprobe`, sharing `kfunc`.
#![no_std]
#![no_main]

mod fexit;
mod iter;
mod kfunc;
mod kprobe;
mod read;

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use observer_common::{
    BindRecord, CONFIG_VERSION, COUNTER_COUNT, COUNTER_LOST, COUNTER_PAIR_FULL, COUNTER_UNPAIRED,
    Config, HOOK_TP_SYS_EXIT_BIND, HOOK_TP_SYS_EXIT_LISTEN, OP_BIND, OP_LISTEN, RECORD_BIND,
    SOCKADDR_LEN,
};

/// Written by the collector before load (read-only data: the verifier sees the values as
/// constants, so the offset arithmetic below costs nothing at run time).
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZEROED;

/// Records for the collector. The size is a default; the collector sets the real one.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Calls in flight, by thread id. LRU so that a thread that dies inside `bind()` cannot leave
/// an entry behind forever.
#[map]
static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(16384, 0);

/// `COUNTER_*` events that are not records: lost, unpaired, failed reads.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// What the entry program saves for the exit program.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    op: u32,
    fd: i32,
    addrlen: u32,
    sockaddr_len: u32,
    sockaddr: [u8; SOCKADDR_LEN],
    _pad: u32,
}

#[inline(always)]
fn config() -> &'static Config {
    &CONFIG
}

/// Reads one config value so that the compiler cannot fold it from the zeroed initialiser.
#[inline(always)]
fn cfg<T: Copy>(field: &T) -> T {
    // SAFETY: `field` points into the `CONFIG` static, which is valid for reads for the whole
    // life of the program; the volatile read only stops constant folding.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of a map that lives as long as the program; programs on one CPU
        // do not preempt each other, so the read-modify-write is not racy.
        unsafe { *slot += 1 };
    }
}

/// The collector's own calls are never reported (and never paired).
#[inline(always)]
fn is_collector(pid_tgid: u64) -> bool {
    (pid_tgid >> 32) as u32 == cfg(&config().collector_tgid)
}

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx, OP_BIND);
    0
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx, OP_LISTEN);
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx, OP_BIND, HOOK_TP_SYS_EXIT_BIND);
    0
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx, OP_LISTEN, HOOK_TP_SYS_EXIT_LISTEN);
    0
}

fn try_enter(ctx: &TracePointContext, op: u16) -> Result<(), i64> {
    if cfg(&config().version) != CONFIG_VERSION {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_collector(pid_tgid) {
        return Ok(());
    }
    let args = cfg(&config().enter_args_off) as usize;
    // SAFETY: `args` is the offset of the syscall arguments in this tracepoint's record, read
    // from tracefs by the collector; the helper checks the access.
    let fd: u64 = unsafe { ctx.read_at(args) }.map_err(i64::from)?;
    let mut pending = Pending {
        op: u32::from(op),
        fd: fd as i32,
        addrlen: 0,
        sockaddr_len: 0,
        sockaddr: [0; SOCKADDR_LEN],
        _pad: 0,
    };
    if op == OP_BIND {
        // SAFETY: as above, the second and third arguments (`umyaddr`, `addrlen`).
        let uaddr: u64 = unsafe { ctx.read_at(args + 8) }.map_err(i64::from)?;
        // SAFETY: as above.
        let addrlen: u64 = unsafe { ctx.read_at(args + 16) }.map_err(i64::from)?;
        pending.addrlen = addrlen as u32;
        let mut len = addrlen as u32;
        if len > SOCKADDR_LEN as u32 {
            len = SOCKADDR_LEN as u32;
        }
        if len > 0 && uaddr != 0 {
            // SAFETY: `bpf_probe_read_user` checks the user address itself and fails instead of
            // faulting; `len` is at most the size of the destination.
            let rc = unsafe {
                generated::bpf_probe_read_user(
                    pending.sockaddr.as_mut_ptr().cast(),
                    len,
                    uaddr as *const core::ffi::c_void,
                )
            };
            if rc == 0 {
                pending.sockaddr_len = len;
            }
        }
    }
    let tid = pid_tgid as u32;
    if PENDING.insert(tid, pending, 0).is_err() {
        count(COUNTER_PAIR_FULL);
    }
    Ok(())
}

fn try_exit(ctx: &TracePointContext, op: u16, hook: u16) -> Result<(), i64> {
    if cfg(&config().version) != CONFIG_VERSION {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_collector(pid_tgid) {
        return Ok(());
    }
    let tid = pid_tgid as u32;
    let Some(pending) = PENDING.get_ptr(tid) else {
        count(COUNTER_UNPAIRED);
        return Ok(());
    };
    // SAFETY: the pointer came from a successful lookup; the entry is copied out before it is
    // removed, and only this thread writes entries under its own tid.
    let pending = unsafe { *pending };
    let _ = PENDING.remove(tid);
    if pending.op != u32::from(op) {
        count(COUNTER_UNPAIRED);
        return Ok(());
    }
    // SAFETY: offset of `ret` in this tracepoint's record, read from tracefs by the collector.
    let ret: i64 =
        unsafe { ctx.read_at(cfg(&config().exit_ret_off) as usize) }.map_err(i64::from)?;

    let Some(mut entry) = EVENTS.reserve::<BindRecord>(0) else {
        count(COUNTER_LOST);
        return Ok(());
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to a ring buffer reservation of exactly `size_of::<BindRecord>()`
    // bytes that this program owns until submit; every field is initialised before submit.
    unsafe {
        core::ptr::write_bytes(rec, 0, 1);
        (*rec).kind = RECORD_BIND;
        (*rec).op = op;
        (*rec).hook = hook;
        (*rec).ts_ns = generated::bpf_ktime_get_ns();
        (*rec).pid = (pid_tgid >> 32) as u32;
        (*rec).tid = tid;
        (*rec).uid = bpf_get_current_uid_gid() as u32;
        (*rec).ret = ret as i32;
        (*rec).fd = pending.fd;
        (*rec).addrlen = pending.addrlen;
        (*rec).sockaddr = pending.sockaddr;
        (*rec).sockaddr_len = pending.sockaddr_len;
        if let Ok(comm) = bpf_get_current_comm() {
            (*rec).comm = comm;
        }
        read::socket_fields(&mut *rec, pending.fd, config());
    }
    entry.submit(0);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
