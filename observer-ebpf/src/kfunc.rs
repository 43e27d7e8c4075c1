//! What the kernel-function backends (fexit, kprobe) share: one routine per probed call that
//! turns the function's arguments and result into a `BindRecord`, the per-thread link between
//! a port allocation and the `bind()`/`listen()` it happens inside, the "which hooks fired"
//! counters the collector checks at start. Records are submitted through `crate::submit`,
//! shared with the tracepoint backend.
//!
//! These hooks see `struct socket *` / `struct sock *`, not fds: the fd is taken from the
//! task's user registers when the call came from the `bind`/`listen` system call (x86_64
//! `pt_regs` fields, located through BTF like every other field), and left unknown otherwise
//! (io_uring, in-kernel callers).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use observer_common::{CONFIG_VERSION, HOOK_COUNT, OP_BIND, OP_GET_PORT, OP_LISTEN, unreadable};

use crate::{Ids, cfg, config, is_collector, read, submit};

/// How many times each hook ran (indexed by `HOOK_*`), counted before any filtering: the
/// collector's start-up self-test reads it to prove each probe fires on this kernel.
#[map]
static FIRED: PerCpuArray<u64> = PerCpuArray::with_max_entries(HOOK_COUNT, 0);

/// Per thread: the port allocation that ran last, so that the `bind()`/`listen()` it ran
/// inside takes the same `call_id`.
#[map]
static CALLS: LruHashMap<u32, Call> = LruHashMap::with_max_entries(16384, 0);

/// A port allocation waiting for its enclosing call.
#[repr(C)]
#[derive(Clone, Copy)]
struct Call {
    /// The `struct sock` it was for.
    sk: u64,
    /// Its `call_id`.
    id: u64,
    /// The system call the thread was in (`u64::MAX` when unknown): an allocation made in
    /// another system call (a UDP autobind in `connect()`/`sendto()`) is never linked to a
    /// later `bind()`/`listen()` on the same socket.
    nr: u64,
}

