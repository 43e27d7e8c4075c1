//! The observer's kernel programs: the tracepoint backend.
//!
//! `sys_exit_bind` / `sys_exit_listen` run once per call, when it returns. The call's arguments
//! come from the user registers the kernel saved at syscall entry (it never modifies them), so
//! no entry program and no per-thread pairing state is needed: half the program runs, no map
//! updates, nothing that a thread dying inside `bind()` could leave behind. The program walks
//! from the current task to the socket the fd names, reads what the kernel now holds for it,
//! and queues one `BindRecord` on the ring buffer.
//!
//! No kernel struct offset is compiled in: every field is read through a `FieldLoc` that the
//! collector derived from the running kernel's BTF and wrote into `CONFIG` before load.
//!
//! The kernel-function backends live beside it: `fexit` and `kprobe`, sharing `kfunc`; the
//! socket iterators behind conflict reports are in `iter`.
#![no_std]
#![no_main]
// Atomic read-modify-write instructions: the BPF target has no `AtomicU64::fetch_add` or
// `compare_exchange` (its spec says `atomic-cas: false`), but LLVM's BPF backend emits
// `BPF_ATOMIC` instructions for these intrinsics.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod fexit;
mod iter;
mod kfunc;
mod kprobe;
mod read;

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};
use observer_common::{
    BindRecord, CONFIG_VERSION, COUNTER_COUNT, COUNTER_FOLD_BUSY, COUNTER_LOST,
    COUNTER_LOST_REPEATS, COUNTER_OWN_CALLS, Config, FOLD_WINDOW_NS, HOOK_TP_SYS_EXIT_BIND,
    HOOK_TP_SYS_EXIT_CONNECT, HOOK_TP_SYS_EXIT_LISTEN, OP_BIND, OP_CONNECT, OP_LISTEN, RECORD_BIND,
    RECORD_REPEAT, REPEAT_ENDED, RUN_COUNT_MASK, RUN_SLOTS, RepeatRecord, RunSlot, SK_SPANS,
    SOCKADDR_LEN, SOCKADDR_STORAGE_LEN, SPAN_MAX, known, run_tag, unreadable,
};

/// Written by the collector before load (read-only data: the verifier sees the values as
/// constants, so the offset arithmetic below costs nothing at run time).
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZEROED;

/// Records for the collector. The size is a default; the collector sets the real one.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// 1: fold identical repeats of a failed call (see [`fold`]); 0 (`--every-call`): send every
/// call. Written by the collector before load, like `CONFIG`.
#[unsafe(no_mangle)]
static FOLD: u32 = 0;

/// `BPF_F_MMAPABLE` (UAPI `linux/bpf.h`): the collector maps `RUNS` and takes the counts of
/// runs still going (or stopped) with a compare-and-swap on `RunSlot::word`, at every tick.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Each thread's open run of identical failed calls, in slot `tid & (RUN_SLOTS - 1)`.
#[map]
static RUNS: Array<RunSlot> = Array::with_max_entries(RUN_SLOTS, BPF_F_MMAPABLE);

/// `COUNTER_*` events that are not records: lost, unpaired, failed reads.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` selectors (UAPI `linux/bpf.h`).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// A burst wakes the collector at most once per this long; an isolated record still wakes
/// it at once.
const WAKE_INTERVAL_NS: u64 = 1_000_000;
/// ... or once per this long while half the ring is waiting (a collector that fell behind).
/// Every wake-up is an inter-processor interrupt, about 20 µs of the producer's time under
/// this hypervisor: waking on every record past a threshold cost more than the records.
const BACKLOG_WAKE_INTERVAL_NS: u64 = 100_000;

