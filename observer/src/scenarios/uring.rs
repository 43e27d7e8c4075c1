//! A bind that never passes through the bind system call: io_uring's `IORING_OP_BIND`
//! (Linux 6.11+), submitted through the raw io_uring interface. The kernel-function backends
//! see it (it ends in `inet_bind`); the tracepoint backend cannot (no `sys_enter_bind`).
//!
//! [`bind_once`] is the workload (run in a child process, as the collector never reports its
//! own); [`check`] observes it under one backend.

use super::demo;
use crate::backend::Choice;
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IORING_OP_BIND: u8 = 56;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_ENTER_GETEVENTS: u32 = 1;
/// The port the workload binds (in its private namespace).
pub const PORT: u16 = 4242;

/// `struct io_uring_params` (uapi), with both ring offset blocks.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    /// `io_sqring_offsets`: head, tail, ring_mask, ring_entries, flags, dropped, array, resv1,
    /// then a u64.
    sq_off: [u32; 10],
    /// `io_cqring_offsets`: head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1,
    /// then a u64.
    cq_off: [u32; 10],
}

/// What the workload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UringBind {
    pub netns: u64,
    /// Inode of the socket.
    pub ino: u64,
    /// The completion's result: 0, or a negative errno (`-EINVAL` where the kernel has no
    /// `IORING_OP_BIND`).
    pub res: i32,
}

fn check_rc(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A shared mapping of the ring fd at `offset`.
fn map(fd: &OwnedFd, len: usize, offset: i64) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of the io_uring fd; the kernel checks offset and length.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// In a private network namespace: a TCP socket bound to 127.0.0.1:[`PORT`] by one
/// `IORING_OP_BIND`. The mappings are left to process exit.
pub fn bind_once() -> io::Result<UringBind> {
    let netns = crate::netns::enter_private()?;
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", sock.as_raw_fd()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    let addr = socket2::SockAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], PORT)));
    let mut p = Params::default();
    // SAFETY: io_uring_setup writes only into `p`.
    let fd = check_rc(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut p) })?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let sq = map(
        &ring,
        (p.sq_off[6] + p.sq_entries * 4) as usize,
        IORING_OFF_SQ_RING,
    )?;
    let cq = map(
        &ring,
        (p.cq_off[5] + p.cq_entries * 16) as usize,
        IORING_OFF_CQ_RING,
    )?;
    let sqes = map(&ring, 64 * p.sq_entries as usize, IORING_OFF_SQES)?;
    // SAFETY: every offset below comes from the kernel's `io_uring_params` and lies inside the
    // mappings made from it; the rings are shared with the kernel, so the index words are
    // accessed as atomics.
    unsafe {
        let sqe = std::slice::from_raw_parts_mut(sqes, 64);
        sqe.fill(0);
        sqe[0] = IORING_OP_BIND;
        sqe[4..8].copy_from_slice(&sock.as_raw_fd().to_ne_bytes());
        sqe[8..16].copy_from_slice(&u64::from(addr.len()).to_ne_bytes());
        sqe[16..24].copy_from_slice(&(addr.as_ptr() as u64).to_ne_bytes());
        let word = |base: *mut u8, off: u32| {
            &*(base.add(off as usize) as *const std::sync::atomic::AtomicU32)
        };
        let tail = word(sq, p.sq_off[1]);
        let mask = word(sq, p.sq_off[2]).load(std::sync::atomic::Ordering::Relaxed);
        let t = tail.load(std::sync::atomic::Ordering::Relaxed);
        word(sq, p.sq_off[6] + 4 * (t & mask)).store(0, std::sync::atomic::Ordering::Relaxed);
        tail.store(t.wrapping_add(1), std::sync::atomic::Ordering::Release);
        check_rc(libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<u8>(),
            0usize,
        ))?;
        let head = word(cq, p.cq_off[0]).load(std::sync::atomic::Ordering::Acquire);
        let cmask = word(cq, p.cq_off[2]).load(std::sync::atomic::Ordering::Relaxed);
        let cqe = cq.add(p.cq_off[5] as usize + 16 * (head & cmask) as usize);
        let res = i32::from_ne_bytes(
            std::slice::from_raw_parts(cqe.add(8), 4)
                .try_into()
                .unwrap_or_default(),
        );
        Ok(UringBind { netns, ino, res })
    }
}

/// Observes [`bind_once`] under `choice`: `Ok(Some(line))` says what was seen; `Ok(None)` when
/// the kernel has no `IORING_OP_BIND`. The bool is whether the observer saw the bind.
pub fn check(choice: Choice) -> Result<Option<(bool, String)>> {
    let args = ["scenarios".to_string(), "io-uring-bind".into()];
    let observed = demo::observe(choice, 1 << 22, &args)?;
    let text = String::from_utf8_lossy(&observed.output.stdout);
    let did: UringBind = serde_json::from_str(text.trim()).context("io_uring workload output")?;
    if did.res == -libc::EINVAL {
        return Ok(None);
    }
    anyhow::ensure!(
        did.res == 0,
        "IORING_OP_BIND failed: {}",
        crate::errno::name(-did.res)
    );
    let seen: Vec<String> = observed
        .events
        .iter()
        .filter(|e| e.netns.map(u64::from) == Some(did.netns) && e.sock_ino == Some(did.ino))
        .map(|e| {
            let bound = e
                .bound
                .map_or_else(|| "-".into(), |b| format!("{}:{}", b.addr, b.port));
            let fd = e.fd.map_or_else(|| "null".into(), |fd| fd.to_string());
            format!(
                "{} {} {} fd={fd} bound={bound}",
                e.hook,
                e.op.as_str(),
                e.result
            )
        })
        .collect();
    let caught = observed.events.iter().any(|e| {
        e.op == crate::model::Op::Bind
            && e.sock_ino == Some(did.ino)
            && e.bound.is_some_and(|b| b.port == PORT)
            && e.errno == 0
    });
    Ok(Some((
        caught,
        format!("{}: {}", observed.backend, seen.join("; ")),
    )))
}
