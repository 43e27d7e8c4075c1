//! `cargo xtask vm-test`: the scenario checks on Debian's own kernels, booted under qemu, under
//! every backend, plus the tracepoint backend on this host; one table, any mismatch fails.
//!
//! The host kernel cannot load fexit programs or attach kprobes, so the kernel-function
//! backends are proved in guests: Debian's `linux-image-*-cloud-amd64` for 6.1 (the old
//! `inet_sock` bitfield layout) and 6.12 (the `inet_flags` word, and io_uring `IORING_OP_BIND`).
//! Each guest is an initramfs of busybox-static and a static (musl) observer, booted with TCG;
//! its `/init` ([`INIT`]) runs the checks, prints what it found on the serial console, prints
//! its exit status, and powers off. Downloads and unpacked kernels are cached in `target/vm`.

use crate::setup::apt_install;
use crate::util::{cargo, output, run};
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian meta-packages naming the current kernel of each series (resolved through apt).
const KERNELS: [(&str, &str); 2] = [
    ("6.1", "linux-image-cloud-amd64"),
    ("6.12", "linux-image-6.12-cloud-amd64"),
];
const MUSL: &str = "x86_64-unknown-linux-musl";
/// A guest that has not powered off by then is stuck (a run takes about 20 s).
const GUEST_LIMIT: Duration = Duration::from_secs(600);
/// Modules `/init` loads, in dependency order: sock_diag's TCP and UDP handlers.
const DIAG_MODULES: &str = "inet_diag tcp_diag udp_diag";
/// Backends run in each guest, in this order.
const GUEST_BACKENDS: [&str; 3] = ["fexit", "kprobe", "tracepoint"];

/// The guest's `/init`: mount what the observer needs, run every backend's checks, report.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
status=0
echo "VMTEST kernel $(uname -r)"
for m in DIAG_MODULES; do
  insmod /lib/modules/$(uname -r)/$m.ko || { status=1; echo "VMTEST failed insmod $m"; }
done
/observer watch --json --backend auto --duration 0.01 > /tmp/auto.json 2> /tmp/auto.err
echo "VMTEST auto $(head -n 1 /tmp/auto.json)"
for backend in BACKENDS; do
  /observer demo --json --backend $backend > /tmp/out.json 2> /tmp/err.txt
  rc=$?
  sed "s/^/VMTEST verdict /" /tmp/out.json
  if [ $rc -ne 0 ]; then
    status=1
    echo "VMTEST failed $backend $rc $(tr '\n' ' ' < /tmp/err.txt)"
  fi
done
/observer scenarios io-uring-check > /tmp/uring.txt 2>&1
echo "VMTEST io_uring $? $(tr '\n' ' ' < /tmp/uring.txt)"
/observer scenarios connect-check > /tmp/connect.txt 2>&1
echo "VMTEST connect $? $(tr '\n' ' ' < /tmp/connect.txt)"
echo "VMTEST status $status"
poweroff -f
"#;

pub fn vm_test() -> Result<()> {
    let started = Instant::now();
    apt_install(&["qemu-system-x86", "busybox-static", "cpio"])?;
    musl_target()?;
    let root = crate::root()?;
    let vm_dir = root.join("target/vm");
    fs::create_dir_all(&vm_dir)?;
    run(cargo().current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "observer",
        "--target",
        MUSL,
    ]))?;
    let observer = root.join(format!("target/{MUSL}/release/observer"));
    let kernels = KERNELS
        .iter()
        .map(|(series, meta)| Ok((*series, kernel(&vm_dir, meta)?)))
        .collect::<Result<Vec<_>>>()?;
    let initramfs = build_initramfs(&vm_dir, &observer, &kernels)?;

    let mut table = Table::default();
    for (series, vmlinuz) in &kernels {
        let (series, vmlinuz) = (*series, vmlinuz.as_path());
        let t = Instant::now();
        let (console, failure) = boot(&vm_dir, series, vmlinuz, &initramfs)?;
        eprintln!(
            "xtask: {series} guest ran in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        table.guest(series, &console);
        table.failures.extend(failure);
    }
    let host = Command::new(&observer)
        .args(["demo", "--json", "--backend", "tracepoint"])
        .output()
        .context("running the observer on the host")?;
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let column = format!("host {}/tracepoint", kernel.trim());
    table.verdicts(&column, &String::from_utf8_lossy(&host.stdout));
    if !host.status.success() {
        table.failures.push(format!(
            "host tracepoint: exit {} {}",
            host.status,
            String::from_utf8_lossy(&host.stderr).trim()
        ));
    }
    print!("{}", table.render());
    eprintln!(
        "xtask: vm-test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if table.failures.is_empty() {
        Ok(())
    } else {
        bail!("vm-test failed:\n  {}", table.failures.join("\n  "))
    }
}

/// Installs the musl standard library when it is missing.
fn musl_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]));
    if installed.is_some_and(|t| t.lines().any(|l| l.trim() == MUSL)) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", MUSL]))
}

