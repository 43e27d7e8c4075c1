//! Least privilege, against the real kernel: the observer started by `setpriv` (util-linux)
//! with exactly the documented capabilities (README "Capabilities"; `deploy/` grants the same)
//! — as `nobody` with ambient capabilities, and as uid 0 with only those in its bounding set —
//! sees a real bind, names the holder of a port in the way, and gives up, before its start
//! record, every capability the rest of the run does not need (read back from
//! `/proc/PID/status`). Without `CAP_BPF` (or without `CAP_DAC_READ_SEARCH` as another user) it
//! fails in one line with exit 1. Starting it with fewer privileges needs root.

#[allow(unused_imports)]
mod common;

use common::expect::reuseaddr_listener_conflict;
use common::{Caller, NOBODY, Observer, Opt, Sock, Stdout, bind_event, in_netns, listen_event};
use serde_json::json;
use std::process::Command;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// The documented set, as `setpriv` spells it.
const DOCUMENTED: &str = "bpf,perfmon,sys_admin,sys_ptrace,dac_read_search";
/// Its mask: DAC_READ_SEARCH (2), SYS_PTRACE (19), SYS_ADMIN (21), PERFMON (38), BPF (39).
const DOCUMENTED_MASK: u64 = 0xc0_0028_0004;
/// What the conflict lookup keeps after attach: DAC_READ_SEARCH, SYS_PTRACE, SYS_ADMIN.
const LOOKUP_MASK: u64 = 0x28_0004;
const LOOKUP_NAMES: [&str; 3] = ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"];

/// `+a,+b,...` for setpriv.
fn plus(caps: &str) -> String {
    caps.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| format!(",+{c}"))
        .collect()
}

/// setpriv arguments: `nobody` with `caps` as ambient capabilities (and nothing else).
fn as_nobody(caps: &str) -> Vec<String> {
    let caps = plus(caps);
    vec![
        "setpriv".into(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all{caps}"),
        format!("--ambient-caps=-all{caps}"),
        format!("--bounding-set=-all{caps}"),
    ]
}

/// setpriv arguments: uid 0 with only `caps` in its bounding set (root's permitted set after
/// exec is its bounding set).
fn as_root_with(caps: &str) -> Vec<String> {
    vec![
        "setpriv".into(),
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all{}", plus(caps)),
    ]
}

/// The capability lines of `/proc/PID/task/TID/status` and `NoNewPrivs`, as numbers.
fn status(pid: u32, tid: &str) -> (u32, [u64; 5], u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} missing from the status of {pid}/{tid}"))
            .trim()
            .to_string()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    let uid: u32 = field("Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let caps = ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"].map(hex);
    (uid, caps, field("NoNewPrivs:").parse().unwrap())
}

/// What `/proc/PID/task/*/status` must say, for every thread, once the observer is past its
/// start record (capabilities belong to threads: one left out would keep them all).
struct Dropped {
    uid: u32,
    /// Effective and permitted.
    kept: u64,
    bounding: u64,
}

fn assert_dropped(obs: &Observer, want: Dropped) {
    let pid = obs.pid();
    let expected = format!(
        "uid {} CapInh 0x0 CapPrm {:#x} CapEff {:#x} CapBnd {:#x} CapAmb 0x0 NoNewPrivs 1",
        want.uid, want.kept, want.kept, want.bounding
    );
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tasks.iter().any(|t| *t == pid.to_string()), "{tasks:?}");
    for tid in &tasks {
        let (uid, [inh, prm, eff, bnd, amb], nnp) = status(pid, tid);
        let got = format!(
            "uid {uid} CapInh {inh:#x} CapPrm {prm:#x} CapEff {eff:#x} CapBnd {bnd:#x} CapAmb {amb:#x} NoNewPrivs {nnp}"
        );
        assert_eq!(got, expected, "thread {tid} of {pid}");
    }
}

fn start(c: &Caller, via: &[String], extra: &[&str]) -> Observer {
    let netns = c.netns.to_string();
    let mut args = vec!["watch", "--json", "--netns", &netns];
    args.extend_from_slice(extra);
    let via: Vec<&str> = via.iter().map(String::as_str).collect();
    Observer::start_via(&via, &args, Stdout::Read)
}

/// An observer started from this (host-namespace) thread, filtered on the test thread's name
/// and port: the test thread then moves into a namespace of its own, so the observer has to
/// enter it through `/proc`, as a deployed observer enters every other namespace.
fn start_outside(via: &[String], comm: &str, port: u16) -> Observer {
    let port = port.to_string();
    let args = ["watch", "--json", "--comm", comm, "--port", &port];
    let via: Vec<&str> = via.iter().map(String::as_str).collect();
    Observer::start_via(&via, &args, Stdout::Read)
}

