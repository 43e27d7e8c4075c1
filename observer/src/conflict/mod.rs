//! "Address already in use", explained: which sockets are in the way of a bind or listen, the
//! Linux rule that made each one conflict, and what would have worked.
//!
//! [`diagnose`] reads the socket table of the failing socket's network namespace from the
//! kernel ([`socktable`]) while, on other threads ([`walks`]), the kernel walks find the
//! processes holding the port's sockets ([`owners`]) and the flags sock_diag does not export
//! ([`sockflags`]):
//! each walk costs about what the dump does at 100k connections, and none needs the
//! others' answer. It then applies the kernel's own conflict checks
//! ([`rules`], the one implementation of them), tries what would have worked ([`advice`]) and
//! returns a [`Conflict`] (declared in the output model, `crate::model`: the `"conflict"`
//! object of events and of `observer why --json`). For a port-0 request it reports the ephemeral range instead
//! ([`ephemeral`]). [`report`] renders a conflict for people.

pub mod advice;
#[cfg(test)]
#[path = "../../tests/common/cases.rs"]
pub(crate) mod cases;
pub mod cgroupbpf;
pub mod connect;
pub mod diagnoser;
pub mod ephemeral;
pub mod explain;
pub mod group;
pub mod kiter;
pub mod owners;
pub mod refusal;
pub mod report;
pub mod rules;
pub mod sharing;
pub mod sockflags;
pub mod socktable;
pub mod walks;
pub mod why;

use self::rules::{Existing, Finding, Request, TCP_TIME_WAIT};
use self::socktable::DiagSock;
use crate::model::{Conflict, Holder, Named, Proto};
use crate::netns::{Netns, in_netns};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Why a diagnosis could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entering the network namespace {path}: {err}")]
    Netns { path: String, err: std::io::Error },
    #[error("reading the socket table (sock_diag): {0}")]
    Table(std::io::Error),
    #[error("the network namespace {0} has no process left in it")]
    NetnsGone(u64),
}

/// What to diagnose and where.
#[derive(Debug, Clone)]
pub struct Query {
    pub request: Request,
    pub netns: Netns,
    /// The failing socket itself (a failed listen's socket is in the table): left out.
    pub exclude_inode: Option<u64>,
    /// Every socket in the way on its own, not grouped with those alike (`why --all`).
    pub all: bool,
}

/// What the namespace thread collects.
struct Snapshot {
    /// The namespace's inode (0: unreadable).
    netns_ino: u64,
    table: Vec<DiagSock>,
    if_names: BTreeMap<u32, String>,
    local_addrs: Vec<IpAddr>,
    sysctls: Option<([u16; 2], String)>,
}

impl Snapshot {
    /// The sockets of the table but the one asking (`exclude`: a failed listen's socket is in
    /// the table), and each as the rules see it.
    fn others(&self, exclude: Option<u64>) -> (Vec<&DiagSock>, Vec<Existing>) {
        let diag: Vec<&DiagSock> = self
            .table
            .iter()
            .filter(|s| Some(s.inode) != exclude || s.inode == 0)
            .collect();
        let table = diag.iter().map(|s| existing(s)).collect();
        (diag, table)
    }
}

fn snapshot(q: &Query) -> Result<Snapshot, Error> {
    let port0 = q.request.port == 0;
    let proto = q.request.proto;
    let inner = in_netns(&q.netns, || {
        // A port-0 request's ephemeral report counts every socket of the protocol; another
        // request's advice looks for a free port among the next few.
        let port = q.request.port;
        let table = if port0 {
            socktable::dump(proto, None)
        } else {
            socktable::dump_range(proto, port, port.saturating_add(advice::PORT_SEARCH))
        };
        let table = match table {
            Ok(table) => table,
            Err(err) => return Ok(Err(Error::Table(err))),
        };
        let if_names = table
            .iter()
            .map(|s| s.bound_dev_if)
            .filter(|&i| i != 0)
            .filter_map(|i| Some((i, socktable::if_name(i)?)))
            .collect();
        Ok(Ok(Snapshot {
            netns_ino: crate::netns::current_inode().unwrap_or(0),
            table,
            if_names,
            local_addrs: socktable::local_addrs(),
            sysctls: port0.then(ephemeral::read_sysctls).and_then(Result::ok),
        }))
    });
    inner.map_err(|err| Error::Netns {
        path: q.netns.to_string(),
        err,
    })?
}

