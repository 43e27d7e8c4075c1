//! `deploy/` checked by schema-aware validators, and against the observer itself:
//!
//! * `daemonset.yaml`: `kubernetes-validate --strict` against the Kubernetes 1.30 schemas (the
//!   first with `appArmorProfile`) and 1.37; then the pod's capabilities are exactly the
//!   documented set (`observer::privilege::DOCUMENTED`), everything else dropped, and its
//!   arguments parse with the observer's own command line.
//! * `observer.service`: `systemd-analyze verify` (any warning fails) with `ExecStart` pointed
//!   at the binary under test, `systemd-analyze security --offline` at most 3.0; the ambient and
//!   bounding sets are exactly the documented set, `ExecStart` parses.
//! * `Containerfile`: `hadolint` with every finding failing; what it copies is what it runs,
//!   and its `CMD` parses.
//! * Each validator rejects a copy with one typo, so a pass means something.
//!
//! The PyPI validators live in `target/deploy-validators` (`cargo xtask setup` installs them,
//! pinned); `systemd-analyze` comes from Debian's systemd.

use clap::Parser as _;
use observer::cli::{Cli, Command as Sub};
use observer::privilege::{self, DOCUMENTED};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn deploy(name: &str) -> PathBuf {
    root().join("deploy").join(name)
}

fn validator(name: &str) -> PathBuf {
    let path = root().join("target/deploy-validators/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("running {cmd:?}: {err}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch directory of this test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("observer-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `original` with `from` replaced by `to` (which must occur), written to `dir/name`.
fn with_typo(dir: &Path, name: &str, original: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(original).unwrap();
    assert!(
        text.contains(from),
        "{from:?} not in {}",
        original.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

/// The documented capabilities, by their `CAP_` names.
fn documented() -> Vec<String> {
    let mut names = privilege::names(privilege::mask(&DOCUMENTED));
    names.sort();
    names
}

/// The observer's command line parses `args` into `watch` with JSON Lines and metrics on
/// `metrics` port 9847.
fn assert_watch_args(args: &[String], metrics_ip: &str) {
    let cli = Cli::try_parse_from(std::iter::once("observer".to_string()).chain(args.to_vec()))
        .unwrap_or_else(|err| panic!("{args:?}: {err}"));
    match cli.command {
        Sub::Watch(w) => {
            assert!(w.json, "{args:?}: no --json");
            assert!(!w.no_conflicts, "{args:?}: the deployments keep the lookup");
            let metrics = w.metrics.map(|a| a.to_string());
            assert_eq!(metrics.as_deref(), Some(&*format!("{metrics_ip}:9847")));
        }
        other => panic!("{args:?}: not watch but {other:?}"),
    }
}

fn kubernetes_validate(file: &Path, version: &str) -> Output {
    run(Command::new(validator("kubernetes-validate"))
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .arg(file))
}

/// Every document of a YAML file, as JSON (PyYAML from the validators' environment).
fn yaml_documents(file: &Path) -> Vec<Value> {
    let out = run(Command::new(validator("python3"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file));
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn daemonset_validates_and_grants_exactly_the_documented_set() {
    let file = deploy("daemonset.yaml");
    for version in ["1.30.0", "1.37.0"] {
        let out = kubernetes_validate(&file, version);
        assert!(out.status.success(), "Kubernetes {version}: {}", text(&out));
    }
    let docs = yaml_documents(&file);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);
    let pod = &docs[2]["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["hostNetwork"], false);
    assert_eq!(spec["serviceAccountName"], "observer");
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 0, "added capabilities reach uid 0 only");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let mut added: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect();
    added.sort();
    assert_eq!(added, documented());
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    assert_watch_args(&args, "0.0.0.0");
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 9847, "protocol": "TCP"}])
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9847");
    let mounts: Vec<(&str, &str, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            let path = m["mountPath"].as_str().unwrap();
            (name, path, m["readOnly"] == true)
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("btf", "/sys/kernel/btf", true),
            ("tracefs", "/sys/kernel/tracing", true),
            ("cgroup", "/sys/fs/cgroup", true)
        ]
    );
}

/// `KEY=` values of the unit's lines (continuation lines are not used in it).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

/// The unit with `ExecStart` pointing at the binary under test, in `dir` (verify checks that
/// the command exists and is executable).
fn unit_for_verify(dir: &Path, unit: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit).unwrap();
    let text = text.replace("/usr/local/bin/observer", env!("CARGO_BIN_EXE_observer"));
    let path = dir.join("observer.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn systemd_verify(unit: &Path) -> Output {
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit))
}