/// Counts one run of `hook`, and says whether the program should go on (config loaded, not
/// the collector's own call).
#[inline(always)]
pub(crate) fn enter(hook: u16) -> Option<u64> {
    if let Some(slot) = FIRED.get_ptr_mut(u32::from(hook)) {
        crate::add_one(slot);
    }
    if cfg(&config().version) != CONFIG_VERSION {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    (!is_collector(pid_tgid)).then_some(pid_tgid)
}

/// Forgets a port allocation left by this thread (a new call starts: kprobe entry).
#[inline(always)]
pub(crate) fn forget_call(pid_tgid: u64) {
    let _ = CALLS.remove(pid_tgid as u32);
}

/// The number of the system call this thread is in and its first argument, from the task's
/// user registers.
#[inline(always)]
fn syscall() -> Option<(u64, u64)> {
    let c = config();
    let regs = crate::user_regs()?;
    let nr = read::btf_field(regs, &c.regs_syscall_nr).ok()?;
    let arg0 = read::btf_field(regs, &c.regs_arg0).ok()?;
    Some((nr, arg0))
}

/// The fd of the system call `nr` (`bind`/`listen`) this thread is in, if it is in that one.
#[inline(always)]
fn syscall_fd(call: Option<(u64, u64)>, nr: u32) -> Option<i32> {
    match call {
        Some((got, fd)) if got == u64::from(nr) => Some(fd as i32),
        _ => None,
    }
}

/// The ids of a `bind`/`listen` on `socket`, made through system call number `nr`.
#[inline(always)]
fn call_ids(pid_tgid: u64, socket: *const u8, nr: u32) -> Ids {
    let sk = read::field(socket, &config().socket_sk).unwrap_or(0);
    let call = syscall();
    Ids {
        call_id: call_id_for(pid_tgid, sk, call.map_or(u64::MAX, |c| c.0)),
        fd: syscall_fd(call, nr),
    }
}

/// Takes the call id a port allocation on `sk` in system call `nr` left for this thread, or
/// makes a new one.
#[inline(always)]
fn call_id_for(pid_tgid: u64, sk: u64, nr: u64) -> u64 {
    let tid = pid_tgid as u32;
    if let Some(call) = CALLS.get_ptr(tid) {
        // SAFETY: the pointer came from a successful lookup; only this thread writes entries
        // under its own tid.
        let call = unsafe { *call };
        let _ = CALLS.remove(tid);
        if call.sk == sk && call.nr == nr {
            return call.id;
        }
    }
    // SAFETY: no preconditions.
    unsafe { generated::bpf_ktime_get_ns() }
}

/// `inet_bind` / `inet6_bind` returned `ret` for `socket`, asked for `uaddr` (a kernel copy
/// of the caller's sockaddr) of `addrlen` bytes.
#[inline(always)]
pub(crate) fn bind_done(
    pid_tgid: u64,
    hook: u16,
    socket: *const u8,
    uaddr: *const u8,
    addrlen: i32,
    ret: i32,
) {
    let c = config();
    let ids = call_ids(pid_tgid, socket, cfg(&c.nr_bind));
    submit(pid_tgid, (OP_BIND, hook, ret), ids, |r| {
        r.addrlen = addrlen as u32;
        // A length `bind()` refuses never reaches these functions, but io_uring's and the
        // kernel's own callers are checked the same way.
        let len = crate::sockaddr_copy_len(addrlen as u32);
        if len > 0 && !uaddr.is_null() {
            // SAFETY: the helper validates the kernel address and fails instead of faulting;
            // `len` is at most the size of the destination.
            let rc = unsafe {
                generated::bpf_probe_read_kernel(r.sockaddr.as_mut_ptr().cast(), len, uaddr.cast())
            };
            if rc == 0 {
                r.sockaddr_len = len;
            } else {
                r.unreadable |= unreadable::REQUESTED;
            }
        }
        read::from_socket(r, socket, c);
    });
}

/// `inet_listen` returned `ret` for `socket`.
#[inline(always)]
pub(crate) fn listen_done(pid_tgid: u64, hook: u16, socket: *const u8, ret: i32) {
    let c = config();
    let ids = call_ids(pid_tgid, socket, cfg(&c.nr_listen));
    submit(pid_tgid, (OP_LISTEN, hook, ret), ids, |r| {
        read::from_socket(r, socket, c);
    });
}

/// A port allocation for `sk` asked for `snum` (0 = any) and returned `ret` (0 = done, else
/// the port is not available: its callers turn that into EADDRINUSE).
#[inline(always)]
pub(crate) fn get_port_done(pid_tgid: u64, hook: u16, sk: *const u8, snum: u16, ret: i32) {
    let sys = syscall();
    let c = config();
    // An implicit allocation (a UDP autobind in `connect()` or a send) is reported only when
    // asked for (`--connects all`): every unbound UDP socket's first send makes one. A
    // connect that fails is reported by `sys_exit_connect` anyway.
    if snum == 0
        && cfg(&c.connects_all) == 0
        && let Some((nr, _)) = sys
        && cfg(&c.nr_implicit)
            .iter()
            .any(|&n| n != 0 && u64::from(n) == nr)
    {
        return;
    }
    // SAFETY: no preconditions.
    let id = unsafe { generated::bpf_ktime_get_ns() };
    let call = Call {
        sk: sk as u64,
        id,
        nr: sys.map_or(u64::MAX, |c| c.0),
    };
    let _ = CALLS.insert(pid_tgid as u32, call, 0);
    let fd = syscall_fd(sys, cfg(&c.nr_bind)).or_else(|| syscall_fd(sys, cfg(&c.nr_listen)));
    let ids = Ids { call_id: id, fd };
    submit(pid_tgid, (OP_GET_PORT, hook, ret), ids, |r| {
        r.snum = snum;
        read::from_sk(r, sk, c);
    });
}
