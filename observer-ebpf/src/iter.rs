//! `iter/tcp` and `iter/udp`: for every TCP or UDP socket of the reader's network namespace,
//! including those no descriptor reaches (TIME_WAIT, kernel-owned sockets), which sock_diag
//! shows without options, its cookie and the options kept in `sock_common`, written to the
//! iterator's seq file as `SockFlagsRecord`s.

use aya_ebpf::helpers::generated;
use core::ffi::c_void;
use observer_common::{CONFIG_VERSION, SockFlagsRecord};

use crate::{cfg, config, read};

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
    // SAFETY: `meta` is the kernel's `bpf_iter_meta`, whose first member is the seq file.
    let seq = unsafe { *meta } as *mut c_void;
    let (flags, known) = read::common_flags(sk as *const u8, config());
    let record = SockFlagsRecord {
        // SAFETY: the helper takes the non-NULL socket pointer the kernel passed.
        cookie: unsafe { generated::bpf_get_socket_cookie(sk) },
        flags,
        known,
    };
    // SAFETY: `record` lives on the stack for the call; the length is its size.
    unsafe {
        generated::bpf_seq_write(
            seq.cast(),
            (&record as *const SockFlagsRecord).cast(),
            core::mem::size_of::<SockFlagsRecord>() as u32,
        )
    };
    0
}
