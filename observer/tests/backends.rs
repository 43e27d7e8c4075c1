//! `--backend`: a backend named explicitly either starts (its start record names it and skips
//! nothing) or ends with one line saying why; the tracepoint backend starts everywhere; `auto`
//! starts the first backend the kernel accepts and names each it skipped, with the reason.
//! Needs root (eBPF).
//!
//! This machine's kernel refuses both kernel-function backends (shared/PLATFORM.md: fexit
//! loads fail with EPERM, there is no kprobe PMU), so here these tests cannot test those
//! backends: each such case prints a `SKIP` line naming why, and asserts what can be asserted
//! here exactly (the refusal is the one this kernel gives, and `auto` falls back to the
//! tracepoint backend naming both). `cargo xtask vm-test` proves the backends on kernels that
//! accept them.

#[path = "../src/testenv.rs"]
#[allow(dead_code)]
mod testenv;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use testenv::say_skipped;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// The perf PMU aya attaches kprobes through; a kernel without `CONFIG_KPROBES` lacks it.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// `observer watch --json --backend <backend> --duration 0.2`: status, stdout, stderr.
fn watch(backend: &str) -> (Option<i32>, String, String) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "loads eBPF programs: run as root"
    );
    let out = Command::new(OBSERVER)
        .args(["watch", "--json", "--backend", backend, "--duration", "0.2"])
        .output()
        .expect("observer runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start_record(stdout: &str) -> Value {
    let first = stdout.lines().next().expect("a start record");
    let start: Value = serde_json::from_str(first).expect("JSON");
    assert_eq!(start["type"], "start", "{start}");
    start
}

/// How a backend named explicitly ended: started, or refused with this reason.
enum Outcome {
    Started,
    Refused(String),
}

/// `--backend <backend>` either starts with `hook` first and nothing skipped, or fails with
/// exit 1, no start record and exactly one line.
fn explicit(backend: &str, hook: &str) -> Outcome {
    let (code, stdout, stderr) = watch(backend);
    if code == Some(0) {
        let start = start_record(&stdout);
        assert_eq!(start["backend"], backend, "{start}");
        assert_eq!(start["hooks"][0], hook, "{start}");
        assert_eq!(start["skipped_backends"], json!([]), "{start}");
        return Outcome::Started;
    }
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "no start record: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let prefix = format!("observer: the {backend} backend is not available here: ");
    let reason = stderr
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("not `{prefix}<reason>`: {stderr}"));
    Outcome::Refused(reason.to_string())
}

/// The reasons a kernel refuses an fexit program's load (shared/KERNEL-ERRNOS.md): not
/// allowed (EPERM, EACCES) or not supported (ENOTSUPP, 524).
fn fexit_refusals() -> Vec<String> {
    ["EPERM", "EACCES", "ENOTSUPP"]
        .map(|e| format!("BPF_PROG_LOAD refused: {e} (fexit_inet_bind)"))
        .into()
}

fn kprobe_pmu_missing() -> bool {
    !Path::new(KPROBE_PMU).exists()
}

#[test]
fn tracepoint_backend_starts_and_skips_nothing() {
    let (code, stdout, stderr) = watch("tracepoint");
    assert_eq!(code, Some(0), "{stderr}");
    let start = start_record(&stdout);
    assert_eq!(start["backend"], "tracepoint", "{start}");
    assert_eq!(
        start["hooks"],
        json!([
            "tracepoint:sys_exit_bind",
            "tracepoint:sys_exit_listen",
            "tracepoint:sys_exit_connect"
        ]),
        "{start}"
    );
    assert_eq!(start["skipped_backends"], json!([]), "{start}");
}

#[test]
fn fexit_backend_starts_or_the_kernel_refuses_its_load() {
    match explicit("fexit", "fexit:inet_bind") {
        Outcome::Started => {}
        Outcome::Refused(reason) => {
            assert!(
                fexit_refusals().contains(&reason),
                "not a refusal of the load by the kernel: {reason}"
            );
            say_skipped(
                "backends::fexit",
                &format!(
                    "the fexit backend is not tested here: this kernel refuses it ({reason}); \
                     `cargo xtask vm-test` tests it"
                ),
            );
        }
    }
}

#[test]
fn kprobe_backend_starts_unless_the_kernel_has_no_kprobes() {
    let outcome = explicit("kprobe", "kretprobe:inet_bind");
    if !kprobe_pmu_missing() {
        assert!(
            matches!(outcome, Outcome::Started),
            "{KPROBE_PMU} exists, yet the kprobe backend did not start"
        );
        return;
    }
    let Outcome::Refused(reason) = outcome else {
        panic!("the kprobe backend started without {KPROBE_PMU}");
    };
    assert_eq!(
        reason,
        format!(
            "attaching kprobe:inet_bind: `{KPROBE_PMU}`: No such file or directory (os error 2)"
        )
    );
    say_skipped(
        "backends::kprobe",
        &format!(
            "the kprobe backend is not tested here: {KPROBE_PMU} is missing (no CONFIG_KPROBES); \
             `cargo xtask vm-test` tests it"
        ),
    );
}

/// `auto` tries fexit, then kprobe, then the tracepoint backend. What it must pick and skip
/// follows from how each backend named explicitly ends here.
#[test]
fn auto_starts_the_first_accepted_backend_and_names_the_refused_ones() {
    let mut skipped = Vec::new();
    let mut expect = None;
    match explicit("fexit", "fexit:inet_bind") {
        Outcome::Started => expect = Some(("fexit", "fexit:inet_bind")),
        Outcome::Refused(reason) => {
            assert!(fexit_refusals().contains(&reason), "{reason}");
            skipped.push(json!({"backend": "fexit", "reason": reason}));
        }
    }
    if expect.is_none() {
        if kprobe_pmu_missing() {
            let reason = format!(
                "attaching kprobe:inet_bind: no kprobe support in this kernel ({KPROBE_PMU} is \
                 missing)"
            );
            skipped.push(json!({"backend": "kprobe", "reason": reason}));
        } else {
            expect = Some(("kprobe", "kretprobe:inet_bind"));
        }
    }
    let (backend, hook) = expect.unwrap_or(("tracepoint", "tracepoint:sys_exit_bind"));

    let (code, stdout, stderr) = watch("auto");
    assert_eq!(code, Some(0), "{stderr}");
    let start = start_record(&stdout);
    assert_eq!(start["backend"], backend, "{start}");
    assert_eq!(start["hooks"][0], hook, "{start}");
    assert_eq!(start["skipped_backends"], Value::from(skipped), "{start}");
}

#[test]
fn unknown_backend_is_a_usage_error() {
    let (code, stdout, stderr) = watch("lsm");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("observer: invalid value 'lsm'"),
        "{stderr}"
    );
}