/// Looks up what is in the way of `q.request` right now.
pub fn diagnose(q: &Query) -> Result<Conflict, Error> {
    let r = &q.request;
    if r.port == 0 {
        return diagnose_range(q);
    }
    let (snap, walks) = std::thread::scope(|scope| {
        let walking = std::thread::Builder::new()
            .name("observer-walks".into())
            .spawn_scoped(scope, || walks::walks(&q.netns, r.proto, r.port));
        let snap = snapshot(q);
        // Without a thread to spare, the walks run after the dump.
        let walked = match walking {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => walks::walks(&q.netns, r.proto, r.port),
        };
        (snap, walked)
    });
    let snap = snap?;
    let (diag, mut table) = snap.others(q.exclude_inode);
    let mut notes = Vec::new();
    // Owners and flags only for the sockets that may be in the way.
    let candidates = rules::check(r, &table);
    let inodes: BTreeSet<u64> = candidates
        .iter()
        .map(|f| diag[f.index].inode)
        .filter(|&i| i != 0)
        .collect();
    // The walks saw the namespace the dump saw, unless it could not be read there.
    let scope = owners::Scope {
        netns_ino: snap.netns_ino,
        ..walks.scope
    };
    let owners::Found {
        owners: found,
        opts: walked_opts,
        fallback,
    } = if inodes.is_empty() {
        owners::Found {
            owners: owners::ByInode::new(),
            opts: Default::default(),
            fallback: None,
        }
    } else {
        owners::find_after(&inodes, scope, walks.owners)
    };
    if let Some(why) = fallback {
        notes.push(format!(
            "owners were looked for in /proc, one descriptor at a time: the kernel walk \
             (iter/task_file) could not serve: {why}"
        ));
    }
    let flags = walks::Flags {
        by_cookie: walks.flags,
        by_inode: &walked_opts,
    };
    walks::read_flags(flags, &candidates, &diag, &found, &mut table, &mut notes);
    let findings = rules::check(r, &table);
    let unseen = findings
        .iter()
        .filter(|f| diag[f.index].inode != 0 && !found.contains_key(&diag[f.index].inode))
        .count();
    if unseen > 0 && owners::pid_namespace_hides_processes() == Some(true) {
        notes.push(format!(
            "{unseen} socket(s) in the way have no descriptor in this /proc: this observer runs \
             in a pid namespace that is not the host's, so their owners may be processes not \
             visible from this pid namespace"
        ));
    }
    let time_left = |i: usize| (diag[i].state == TCP_TIME_WAIT).then_some(diag[i].expires_ms);
    let has_owner = |i: usize| found.contains_key(&diag[i].inode);
    let ctx = advice::Context {
        table: &table,
        time_left_ms: &time_left,
        local_addrs: &snap.local_addrs,
        has_owner: &has_owner,
    };
    let fixes = advice::fixes(r, &findings, &ctx);
    let hidden = owners::pid_namespace_hides_processes() == Some(true);
    let holders = findings.iter().map(|f| {
        holder(
            f,
            r.reuseaddr,
            diag[f.index],
            &table[f.index],
            &found,
            &snap.if_names,
            hidden,
        )
    });
    let holders: Vec<Holder> = if q.all {
        holders.collect()
    } else {
        let mut groups = group::Groups::default();
        holders.for_each(|h| groups.push(h));
        groups.finish()
    };
    let verdict = if holders.is_empty() {
        "free"
    } else if holders.iter().any(|h| h.certain) {
        "in_use"
    } else {
        "uncertain"
    };
    Ok(Conflict {
        verdict,
        holders,
        fixes,
        ephemeral: None,
        connect: None,
        notes,
        refusal: None,
        sharing: None,
    })
}

