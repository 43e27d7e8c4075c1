//! Many holders, a bounded answer: sockets in the way that are alike — same protocol, family,
//! state, address and port, options, device, owner uid and owning processes, in the way by
//! the same overlap and rule — are one group, shown once with its count. 100k TIME_WAIT
//! sockets of a busy server are one line, not 100k; `why --all` keeps every socket.

use crate::model::Holder;
use std::collections::HashMap;
use std::fmt::Write as _;

/// What makes two holders alike: everything but the socket's own identity (inode, the
/// descriptor numbers its owners hold it by, TIME_WAIT's time left).
fn key(h: &Holder, out: &mut String) {
    out.clear();
    let _ = write!(
        out,
        "{:?} {} {} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {}",
        h.protocol,
        h.family,
        h.state,
        h.addr,
        h.port,
        h.reuseaddr,
        h.reuseport,
        h.v6only,
        h.bound_dev,
        h.uid,
        h.owner_note,
        h.overlap.name,
        h.rule.name,
        h.kernel_check,
        h.certain
    );
    for o in &h.owners {
        let _ = write!(out, " {}", o.pid);
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
    index: HashMap<String, usize>,
    out: Vec<Holder>,
    key: String,
}

impl Groups {
    pub fn push(&mut self, h: Holder) {
        key(&h, &mut self.key);
        match self.index.get(self.key.as_str()) {
            Some(&i) => {
                let g = &mut self.out[i];
                g.count += h.count;
                g.time_left_ms = match (g.time_left_ms, h.time_left_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => {
                self.index.insert(self.key.clone(), self.out.len());
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
