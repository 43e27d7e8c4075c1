//! Which events the user asked to see (`--pid`, `--comm`, `--port`, `--errors`, `--netns`,
//! `--cgroup`).
//!
//! Filters run in userspace on decoded events: the kernel side stays one code path for every
//! filter combination, and what a filter drops is still counted in the summary.

use crate::model::{BindEvent, Requested};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this process (thread group id).
    pub pid: Option<u32>,
    /// Only processes whose `comm` is exactly this.
    pub comm: Option<String>,
    /// Only calls whose requested, bound or (connect) remote port is this.
    pub port: Option<u16>,
    /// Only failed calls.
    pub errors_only: bool,
    /// Only sockets in the network namespace with this inode.
    pub netns: Option<u32>,
    /// Also show sockets that are not IPv4/IPv6 (unix, netlink, ...); off by default.
    pub all_families: bool,
    /// Only callers in this cgroup or below it (a path below the cgroup v2 root).
    pub cgroup: Option<String>,
}

impl Filter {
    /// Hides only what is known to be another family: a call on an fd that is not a socket
    /// (EBADF, ENOTSOCK) has no socket family and stays visible unless its sockaddr says
    /// otherwise.
    fn inet_or_unknown(&self, e: &BindEvent) -> bool {
        match (&e.family, &e.requested) {
            (Some(_), _) => e.is_inet(),
            (None, Some(Requested::Other { sa_family, .. })) => !matches!(*sa_family, 1 | 16 | 17),
            (None, _) => true,
        }
    }

    pub fn matches(&self, e: &BindEvent) -> bool {
        if !self.all_families && !self.inet_or_unknown(e) {
            return false;
        }
        if self.pid.is_some_and(|pid| pid != e.pid) {
            return false;
        }
        if self.comm.as_ref().is_some_and(|comm| *comm != e.comm) {
            return false;
        }
        if let Some(port) = self.port {
            let bound = e.bound.map(|b| b.port);
            let remote = e.remote.endpoint().map(|r| r.port);
            if e.requested_port() != Some(port) && bound != Some(port) && remote != Some(port) {
                return false;
            }
        }
        if self.errors_only && e.errno == 0 {
            return false;
        }
        if self.netns.is_some_and(|ns| e.netns != Some(ns)) {
            return false;
        }
        if let Some(root) = &self.cgroup
            && !e.cgroup.as_ref().is_some_and(|c| c.is_under(root))
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