/// A bind to port 0 and the exact event for it.
fn bind_once(c: &Caller, obs: &mut Observer) {
    let s = Sock::tcp4();
    assert_eq!(s.bind("127.0.0.1:0"), 0);
    let bound = format!("127.0.0.1:{}", s.local().port());
    obs.expect(&[bind_event(c, &s, "127.0.0.1:0").bound(&bound)]);
}

/// Started with the documented set, the observer sees a bind and, past its start record,
/// holds only the lookup's capabilities. Without CAP_SETPCAP it cannot shrink its bounding
/// set, which stays as `setpriv` left it.
fn keeps_only_the_lookup_set(name: &str, via: &[String], uid: u32) {
    in_netns(name, |c| {
        let mut obs = start(c, via, &[]);
        assert_eq!(obs.start["capabilities"], json!(LOOKUP_NAMES));
        let bounding = DOCUMENTED_MASK;
        assert_dropped(
            &obs,
            Dropped {
                uid,
                kept: LOOKUP_MASK,
                bounding,
            },
        );
        bind_once(c, &mut obs);
        obs.stop();
    });
}

#[test]
fn nobody_with_the_documented_set_sees_a_bind_and_keeps_only_the_lookup_set() {
    keeps_only_the_lookup_set("lp-nobody", &as_nobody(DOCUMENTED), NOBODY);
}

#[test]
fn root_with_only_the_documented_set_keeps_only_the_lookup_set() {
    keeps_only_the_lookup_set("lp-root-set", &as_root_with(DOCUMENTED), 0);
}

/// Full root and `--no-conflicts`: nothing kept, the bounding set emptied too (root has
/// CAP_SETPCAP); events still arrive and the summary still reads the counters.
#[test]
fn root_without_conflicts_keeps_nothing() {
    in_netns("lp-none", |c| {
        let mut obs = start(c, &[], &["--no-conflicts"]);
        assert_eq!(obs.start["capabilities"], json!([]));
        assert_dropped(
            &obs,
            Dropped {
                uid: 0,
                kept: 0,
                bounding: 0,
            },
        );
        bind_once(c, &mut obs);
        obs.stop();
    });
}

/// The conflict lookup after the drop, as `nobody`: the holder (this test process, root) is
/// found through `/proc/PID/fd` (CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE), its flags read with
/// `pidfd_getfd` (CAP_SYS_PTRACE), the table read inside this thread's namespace (CAP_SYS_ADMIN).
#[test]
fn nobody_with_the_documented_set_names_the_holder_of_a_port() {
    let mut obs = start_outside(&as_nobody(DOCUMENTED), "lp-conflict", 7000);
    in_netns("lp-conflict", |c| {
        let holder = Sock::tcp4().set(Opt::ReuseAddr, true);
        assert_eq!(holder.bind("127.0.0.1:7000"), 0);
        assert_eq!(holder.listen(), 0);
        let mine = Sock::tcp4().set(Opt::ReuseAddr, true);
        assert_eq!(mine.bind("127.0.0.1:7000"), libc::EADDRINUSE);
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let cmdline: Vec<String> = std::fs::read("/proc/self/cmdline")
            .unwrap()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let owner = json!({
            "pid": std::process::id(), "comm": comm.trim_end_matches('\n'),
            "cmdline": cmdline.join(" "), "fd": holder.fd()
        });
        let conflict = reuseaddr_listener_conflict(7000, holder.as_ref().ino, owner);
        obs.expect(&[
            bind_event(c, &holder, "127.0.0.1:7000")
                .bound("127.0.0.1:7000")
                .flag(Opt::ReuseAddr),
            listen_event(c, &holder)
                .bound("127.0.0.1:7000")
                .flag(Opt::ReuseAddr),
        ]);
        obs.expect_explained(
            bind_event(c, &mine, "127.0.0.1:7000")
                .flag(Opt::ReuseAddr)
                .fails("EADDRINUSE", 98)
                .conflict(conflict),
        );
    });
    let summary = obs.stop();
    assert_eq!(summary["conflict_lookups"], 1, "{summary}");
}

/// Without CAP_SYS_PTRACE the lookup may not open the failing thread's namespace: the event
/// says so, naming the capability, instead of a lookup that found nothing.
#[test]
fn without_cap_sys_ptrace_the_lookup_says_why() {
    let mut obs = start_outside(&as_root_with("bpf,perfmon,sys_admin"), "lp-no-ptrace", 7100);
    in_netns("lp-no-ptrace", |c| {
        let holder = Sock::tcp4();
        assert_eq!(holder.bind("127.0.0.1:7100"), 0);
        let mine = Sock::tcp4();
        assert_eq!(mine.bind("127.0.0.1:7100"), libc::EADDRINUSE);
        let own = format!("/proc/{}/task/{}/ns/net", c.pid, c.tid);
        let note = format!(
            "{own}: Permission denied (os error 13) (looking into another process's namespace \
             needs CAP_SYS_PTRACE)"
        );
        obs.expect(&[
            bind_event(c, &holder, "127.0.0.1:7100").bound("127.0.0.1:7100"),
            bind_event(c, &mine, "127.0.0.1:7100")
                .fails("EADDRINUSE", 98)
                .conflict(json!({
                    "verdict": "unavailable", "holders": [], "fixes": [], "notes": [note]
                })),
        ]);
    });
    obs.stop();
}

