//! Each event's cgroup: the id the kernel program read (`bpf_get_current_cgroup_id`) turned
//! into the cgroup path, and what that path says about containers ([`container`]).
//!
//! A cgroup v2 id is the id of the cgroup directory's kernfs node (its inode number), and also
//! its file handle: [`handle`] opens the directory by that handle and reads its path back from
//! `/proc/self/fd`, four system calls whatever the caller did since (it may have exited) and
//! whatever the number of cgroups on the host. That runs on the event thread, once per new id:
//! ids are cached, so the event path pays one hash lookup (or none: the last id is kept at
//! hand). An id whose directory is gone (`ESTALE`) belongs to a cgroup already removed; ids are
//! never reused, so it stays unresolved (`path: null`), and each such event is counted.
//!
//! Lookups by handle need `CAP_DAC_READ_SEARCH`. Without it (or on a kernel whose cgroup file
//! system does not decode handles, seen at start when the mount's own directory does not
//! resolve), the cache falls back to `/proc/<pid>/cgroup` of the caller, checked against the
//! directory's inode (so the caller must still be alive), and else to an index of the whole
//! tree made on a thread of its own ([`walk`]): the event that asked is reported without a
//! path, later ones of the same cgroup find it. A `/proc` path outside the cgroup root (a
//! private cgroup namespace writes `/../..`) is never used. No cgroup v2 mounted: nothing
//! resolves, and every event is counted.

pub mod container;
mod handle;
mod walk;

use crate::model::Cgroup;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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

/// Resolved ids kept; past it the cache starts over (cgroups come and go with services).
const CACHE_MAX: usize = 8192;

/// How ids are turned into paths here.
enum Resolver {
    /// No cgroup v2 mounted: nothing resolves.
    None,
    /// By file handle ([`handle`]) on the hierarchy mounted at `root`.
    Handle { mount: handle::Mount, root: PathBuf },
    /// `/proc/<pid>/cgroup`, then the index of [`walk`] (`None`: its thread could not start).
    Fallback {
        root: PathBuf,
        walker: Option<walk::Walker>,
    },
}

impl Resolver {
    fn new() -> Resolver {
        let Some(root) = mount_point() else {
            return Resolver::None;
        };
        match handle::Mount::open(&root) {
            Ok(mount) if mount.works().unwrap_or(false) => Resolver::Handle { mount, root },
            _ => Resolver::fallback(root),
        }
    }

    fn fallback(root: PathBuf) -> Resolver {
        Resolver::Fallback {
            walker: walk::Walker::start(root.clone()).ok(),
            root,
        }
    }
}

/// A lookup's result.
enum Lookup {
    Path(String),
    /// The cgroup is gone: cached without a path.
    Gone,
    /// Not known now: this event has no path, a later one tries again.
    NotYet,
}

/// Resolves cgroup ids, with a cache.
pub struct Cache {
    resolver: Resolver,
    cache: HashMap<u64, Arc<Cgroup>>,
    last: Option<Arc<Cgroup>>,
    /// Events whose cgroup has no path.
    pub unresolved: u64,
}

impl Cache {
    pub fn new() -> Cache {
        Cache {
            resolver: Resolver::new(),
            cache: HashMap::new(),
            last: None,
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
                // Only a settled answer is kept at hand: one not known yet (its caller gone,
                // the tree's index not made) is asked again by the next event, whose caller
                // may still be there.
                if self.cache.contains_key(&id) {
                    self.last = Some(c.clone());
                }
                c
            }
        };
        if cgroup.path.is_none() {
            self.unresolved += 1;
        }
        cgroup
    }

    fn resolve(&mut self, id: u64, pid: u32) -> Arc<Cgroup> {
        match self.lookup(id, pid) {
            Lookup::Path(path) => self.insert(id, Some(path)),
            Lookup::Gone => self.insert(id, None),
            Lookup::NotYet => Arc::new(make(id, None)),
        }
    }

    fn lookup(&mut self, id: u64, pid: u32) -> Lookup {
        match &mut self.resolver {
            Resolver::None => Lookup::Gone,
            Resolver::Handle { mount, root } => match mount.resolve(id) {
                Ok(handle::Found::Path(path)) => Lookup::Path(path),
                Ok(handle::Found::Gone) => Lookup::Gone,
                // The capability was taken away since the start: fall back for good.
                Err(err) if handle::refused(&err) => {
                    self.resolver = Resolver::fallback(root.clone());
                    self.lookup(id, pid)
                }
                // Out of descriptors or memory for a moment.
                Err(_) => Lookup::NotYet,
            },
            Resolver::Fallback { root, walker } => {
                // The root needs no caller: it is the mount's own directory.
                if std::fs::metadata(&*root).is_ok_and(|m| m.ino() == id) {
                    return Lookup::Path("/".into());
                }
                if let Some(path) = from_proc(root, id, pid) {
                    return Lookup::Path(path);
                }
                match walker.as_mut().map(|w| w.lookup(id)) {
                    Some(walk::Answer::Path(path)) => Lookup::Path(path),
                    Some(walk::Answer::Gone) => Lookup::Gone,
                    Some(walk::Answer::Pending) | None => Lookup::NotYet,
                }
            }
        }
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
    let path = proc_path(&text)?;
    let dir = root.join(path.trim_start_matches('/'));
    (std::fs::metadata(dir).ok()?.ino() == id).then(|| path.to_string())
}