/// A port-0 request: the ephemeral range, counted against every socket of the protocol by the
/// rules of the kernel's own choice. TCP's (`inet_csk_find_open_port`) checks each port with
/// `relax` and `reuseport_ok` off, so neither option of the request shares a port it picks
/// (unless `net.ipv4.ip_autobind_reuse`, not modelled); UDP's (`udp_lib_get_port` →
/// `udp_lib_lport_inuse`) shares one as an explicit bind would, so the options of the sockets
/// on the range are read when the request has one.
fn diagnose_range(q: &Query) -> Result<Conflict, Error> {
    let r = match q.request.proto {
        Proto::Tcp => Request {
            reuseaddr: false,
            reuseport: false,
            ..q.request.clone()
        },
        Proto::Udp => q.request.clone(),
    };
    let snap = snapshot(q)?;
    let (diag, mut table) = snap.others(q.exclude_inode);
    let mut notes = Vec::new();
    if r.proto == Proto::Udp && (r.reuseaddr || r.reuseport) {
        match in_netns(&q.netns, || Ok(sockflags::read(Proto::Udp))) {
            Ok(Ok(by_cookie)) => {
                for (e, s) in table.iter_mut().zip(&diag) {
                    if let Some(o) = by_cookie.get(&s.cookie) {
                        walks::set_opts(e, o);
                    }
                }
            }
            Ok(Err(err)) => notes.push(format!("socket iterator: {err}")),
            Err(err) => notes.push(format!(
                "socket iterator: entering the network namespace: {err}"
            )),
        }
    }
    let Some((range, reserved)) = snap.sysctls else {
        notes.push("could not read ip_local_port_range".into());
        return Ok(empty("ephemeral", notes));
    };
    let mut c = empty("ephemeral", notes);
    let report = ephemeral::report(&r, range, reserved, &table);
    c.fixes = ephemeral::fixes(&r, &report, &table);
    c.ephemeral = Some(report);
    Ok(c)
}

fn empty(verdict: &'static str, notes: Vec<String>) -> Conflict {
    Conflict {
        verdict,
        holders: Vec::new(),
        fixes: Vec::new(),
        ephemeral: None,
        connect: None,
        notes,
        refusal: None,
        sharing: None,
    }
}

fn existing(s: &DiagSock) -> Existing {
    Existing {
        proto: s.proto,
        addr: s.addr,
        port: s.port,
        state: s.state,
        reuseaddr: None,
        reuseport: None,
        v6only: s.v6only,
        bound_dev_if: s.bound_dev_if,
        uid: (s.state != TCP_TIME_WAIT || s.proto == Proto::Udp).then_some(s.uid),
    }
}

fn holder(
    f: &Finding,
    this_reuseaddr: bool,
    s: &DiagSock,
    e: &Existing,
    found: &owners::ByInode,
    if_names: &BTreeMap<u32, String>,
    pid_namespace_hides: bool,
) -> Holder {
    let tw = s.proto == Proto::Tcp && s.state == TCP_TIME_WAIT;
    let owners = found.get(&s.inode).cloned().unwrap_or_default();
    let owner_note = match () {
        _ if tw => Some(
            "TIME_WAIT: the socket is closed and has no owner; the kernel keeps it until its time is up",
        ),
        _ if owners.is_empty() && pid_namespace_hides => Some(
            "no process visible from this pid namespace has a descriptor for it (its owner may \
             be a process this pid namespace cannot see, or the kernel)",
        ),
        _ if owners.is_empty() => {
            Some("no process has a descriptor for it (closed since, or held by the kernel)")
        }
        _ => None,
    };
    Holder {
        protocol: s.proto,
        family: if s.addr.is_ipv4() { "inet" } else { "inet6" },
        state: socktable::state_name(s.proto, s.state),
        time_left_ms: tw.then_some(s.expires_ms),
        addr: s.addr,
        port: s.port,
        reuseaddr: e.reuseaddr,
        reuseport: e.reuseport,
        v6only: if s.addr.is_ipv6() { e.v6only } else { None },
        bound_dev: (s.bound_dev_if != 0).then(|| {
            if_names
                .get(&s.bound_dev_if)
                .cloned()
                .unwrap_or_else(|| format!("if{}", s.bound_dev_if))
        }),
        uid: e.uid,
        inode: (s.inode != 0).then_some(s.inode),
        owners,
        owner_note,
        overlap: Named {
            name: f.overlap,
            text: f.overlap.sentence(),
        },
        rule: Named {
            name: f.rule,
            text: f.rule.sentence_for(this_reuseaddr, e.reuseaddr),
        },
        kernel_check: f.check,
        certain: f.certain,
        count: 1,
    }
}
