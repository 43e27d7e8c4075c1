//! The kernel walks a lookup runs beside the socket table's dump, and what they fill in: the
//! owners walk (`iter/task_file`, [`super::owners`]) and the options walk (`iter/tcp` /
//! `iter/udp`, [`super::sockflags`]) need only the namespace and the port, not the dump's
//! answer, so [`walks`] runs them on threads of their own while the table is read; then
//! [`read_flags`] gives the sockets in the way the options sock_diag does not export.

use super::owners;
use super::rules::{Existing, Finding};
use super::sockflags;
use super::socktable::DiagSock;
use crate::model::Proto;
use crate::netns::{Netns, in_netns};
use std::collections::HashMap;

/// What the kernel walks find while the socket table is read: they need only the namespace
/// and the port, and each walks objects of the whole namespace (its processes' files, its
/// sockets), so a lookup runs them beside the table's dump rather than after it.
pub struct Walks {
    /// The options of the protocol's sockets in the namespace, by cookie.
    pub flags: Result<HashMap<u64, sockflags::SockOpts>, String>,
    pub owners: owners::Walked,
    pub scope: owners::Scope,
}

/// The walks for `proto` sockets on `port` in `netns`, run inside it (the socket iterators
/// walk the namespace of the thread that makes them).
pub fn walks(netns: &Netns, proto: Proto, port: u16) -> Walks {
    let inside = in_netns(netns, || {
        let scope = owners::Scope {
            netns_ino: crate::netns::current_inode().unwrap_or(0),
            port,
        };
        // The socket iterator is made here, in the namespace, and read beside the owners'
        // walk, which holds the iterator object meanwhile (its query map).
        let flags = sockflags::open(proto);
        Ok(std::thread::scope(|threads| {
            let reading = flags.map(|opened| {
                std::thread::Builder::new()
                    .name("observer-flags".into())
                    .spawn_scoped(threads, move || sockflags::finish(opened))
            });
            let owners = owners::walk(scope);
            let flags = match reading {
                Ok(Ok(handle)) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Ok(Err(err)) => Err(format!("starting a thread: {err}")),
                Err(err) => Err(err),
            };
            Walks {
                flags,
                owners,
                scope,
            }
        }))
    });
    inside.unwrap_or_else(|err| Walks {
        flags: Err(format!("entering the network namespace: {err}")),
        owners: owners::Walked::Failed(format!("entering the network namespace: {err}")),
        scope: owners::Scope { netns_ino: 0, port },
    })
}

/// The options the kernel walks read: the socket iterators' for every socket they list, by
/// cookie; the owners walk's for every socket a descriptor names, by inode.
pub struct Flags<'a> {
    pub by_cookie: Result<HashMap<u64, sockflags::SockOpts>, String>,
    pub by_inode: &'a HashMap<u64, sockflags::SockOpts>,
}

/// Fills in the options sock_diag does not give for the sockets that may be in the way,
/// without touching any socket (a duplicate of the owner's descriptor would go through
/// `__receive_sock`, which rewrites its cgroup v1 classid and priority index): from the
/// `iter/tcp` / `iter/udp` programs (owned, TIME_WAIT and kernel-owned sockets alike), and for
/// a socket they do not list (a bound-only TCP socket, in the kernel's bind hash alone) from
/// the owners walk, which read them from the socket its owner's descriptor names. Only when
/// neither could (owners found through `/proc`) is a duplicate of the owner's descriptor read
/// ([`owners::sockopts`]). What stays unknown is noted.
pub fn read_flags(
    flags: Flags<'_>,
    candidates: &[Finding],
    diag: &[&DiagSock],
    found: &owners::ByInode,
    table: &mut [Existing],
    notes: &mut Vec<String>,
) {
    if candidates.is_empty() {
        return;
    }
    match flags.by_cookie {
        Ok(by_cookie) => {
            for f in candidates {
                if let Some(o) = by_cookie.get(&diag[f.index].cookie) {
                    set_opts(&mut table[f.index], o);
                }
            }
        }
        Err(err) => notes.push(format!("socket iterator: {err}")),
    }
    for f in candidates {
        let s = diag[f.index];
        if table[f.index].reuseaddr.is_some() {
            continue;
        }
        let opts = flags.by_inode.get(&s.inode).copied().or_else(|| {
            found.get(&s.inode).and_then(|list| {
                list.iter()
                    .find_map(|o| owners::sockopts(o, s.inode, s.addr.is_ipv6()).ok())
            })
        });
        if let Some(o) = opts {
            set_opts(&mut table[f.index], &o);
        }
    }
    let n = candidates
        .iter()
        .filter(|f| table[f.index].reuseaddr.is_none())
        .count();
    if n > 0 {
        notes.push(format!(
            "could not read the options of {n} socket(s) in the way"
        ));
    }
}

pub fn set_opts(e: &mut Existing, o: &sockflags::SockOpts) {
    e.reuseaddr = o.reuseaddr;
    e.reuseport = o.reuseport;
    if e.addr.is_ipv6() {
        e.v6only = e.v6only.or(o.v6only);
    }
}