/// When the collector was last woken (`bpf_ktime_get_ns`). Shared by all CPUs; a lost update
/// between two CPUs costs one extra or one fewer wake-up, nothing else.
#[map]
static LAST_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Flags for submitting a record made at `now`. Waking the collector is the most expensive
/// part of a record on a busy host (an inter-processor interrupt, a VM exit under a
/// hypervisor), and by default the kernel wakes it for every record that finds it caught up:
/// at a few hundred thousand binds a second, nearly every one. Records of a burst go in
/// quietly instead; the collector's 100 ms drain picks up the tail of a burst.
#[inline(always)]
pub(crate) fn wakeup_flags(now: u64) -> u64 {
    let Some(last) = LAST_WAKE.get_ptr_mut(0) else {
        return 0;
    };
    let backlog = EVENTS.query(BPF_RB_AVAIL_DATA);
    let size = EVENTS.query(BPF_RB_RING_SIZE);
    // SAFETY: the slot lives as long as the map; a racy read or write of a u64 timestamp is
    // harmless (see LAST_WAKE).
    unsafe {
        let since = now.wrapping_sub(*last);
        if since >= WAKE_INTERVAL_NS || (backlog > size / 2 && since >= BACKLOG_WAKE_INTERVAL_NS) {
            *last = now;
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        }
    }
}

/// Bytes of the per-CPU scratch buffer: room for `SK_SPANS` stretches of twice `SPAN_MAX`,
/// rounded up to a power of two (offsets into it are bounded with a mask).
pub(crate) const SCRATCH_LEN: usize = (SK_SPANS * 2 * SPAN_MAX as usize).next_power_of_two();

/// One CPU's scratch space for the copies of a `struct sock` (`read::Window`); too big for the
/// 512-byte BPF stack.
#[repr(C)]
pub(crate) struct Scratch {
    /// 0 while no program uses `buf`, 1 while one does. Taken with a compare-and-swap, so that
    /// two programs on this CPU never use `buf` at once (see [`Taken`]).
    owner: u64,
    pub(crate) buf: [u8; SCRATCH_LEN],
}

/// Per-CPU scratch space, one slot per CPU.
///
/// Per-CPU is not exclusive: the tracepoint and kprobe programs run with preemption disabled,
/// but an fexit trampoline only disables migration, so the task running one can be preempted
/// on this CPU and another task's program (another fexit program, or a tracepoint one) can
/// run there before it resumes. A program therefore takes the slot (`Scratch::owner`) before
/// it writes `buf` and gives it back when it has read what it copied; a program that finds
/// it taken reads each field with its own helper call instead (slower, never wrong).
#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch buffer, held until dropped.
pub(crate) struct Taken {
    scratch: *mut Scratch,
}

impl Taken {
    /// Takes this CPU's scratch buffer, unless a program preempted on this CPU holds it.
    #[inline(always)]
    pub(crate) fn take() -> Option<Taken> {
        let scratch = SCRATCH.get_ptr_mut(0)?;
        // SAFETY: `scratch` came from a successful lookup, so it points to this CPU's value,
        // valid and 8-byte aligned (as every map value) for the life of the program, and
        // `owner` is only ever accessed atomically. One instruction (BPF_CMPXCHG), so a
        // program that preempts this one on this CPU sees either 0 or 1, never a half-done
        // take.
        let (_, took) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
                core::ptr::addr_of_mut!((*scratch).owner),
                0,
                1,
            )
        };
        took.then_some(Taken { scratch })
    }

    /// The buffer, `SCRATCH_LEN` bytes, this program's alone until `self` is dropped.
    #[inline(always)]
    pub(crate) fn buf(&self) -> *mut u8 {
        // SAFETY: `scratch` points to a live map value (see `take`); only the address is
        // computed here.
        unsafe { core::ptr::addr_of_mut!((*self.scratch).buf) }.cast()
    }
}

impl Drop for Taken {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: as in `take`: a live, aligned map value only ever accessed atomically.
        // BPF_XCHG, one instruction, ordered after every read of `buf` (release).
        unsafe {
            atomic_xchg::<u64, { AtomicOrdering::Release }>(
                core::ptr::addr_of_mut!((*self.scratch).owner),
                0,
            )
        };
    }
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
        add_one(slot);
    }
}

/// Adds one to a per-CPU counter slot with one atomic instruction (BPF_ATOMIC | BPF_ADD): an
/// fexit program can be preempted on its CPU by another program that counts in the same slot
/// (see [`SCRATCH`]), and a load-add-store would then lose that program's increment.
#[inline(always)]
pub(crate) fn add_one(slot: *mut u64) {
    // SAFETY: `slot` came from a successful lookup of a map that lives as long as the
    // program: valid and 8-byte aligned; every program changes it only atomically (the
    // collector only reads it). The result is unused, so LLVM emits the plain atomic add,
    // which every kernel with BPF_ATOMIC (BPF_XADD before 5.12) accepts.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
}

