//! observer: an eBPF-assisted bind observer.
//!
//! The kernel programs (crate `observer-ebpf`) report every `bind()` and `listen()`; this
//! library loads them ([`backend`]), drains and decodes what they report ([`collector`],
//! [`decode`]) and prints it ([`sink`], [`jsonline`] for events at full rate); [`conflict`] explains an EADDRINUSE: the sockets in
//! the way, the rule, what would work (also `observer why`).

pub mod backend;
pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod collector;
pub mod conflict;
pub mod decode;
pub mod errno;
pub mod event;
pub mod filter;
pub mod jsonline;
pub mod metrics;
pub mod offsets;
pub mod privilege;
pub mod ring;
pub mod scenarios;
pub mod sink;
pub mod timefmt;
pub mod tracefs;

/// The size of a memory page (4096 where the kernel cannot say): ring-buffer sizes and
/// mappings, and the boundaries file output is cut at.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}
