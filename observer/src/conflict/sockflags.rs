//! Options of the sockets in the way, which sock_diag lists without SO_REUSEADDR, SO_REUSEPORT
//! or IPV6_V6ONLY — owned ones, TCP TIME_WAIT ones and kernel-owned ones alike, without
//! touching the socket (a duplicate of the owner's descriptor would go through
//! `__receive_sock`, which rewrites its cgroup v1 classid and priority index): read by the
//! `iter/tcp` and `iter/udp` kernel programs
//! (`observer-ebpf/src/iter.rs`) through the BTF-derived field locations, and matched to
//! sock_diag's records by socket cookie.
//!
//! The programs are loaded and run by [`super::kiter`]; each read walks the network namespace
//! of the calling thread.

use super::kiter::{self, Program};
use crate::model::Proto;
use observer_common::{SockFlagsRecord, flag};
use std::collections::HashMap;

/// Socket options read by the iterator programs; `None` where the kernel's layout did not
/// let the program read one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockOpts {
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    /// Only for IPv6 sockets.
    pub v6only: Option<bool>,
}

/// Socket cookie → options, for every `proto` socket of the calling thread's network
/// namespace.
pub fn read(proto: Proto) -> Result<HashMap<u64, SockOpts>, String> {
    open(proto).and_then(finish)
}

/// The walk [`read`] makes, started in the calling thread's network namespace; the iterator
/// object's lock is let go before it is read ([`finish`]), so another walk may run meanwhile.
pub fn open(proto: Proto) -> Result<kiter::Opened, String> {
    let mut loaded = kiter::object()?;
    let ebpf = &mut loaded
        .as_mut()
        .ok_or("the iterator object is not loaded")?
        .ebpf;
    let program = match proto {
        Proto::Tcp => Program::Tcp,
        Proto::Udp => Program::Udp,
    };
    kiter::open(ebpf, program)
}

/// Reads a walk [`open`] started (on any thread).
pub fn finish(opened: kiter::Opened) -> Result<HashMap<u64, SockOpts>, String> {
    Ok(parse(&kiter::read(opened)?))
}

impl SockOpts {
    /// The options a kernel program read: `flags` and the bits of it it could read (`known`),
    /// as `SockFlagsRecord` and `OwnerRecord` carry them.
    pub fn from_bits(flags: u32, known: u32) -> SockOpts {
        let bit = |b: u32| (known & b != 0).then_some(flags & b != 0);
        SockOpts {
            reuseaddr: bit(flag::REUSEADDR),
            reuseport: bit(flag::REUSEPORT),
            v6only: bit(flag::V6ONLY),
        }
    }
}

fn parse(raw: &[u8]) -> HashMap<u64, SockOpts> {
    let size = std::mem::size_of::<SockFlagsRecord>();
    raw.chunks_exact(size)
        .map(|c| {
            let cookie = u64::from_ne_bytes(c[0..8].try_into().unwrap());
            let flags = u32::from_ne_bytes(c[8..12].try_into().unwrap());
            let known = u32::from_ne_bytes(c[12..16].try_into().unwrap());
            (cookie, SockOpts::from_bits(flags, known))
        })
        .collect()
}
