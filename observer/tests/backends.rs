//! `--backend`: a backend named explicitly either starts (its start record names it and skips
//! nothing) or ends with one line saying why; the tracepoint backend starts everywhere. Needs
//! root (eBPF). Which kernel-function backend this kernel accepts is the kernel's business
//! (this machine's refuses both, PLATFORM.md); `cargo xtask vm-test` proves them on kernels
//! that accept them.

use std::process::Command;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "loads eBPF programs: run as root"
    );
}

/// `observer watch --json --backend <backend> --duration 0.2`: status, stdout, stderr.
fn watch(backend: &str) -> (Option<i32>, String, String) {
    require_root();
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

fn start_record(stdout: &str) -> serde_json::Value {
    let first = stdout.lines().next().expect("a start record");
    let start: serde_json::Value = serde_json::from_str(first).expect("JSON");
    assert_eq!(start["type"], "start", "{start}");
    start
}

#[test]
fn tracepoint_backend_starts_and_skips_nothing() {
    let (code, stdout, stderr) = watch("tracepoint");
    assert_eq!(code, Some(0), "{stderr}");
    let start = start_record(&stdout);
    assert_eq!(start["backend"], "tracepoint", "{start}");
    assert_eq!(start["skipped_backends"], serde_json::json!([]), "{start}");
}

#[test]
fn kernel_function_backends_start_or_say_why_in_one_line() {
    for (backend, hook) in [
        ("fexit", "fexit:inet_bind"),
        ("kprobe", "kretprobe:inet_bind"),
    ] {
        let (code, stdout, stderr) = watch(backend);
        if code == Some(0) {
            let start = start_record(&stdout);
            assert_eq!(start["backend"], backend, "{start}");
            assert_eq!(start["hooks"][0], hook, "{start}");
        } else {
            assert_eq!(code, Some(1), "{stderr}");
            assert!(stdout.is_empty(), "no start record: {stdout}");
            let prefix = format!("observer: the {backend} backend is not available here: ");
            assert!(stderr.starts_with(&prefix), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
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
