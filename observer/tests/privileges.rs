//! Without the capabilities it needs the observer says which are missing, in one line, and
//! exits 1. Uses `setpriv` (util-linux) to start it with fewer privileges; needs root to do so.

use std::process::Command;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");
const MESSAGE: &str = "observer: missing CAP_BPF and CAP_PERFMON: run as root, or grant CAP_BPF and \
                       CAP_PERFMON (kernels before 5.8: CAP_SYS_ADMIN)";

fn check(setpriv_args: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test drops privileges from root: run as root"
    );
    let out = Command::new("setpriv")
        .args(setpriv_args)
        .args([OBSERVER, "watch", "--json", "--duration", "1"])
        .output()
        .expect("setpriv (util-linux) must be installed");
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{MESSAGE}\n"));
    assert!(
        out.stdout.is_empty(),
        "no start record without the programs"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unprivileged_user_gets_one_line() {
    check(&[
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]);
}

#[test]
fn root_without_bpf_capabilities_gets_one_line() {
    check(&["--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin"]);
}