/// The collector's tgid in the initial pid namespace, learnt by the first of its calls that
/// [`is_collector`] recognised through its pid namespace (0: not yet).
#[map]
static OWN_TGID: Array<u32> = Array::with_max_entries(1, 0);

/// The collector's own calls are never reported (and never paired); each is counted
/// (`COUNTER_OWN_CALLS`), which the collector's start-up check reads.
///
/// The collector names itself by its tgid when it runs in the initial pid namespace. In
/// another one (a container without the host's pids) its `getpid()` is not the number the
/// kernel gives here, so it names its pid namespace instead, and the helper
/// `bpf_get_ns_current_pid_tgid` says whether the current task is in it and with which tgid
/// there. That helper call is made only until the first match, which leaves the
/// initial-namespace tgid in `OWN_TGID` for every later call to compare with.
#[inline(always)]
pub(crate) fn is_collector(pid_tgid: u64) -> bool {
    let own = own_call(pid_tgid);
    if own {
        count(COUNTER_OWN_CALLS);
    }
    own
}

#[inline(always)]
fn own_call(pid_tgid: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    let c = config();
    let named = cfg(&c.collector_tgid);
    if named != 0 {
        return tgid == named;
    }
    let Some(learnt) = OWN_TGID.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the slot lives as long as the map; a u32 load is one instruction, and every
    // writer writes the same value (the collector's tgid).
    let known = unsafe { core::ptr::read_volatile(learnt) };
    if known != 0 {
        return tgid == known;
    }
    let ino = cfg(&c.collector_pidns_ino);
    if ino == 0 {
        return false;
    }
    let mut ns = aya_ebpf::bindings::bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `ns` is a `bpf_pidns_info` on this program's stack and its size is passed; the
    // helper fails (and writes zeros) when the current task is not in that pid namespace.
    let rc = unsafe {
        generated::bpf_get_ns_current_pid_tgid(
            u64::from(cfg(&c.collector_pidns_dev)),
            u64::from(ino),
            &mut ns,
            core::mem::size_of::<aya_ebpf::bindings::bpf_pidns_info>() as u32,
        )
    };
    let own = rc == 0 && ns.tgid == cfg(&c.collector_ns_tgid);
    if own {
        // SAFETY: as above; a u32 store is one instruction.
        unsafe { core::ptr::write_volatile(learnt, tgid) };
    }
    own
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

/// `EAGAIN`, `EADDRINUSE` and `EADDRNOTAVAIL` (`asm-generic/errno*.h`).
const EAGAIN: i64 = 11;
const EADDRINUSE: i64 = 98;
const EADDRNOTAVAIL: i64 = 99;

/// Every `connect()` on the host passes here, so the common case (it succeeded, or failed for
/// a reason that is not the port: ECONNREFUSED, EINPROGRESS, ...) returns after one read of
/// the result, unless `--connects all` asked for every one. The port failures: TCP's
/// EADDRNOTAVAIL (no local port toward the destination), UDP's EAGAIN (the autobind found no
/// port; also a full backlog of a non-blocking unix socket, which the collector's family
/// filter hides), and EADDRINUSE, which no connect path of 6.1–6.18 returns but a future one
/// might.
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let c = config();
    // SAFETY: offset of `ret` in this tracepoint's record, read from tracefs by the collector.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(cfg(&c.exit_ret_off) as usize) }) else {
        return 0;
    };
    if ret != -EADDRNOTAVAIL && ret != -EAGAIN && ret != -EADDRINUSE && cfg(&c.connects_all) == 0 {
        return 0;
    }
    let _ = try_exit(&ctx, OP_CONNECT, HOOK_TP_SYS_EXIT_CONNECT);
    0
}

/// The current task's user registers, as saved at system call entry (`struct pt_regs`).
#[inline(always)]
pub(crate) fn user_regs() -> Option<*const u8> {
    // SAFETY: the helper has no preconditions; it returns the current task as a BTF pointer.
    let task = unsafe { generated::bpf_get_current_task_btf() };
    // SAFETY: `task` is the BTF task pointer the verifier requires; the helper returns that
    // task's user-mode registers.
    let regs = unsafe { generated::bpf_task_pt_regs(task) } as *const u8;
    (!regs.is_null()).then_some(regs)
}

