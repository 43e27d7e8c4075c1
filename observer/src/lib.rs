//! observer: an eBPF-assisted bind observer.
//!
//! The layers point one way; a test (`tests/layers.rs`) fails on any circle:
//! - below everything: the output model ([`model`]: every record written, with its serde
//!   shape), the socket-option table ([`sockopt`]), namespace helpers ([`netns`]), errno names,
//!   time formatting, and the kernel programs' object and BTF-derived layout ([`kernel`],
//!   [`btf`], [`offsets`]);
//! - capture: [`backend`] loads and attaches the programs, [`ring`] and [`decode`] turn what
//!   they report into [`model::BindEvent`]s;
//! - explanation: [`conflict`] explains an EADDRINUSE (the sockets in the way, the rule, what
//!   would work; also `observer why`), [`cgroup`] names the caller's cgroup;
//! - output: [`hold`] keeps call order around pending explanations, [`sink`] and
//!   [`jsonline`] print, [`metrics`] counts;
//! - driving: [`collector`] runs the pipeline, [`scenarios`] plays the demo, [`cli`] parses.

// The test fixtures shared with the integration tests (`tests/common/cases.rs`) name the
// library `observer`, as the integration tests see it.
#[cfg(test)]
extern crate self as observer;

pub mod backend;
pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod collector;
pub mod conflict;
pub mod decode;
pub mod errno;
pub mod filter;
pub mod hold;
pub mod jsonline;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod offsets;
pub mod privilege;
pub mod ring;
pub mod runs;
pub mod scenarios;
pub mod sink;
pub mod sockopt;
pub mod stdout;
pub mod stop;
pub mod termsafe;
pub mod timefmt;
pub mod tracefs;

#[cfg(test)]
mod testenv;

/// The size of a memory page (4096 where the kernel cannot say): ring-buffer sizes and
/// mappings, and the boundaries file output is cut at.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}
