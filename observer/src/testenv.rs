//! What a test does when the machine lacks something it needs (BTF at
//! `/sys/kernel/btf/vmlinux`, a cgroup v2 hierarchy, a kernel-function backend): it says so in
//! a `SKIP` line on stderr, or fails where the machine is expected to have it.
//!
//! The policy: the machines that develop and test this project have BTF and cgroup v2
//! (`shared/PLATFORM.md`), so under `CI=true` or `OBSERVER_REQUIRE_ALL=1` a missing one fails
//! the test. Elsewhere (a developer's kernel without BTF, say) the test prints
//! `SKIP <test>: <why>` and returns, which passes but is never silent.
//!
//! Shared by the unit tests (`crate::testenv`) and the integration tests (`tests/common`
//! includes this file), so both follow one policy.

use std::io::Write as _;

/// Whether a missing part of the environment fails the tests instead of skipping them.
pub fn require_all() -> bool {
    let set = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
    set("CI", "true") || set("OBSERVER_REQUIRE_ALL", "1")
}

/// Writes `SKIP <test>: <why>` to the process's stderr.
pub fn say_skipped(test: &str, why: &str) {
    // Written to the descriptor, not through `eprintln!`: the test harness captures that
    // macro's output of a passing test, and a skip nobody sees is a silent pass.
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// For a test that cannot run because `why` (what is missing): fails under
/// [`require_all`], else says it is skipped. The caller returns after it.
#[track_caller]
pub fn missing(test: &str, why: &str) {
    assert!(
        !require_all(),
        "{test}: {why} (CI=true or OBSERVER_REQUIRE_ALL=1: this machine must have it)"
    );
    say_skipped(test, why);
}
