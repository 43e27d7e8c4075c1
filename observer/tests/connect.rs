//! Failed connects, end to end, as root: the real binary and kernel, real sockets in a private
//! network namespace (loopback only), as in `watch.rs`.
//!
//! A two-port `ip_local_port_range` used up by two connections to one listener: the third
//! connect fails with EADDRNOTAVAIL, and its event carries the range, the connections that
//! hold it and the fixes; `why --connect` says the same before a call; the fix it proposes
//! (a wider range) makes the connect succeed; UDP's autobind at connect (EAGAIN) likewise. An
//! ordinary successful connect is no event unless `--connects all` asks for every one.

#[allow(unused_imports)]
mod common;

use common::proc::run_observer;
use common::{Observer, Opt, Sock, bind_event, connect_event, in_netns, own_description};
use serde_json::{Value, json};

const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The `conflict` of a connect to 127.0.0.1:5000 that found both ports of 40000-40001 held
/// by this process's connections to it.
fn exhausted(pid: u32) -> Value {
    let (comm, cmdline) = own_description();
    json!({
        "verdict": "exhausted",
        "holders": [],
        "fixes": [
            "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\" (28230 ports of it free toward 127.0.0.1:5000)",
            "give the connections more source addresses: bind() each socket to one of 127.0.0.2 with port 0 and IP_BIND_ADDRESS_NO_PORT set before connect(); each source address has the whole range again toward 127.0.0.1:5000",
            "reuse connections to 127.0.0.1:5000 (keep-alive, a connection pool) instead of one per request: 2 are open and 0 in TIME_WAIT, one port each",
        ],
        "connect": {
            "source": "127.0.0.1",
            "destination": {"addr": "127.0.0.1", "port": 5000},
            "bound_port": null,
            "range": [40000, 40001],
            "reserved": "",
            "tcp_tw_reuse": 2,
            "ports": 2,
            "reserved_in_range": 0,
            "bound": 0,
            "in_use": 2,
            "time_wait": 0,
            "free": 0,
            "holders": [{"pid": pid, "comm": comm, "cmdline": cmdline, "sockets": 2}],
        },
        "notes": [],
    })
}

/// The next event, with its explanation in `conflict` whether it came inside the event or,
/// on a loaded machine (the lookup outlasting the 500 ms hold), as its own record after it.
fn explained(obs: &mut Observer) -> Value {
    let mut got = obs.take(1).remove(0);
    if got["conflict"]["verdict"] == "pending" {
        let seq = got["seq"].as_u64().unwrap();
        got["conflict"] = obs.take_explanation(seq)["conflict"].clone();
    }
    got
}

/// `got` has exactly the fields of `want`, besides `seq` and `time` (the harness checks
/// those of every event it takes).
fn same_event(want: &Value, got: &Value) {
    let (w, g) = (want.as_object().unwrap(), got.as_object().unwrap());
    for (key, value) in w {
        assert_eq!(&g[key], value, "{key}: want {want}\ngot  {got}");
    }
    for key in g.keys() {
        assert!(
            w.contains_key(key) || key == "seq" || key == "time",
            "unexpected {key}: {got}"
        );
    }
}