/// How many bytes of a sockaddr of `addrlen` bytes to copy: none when the kernel refuses the
/// length before it reads the address (`move_addr_to_kernel`: an `int` below 0 or above
/// `sizeof(struct sockaddr_storage)` is EINVAL), else as many as `BindRecord::sockaddr` holds.
#[inline(always)]
pub(crate) fn sockaddr_copy_len(addrlen: u32) -> u32 {
    if (addrlen as i32) < 0 || addrlen > SOCKADDR_STORAGE_LEN {
        0
    } else if addrlen > SOCKADDR_LEN as u32 {
        SOCKADDR_LEN as u32
    } else {
        addrlen
    }
}

/// The call's arguments: `fd` for every call, plus the sockaddr and its length for `bind()`
/// (`umyaddr`) and `connect()` (`uservaddr`).
struct Args {
    fd: i32,
    addrlen: u32,
    sockaddr_len: u32,
    sockaddr: [u8; SOCKADDR_LEN],
    /// `unreadable::REQUESTED` when the copy of the sockaddr failed.
    unreadable: u32,
}

/// Reads the arguments from the registers saved at syscall entry, and for `bind()` copies the
/// caller's sockaddr from user memory (still mapped: we run in the caller's context). `ret` is
/// the call's result: after an EFAULT the kernel could not read the address either, and a
/// failed copy is no failure of ours.
#[inline(always)]
fn args(op: u16, ret: i64, c: &Config) -> Result<Args, i64> {
    let regs = user_regs().ok_or(-1i64)?;
    let fd = read::btf_field(regs, &c.regs_arg0).map_err(|_| -1i64)?;
    let mut out = Args {
        fd: fd as i32,
        addrlen: 0,
        sockaddr_len: 0,
        sockaddr: [0; SOCKADDR_LEN],
        unreadable: 0,
    };
    if op == OP_LISTEN {
        return Ok(out);
    }
    let uaddr = read::btf_field(regs, &c.regs_arg1).map_err(|_| -1i64)?;
    let addrlen = read::btf_field(regs, &c.regs_arg2).map_err(|_| -1i64)? as u32;
    out.addrlen = addrlen;
    let len = sockaddr_copy_len(addrlen);
    if len > 0 && uaddr != 0 {
        // SAFETY: `bpf_probe_read_user` checks the user address itself and fails instead of
        // faulting; `len` is at most the size of the destination.
        let rc = unsafe {
            generated::bpf_probe_read_user(
                out.sockaddr.as_mut_ptr().cast(),
                len,
                uaddr as *const core::ffi::c_void,
            )
        };
        if rc == 0 {
            out.sockaddr_len = len;
        } else if ret != -i64::from(EFAULT) {
            out.unreadable = unreadable::REQUESTED;
        }
    }
    Ok(out)
}

/// `EFAULT` (`asm-generic/errno-base.h`).
const EFAULT: i32 = 14;

