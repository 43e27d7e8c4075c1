//! The scenario workload against the real kernel: every step must give Linux's declared
//! result without the observer, and with the observer every bind/listen step must be seen
//! exactly once, exactly as the kernel reported it. Needs root (namespaces, eBPF).

use observer::scenarios::{StepOutcome, catalog};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create network namespaces and load eBPF programs: run them as root"
    );
}

#[test]
fn every_step_gives_the_declared_result() {
    require_root();
    let out = Command::new(OBSERVER)
        .args(["scenarios", "run", "--json"])
        .output()
        .expect("run observer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let outcomes: Vec<StepOutcome> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("step record"))
        .collect();
    let declared: usize = catalog::all().iter().map(|s| s.steps.len()).sum();
    assert_eq!(
        outcomes.len(),
        declared,
        "one record per declared step; stderr: {stderr}"
    );
    let differing: Vec<String> = outcomes
        .iter()
        .filter(|o| o.errno != o.expect)
        .map(|o| {
            format!(
                "{} step {} `{}`: declared {}, kernel {}",
                o.scenario, o.step, o.call, o.expect, o.errno
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "the kernel disagrees:\n{}",
        differing.join("\n")
    );
    assert!(
        out.status.success(),
        "exit status {}; stderr: {stderr}",
        out.status
    );
    // Each scenario ran in one private namespace, never in the host's. (Inode numbers of
    // destroyed namespaces can be reused, so scenarios are not compared with each other.)
    let host = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .expect("own netns");
    for s in catalog::all() {
        let ns: std::collections::BTreeSet<u64> = outcomes
            .iter()
            .filter(|o| o.scenario == s.name)
            .map(|o| o.netns)
            .collect();
        assert_eq!(ns.len(), 1, "{}: namespaces {ns:?}", s.name);
        assert!(
            !ns.contains(&host),
            "{} ran in the host's namespace",
            s.name
        );
    }
}

#[test]
fn the_observer_sees_every_step_exactly() {
    require_root();
    let out = Command::new(OBSERVER)
        .arg("demo")
        .output()
        .expect("run observer demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let scenarios = catalog::all();
    let observed: usize = scenarios
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|s| s.act.is_observed_with(s.expect))
        .count();
    let failing = scenarios.iter().filter(|s| !s.claim_holds).count();
    // Every call declared to fail declares the rule its explanation must name.
    let declared: usize = scenarios
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|s| s.act.is_observed_with(s.expect) && s.rule.is_some())
        .count();
    let failed_calls = scenarios
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|s| s.act.is_observed_with(s.expect) && s.expect != 0)
        .count();
    assert_eq!(
        declared, failed_calls,
        "a failing call without a declared rule"
    );
    assert!(declared >= 15, "{declared} explanations declared");
    let total = format!(
        "{} scenarios, {observed} observed calls: observer matched the kernel in {observed}/{observed}, 0 extra events; \
         its explanation named the declared rule in {declared}/{declared} failed calls; \
         kernel matched Linux's declared result in {observed}/{observed}; the note's claim does not hold on Linux in {failing} (",
        scenarios.len()
    );
    assert!(
        stdout.contains(&total),
        "expected `{total}` in:\n{stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("OBSERVER WRONG")
            && !stdout.contains("EXTRA EVENT")
            && !stdout.contains("EXPLANATION WRONG"),
        "{stdout}"
    );
    // Each failed call is shown with its explanation, naming the declared rule.
    assert_eq!(
        stdout.matches(", as declared").count(),
        declared,
        "{stdout}"
    );
    assert!(
        stdout.contains("explained: rule privileged-port, as declared")
            && stdout.contains("explained: rule reuseaddr-vs-listener, as declared"),
        "{stdout}"
    );
    assert!(out.status.success(), "exit status {}", out.status);
}

#[test]
fn the_demo_json_counts_matched_explanations() {
    require_root();
    let out = Command::new(OBSERVER)
        .args([
            "demo",
            "--json",
            "any-then-loopback-reuseaddr-bound",
            "non-local-address",
            "reuseport-two-processes",
        ])
        .output()
        .expect("run observer demo --json");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("verdict record"))
        .collect();
    assert_eq!(verdicts.len(), 3, "{stdout}");
    for (v, declared) in verdicts.iter().zip([1, 1, 0]) {
        assert_eq!(v["pass"], true, "{v}");
        assert_eq!(v["explanations_declared"], declared, "{v}");
        assert_eq!(v["explanations_matched"], declared, "{v}");
        // The kernel walks served: nothing to note.
        assert_eq!(v["notes"], serde_json::json!([]), "{v}");
    }
    assert!(out.status.success(), "exit status {}", out.status);
}

#[test]
fn unknown_scenario_is_a_usage_error() {
    let out = Command::new(OBSERVER)
        .args(["scenarios", "run", "no-such-scenario"])
        .output()
        .expect("run observer");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "observer: unknown scenario no-such-scenario (see `observer scenarios list`)"
    );
    assert!(out.stdout.is_empty());
}