#[test]
fn exhausted_range_at_connect_is_explained_and_the_fix_works() {
    in_netns("connect-range", |c| {
        // Per network namespace: only this test's.
        std::fs::write(RANGE, "40000 40001").unwrap();
        let listener = Sock::tcp4();
        assert_eq!(listener.bind("127.0.0.1:5000"), 0);
        assert_eq!(listener.listen(), 0);
        let mut obs = Observer::watch(c, &["--port", "5000"]);
        let a = Sock::tcp4();
        let b = Sock::tcp4();
        let late = Sock::tcp4();
        // Successful connects are no events: the first event is the failure.
        assert_eq!(a.connect("127.0.0.1:5000"), 0);
        assert_eq!(b.connect("127.0.0.1:5000"), 0);
        let mut used = [a.local().port(), b.local().port()];
        used.sort_unstable();
        assert_eq!(used, [40000, 40001]);
        assert_eq!(late.connect("127.0.0.1:5000"), libc::EADDRNOTAVAIL);
        let conflict = exhausted(c.pid);
        let want = connect_event(c, &late, "127.0.0.1:5000")
            .fails("EADDRNOTAVAIL", 99)
            .conflict(conflict.clone());
        let got = explained(&mut obs);
        same_event(&want.json(), &got);

        // `why --connect` answers the same before a call, with exit status 3.
        let (status, out, stderr) = run_observer(&["why", "--json", "--connect", "127.0.0.1:5000"]);
        assert_eq!(status.code(), Some(3), "{out:?} {stderr}");
        let why: Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(
            (&why["op"], &why["result"], &why["conflict"]),
            (&json!("connect"), &json!("EADDRNOTAVAIL"), &conflict)
        );
        // Another destination port has the whole range: exit 0.
        let (status, _, stderr) = run_observer(&["why", "--connect", "127.0.0.1:5001"]);
        assert_eq!(status.code(), Some(0), "{stderr}");

        // The fix the explanation proposes, applied: the connect finds a port (and is no
        // event). The range is read back from the fix itself.
        let fix = conflict["fixes"][0].as_str().unwrap();
        let value = fix.split('"').nth(1).unwrap();
        std::fs::write(RANGE, value).unwrap();
        let again = Sock::tcp4();
        assert_eq!(again.connect("127.0.0.1:5000"), 0);
        let port = again.local().port();
        assert!((32768..=60999).contains(&port), "{port}");
        let summary = obs.stop();
        assert_eq!(summary["events"], 1, "{summary}");
        assert_eq!(summary["conflict_lookups"], 1, "{summary}");
        drop((a, b, listener));
    });
}

#[test]
fn successful_connects_are_events_only_with_connects_all() {
    in_netns("connect-ok", |c| {
        let listener = Sock::tcp4();
        assert_eq!(listener.bind("127.0.0.1:5002"), 0);
        assert_eq!(listener.listen(), 0);

        let mut obs = Observer::watch(c, &[]);
        let quiet = Sock::tcp4();
        assert_eq!(quiet.connect("127.0.0.1:5002"), 0);
        // A call that is an event, after it: had the connect been one, it would come first.
        let marker = Sock::udp4();
        assert_eq!(marker.bind("127.0.0.1:5003"), 0);
        obs.expect(&[bind_event(c, &marker, "127.0.0.1:5003").bound("127.0.0.1:5003")]);
        // A refused connect (ECONNREFUSED: no listener) is no port problem: no event either.
        let refused = Sock::tcp4();
        assert_eq!(refused.connect("127.0.0.1:5009"), libc::ECONNREFUSED);
        let marker2 = Sock::udp4();
        assert_eq!(marker2.bind("127.0.0.1:5004"), 0);
        obs.expect(&[bind_event(c, &marker2, "127.0.0.1:5004").bound("127.0.0.1:5004")]);
        obs.stop();

        let mut all = Observer::watch(c, &["--connects", "all"]);
        let seen = Sock::tcp4();
        assert_eq!(seen.connect("127.0.0.1:5002"), 0);
        let local = format!("127.0.0.1:{}", seen.local().port());
        all.expect(&[connect_event(c, &seen, "127.0.0.1:5002").bound(&local)]);
        all.stop();
    });
}