#[inline(always)]
fn try_exit(ctx: &TracePointContext, op: u16, hook: u16) -> Result<(), i64> {
    let c = config();
    if cfg(&c.version) != CONFIG_VERSION {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_collector(pid_tgid) {
        return Ok(());
    }
    // SAFETY: offset of `ret` in this tracepoint's record, read from tracefs by the collector.
    let ret: i64 = unsafe { ctx.read_at(cfg(&c.exit_ret_off) as usize) }.map_err(i64::from)?;
    let args = args(op, ret, c)?;
    let hook_id = u32::from(op) | (u32::from(hook) << 16);
    // SAFETY: a read-only global written before load; the volatile read stops the compiler
    // from folding the zero initialiser.
    let fold_on = unsafe { core::ptr::read_volatile(&FOLD) } != 0;
    let slot = match fold_on {
        true => RUNS.get_ptr_mut(pid_tgid as u32 & (RUN_SLOTS - 1)),
        false => None,
    };
    let mut own = false;
    if let Some(slot) = slot {
        // SAFETY: `slot` came from a successful lookup of an array that lives as long as the
        // program; `word` is only ever changed atomically (here and by the collector).
        match unsafe { fold(slot, pid_tgid, hook_id, ret as i32, &args) } {
            Fold::Folded => return Ok(()),
            Fold::Own => own = true,
            Fold::Busy => {}
        }
    }

    let ts = submit(
        pid_tgid,
        (op, hook, ret as i32),
        Ids {
            call_id: 0,
            fd: Some(args.fd),
        },
        |r| {
            r.addrlen = args.addrlen;
            r.sockaddr = args.sockaddr;
            r.sockaddr_len = args.sockaddr_len;
            r.unreadable = args.unreadable;
            read::socket_fields(r, args.fd, c);
        },
    );
    if let (true, Some(slot)) = (own, slot) {
        // SAFETY: as above; the slot is this thread's.
        unsafe { open_run(slot, pid_tgid, hook_id, ret as i32, &args, ts) };
    }
    Ok(())
}

/// What [`fold`] did with a call.
enum Fold {
    /// It repeats the thread's open run: counted there, no record.
    Folded,
    /// The slot is this thread's (any run it had is closed and reported): send the event,
    /// then [`open_run`].
    Own,
    /// Another thread's run holds the slot: send the event, fold nothing.
    Busy,
}

/// Folds a call that repeats the thread's open run — same op and hook, fd, requested address
/// (`addrlen` and the bytes copied) and result, a failure, within [`FOLD_WINDOW_NS`] of the
/// run's previous call — into the run's count. Any other call closes the run, sending its
/// unreported count first, so that the count comes before the call that ended it.
///
/// # Safety
/// `slot` must point to a live `RUNS` value.
#[inline(always)]
unsafe fn fold(slot: *mut RunSlot, pid_tgid: u64, hook_id: u32, ret: i32, args: &Args) -> Fold {
    let tid = pid_tgid as u32;
    // SAFETY (whole body): `slot` is valid (see the caller); plain fields are written only by
    // the thread that owns the slot, and `word` is only changed atomically.
    unsafe {
        let s = &mut *slot;
        let word = core::ptr::addr_of_mut!(s.word);
        // SAFETY: the helper has no preconditions.
        let now = generated::bpf_ktime_get_ns();
        if s.tid == tid {
            let current = core::ptr::read_volatile(word);
            if ret < 0
                && s.op_hook == hook_id
                && s.ret == ret
                && s.fd == args.fd
                && s.addrlen == args.addrlen
                && s.sockaddr_len == args.sockaddr_len
                && same_bytes(&s.sockaddr, &args.sockaddr)
                && now.wrapping_sub(s.last_ns) < FOLD_WINDOW_NS
                && current & RUN_COUNT_MASK < RUN_COUNT_MASK - 1
            {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(word, 1);
                s.last_ns = now;
                return Fold::Folded;
            }
            close_run(s, pid_tgid);
            return Fold::Own;
        }
        // Another thread's slot (or a free one): taken over once its run is reported and
        // over, else this thread's calls go out unfolded.
        let current = core::ptr::read_volatile(word);
        if s.tid != 0
            && (current & RUN_COUNT_MASK != 0
                || (s.op_hook != 0 && now.wrapping_sub(s.last_ns) < FOLD_WINDOW_NS))
        {
            if ret < 0 {
                count(COUNTER_FOLD_BUSY);
            }
            return Fold::Busy;
        }
        s.op_hook = 0;
        s.tid = tid;
        Fold::Own
    }
}

/// `a == b`, byte by byte (the BPF target has no `bcmp` for the compiler to call).
#[inline(always)]
fn same_bytes(a: &[u8; SOCKADDR_LEN], b: &[u8; SOCKADDR_LEN]) -> bool {
    let mut diff = 0u8;
    for i in 0..SOCKADDR_LEN {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// Sends the unreported count of the run in `s` (the owner's) and closes it.
#[inline(always)]
fn close_run(s: &mut RunSlot, pid_tgid: u64) {
    let word = core::ptr::addr_of_mut!(s.word);
    // SAFETY: `word` is a live, aligned map value field only ever changed atomically;
    // BPF_XCHG takes the count and its run in one instruction, so a count the collector
    // took with its compare-and-swap is never sent again.
    let old = unsafe { atomic_xchg::<u64, { AtomicOrdering::AcqRel }>(word, 0) };
    s.op_hook = 0;
    let n = old & RUN_COUNT_MASK;
    if n == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<RepeatRecord>(0) else {
        // The calls are lost with their record.
        if let Some(slot) = COUNTERS.get_ptr_mut(COUNTER_LOST_REPEATS) {
            // SAFETY: as in `add_one`.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, n) };
        }
        return;
    };
    entry.write(RepeatRecord {
        kind: RECORD_REPEAT,
        reason: REPEAT_ENDED,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        run: (old >> 32) as u32,
        _pad: 0,
        count: n,
        last_ns: s.last_ns,
    });
    // SAFETY: the helper has no preconditions.
    let now = unsafe { generated::bpf_ktime_get_ns() };
    entry.submit(wakeup_flags(now));
}

/// Opens a run for a failed call just sent as the event stamped `ts` (0: its record was
/// lost, and nothing can repeat it).
///
/// # Safety
/// `slot` must point to a live `RUNS` value this thread owns.
#[inline(always)]
unsafe fn open_run(
    slot: *mut RunSlot,
    pid_tgid: u64,
    hook_id: u32,
    ret: i32,
    args: &Args,
    ts: u64,
) {
    if ret >= 0 || ts == 0 {
        return;
    }
    // SAFETY: see the caller; `word` holds no count (closed in `fold`) and is set atomically.
    unsafe {
        let s = &mut *slot;
        s.pid = (pid_tgid >> 32) as u32;
        s.ret = ret;
        s.fd = args.fd;
        s.addrlen = args.addrlen;
        s.sockaddr_len = args.sockaddr_len;
        s.sockaddr = args.sockaddr;
        s.last_ns = ts;
        s.op_hook = hook_id;
        atomic_xchg::<u64, { AtomicOrdering::Release }>(
            core::ptr::addr_of_mut!(s.word),
            u64::from(run_tag(ts)) << 32,
        );
    }
}

/// What identifies a record beyond the thread: its call and, when known, its fd.
pub(crate) struct Ids {
    /// Shared by a port allocation and the call it ran inside (0: none).
    pub(crate) call_id: u64,
    pub(crate) fd: Option<i32>,
}

/// The one place records are reserved, stamped and submitted, for every backend. `fill` sets
/// what is particular to the hook. Returns the record's `ts_ns` (0: no room, lost).
#[inline(always)]
pub(crate) fn submit<F: FnOnce(&mut BindRecord)>(
    pid_tgid: u64,
    (op, hook, ret): (u16, u16, i32),
    ids: Ids,
    fill: F,
) -> u64 {
    let Some(mut entry) = EVENTS.reserve::<BindRecord>(0) else {
        count(COUNTER_LOST);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: the helper has no preconditions.
    let now = unsafe { generated::bpf_ktime_get_ns() };
    let (fd, fd_known) = match ids.fd {
        Some(fd) => (fd, known::FD),
        None => (-1, 0),
    };
    // SAFETY: `rec` points to a ring buffer reservation of exactly `size_of::<BindRecord>()`
    // bytes that this program owns until submit. Ring buffer memory is not zeroed, so the
    // whole record is written here, every field named, rather than cleared first. The helpers
    // called for its fields have no preconditions.
    unsafe {
        rec.write(BindRecord {
            kind: RECORD_BIND,
            op,
            hook,
            ts_ns: now,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: bpf_get_current_uid_gid() as u32,
            sk_uid: 0,
            ret,
            fd,
            addrlen: 0,
            netns: 0,
            ino: 0,
            flags: 0,
            flags_known: 0,
            sock_known: fd_known,
            bound_dev_if: 0,
            sock_family: 0,
            protocol: 0,
            sock_type: 0,
            bound_port: 0,
            bound_addr: [0; 16],
            sockaddr: [0; SOCKADDR_LEN],
            sockaddr_len: 0,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
            call_id: ids.call_id,
            snum: 0,
            _pad: 0,
            unreadable: 0,
            cgroup_id: generated::bpf_get_current_cgroup_id(),
        });
        fill(&mut *rec);
    }
    entry.submit(wakeup_flags(now));
    now
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
