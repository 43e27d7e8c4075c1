//! The fallback when the kernel refuses lookups by handle (a run without
//! `CAP_DAC_READ_SEARCH`, such as `watch --no-conflicts`, which keeps no capability): an index
//! of every cgroup, id to path, made by walking the whole tree on a thread of its own, so the
//! event thread never walks.
//!
//! The event thread asks for a walk when an id is missing from the last index, and meanwhile
//! reports that event without a path (it is not cached: a later event of the same cgroup
//! tries again). An id still missing from an index whose walk began after the id was first
//! asked for belongs to a cgroup already removed. Walks run one after the other, and after
//! each the thread rests at least as long as the walk took (and at least [`REST`]), so a
//! stream of new cgroups costs at most half a CPU on a very large host, never the event
//! thread's time.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The shortest rest between two walks.
const REST: Duration = Duration::from_millis(10);
/// Ids waiting for a walk that are kept; past it the oldest questions are forgotten.
const WAITING_MAX: usize = 8192;

/// Every cgroup found by one walk.
struct Index {
    /// When the walk began.
    began: Instant,
    paths: HashMap<u64, String>,
}

/// What the index says of an id.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Path(String),
    /// Not in a walk that began after it was asked for: removed.
    Gone,
    /// Not known yet: a walk is asked for.
    Pending,
}

/// The walking thread, seen from the event thread.
pub struct Walker {
    ask: mpsc::SyncSender<()>,
    indexes: mpsc::Receiver<Index>,
    index: Option<Index>,
    /// Ids asked for and not found yet, with when they were first asked for.
    waiting: HashMap<u64, Instant>,
}

impl Walker {
    /// Starts the thread that walks the hierarchy mounted at `root`.
    pub fn start(root: PathBuf) -> std::io::Result<Walker> {
        // One question at a time is enough: a walk answers every id asked before it began.
        let (ask, questions) = mpsc::sync_channel::<()>(1);
        let (answers, indexes) = mpsc::channel();
        std::thread::Builder::new()
            .name("cgroup-walk".into())
            .spawn(move || {
                while questions.recv().is_ok() {
                    let began = Instant::now();
                    let mut paths = HashMap::new();
                    walk(&root, Path::new("/"), &mut |ino, path| {
                        paths.insert(ino, path.to_string());
                    });
                    if answers.send(Index { began, paths }).is_err() {
                        return;
                    }
                    std::thread::sleep(began.elapsed().max(REST));
                }
            })?;
        Ok(Walker {
            ask,
            indexes,
            index: None,
            waiting: HashMap::new(),
        })
    }

    /// What is known of `id`; asks for a walk when nothing is.
    pub fn lookup(&mut self, id: u64) -> Answer {
        if let Some(latest) = self.indexes.try_iter().last() {
            self.index = Some(latest);
        }
        if let Some(index) = &self.index {
            if let Some(path) = index.paths.get(&id) {
                self.waiting.remove(&id);
                return Answer::Path(path.clone());
            }
            if self
                .waiting
                .get(&id)
                .is_some_and(|&asked| index.began >= asked)
            {
                self.waiting.remove(&id);
                return Answer::Gone;
            }
        }
        if self.waiting.len() >= WAITING_MAX {
            self.waiting.clear();
        }
        self.waiting.entry(id).or_insert_with(Instant::now);
        // Full: a walk is already asked for and has not begun; it will answer this id too.
        let _ = self.ask.try_send(());
        Answer::Pending
    }

    /// Waits (at most `bound`) for the next index, for tests.
    #[cfg(test)]
    pub fn wait_index(&mut self, bound: Duration) -> bool {
        match self.indexes.recv_timeout(bound) {
            Ok(index) => {
                self.index = Some(index);
                true
            }
            Err(_) => false,
        }
    }
}

/// Calls `f(inode, path)` for every cgroup directory under `root` (`path` relative to it).
pub(super) fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(u64, &str)) {
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