/// Runs `setpriv <via> observer watch --json --duration 1`; it must print exactly `message`
/// on stderr, nothing on stdout, and exit 1.
fn check_refused(via: &[String], message: &str) {
    common::require_root();
    let guard = common::no_forks();
    let out = Command::new(&via[0])
        .args(&via[1..])
        .args([OBSERVER, "watch", "--json", "--duration", "1"])
        .output()
        .expect("setpriv (util-linux) must be installed");
    drop(guard);
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{message}\n"));
    assert!(
        out.stdout.is_empty(),
        "no start record without the programs"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn missing(what: &str) -> String {
    format!(
        "observer: missing {what}: run as root, or grant CAP_BPF and CAP_PERFMON (kernels \
         before 5.8: CAP_SYS_ADMIN)"
    )
}

#[test]
fn unprivileged_user_gets_one_line() {
    check_refused(&as_nobody(""), &missing("CAP_BPF and CAP_PERFMON"));
}

#[test]
fn root_without_bpf_capabilities_gets_one_line() {
    check_refused(
        &[
            "setpriv".into(),
            "--inh-caps=-all".into(),
            "--bounding-set=-bpf,-perfmon,-sys_admin".into(),
        ],
        &missing("CAP_BPF and CAP_PERFMON"),
    );
}

/// The set for `--no-conflicts` (CAP_BPF, CAP_PERFMON, and CAP_DAC_READ_SEARCH for another
/// user) less CAP_BPF.
#[test]
fn without_cap_bpf_gets_one_line() {
    check_refused(&as_nobody("perfmon,dac_read_search"), &missing("CAP_BPF"));
    check_refused(&as_root_with("perfmon"), &missing("CAP_BPF"));
}

/// The kernel accepts CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON (`bpf_capable()`,
/// `perfmon_capable()`): the documented set without them still attaches. They are documented
/// anyway, for runs without the conflict lookup, which need no CAP_SYS_ADMIN.
#[test]
fn cap_sys_admin_stands_in_for_cap_bpf_and_cap_perfmon() {
    in_netns("lp-sysadmin", |c| {
        let mut obs = start(c, &as_nobody("sys_admin,sys_ptrace,dac_read_search"), &[]);
        assert_eq!(obs.start["capabilities"], json!(LOOKUP_NAMES));
        bind_once(c, &mut obs);
        obs.stop();
    });
}

#[test]
fn another_user_without_cap_dac_read_search_gets_one_line() {
    let without = DOCUMENTED.replace(",dac_read_search", "");
    check_refused(
        &as_nobody(&without),
        "observer: cannot search /sys/kernel/tracing: Permission denied (os error 13) \
         (tracefs is root's alone: run as uid 0, or grant CAP_DAC_READ_SEARCH)",
    );
}

/// A bound, not listening TCP socket, which the socket iterators do not list, has its options
/// read by the owners walk from the socket its descriptor names, without touching it: `why`
/// without CAP_SYS_PTRACE, which a duplicate of the holder's descriptor (`pidfd_getfd`) would
/// need, still knows them.
#[test]
fn a_bound_only_holder_is_read_without_a_duplicate_of_its_descriptor() {
    in_netns("bound-only", |_| {
        let holder = Sock::tcp4().set(Opt::ReuseAddr, true);
        assert_eq!(holder.bind("127.0.0.1:7600"), 0);
        let via = as_root_with("bpf,perfmon,sys_admin,dac_read_search");
        let guard = common::no_forks();
        let out = Command::new(&via[0])
            .args(&via[1..])
            .args([OBSERVER, "why", "--json", "127.0.0.1:7600"])
            .output()
            .expect("running setpriv");
        drop(guard);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON answer");
        let c = &v["conflict"];
        let h = &c["holders"][0];
        assert_eq!(
            (&h["state"], &h["reuseaddr"], &h["reuseport"]),
            (&json!("BOUND"), &json!(true), &json!(false)),
            "{v}"
        );
        assert_eq!(h["owners"][0]["pid"], std::process::id(), "{v}");
        assert_eq!(c["notes"], json!([]), "{v}");
        drop(holder);
    });
}