/// UDP's port failure at connect: the unbound socket's autobind (a port-0 bind,
/// `inet_autobind`) finds no port of the range and the connect fails with EAGAIN. The event
/// says which range, how many ports are taken for this socket, and the wider range that has
/// one free; `why --connect --udp` says the same before a call; the fix, applied, works.
#[test]
fn udp_autobind_exhaustion_at_connect_is_explained_and_the_fix_works() {
    in_netns("connect-udp", |c| {
        std::fs::write(RANGE, "40000 40000").unwrap();
        let holder = Sock::udp4();
        assert_eq!(holder.bind("0.0.0.0:40000"), 0);
        let mut obs = Observer::watch(c, &[]);
        let late = Sock::udp4();
        assert_eq!(late.connect("127.0.0.1:53"), libc::EAGAIN);
        let conflict = json!({
            "verdict": "ephemeral",
            "holders": [],
            "fixes": [
                "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\" (28231 ports of it free for this socket)",
            ],
            "ephemeral": {"range": [40000, 40000], "reserved": "", "reserved_in_range": 0, "in_use": 1, "free": 0},
            "notes": [],
        });
        let want = connect_event(c, &late, "127.0.0.1:53")
            .fails("EAGAIN", 11)
            .conflict(conflict.clone());
        obs.expect_explained(want);

        let (status, out, stderr) =
            run_observer(&["why", "--json", "--udp", "--connect", "127.0.0.1:53"]);
        assert_eq!(status.code(), Some(3), "{out:?} {stderr}");
        let why: Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(
            (
                &why["op"],
                &why["protocol"],
                &why["result"],
                &why["conflict"]
            ),
            (
                &json!("connect"),
                &json!("udp"),
                &json!("EAGAIN"),
                &conflict
            )
        );
        let (status, text, _) = run_observer(&["why", "--udp", "--connect", "127.0.0.1:53"]);
        assert_eq!(status.code(), Some(3));
        assert_eq!(
            text[0].trim_end(),
            "udp connect() to 127.0.0.1:53: would fail with EAGAIN"
        );

        let fix = conflict["fixes"][0].as_str().unwrap();
        std::fs::write(RANGE, fix.split('"').nth(1).unwrap()).unwrap();
        let again = Sock::udp4();
        assert_eq!(again.connect("127.0.0.1:53"), 0);
        assert!((32768..=60999).contains(&again.local().port()));
        let (status, _, stderr) = run_observer(&["why", "--udp", "--connect", "127.0.0.1:53"]);
        assert_eq!(status.code(), Some(0), "{stderr}");
        let summary = obs.stop();
        assert_eq!(summary["conflict_lookups"], 1, "{summary}");
        drop(holder);
    });
}

/// UDP's autobind shares a port as an explicit bind would (`udp_lib_lport_inuse`): with
/// SO_REUSEADDR on both sockets, a connect whose one-port range is held by a SO_REUSEADDR
/// socket gets that port, and one without the option gets EAGAIN; `why --udp --connect`
/// answers each as the kernel does, reading the holder's options.
#[test]
fn udp_autobind_shares_a_port_by_the_options_of_both() {
    in_netns("connect-udp-share", |_| {
        std::fs::write(RANGE, "40000 40000").unwrap();
        let holder = Sock::udp4().set(Opt::ReuseAddr, true);
        assert_eq!(holder.bind("0.0.0.0:40000"), 0);
        let why = |flags: &[&str]| {
            let mut args = vec!["why", "--udp", "--connect", "127.0.0.1:53"];
            args.extend_from_slice(flags);
            let (status, out, stderr) = run_observer(&args);
            (status.code(), format!("{out:?} {stderr}"))
        };
        let (code, said) = why(&["--reuseaddr"]);
        assert_eq!(code, Some(0), "{said}");
        let (code, said) = why(&[]);
        assert_eq!(code, Some(3), "{said}");
        let shares = Sock::udp4().set(Opt::ReuseAddr, true);
        assert_eq!(shares.connect("127.0.0.1:53"), 0);
        assert_eq!(shares.local().port(), 40000);
        let alone = Sock::udp4();
        assert_eq!(alone.connect("127.0.0.1:53"), libc::EAGAIN);
        drop(holder);
    });
}

/// `observer scenarios connect-check` (what vm-test runs in each guest) on this host: the
/// kernel-function backends cannot load here and say so; the tracepoint backend sees exactly
/// the failed connect. Its workload's output is read to the end (a dropped pipe once ended
/// it with EPIPE before it could report).
#[test]
fn connect_check_sees_the_failed_connect_on_the_tracepoint_backend() {
    common::require_root();
    let (status, stdout, stderr) = run_observer(&["scenarios", "connect-check"]);
    assert_eq!(
        status.code(),
        Some(0),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    let last = stdout.last().expect("a line per backend");
    assert_eq!(stdout.len(), 3, "{stdout:?}");
    assert!(
        last.starts_with("right: tracepoint: tracepoint:sys_exit_connect connect EADDRNOTAVAIL"),
        "{stdout:?}"
    );
    assert!(!stdout.iter().any(|l| l.contains("panicked")), "{stdout:?}");
}
