//! Each event's cgroup: the id the kernel program read (`bpf_get_current_cgroup_id`) turned
//! into the cgroup path, and what that path says about containers ([`container`]).
//!
//! A cgroup v2 id is the inode number of the cgroup's directory. Ids are resolved once and
//! cached, so the event path pays one hash lookup (or none: the last id is kept at hand):
//! first from `/proc/<pid>/cgroup` of the caller, checked against the directory's inode (the
//! caller has just made the call, so it is usually still there); failing that, from a walk of
//! the cgroup tree that indexes every cgroup (at most one walk per 10 ms). An id the walk does
//! not find belongs to a cgroup already removed: it stays unresolved (`path: null`), and each
//! such event is counted.

pub mod container;

use crate::model::Cgroup;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cgroup `id` at `path`, with what the path says about containers.
pub fn make(id: u64, path: Option<String>) -> Cgroup {
    let (container, pod_uid) = path
        .as_deref()
        .map(container::parse)
        .unwrap_or((None, None));
    Cgroup::new(id, path, container, pod_uid)
}

/// A resolved cgroup with id 1 at `path`, for tests.
#[cfg(test)]
pub fn for_test(path: &str) -> Cgroup {
    make(1, Some(path.into()))
}

/// How often the cgroup tree may be walked for ids that `/proc/<pid>/cgroup` did not resolve:
/// a walk indexes every cgroup, so a burst of new ones costs one walk.
const WALK_INTERVAL: Duration = Duration::from_millis(10);
/// Resolved ids kept; past it the cache starts over (cgroups come and go with services).
const CACHE_MAX: usize = 8192;

/// Resolves cgroup ids, with a cache.
pub struct Cache {
    /// Where cgroup v2 is mounted (`None`: no cgroup v2 here; nothing resolves).
    root: Option<PathBuf>,
    cache: HashMap<u64, Arc<Cgroup>>,
    /// Every cgroup the last walk found: id to path.
    index: HashMap<u64, String>,
    last: Option<Arc<Cgroup>>,
    last_walk: Option<Instant>,
    /// Events whose cgroup has no path.
    pub unresolved: u64,
}

impl Cache {
    pub fn new() -> Cache {
        Cache {
            root: mount_point(),
            cache: HashMap::new(),
            index: HashMap::new(),
            last: None,
            last_walk: None,
            unresolved: 0,
        }
    }

    /// The cgroup with this id, called by `pid`.
    pub fn get(&mut self, id: u64, pid: u32) -> Arc<Cgroup> {
        let cgroup = match &self.last {
            Some(last) if last.id == id => last.clone(),
            _ => {
                let c = match self.cache.get(&id) {
                    Some(c) => c.clone(),
                    None => self.resolve(id, pid),
                };
                self.last = Some(c.clone());
                c
            }
        };
        if cgroup.path.is_none() {
            self.unresolved += 1;
        }
        cgroup
    }

    fn resolve(&mut self, id: u64, pid: u32) -> Arc<Cgroup> {
        let Some(root) = self.root.clone() else {
            return self.insert(id, None);
        };
        if let Some(path) = self.index.get(&id).cloned() {
            return self.insert(id, Some(path));
        }
        if let Some(path) = from_proc(&root, id, pid) {
            return self.insert(id, Some(path));
        }
        if self
            .last_walk
            .is_some_and(|at| at.elapsed() < WALK_INTERVAL)
        {
            // Not cached: a later event of the same cgroup tries again.
            return Arc::new(make(id, None));
        }
        self.last_walk = Some(Instant::now());
        self.index.clear();
        walk(&root, Path::new("/"), &mut |ino, path| {
            self.index.insert(ino, path.to_string());
        });
        // Not found after the call: the cgroup is gone, and ids are never reused, so it stays
        // without a path.
        let path = self.index.get(&id).cloned();
        self.insert(id, path)
    }

    fn insert(&mut self, id: u64, path: Option<String>) -> Arc<Cgroup> {
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        let c = Arc::new(make(id, path));
        self.cache.insert(id, c.clone());
        c
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new()
    }
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo` (`/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` on a hybrid one).
pub fn mount_point() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // `id parent major:minor root mount-point options ... - fstype source options`
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// The caller's cgroup path from `/proc/<pid>/cgroup` (`0::<path>`), if the directory there
/// still has inode `id`.
fn from_proc(root: &Path, id: u64, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = root.join(path.trim_start_matches('/'));
    (std::fs::metadata(dir).ok()?.ino() == id).then(|| path.to_string())
}

/// Calls `f(inode, path)` for every cgroup directory under `root` (`path` relative to it).
fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(u64, &str)) {
    let dir = root.join(rel.strip_prefix("/").unwrap_or(rel));
    if let Ok(meta) = std::fs::metadata(&dir) {
        f(meta.ino(), &rel.to_string_lossy());
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &rel.join(entry.file_name()), f);
        }
    }
}

/// Checks a `--cgroup` argument and returns it as a path below the cgroup root: `PATH` may be
/// given below the root (`/system.slice/x.service`) or as the directory itself
/// (`/sys/fs/cgroup/system.slice/x.service`).
pub fn filter_path(arg: &str) -> Result<String, String> {
    let root = mount_point().ok_or("no cgroup v2 hierarchy is mounted here")?;
    let rel = Path::new(arg)
        .strip_prefix(&root)
        .map(|r| format!("/{}", r.display()))
        .unwrap_or_else(|_| format!("/{}", arg.trim_start_matches('/')));
    let rel = rel.trim_end_matches('/').to_string();
    let dir = root.join(rel.trim_start_matches('/'));
    if !dir.is_dir() {
        return Err(format!(
            "`{arg}` is not a cgroup (no directory {})",
            dir.display()
        ));
    }
    Ok(if rel.is_empty() { "/".into() } else { rel })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_membership_is_by_whole_components() {
        let c = make(7, Some("/system.slice/nginx.service".into()));
        assert!(c.is_under("/system.slice"));
        assert!(c.is_under("/system.slice/"));
        assert!(c.is_under("/system.slice/nginx.service"));
        assert!(c.is_under("/"));
        assert!(!c.is_under("/system"));
        assert!(!c.is_under("/system.slice/nginx"));
        assert!(!make(7, None).is_under("/"));
    }

    #[test]
    fn json_is_precomputed_like_serde() {
        let c = make(9, Some("/system.slice/a.service".into()));
        assert_eq!(
            c.json,
            r#"{"id":9,"path":"/system.slice/a.service","container":null,"pod_uid":null}"#
        );
    }

    #[test]
    fn own_cgroup_resolves_from_proc_and_by_walking() {
        let Some(root) = mount_point() else {
            return crate::testenv::missing(
                "cgroup::own_cgroup_resolves_from_proc_and_by_walking",
                "no cgroup v2 hierarchy in /proc/self/mountinfo",
            );
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = std::fs::metadata(root.join(path.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut cache = Cache::new();
        let c = cache.get(id, std::process::id());
        assert_eq!(c.path.as_deref(), Some(path));
        // A pid that does not exist: only the walk finds it.
        let mut fresh = Cache::new();
        assert_eq!(fresh.get(id, u32::MAX).path.as_deref(), Some(path));
        assert_eq!(fresh.unresolved, 0);
    }
}
