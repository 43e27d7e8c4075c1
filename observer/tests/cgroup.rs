//! The cgroup context of events and the `--cgroup` filter: children of the test move into
//! cgroup v2 directories named as docker and Kubernetes (containerd) name theirs, bind, and the
//! observer must report the exact cgroup id and path, container id, runtime and pod uid, and
//! show only what is under the `--cgroup` subtree; and a burst of fresh cgroups whose only
//! process binds and exits at once must each be reported with its exact path.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::expect::{cgroup_json, cgroup2_root};
use common::nobody::bind_in_cgroup;
use common::{Observer, Sock, bind_event, in_netns};
use serde_json::json;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// A cgroup subtree of this test, removed (deepest first) when dropped.
struct Tree {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Tree {
    fn new(name: &str) -> Tree {
        let root = cgroup2_root();
        let top = root.join(name);
        let _ = std::fs::remove_dir(&top);
        std::fs::create_dir(&top).unwrap_or_else(|e| panic!("{}: {e}", top.display()));
        Tree {
            root,
            dirs: vec![top],
        }
    }

    /// Creates `rel` (below the cgroup root) and its missing parents; returns its directory.
    fn make(&mut self, rel: &str) -> PathBuf {
        let mut dir = self.root.clone();
        for part in rel.trim_start_matches('/').split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                self.dirs.push(dir.clone());
            }
        }
        dir
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // The children that were in them have exited: the directories are empty cgroups.
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// Held by each test that runs an observer: every observer receives every bind on the host,
/// so one test's binds would be counted in the other's `filtered`.
static OBSERVING: Mutex<()> = Mutex::new(());

fn observing() -> MutexGuard<'static, ()> {
    OBSERVING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn events_carry_container_and_pod_and_the_filter_keeps_the_subtree() {
    let _observing = observing();
    in_netns("cgroup", |c| {
        let top = format!("observer-test-{}", std::process::id());
        let mut tree = Tree::new(&top);
        let id = format!("{:064x}", 0xc0ffee_u64 + u64::from(std::process::id()));
        let uid = "8f2d6c3e-1b7a-4e5f-9a0b-c1d2e3f4a5b6";
        let docker = format!("/{top}/system.slice/docker-{id}.scope");
        let pod = format!(
            "/{top}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        );
        let kube = format!("{pod}/cri-containerd-{id}.scope");
        let (docker_dir, kube_dir) = (tree.make(&docker), tree.make(&kube));

        let mut obs = Observer::watch(c, &["--cgroup", &format!("/{top}")]);
        // The test's own thread is outside the subtree: filtered out.
        let outside = Sock::tcp4();
        assert_eq!(outside.bind("127.0.0.1:7000"), 0);
        let a = bind_in_cgroup(c, addr("127.0.0.1:7001"), &docker_dir);
        let b = bind_in_cgroup(c, addr("127.0.0.1:7002"), &kube_dir);
        assert_eq!((a.errno, b.errno), (0, 0));
        obs.expect(&[
            bind_event(&a.caller, &a.sock, "127.0.0.1:7001")
                .bound("127.0.0.1:7001")
                .cgroup(cgroup_json(
                    &docker,
                    json!({"id": id, "runtime": "docker"}),
                    json!(null),
                )),
            bind_event(&b.caller, &b.sock, "127.0.0.1:7002")
                .bound("127.0.0.1:7002")
                .cgroup(cgroup_json(
                    &kube,
                    json!({"id": id, "runtime": "containerd"}),
                    json!(uid),
                )),
        ]);
        let summary = obs.stop();
        // Exactly the two in the subtree are events (the outside bind came first: `expect`
        // would have met it). `filtered` holds the outside bind and whatever else bound on the
        // host meanwhile: an observer sees every namespace, other processes' too.
        assert_eq!(summary["events"], 2, "{summary}");
        assert!(summary["filtered"].as_u64().unwrap() >= 1, "{summary}");
        assert_eq!(summary["cgroup_unresolved"], 0, "{summary}");
        drop(tree);
    });
}

/// How many fresh cgroups [`fresh_cgroups_resolve_after_their_process_is_gone`] makes.
const FRESH: usize = 200;

#[test]
fn fresh_cgroups_resolve_after_their_process_is_gone() {
    let _observing = observing();
    in_netns("cgroup-fresh", |c| {
        let top = format!("observer-fresh-{}", std::process::id());
        // Removes every cgroup below, also when an assertion fails.
        let mut tree = Tree::new(&top);
        let paths: Vec<String> = (0..FRESH).map(|i| format!("/{top}/c{i}")).collect();
        let mut obs = Observer::watch(c, &[]);
        // One cgroup after the other, each made just before its only process moves in,
        // binds once and exits; the test reaps it before making the next. The observer has
        // never seen the cgroup, and its process is gone by the time the event is read.
        let pids: Vec<u32> = paths
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let dir = tree.make(path);
                let child = bind_in_cgroup(c, addr(&format!("127.0.0.1:{}", 7100 + i)), &dir);
                assert_eq!(child.errno, 0, "bind in {}", dir.display());
                child.caller.pid
            })
            .collect();
        let events = obs.take(FRESH);
        let mut wrong = Vec::new();
        for ((event, pid), path) in events.iter().zip(&pids).zip(&paths) {
            assert_eq!(event["pid"], *pid, "{event}");
            let want = cgroup_json(path, json!(null), json!(null));
            if event["cgroup"] != want {
                wrong.push(format!("  want {want}\n  got  {}", event["cgroup"]));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {FRESH} events without their cgroup:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        let summary = obs.stop();
        assert_eq!(summary["cgroup_unresolved"], 0, "{summary}");
        drop(tree);
    });
}

#[test]
fn cgroup_filter_must_name_a_cgroup() {
    let dir = cgroup2_root().join("no/such/cgroup/anywhere");
    let dir = format!("(no directory {})", dir.display());
    common::refused(&[(
        &["watch", "--cgroup", "/no/such/cgroup/anywhere"],
        &["`/no/such/cgroup/anywhere` is not a cgroup", &dir],
    )]);
}
