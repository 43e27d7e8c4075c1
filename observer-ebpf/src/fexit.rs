//! The fexit backend: BPF trampolines on the kernel functions, which hand each program the
//! function's arguments and its return value together.
//!
//! The return value sits in the context right after the arguments (`ctx.arg(n)` for a
//! function of `n` arguments), as in libbpf's `BPF_PROG`.

use aya_ebpf::{macros::fexit, programs::FExitContext};
use observer_common::{
    HOOK_FEXIT_INET_BIND, HOOK_FEXIT_INET_CSK_GET_PORT, HOOK_FEXIT_INET_LISTEN,
    HOOK_FEXIT_INET6_BIND, HOOK_FEXIT_UDP_LIB_GET_PORT,
};

use crate::kfunc;

/// `int inet_bind(struct socket *sock, struct sockaddr *uaddr, int addr_len)`.
#[fexit(function = "inet_bind")]
pub fn fexit_inet_bind(ctx: FExitContext) -> i32 {
    try_bind(&ctx, HOOK_FEXIT_INET_BIND);
    0
}

/// `int inet6_bind(struct socket *sock, struct sockaddr *uaddr, int addr_len)`.
#[fexit(function = "inet6_bind")]
pub fn fexit_inet6_bind(ctx: FExitContext) -> i32 {
    try_bind(&ctx, HOOK_FEXIT_INET6_BIND);
    0
}

/// `int inet_listen(struct socket *sock, int backlog)`.
#[fexit(function = "inet_listen")]
pub fn fexit_inet_listen(ctx: FExitContext) -> i32 {
    if let Some(pid_tgid) = kfunc::enter(HOOK_FEXIT_INET_LISTEN) {
        let ret: i64 = ctx.arg(2);
        kfunc::listen_done(pid_tgid, HOOK_FEXIT_INET_LISTEN, ctx.arg(0), ret as i32);
    }
    0
}

/// `int inet_csk_get_port(struct sock *sk, unsigned short snum)`.
#[fexit(function = "inet_csk_get_port")]
pub fn fexit_inet_csk_get_port(ctx: FExitContext) -> i32 {
    try_get_port(&ctx, HOOK_FEXIT_INET_CSK_GET_PORT, 2);
    0
}

/// `int udp_lib_get_port(struct sock *sk, unsigned short snum, unsigned int hash2_nulladdr)`.
#[fexit(function = "udp_lib_get_port")]
pub fn fexit_udp_lib_get_port(ctx: FExitContext) -> i32 {
    try_get_port(&ctx, HOOK_FEXIT_UDP_LIB_GET_PORT, 3);
    0
}

#[inline(always)]
fn try_bind(ctx: &FExitContext, hook: u16) {
    let Some(pid_tgid) = kfunc::enter(hook) else {
        return;
    };
    let addrlen: i64 = ctx.arg(2);
    let ret: i64 = ctx.arg(3);
    kfunc::bind_done(
        pid_tgid,
        hook,
        ctx.arg(0),
        ctx.arg(1),
        addrlen as i32,
        ret as i32,
    );
}

/// `ret_index` is the number of the function's arguments.
#[inline(always)]
fn try_get_port(ctx: &FExitContext, hook: u16, ret_index: usize) {
    let Some(pid_tgid) = kfunc::enter(hook) else {
        return;
    };
    let snum: u64 = ctx.arg(1);
    let ret: i64 = ctx.arg(ret_index);
    kfunc::get_port_done(pid_tgid, hook, ctx.arg(0), snum as u16, ret as i32);
}
