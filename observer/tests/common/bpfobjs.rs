//! The kernel's BPF objects as seen from outside the observer: which programs, maps, links and
//! BTF objects a process holds ([`Held::by_pid`]), which are loaded on the host (`bpftool`),
//! and what is pinned under `/sys/fs/bpf` ([`pinned`]). The detach tests use them to prove
//! that an observer leaves nothing behind, however it ends.
//!
//! Debian's `bpftool` is built without its BPF skeletons, so `bpftool prog show` has no `pids`
//! field here: what a process holds is read from its own `/proc/PID/fdinfo` instead (the
//! kernel writes `prog_id`, `map_id`, `link_id` or `btf_id` there for each BPF descriptor),
//! completed with the maps and BTF its programs reference (`bpftool prog show`).

use super::BOUND;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where BPF objects are pinned.
pub const BPFFS: &str = "/sys/fs/bpf";

/// How often [`wait_unloaded`] asks bpftool again.
const POLL: Duration = Duration::from_millis(50);

/// Ids of BPF objects, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub progs: BTreeSet<u32>,
    pub maps: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
    pub btfs: BTreeSet<u32>,
}

impl Ids {
    /// The ids of `self` that are also in `other`.
    pub fn common(&self, other: &Ids) -> Ids {
        let both = |a: &BTreeSet<u32>, b: &BTreeSet<u32>| a.intersection(b).copied().collect();
        Ids {
            progs: both(&self.progs, &other.progs),
            maps: both(&self.maps, &other.maps),
            links: both(&self.links, &other.links),
            btfs: both(&self.btfs, &other.btfs),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.progs.is_empty()
            && self.maps.is_empty()
            && self.links.is_empty()
            && self.btfs.is_empty()
    }

    /// What the process `pid` holds through its descriptors, plus the maps and BTF its
    /// programs reference (held by the kernel for them).
    pub fn held_by(pid: u32) -> Ids {
        let mut held = Ids::default();
        let dir = format!("/proc/{pid}/fdinfo");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{dir}: {err}"));
        for entry in entries {
            // A descriptor closed while listing is simply not held any more.
            let Ok(text) = std::fs::read_to_string(entry.expect("reading fdinfo").path()) else {
                continue;
            };
            for line in text.lines() {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let Ok(id) = value.trim().parse::<u32>() else {
                    continue;
                };
                match key {
                    "prog_id" => held.progs.insert(id),
                    "map_id" => held.maps.insert(id),
                    "link_id" => held.links.insert(id),
                    "btf_id" => held.btfs.insert(id),
                    _ => false,
                };
            }
        }
        for prog in bpftool(&["prog", "show"]) {
            if !prog["id"]
                .as_u64()
                .is_some_and(|id| held.progs.contains(&(id as u32)))
            {
                continue;
            }
            for map in prog["map_ids"].as_array().into_iter().flatten() {
                held.maps.insert(map.as_u64().expect("a map id") as u32);
            }
            if let Some(btf) = prog["btf_id"].as_u64() {
                held.btfs.insert(btf as u32);
            }
        }
        held
    }

    /// Every BPF object loaded on the host now (BTF: only objects loaded by programs, not the
    /// kernel's and its modules' own).
    pub fn loaded() -> Ids {
        let ids = |kind: &str| -> BTreeSet<u32> {
            bpftool(&[kind, "show"])
                .iter()
                .filter(|o| o["kernel"] != true)
                .map(|o| o["id"].as_u64().expect("an id") as u32)
                .collect()
        };
        Ids {
            progs: ids("prog"),
            maps: ids("map"),
            links: ids("link"),
            btfs: ids("btf"),
        }
    }
}

/// `bpftool --json <args>` as a JSON array; panics with bpftool's message if it fails.
fn bpftool(args: &[&str]) -> Vec<Value> {
    let out = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("running bpftool ({err}): Debian's `bpftool` package, installed by `cargo xtask setup`")
        });
    assert!(
        out.status.success(),
        "bpftool {}: {:?}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(items)) => items,
        // Nothing loaded of that kind: bpftool prints `null` or nothing on some versions.
        Ok(Value::Null) => Vec::new(),
        _ if out.stdout.iter().all(u8::is_ascii_whitespace) => Vec::new(),
        other => panic!("bpftool {}: not a JSON array: {other:?}", args.join(" ")),
    }
}

/// Waits (bounded) until none of `ids` is loaded any more: the kernel frees an object when its
/// last reference goes, which after a process's exit may take an RCU grace period or a
/// workqueue run. Panics with what is still loaded after [`BOUND`].
pub fn wait_unloaded(ids: &Ids) {
    let deadline = Instant::now() + BOUND;
    loop {
        let left = ids.common(&Ids::loaded());
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded {BOUND:?} after the observer exited: {left:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Every path under `/sys/fs/bpf` (empty if it is not mounted).
pub fn pinned() -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    walk(Path::new(BPFFS), &mut found);
    found
}

fn walk(dir: &Path, found: &mut BTreeSet<PathBuf>) {
    // Another process may remove an entry while we list: what is gone is not pinned.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, found);
        }
        found.insert(path);
    }
}