#[test]
fn unit_verifies_and_grants_exactly_the_documented_set() {
    let file = deploy("observer.service");
    let dir = scratch("unit");
    let unit = unit_for_verify(&dir, &file);
    let out = systemd_verify(&unit);
    assert!(
        out.status.success() && text(&out).is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
        .arg(&unit));
    assert!(out.status.success(), "exposure above 3.0:\n{}", text(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let values = unit_values(&text, key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        let mut caps: Vec<String> = values[0].split_whitespace().map(str::to_string).collect();
        caps.sort();
        assert_eq!(caps, documented(), "{key}");
    }
    assert_eq!(unit_values(&text, "NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values(&text, "Restart"), ["on-failure"]);
    let exec = unit_values(&text, "ExecStart");
    assert_eq!(exec.len(), 1);
    let words: Vec<String> = exec[0].split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/local/bin/observer");
    assert_watch_args(&words[1..], "127.0.0.1");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Containerfile's instruction `name`'s argument text (one line each here).
fn instruction<'a>(file: &'a str, name: &str) -> Vec<&'a str> {
    file.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .collect()
}

fn hadolint(file: &Path) -> Output {
    run(Command::new(validator("hadolint"))
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(file))
}

#[test]
fn containerfile_lints_clean_and_runs_what_it_copies() {
    let file = deploy("Containerfile");
    let out = hadolint(&file);
    assert!(
        out.status.success() && text(&out).is_empty(),
        "hadolint: {}",
        text(&out)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(instruction(&text, "FROM"), ["scratch"]);
    // The build context is a directory holding only the static binary (see the file's
    // comment): the musl build's output, copied there.
    assert!(
        text.contains("cp target/x86_64-unknown-linux-musl/release/observer target/image/"),
        "the build steps changed"
    );
    assert_eq!(
        instruction(&text, "COPY"),
        ["--chmod=0555 observer /usr/local/bin/observer"]
    );
    let entrypoint: Vec<String> =
        serde_json::from_str(instruction(&text, "ENTRYPOINT")[0]).unwrap();
    assert_eq!(entrypoint, ["/usr/local/bin/observer"]);
    let cmd: Vec<String> = serde_json::from_str(instruction(&text, "CMD")[0]).unwrap();
    let cli = Cli::try_parse_from(std::iter::once("observer".to_string()).chain(cmd.clone()));
    assert!(cli.is_ok(), "CMD {cmd:?} does not parse: {:?}", cli.err());
}

/// Each validator fails on a copy with one typo: a passing check above is not a validator
/// that passes everything.
#[test]
fn validators_reject_one_typo() {
    let dir = scratch("typos");
    let yaml = with_typo(
        &dir,
        "daemonset.yaml",
        &deploy("daemonset.yaml"),
        "readOnlyRootFilesystem",
        "readOnlyRootFileSystem",
    );
    let out = kubernetes_validate(&yaml, "1.37.0");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("'readOnlyRootFileSystem' was unexpected"),
        "{}",
        text(&out)
    );

    let unit = unit_for_verify(&dir, &deploy("observer.service"));
    let unit = with_typo(
        &dir,
        "observer.service",
        &unit,
        "ProtectHome=",
        "ProtectHom=",
    );
    let out = systemd_verify(&unit);
    assert!(
        text(&out).contains("Unknown key 'ProtectHom' in section [Service]"),
        "{}",
        text(&out)
    );

    let containerfile = with_typo(
        &dir,
        "Containerfile",
        &deploy("Containerfile"),
        "ENTRYPOINT [\"/usr/local/bin/observer\"]",
        "ENTRYPOINT /usr/local/bin/observer",
    );
    let out = hadolint(&containerfile);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("DL3025"), "{}", text(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}
