//! Options of the sockets in the way, which sock_diag lists without SO_REUSEADDR, SO_REUSEPORT
//! or IPV6_V6ONLY — owned ones, TCP TIME_WAIT ones and kernel-owned ones alike, without
//! touching the socket (a duplicate of the owner's descriptor would go through
//! `__receive_sock`, which rewrites its cgroup v1 classid and priority index): read by the
//! `iter/tcp` and `iter/udp` kernel programs
//! (`observer-ebpf/src/iter.rs`) through the BTF-derived field locations, and matched to
//! sock_diag's records by socket cookie.
//!
//! The program is loaded once per process, on first need; each read attaches it and creates
//! a fresh iterator, which walks the network namespace of the thread that creates it.

use crate::kernel::{self, PROGRAMS};
use crate::model::Proto;
use aya::programs::Iter;
use aya::{Ebpf, EbpfLoader};
use observer_common::{SockFlagsRecord, flag};
use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;

/// Socket options read by the iterator programs; `None` where the kernel's layout did not
/// let the program read one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockOpts {
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    /// Only for IPv6 sockets.
    pub v6only: Option<bool>,
}

/// (iterator, program) per protocol.
fn names(proto: Proto) -> (&'static str, &'static str) {
    match proto {
        Proto::Tcp => ("tcp", "tcp_sock_flags"),
        Proto::Udp => ("udp", "udp_sock_flags"),
    }
}

/// The loaded object (its ring buffer and other maps are not used here).
static LOADED: Mutex<Option<Ebpf>> = Mutex::new(None);

fn load() -> Result<Ebpf, String> {
    let config = kernel::resolved().map_err(|e| e.to_string())?.config;
    let page = u32::try_from(crate::page_size()).unwrap_or(4096);
    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        // The smallest ring buffer: this object only serves the iterator.
        .map_max_entries("EVENTS", page)
        .load(PROGRAMS)
        .map_err(|e| format!("loading the programs: {e}"))?;
    let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    for proto in [Proto::Tcp, Proto::Udp] {
        let (iter, _) = names(proto);
        program(&mut ebpf, proto)?
            .load(iter, &kernel_btf)
            .map_err(|e| format!("loading iter/{iter}: {e}"))?;
    }
    Ok(ebpf)
}

fn program(ebpf: &mut Ebpf, proto: Proto) -> Result<&mut Iter, String> {
    let (_, name) = names(proto);
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))
}

/// Socket cookie → options, for every `proto` socket of the calling thread's network
/// namespace.
pub fn read(proto: Proto) -> Result<HashMap<u64, SockOpts>, String> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if loaded.is_none() {
        *loaded = Some(load()?);
    }
    let prog = program(loaded.as_mut().expect("loaded above"), proto)?;
    let id = prog
        .attach()
        .map_err(|e| format!("attaching iter/{}: {e}", names(proto).0))?;
    let link = prog.take_link(id).map_err(|e| e.to_string())?;
    let mut file = link
        .into_file()
        .map_err(|e| format!("creating the iterator: {e}"))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)
        .map_err(|e| format!("reading the iterator: {e}"))?;
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> HashMap<u64, SockOpts> {
    let size = std::mem::size_of::<SockFlagsRecord>();
    raw.chunks_exact(size)
        .map(|c| {
            let cookie = u64::from_ne_bytes(c[0..8].try_into().unwrap());
            let flags = u32::from_ne_bytes(c[8..12].try_into().unwrap());
            let known = u32::from_ne_bytes(c[12..16].try_into().unwrap());
            let bit = |b: u32| (known & b != 0).then_some(flags & b != 0);
            let opts = SockOpts {
                reuseaddr: bit(flag::REUSEADDR),
                reuseport: bit(flag::REUSEPORT),
                v6only: bit(flag::V6ONLY),
            };
            (cookie, opts)
        })
        .collect()
}
