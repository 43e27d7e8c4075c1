//! Port exhaustion at `connect()` under one backend: in a private network namespace with a
//! two-port `ip_local_port_range`, two connections to a loopback listener use the range up
//! and a third connect fails with EADDRNOTAVAIL; an unbound UDP socket's connect autobinds.
//! Every backend must report the failed connect (`sys_exit_connect`) and nothing else: not
//! the successful connects, and not the UDP autobind as a `get_port` (off by default).
//!
//! [`exhaust`] is the workload (run in a child process, as the collector never reports its
//! own); [`check`] observes it under one backend.

use super::demo;
use crate::backend::Choice;
use crate::model::Op;
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// The listener's port (in the workload's private namespace).
pub const PORT: u16 = 5000;

/// What the workload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exhausted {
    pub netns: u64,
    /// Inodes of the two connections that succeeded.
    pub ok: Vec<u64>,
    /// Inode of the socket whose connect failed, and its errno (0: it did not fail).
    pub failed: u64,
    pub errno: i32,
    /// Inode of the UDP socket that autobound at connect.
    pub udp: u64,
}

fn inode(s: &Socket) -> std::io::Result<u64> {
    std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// The workload: see the module.
pub fn exhaust() -> std::io::Result<Exhausted> {
    let netns = crate::netns::enter_private()?;
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001")?;
    let to = SocketAddr::from(([127, 0, 0, 1], PORT));
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.bind(&to.into())?;
    listener.listen(16)?;
    let mut ok = Vec::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.connect(&to.into())?;
        ok.push(inode(&s)?);
        held.push(s);
    }
    let late = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let errno = match late.connect(&to.into()) {
        Ok(()) => 0,
        Err(err) => err.raw_os_error().unwrap_or(-1),
    };
    let udp = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // A UDP connect sends nothing; the autobind takes a port of the range's own table.
    udp.connect(&SocketAddr::from(([127, 0, 0, 1], 53)).into())?;
    Ok(Exhausted {
        netns,
        ok,
        failed: inode(&late)?,
        errno,
        udp: inode(&udp)?,
    })
}

/// Observes [`exhaust`] under `choice`: `Ok((true, line))` when exactly the failed connect
/// was reported for the workload's sockets; the line says what was seen.
pub fn check(choice: Choice) -> Result<(bool, String)> {
    let args = ["scenarios".to_string(), "connect-exhaust".into()];
    let observed = demo::observe(choice, 1 << 22, &args)?;
    let text = String::from_utf8_lossy(&observed.output.stdout);
    let did: Exhausted = serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "connect workload output: {}",
            String::from_utf8_lossy(&observed.output.stderr).trim()
        )
    })?;
    anyhow::ensure!(
        did.errno == libc::EADDRNOTAVAIL,
        "the third connect gave {}, not EADDRNOTAVAIL",
        crate::errno::name(did.errno)
    );
    let ours: Vec<_> = observed
        .events
        .iter()
        .filter(|e| e.netns.map(u64::from) == Some(did.netns))
        .filter(|e| {
            e.sock_ino
                .is_some_and(|i| i == did.failed || i == did.udp || did.ok.contains(&i))
        })
        .collect();
    let seen: Vec<String> = ours
        .iter()
        .map(|e| {
            let remote = e
                .remote
                .endpoint()
                .map_or_else(|| "-".into(), |r| format!("{}:{}", r.addr, r.port));
            format!("{} {} {} remote={remote}", e.hook, e.op.as_str(), e.result)
        })
        .collect();
    let right = ours.len() == 1
        && ours[0].op == Op::Connect
        && ours[0].sock_ino == Some(did.failed)
        && ours[0].errno == libc::EADDRNOTAVAIL
        && ours[0].remote.endpoint().is_some_and(|r| r.port == PORT);
    Ok((right, format!("{}: {}", observed.backend, seen.join("; "))))
}
