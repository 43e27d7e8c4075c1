//! `iter/tcp`: for every TCP socket of the reader's network namespace, including TIME_WAIT
//! ones (which no descriptor reaches and sock_diag shows without options), its cookie and the
//! options kept in `sock_common`, written to the iterator's seq file as `SockFlagsRecord`s.

use aya_ebpf::helpers::generated;
use core::ffi::c_void;
use observer_common::{CONFIG_VERSION, SockFlagsRecord};

use crate::{cfg, config, read};

/// The program. Its context is `struct bpf_iter__tcp { meta; sk_common; uid }`, three 8-byte
/// slots; `meta->seq` is its first member.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn tcp_sock_flags(ctx: *mut c_void) -> i32 {
    if cfg(&config().version) != CONFIG_VERSION {
        return 0;
    }
    let slots = ctx as *const u64;
    // SAFETY: the verifier checks these context loads against `bpf_iter__tcp`: slot 0 is the
    // meta pointer, slot 1 the socket (NULL at the end of the iteration).
    let (meta, sk) = unsafe { (*slots as *const u64, *slots.add(1) as *mut c_void) };
    if sk.is_null() || meta.is_null() {
        return 0;
    }
    // SAFETY: `meta` is the kernel's `bpf_iter_meta`, whose first member is the seq file.
    let seq = unsafe { *meta } as *mut c_void;
    let (flags, known) = read::common_flags(sk as *const u8, config());
    let record = SockFlagsRecord {
        // SAFETY: the helper takes the non-NULL `sock_common` pointer the kernel passed.
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