/// The current package the meta-package depends on, downloaded and unpacked (cached); returns
/// the path of its `vmlinuz`.
fn kernel(vm_dir: &Path, meta: &str) -> Result<PathBuf> {
    let resolve = || {
        output(Command::new("apt-cache").args(["depends", meta])).and_then(|deps| {
            deps.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-"))
                .map(str::to_string)
        })
    };
    let package = match resolve() {
        Some(p) => p,
        None => {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            resolve().with_context(|| format!("apt does not know {meta}"))?
        }
    };
    let debs = vm_dir.join("debs");
    let unpacked = vm_dir.join("kernels").join(&package);
    if !unpacked.join("boot").is_dir() {
        fs::create_dir_all(&debs)?;
        let prefix = format!("{package}_");
        let cached = |dir: &Path| -> Option<PathBuf> {
            fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
        };
        let deb = match cached(&debs) {
            Some(deb) => deb,
            None => {
                run(Command::new("apt-get")
                    .current_dir(&debs)
                    .args(["download", &package]))?;
                cached(&debs).with_context(|| format!("apt-get download {package} left no .deb"))?
            }
        };
        let tmp = vm_dir.join("kernels").join(format!("{package}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
        let _ = fs::remove_dir_all(&unpacked);
        fs::rename(&tmp, &unpacked)?;
    }
    fs::read_dir(unpacked.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {package}"))
}

/// An uncompressed newc initramfs: busybox, the observer, `/init`, and each kernel's
/// sock_diag modules.
fn build_initramfs(vm_dir: &Path, observer: &Path, kernels: &[(&str, PathBuf)]) -> Result<PathBuf> {
    let dir = vm_dir.join("initramfs");
    let _ = fs::remove_dir_all(&dir);
    for sub in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox-static is not installed")?;
    fs::copy(busybox, dir.join("bin/busybox"))?;
    fs::copy(observer, dir.join("observer"))?;
    for (_, vmlinuz) in kernels {
        diag_modules(vmlinuz, &dir)?;
    }
    let init = INIT
        .replace("BACKENDS", &GUEST_BACKENDS.join(" "))
        .replace("DIAG_MODULES", DIAG_MODULES);
    fs::write(dir.join("init"), init)?;
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(dir.join("init"), fs::Permissions::from_mode(0o755))?;
    let image = vm_dir.join("initramfs.cpio");
    let out = fs::File::create(&image)?;
    let mut find = Command::new("find")
        .arg(".")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("running find")?;
    let status = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&dir)
        .stdin(find.stdout.take().context("find's stdout")?)
        .stdout(out)
        .status()
        .context("running cpio")?;
    if !find.wait()?.success() || !status.success() {
        bail!("building the initramfs failed");
    }
    Ok(image)
}

/// The sock_diag modules a conflict lookup asks the kernel for (Debian builds them as
/// modules; a host loads them on the first request, a guest with no `/lib/modules` cannot),
/// copied uncompressed from the unpacked package next to `vmlinuz` into
/// `<initramfs>/lib/modules/<release>/`, where `/init` loads them in [`DIAG_MODULES`] order.
fn diag_modules(vmlinuz: &Path, initramfs: &Path) -> Result<()> {
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .with_context(|| format!("no release in {}", vmlinuz.display()))?;
    let package = vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("the kernel's package directory")?;
    let from = package.join(format!("lib/modules/{release}/kernel/net/ipv4"));
    let to = initramfs.join(format!("lib/modules/{release}"));
    fs::create_dir_all(&to)?;
    for module in DIAG_MODULES.split(' ') {
        let plain = from.join(format!("{module}.ko"));
        let dest = to.join(format!("{module}.ko"));
        if plain.exists() {
            fs::copy(&plain, &dest)?;
            continue;
        }
        let xz = from.join(format!("{module}.ko.xz"));
        let out = fs::File::create(&dest)?;
        let status = Command::new("xz")
            .args(["-dc"])
            .arg(&xz)
            .stdout(out)
            .status()
            .context("running xz")?;
        if !status.success() {
            bail!("xz -dc {} failed ({status})", xz.display());
        }
    }
    Ok(())
}

/// Boots one guest and returns its console output (also kept in `target/vm/<series>.log`) and,
/// unless it reported status 0, what went wrong.
fn boot(
    vm_dir: &Path,
    series: &str,
    vmlinuz: &Path,
    initramfs: &Path,
) -> Result<(String, Option<String>)> {
    let log = vm_dir.join(format!("{series}.log"));
    // coreutils' timeout ends a guest that hangs (exit 124).
    let mut child = Command::new("timeout")
        .arg(GUEST_LIMIT.as_secs().to_string())
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    eprintln!(
        "xtask: booting {} (console in {})",
        vmlinuz.display(),
        log.display()
    );
    let status = child.wait().context("waiting for qemu")?;
    // The guest's own status is its `VMTEST status N` line (Debian's kernels have no
    // /dev/port, so isa-debug-exit cannot carry it); qemu itself must end cleanly.
    let failure = (!status.success()).then(|| {
        format!(
            "qemu for {series} exited with {status} (124: no power-off within {GUEST_LIMIT:?}); \
             console in {}",
            log.display()
        )
    });
    Ok((
        String::from_utf8_lossy(&fs::read(&log)?).into_owned(),
        failure,
    ))
}

/// Verdicts by scenario and column (`<kernel>/<backend>`), and every failure found.
#[derive(Default)]
struct Table {
    columns: Vec<String>,
    rows: BTreeMap<String, BTreeMap<String, String>>,
    failures: Vec<String>,
}

impl Table {
    /// Reads one guest's console: its verdicts, its status, the io_uring and connect checks.
    fn guest(&mut self, series: &str, console: &str) {
        let lines: Vec<&str> = console
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix("VMTEST "))
            .collect();
        let kernel = lines
            .iter()
            .find_map(|l| l.strip_prefix("kernel "))
            .unwrap_or(series);
        for backend in GUEST_BACKENDS {
            let column = format!("{kernel}/{backend}");
            let verdicts: String = lines
                .iter()
                .filter_map(|l| l.strip_prefix("verdict "))
                .filter(|l| l.contains(&format!("\"backend\":\"{backend}\"")))
                .map(|l| format!("{l}\n"))
                .collect();
            self.verdicts(&column, &verdicts);
        }
        for line in &lines {
            if let Some(auto) = line.strip_prefix("auto ") {
                eprintln!("xtask: {kernel} auto start record: {auto}");
            } else if let Some(failed) = line.strip_prefix("failed ") {
                self.failures.push(format!("{kernel}: {failed}"));
            } else if let Some(connect) = line.strip_prefix("connect ") {
                // Every backend loads in the guests: each must have reported exactly the
                // failed connect.
                eprintln!("xtask: {kernel} connect check: {connect}");
                let all = GUEST_BACKENDS
                    .iter()
                    .all(|b| connect.contains(&format!("right: {b}: ")));
                if !connect.starts_with("0 ") || !all {
                    self.failures.push(format!("{kernel} connect: {connect}"));
                }
            } else if let Some(uring) = line.strip_prefix("io_uring ") {
                eprintln!("xtask: {kernel} io_uring check: {uring}");
                // Every backend loads in the guests: none may be left unchecked.
                if !uring.starts_with("0 ") || uring.contains("not checked") {
                    self.failures.push(format!("{kernel} io_uring: {uring}"));
                }
            }
        }
        if !lines.iter().any(|l| l.starts_with("status ")) {
            self.failures
                .push(format!("{kernel}: the guest reported no status"));
        } else if !lines.contains(&"status 0") {
            self.failures
                .push(format!("{kernel}: the guest's checks exited non-zero"));
        }
    }

    /// Adds one column from `observer demo --json` output.
    fn verdicts(&mut self, column: &str, json_lines: &str) {
        self.columns.push(column.to_string());
        let mut any = false;
        for line in json_lines
            .lines()
            .filter(|l| l.contains("\"type\":\"verdict\""))
        {
            any = true;
            let field = |name: &str| -> Option<&str> {
                let key = format!("\"{name}\":");
                let rest = &line[line.find(&key)? + key.len()..];
                let end = rest.find([',', '}'])?;
                Some(rest[..end].trim_matches('"'))
            };
            let scenario = field("scenario").unwrap_or("?").to_string();
            let pass = field("pass") == Some("true");
            let get_port = field("get_port").unwrap_or("0");
            let cell = match (pass, get_port) {
                (true, "0") => "pass".to_string(),
                (true, n) => format!("pass+{n}gp"),
                (false, _) => "FAIL".to_string(),
            };
            if !pass {
                self.failures.push(format!("{column} {scenario}: {line}"));
            }
            // The kernel walks (owners, socket options) must serve in every guest: an
            // explanation noting that one did not is a failure too.
            for slow in [
                "could not serve",
                "socket iterator",
                "could not read the options",
            ] {
                if line.contains(slow) {
                    self.failures.push(format!(
                        "{column} {scenario}: explained without a kernel walk: {line}"
                    ));
                }
            }
            self.rows
                .entry(scenario)
                .or_default()
                .insert(column.to_string(), cell);
        }
        if !any {
            self.failures
                .push(format!("{column}: no verdicts (the backend did not run)"));
        }
    }

    fn render(&self) -> String {
        use std::fmt::Write as _;
        let width = self.rows.keys().map(String::len).max().unwrap_or(8).max(8);
        let mut out = format!("{:<width$}", "scenario");
        for c in &self.columns {
            let _ = write!(out, "  {c:>w$}", w = c.len().max(9));
        }
        out.push('\n');
        for (scenario, cells) in &self.rows {
            let _ = write!(out, "{scenario:<width$}");
            for c in &self.columns {
                let cell = cells.get(c).map_or("-", String::as_str);
                let _ = write!(out, "  {cell:>w$}", w = c.len().max(9));
            }
            out.push('\n');
        }
        out
    }
}
