//! Many holders, a bounded answer: sockets in the way that are alike — same protocol, family,
//! state, address and port, options, device, owner uid and owning processes, in the way by
//! the same overlap and rule — are one group, shown once with its count. 100k TIME_WAIT
//! sockets of a busy server are one line, not 100k; `why --all` keeps every socket.

use crate::model::{Holder, Overlap, Proto, Rule};
use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hash, Hasher};
use std::net::IpAddr;

/// What makes two holders alike: everything but the socket's own identity (inode, the
/// descriptor numbers its owners hold it by, TIME_WAIT's time left). Borrowed from the
/// holder: 100k sockets in the way are compared without formatting or copying anything.
#[derive(PartialEq, Eq, Hash)]
struct Key<'a> {
    protocol: Proto,
    family: &'a str,
    state: &'a str,
    addr: IpAddr,
    port: u16,
    reuseaddr: Option<bool>,
    reuseport: Option<bool>,
    v6only: Option<bool>,
    bound_dev: Option<&'a str>,
    uid: Option<u32>,
    owner_note: Option<&'a str>,
    overlap: Overlap,
    rule: Rule,
    kernel_check: &'a str,
    certain: bool,
    pids: Pids<'a>,
}

/// The owning processes, by pid.
struct Pids<'a>(&'a [crate::model::Owner]);

impl PartialEq for Pids<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(other.0).all(|(a, b)| a.pid == b.pid)
    }
}

impl Eq for Pids<'_> {}

impl Hash for Pids<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for o in self.0 {
            state.write_u32(o.pid);
        }
    }
}

fn key(h: &Holder) -> Key<'_> {
    Key {
        protocol: h.protocol,
        family: h.family,
        state: h.state,
        addr: h.addr,
        port: h.port,
        reuseaddr: h.reuseaddr,
        reuseport: h.reuseport,
        v6only: h.v6only,
        bound_dev: h.bound_dev.as_deref(),
        uid: h.uid,
        owner_note: h.owner_note,
        overlap: h.overlap.name,
        rule: h.rule.name,
        kernel_check: h.kernel_check,
        certain: h.certain,
        pids: Pids(&h.owners),
    }
}

/// The holders grouped, in the order each group first appears; each group is its first
/// socket with `count` set, and the soonest TIME_WAIT expiry of the group.
pub fn group(holders: Vec<Holder>) -> Vec<Holder> {
    let mut groups = Groups::default();
    for h in holders {
        groups.push(h);
    }
    groups.finish()
}

/// Groups built one holder at a time, so that 100k sockets in the way are never 100k
/// holders in memory at once: a holder like one already seen is counted and dropped.
#[derive(Default)]
pub struct Groups {
    /// Groups by the hash of their key (`out` holds the keys' holders).
    index: HashMap<u64, Vec<usize>>,
    hasher: std::collections::hash_map::RandomState,
    out: Vec<Holder>,
}

impl Groups {
    pub fn push(&mut self, h: Holder) {
        let k = key(&h);
        let hash = self.hasher.hash_one(&k);
        let same = self.index.entry(hash).or_default();
        match same.iter().copied().find(|&i| key(&self.out[i]) == k) {
            Some(i) => {
                let g = &mut self.out[i];
                g.count += h.count;
                g.time_left_ms = match (g.time_left_ms, h.time_left_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => {
                same.push(self.out.len());
                self.out.push(h);
            }
        }
    }

    /// The groups, in the order each first appeared.
    pub fn finish(self) -> Vec<Holder> {
        self.out
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