/// The v2 path in the text of a `/proc/<pid>/cgroup`, if it lies below the root: a process in
/// another cgroup namespace than the reader's is shown relative to the reader's namespace
/// root (`/../../kubepods/...`), which is no path below the root.
fn proc_path(text: &str) -> Option<&str> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let below = path.starts_with('/')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    below.then_some(path)
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
    /// An id that could not be resolved for an event whose caller has gone is asked again
    /// for the next event (it was kept at hand, unresolved, for every later event of that
    /// cgroup); the root cgroup resolves without any caller.
    #[test]
    fn an_unresolved_id_is_asked_again_by_the_next_event() {
        use std::os::unix::fs::MetadataExt as _;
        let root = super::mount_point().expect("a cgroup v2 hierarchy is mounted");
        let rel = format!("observer-unit-{}", std::process::id());
        let dir = root.join(&rel);
        std::fs::create_dir(&dir).expect("making a cgroup (as root)");
        // A process of this test's own in the new cgroup, ended by its closed stdin.
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        let root_id = std::fs::metadata(&root).unwrap().ino();
        let mut cache = super::Cache {
            resolver: super::Resolver::fallback(root.clone()),
            cache: super::HashMap::new(),
            last: None,
            unresolved: 0,
        };
        assert_eq!(cache.get(root_id, u32::MAX - 1).path.as_deref(), Some("/"));
        // No such process: /proc has nothing, and the tree's index may not be made yet.
        let first = cache.get(id, u32::MAX - 1);
        let second = cache.get(id, child.id());
        let want = format!("/{rel}");
        drop(child.stdin.take());
        let _ = child.wait();
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            second.path.as_deref(),
            Some(want.as_str()),
            "first: {first:?}"
        );
    }

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

    /// The cgroup v2 root and this process's cgroup (path, id), or `None` after saying why.
    fn own(test: &str) -> Option<(PathBuf, String, u64)> {
        let Some(root) = mount_point() else {
            crate::testenv::missing(test, "no cgroup v2 hierarchy in /proc/self/mountinfo");
            return None;
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = proc_path(&text).unwrap().to_string();
        let id = std::fs::metadata(root.join(path.trim_start_matches('/')))
            .unwrap()
            .ino();
        Some((root, path, id))
    }

    /// A handle cache, or `None` after saying why there is none (no `CAP_DAC_READ_SEARCH`).
    fn handle_cache(test: &str) -> Option<Cache> {
        let cache = Cache::new();
        if matches!(cache.resolver, Resolver::Handle { .. }) {
            return Some(cache);
        }
        crate::testenv::missing(
            test,
            "open_by_handle_at is refused (no CAP_DAC_READ_SEARCH)",
        );
        None
    }

    /// A cgroup directory of a test, removed when dropped.
    struct Made(PathBuf);

    impl Drop for Made {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn own_cgroup_resolves_by_handle_whoever_asks() {
        const TEST: &str = "cgroup::own_cgroup_resolves_by_handle_whoever_asks";
        let Some((_, path, id)) = own(TEST) else {
            return;
        };
        let Some(mut cache) = handle_cache(TEST) else {
            return;
        };
        // A pid that cannot exist: only the handle can find it.
        assert_eq!(cache.get(id, u32::MAX).path.as_deref(), Some(path.as_str()));
        assert_eq!(cache.get(1, u32::MAX).path.as_deref(), Some("/"));
        assert_eq!(cache.unresolved, 0);
        // An id no cgroup has.
        assert_eq!(cache.get(u64::MAX, u32::MAX).path, None);
        assert_eq!(cache.unresolved, 1);
    }

    #[test]
    fn made_cgroup_resolves_after_its_process_is_gone_and_not_after_rmdir() {
        const TEST: &str =
            "cgroup::made_cgroup_resolves_after_its_process_is_gone_and_not_after_rmdir";
        let Some((root, _, _)) = own(TEST) else {
            return;
        };
        let Some(mut cache) = handle_cache(TEST) else {
            return;
        };
        let name = format!("observer-unit-{}-handle", std::process::id());
        let made = Made(root.join(&name));
        let _ = std::fs::remove_dir(&made.0);
        if let Err(err) = std::fs::create_dir(&made.0) {
            return crate::testenv::missing(TEST, &format!("{}: {err}", made.0.display()));
        }
        let id = std::fs::metadata(&made.0).unwrap().ino();
        // A process that moves itself into the cgroup and exits.
        let procs = made.0.join("cgroup.procs");
        let child = std::process::Command::new("sh")
            .args(["-c", "echo 0 > \"$1\"", "sh"])
            .arg(&procs)
            .status()
            .unwrap();
        assert!(child.success(), "{child:?}");
        let c = cache.get(id, u32::MAX);
        assert_eq!(c.path, Some(format!("/{name}")));
        drop(made);
        // Removed: gone, from a cache that had not seen it.
        let mut fresh = handle_cache(TEST).unwrap();
        assert_eq!(fresh.get(id, std::process::id()).path, None);
        assert_eq!(fresh.unresolved, 1);
        let Resolver::Handle { mount, .. } = &fresh.resolver else {
            unreachable!()
        };
        assert_eq!(mount.resolve(id).unwrap(), handle::Found::Gone);
    }

    #[test]
    fn proc_paths_outside_the_root_are_refused() {
        assert_eq!(
            proc_path("0::/system.slice/a.service\n"),
            Some("/system.slice/a.service")
        );
        assert_eq!(proc_path("0::/\n"), Some("/"));
        assert_eq!(proc_path("1:name=systemd:/x\n0::/y\n"), Some("/y"));
        // A private cgroup namespace's view of a process outside it.
        assert_eq!(proc_path("0::/../../kubepods/pod1/c1\n"), None);
        assert_eq!(proc_path("0::/a/../b\n"), None);
        assert_eq!(proc_path("0::a\n"), None);
        assert_eq!(proc_path("1:cpu:/a\n"), None);
    }

    #[test]
    fn fallback_reads_proc_and_walks_off_the_event_thread() {
        const TEST: &str = "cgroup::fallback_reads_proc_and_walks_off_the_event_thread";
        let Some((root, path, id)) = own(TEST) else {
            return;
        };
        let bound = std::time::Duration::from_secs(20);
        let mut walker = walk::Walker::start(root.clone()).unwrap();
        assert_eq!(walker.lookup(id), walk::Answer::Pending);
        assert!(walker.wait_index(bound), "no index within {bound:?}");
        assert_eq!(walker.lookup(id), walk::Answer::Path(path.clone()));
        // An id no cgroup has: gone once a walk that began after the question has ended.
        assert_eq!(walker.lookup(u64::MAX), walk::Answer::Pending);
        assert!(walker.wait_index(bound), "no index within {bound:?}");
        assert_eq!(walker.lookup(u64::MAX), walk::Answer::Gone);
        // The cache in fallback mode: the caller's /proc/<pid>/cgroup.
        let mut cache = Cache {
            resolver: Resolver::fallback(root),
            ..Cache::new()
        };
        let c = cache.get(id, std::process::id());
        assert_eq!(c.path, Some(path));
        assert_eq!(cache.unresolved, 0);
    }

    /// Prints what one resolution costs (by handle, and a walk of this host's tree for
    /// comparison); asserts nothing about time.
    #[test]
    fn resolution_cost() {
        use std::io::Write as _;
        const TEST: &str = "cgroup::resolution_cost";
        let Some((root, path, id)) = own(TEST) else {
            return;
        };
        let Some(cache) = handle_cache(TEST) else {
            return;
        };
        let Resolver::Handle { mount, .. } = &cache.resolver else {
            unreachable!()
        };
        const N: u32 = 2000;
        let t = std::time::Instant::now();
        for _ in 0..N {
            assert_eq!(
                mount.resolve(id).unwrap(),
                handle::Found::Path(path.clone())
            );
        }
        let per = t.elapsed() / N;
        let t = std::time::Instant::now();
        let mut n = 0;
        walk::walk(&root, Path::new("/"), &mut |_, _| n += 1);
        let _ = writeln!(
            std::io::stderr(),
            "cgroup: {per:?} per resolution by handle; one walk of {n} cgroups: {:?}",
            t.elapsed()
        );
    }
}
