//! However `observer watch` ends — SIGINT, SIGTERM, `--duration`, a closed output pipe, or
//! `kill -9` — it leaves nothing in the kernel: every program, map, link and BTF object it held
//! is gone once it has exited (the kernel frees them with the last reference, asynchronously
//! after a kill, hence a bounded poll), and nothing new is pinned under `/sys/fs/bpf`. The four
//! clean ends also exit 0, and those that can still write print the summary.
//!
//! Each test runs its own observer filtered on its own network namespace and looks only at the
//! ids that observer's process held, so other observers on the host do not matter.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::bpfobjs::{self, Ids};
use common::{Observer, Stdout, in_netns, no_forks};
use std::os::unix::process::ExitStatusExt;

/// How a run ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Signal(libc::c_int),
    Duration,
    ClosedOutput,
    Kill,
}

/// Starts an observer, checks what it holds, ends it the `end` way, and checks that what it
/// held is unloaded and that nothing new is pinned.
fn leaves_nothing_behind(thread: &str, end: End) {
    in_netns(thread, |c| {
        let pinned_before = bpfobjs::pinned();
        let netns = c.netns.to_string();
        let mut args = vec!["watch", "--json", "--netns", &netns];
        if let End::Duration = end {
            args.extend(["--duration", "1"]);
        }
        let stdout = match end {
            End::ClosedOutput => Stdout::CloseWhenTold,
            _ => Stdout::Read,
        };
        let mut obs = Observer::start(&args, stdout);
        let held = Ids::held_by(obs.pid());
        // One program and one link per hook of the start record, and the maps they use: the
        // lookup must see what there is, or the end check below would prove nothing.
        let hooks = obs.start["hooks"].as_array().expect("hooks").len();
        assert_eq!(held.progs.len(), hooks, "programs held: {held:?}");
        assert_eq!(held.links.len(), hooks, "links held: {held:?}");
        assert!(!held.maps.is_empty(), "no maps held: {held:?}");
        assert!(!held.btfs.is_empty(), "no BTF held: {held:?}");
        assert_eq!(held.common(&Ids::loaded()), held, "held but not loaded?");

        match end {
            End::Signal(sig) => {
                let summary = obs.stop_with(sig);
                assert_eq!(summary["type"], "summary", "{summary}");
                assert_eq!(summary["events"], 0, "{summary}");
            }
            End::Duration => {
                let summary = obs.finish();
                assert_eq!(summary["reason"], "duration", "{summary}");
                assert_eq!(summary["events"], 0, "{summary}");
            }
            End::ClosedOutput => {
                obs.close_stdout();
                obs.wait_stdout_closed();
                // No copy of the read end (in a child another test forks) may keep it open.
                let _no_forks = no_forks();
                let (status, stderr) = obs.wait_exit();
                assert_eq!(status.code(), Some(0), "stderr: {stderr}");
            }
            End::Kill => {
                obs.signal(libc::SIGKILL);
                let (status, stderr) = obs.wait_exit();
                assert_eq!(status.signal(), Some(libc::SIGKILL), "stderr: {stderr}");
            }
        }

        bpfobjs::wait_unloaded(&held);
        let new: Vec<_> = bpfobjs::pinned()
            .difference(&pinned_before)
            .cloned()
            .collect();
        assert!(
            new.is_empty(),
            "pinned under {} since the start: {new:?}",
            bpfobjs::BPFFS
        );
    });
}

#[test]
fn sigint_leaves_nothing_behind() {
    leaves_nothing_behind("detach-sigint", End::Signal(libc::SIGINT));
}

#[test]
fn sigterm_leaves_nothing_behind() {
    leaves_nothing_behind("detach-sigterm", End::Signal(libc::SIGTERM));
}

#[test]
fn duration_leaves_nothing_behind() {
    leaves_nothing_behind("detach-duration", End::Duration);
}

#[test]
fn closed_output_leaves_nothing_behind() {
    leaves_nothing_behind("detach-closed", End::ClosedOutput);
}

#[test]
fn kill_9_leaves_nothing_behind() {
    leaves_nothing_behind("detach-kill", End::Kill);
}
