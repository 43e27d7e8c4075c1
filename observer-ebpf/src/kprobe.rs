//! The kprobe backend, for kernels without BPF trampolines: a kprobe saves each call's
//! arguments per thread, the kretprobe pairs them with the return value.
//!
//! A port allocation runs inside `inet_bind`/`inet_listen`, so the two kinds of call keep
//! their arguments under different keys (thread id, plus [`SLOT_GET_PORT`] for allocations).

use aya_ebpf::{
    macros::{kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::{
    COUNTER_PAIR_FULL, COUNTER_UNPAIRED, HOOK_KRETPROBE_INET_BIND,
    HOOK_KRETPROBE_INET_CSK_GET_PORT, HOOK_KRETPROBE_INET_LISTEN, HOOK_KRETPROBE_INET6_BIND,
    HOOK_KRETPROBE_UDP_LIB_GET_PORT,
};

use crate::{count, kfunc};

/// Key bit of a port allocation's saved arguments (the enclosing call uses the bare tid).
const SLOT_GET_PORT: u64 = 1 << 32;

/// Arguments saved at entry, by thread (and slot). LRU so that a thread that dies inside a
/// call cannot leave an entry behind forever.
#[map]
static ARGS: LruHashMap<u64, Args> = LruHashMap::with_max_entries(16384, 0);

/// The first three arguments of a probed call.
#[repr(C)]
#[derive(Clone, Copy)]
struct Args {
    a: [u64; 3],
}

#[inline(always)]
fn save(ctx: &ProbeContext, slot: u64, hook: u16) {
    let Some(pid_tgid) = kfunc::enter(hook) else {
        return;
    };
    if slot == 0 {
        kfunc::forget_call(pid_tgid);
    }
    let args = Args {
        a: [
            ctx.arg(0).unwrap_or(0),
            ctx.arg(1).unwrap_or(0),
            ctx.arg(2).unwrap_or(0),
        ],
    };
    if ARGS
        .insert(slot | (pid_tgid & 0xffff_ffff), args, 0)
        .is_err()
    {
        count(COUNTER_PAIR_FULL);
    }
}

/// The saved arguments of this thread's call in `slot`, removed from the map.
#[inline(always)]
fn take(slot: u64, hook: u16) -> Option<(u64, Args)> {
    let pid_tgid = kfunc::enter(hook)?;
    let key = slot | (pid_tgid & 0xffff_ffff);
    let Some(args) = ARGS.get_ptr(key) else {
        count(COUNTER_UNPAIRED);
        return None;
    };
    // SAFETY: the pointer came from a successful lookup; the entry is copied out before it is
    // removed, and only this thread writes entries under its own tid.
    let args = unsafe { *args };
    let _ = ARGS.remove(key);
    Some((pid_tgid, args))
}

/// Entry of `inet_bind` / `inet6_bind` / `inet_listen`. The entry hook is not counted as
/// fired: the kretprobe's count proves both (it pairs with the saved arguments).
#[kprobe(function = "inet_bind")]
pub fn kprobe_inet_bind(ctx: ProbeContext) -> u32 {
    save(&ctx, 0, 0);
    0
}

#[kprobe(function = "inet6_bind")]
pub fn kprobe_inet6_bind(ctx: ProbeContext) -> u32 {
    save(&ctx, 0, 0);
    0
}

#[kprobe(function = "inet_listen")]
pub fn kprobe_inet_listen(ctx: ProbeContext) -> u32 {
    save(&ctx, 0, 0);
    0
}

#[kprobe(function = "inet_csk_get_port")]
pub fn kprobe_inet_csk_get_port(ctx: ProbeContext) -> u32 {
    save(&ctx, SLOT_GET_PORT, 0);
    0
}

#[kprobe(function = "udp_lib_get_port")]
pub fn kprobe_udp_lib_get_port(ctx: ProbeContext) -> u32 {
    save(&ctx, SLOT_GET_PORT, 0);
    0
}

#[kretprobe(function = "inet_bind")]
pub fn kretprobe_inet_bind(ctx: RetProbeContext) -> u32 {
    bind_ret(&ctx, HOOK_KRETPROBE_INET_BIND);
    0
}

#[kretprobe(function = "inet6_bind")]
pub fn kretprobe_inet6_bind(ctx: RetProbeContext) -> u32 {
    bind_ret(&ctx, HOOK_KRETPROBE_INET6_BIND);
    0
}

#[kretprobe(function = "inet_listen")]
pub fn kretprobe_inet_listen(ctx: RetProbeContext) -> u32 {
    if let Some((pid_tgid, args)) = take(0, HOOK_KRETPROBE_INET_LISTEN) {
        let ret: i64 = ctx.ret();
        let socket = args.a[0] as *const u8;
        kfunc::listen_done(pid_tgid, HOOK_KRETPROBE_INET_LISTEN, socket, ret as i32);
    }
    0
}

#[kretprobe(function = "inet_csk_get_port")]
pub fn kretprobe_inet_csk_get_port(ctx: RetProbeContext) -> u32 {
    get_port_ret(&ctx, HOOK_KRETPROBE_INET_CSK_GET_PORT);
    0
}

#[kretprobe(function = "udp_lib_get_port")]
pub fn kretprobe_udp_lib_get_port(ctx: RetProbeContext) -> u32 {
    get_port_ret(&ctx, HOOK_KRETPROBE_UDP_LIB_GET_PORT);
    0
}

#[inline(always)]
fn bind_ret(ctx: &RetProbeContext, hook: u16) {
    if let Some((pid_tgid, args)) = take(0, hook) {
        let ret: i64 = ctx.ret();
        let (socket, uaddr) = (args.a[0] as *const u8, args.a[1] as *const u8);
        kfunc::bind_done(pid_tgid, hook, socket, uaddr, args.a[2] as i32, ret as i32);
    }
}

#[inline(always)]
fn get_port_ret(ctx: &RetProbeContext, hook: u16) {
    if let Some((pid_tgid, args)) = take(SLOT_GET_PORT, hook) {
        let ret: i64 = ctx.ret();
        let sk = args.a[0] as *const u8;
        kfunc::get_port_done(pid_tgid, hook, sk, args.a[1] as u16, ret as i32);
    }
}
