//! `observer watch` end to end, as root: the real binary, the real kernel, real sockets.
//!
//! Every test makes its calls on its own thread in its own network namespace (only `lo` up) and
//! runs its own observer filtered on that namespace, so tests run in parallel without seeing
//! each other. Each one reads as "these calls → exactly these events".

#[allow(unused_imports)]
mod common;

use common::{
    NOBODY, Observer, Opt, Sock, Stdout, bind_as_nobody, bind_event, in_netns, listen_event,
    no_forks, refused,
};

// ----- successful binds ----------------------------------------------------------------------

#[test]
fn tcp4_bind_then_listen() {
    in_netns("tcp4-listen", |c| {
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:5000"), 0);
        assert_eq!(s.listen(), 0);
        obs.expect(&[
            bind_event(c, &s, "127.0.0.1:5000").bound("127.0.0.1:5000"),
            listen_event(c, &s).bound("127.0.0.1:5000"),
        ]);
        obs.stop();
    });
}

#[test]
fn tcp6_loopback_and_wildcard() {
    in_netns("tcp6-binds", |c| {
        let mut obs = Observer::watch(c, &[]);
        let lo = Sock::tcp6();
        let any_v6only = Sock::tcp6().set(Opt::V6Only, true);
        let any_dual = Sock::tcp6();
        assert_eq!(lo.bind("[::1]:5000"), 0);
        assert_eq!(any_v6only.bind("[::]:5001"), 0);
        assert_eq!(any_dual.bind("[::]:5002"), 0);
        obs.expect(&[
            // The kernel sets sk_ipv6only itself on a bind to a specific IPv6 address.
            bind_event(c, &lo, "[::1]:5000")
                .bound("[::1]:5000")
                .flag(Opt::V6Only),
            bind_event(c, &any_v6only, "[::]:5001")
                .bound("[::]:5001")
                .flag(Opt::V6Only),
            bind_event(c, &any_dual, "[::]:5002").bound("[::]:5002"),
        ]);
        obs.stop();
    });
}

#[test]
fn udp4_and_udp6() {
    in_netns("udp-binds", |c| {
        let mut obs = Observer::watch(c, &[]);
        let v4 = Sock::udp4();
        let v6 = Sock::udp6();
        assert_eq!(v4.bind("127.0.0.1:5353"), 0);
        assert_eq!(v6.bind("[::1]:5353"), 0);
        obs.expect(&[
            bind_event(c, &v4, "127.0.0.1:5353").bound("127.0.0.1:5353"),
            bind_event(c, &v6, "[::1]:5353")
                .bound("[::1]:5353")
                .flag(Opt::V6Only),
        ]);
        obs.stop();
    });
}

#[test]
fn port_zero_reports_the_assigned_port() {
    in_netns("port-zero", |c| {
        let mut obs = Observer::watch(c, &[]);
        let tcp = Sock::tcp4();
        let udp = Sock::udp6();
        assert_eq!(tcp.bind("127.0.0.1:0"), 0);
        assert_eq!(udp.bind("[::1]:0"), 0);
        let (tcp_port, udp_port) = (tcp.local().port(), udp.local().port());
        assert_ne!(tcp_port, 0);
        assert_ne!(udp_port, 0);
        obs.expect(&[
            bind_event(c, &tcp, "127.0.0.1:0").bound(&format!("127.0.0.1:{tcp_port}")),
            bind_event(c, &udp, "[::1]:0")
                .bound(&format!("[::1]:{udp_port}"))
                .flag(Opt::V6Only),
        ]);
        obs.stop();
    });
}

#[test]
fn listen_on_unbound_socket_autobinds() {
    in_netns("autobind", |c| {
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp4();
        assert_eq!(s.listen(), 0);
        let port = s.local().port();
        assert_ne!(port, 0);
        obs.expect(&[listen_event(c, &s).bound(&format!("0.0.0.0:{port}"))]);
        obs.stop();
    });
}

// ----- failures ------------------------------------------------------------------------------

#[test]
fn second_socket_on_same_port_is_eaddrinuse() {
    in_netns("eaddrinuse", |c| {
        // The conflict lookup is tested in conflict.rs.
        let mut obs = Observer::watch(c, &["--no-conflicts"]);
        let a = Sock::tcp4();
        let b = Sock::tcp4();
        assert_eq!(a.bind("127.0.0.1:5000"), 0);
        assert_eq!(b.bind("127.0.0.1:5000"), libc::EADDRINUSE);
        obs.expect(&[
            bind_event(c, &a, "127.0.0.1:5000").bound("127.0.0.1:5000"),
            bind_event(c, &b, "127.0.0.1:5000").fails("EADDRINUSE", 98),
        ]);
        obs.stop();
    });
}

/// With SO_REUSEADDR on both, two sockets may bind the same address while neither listens; the
/// conflict shows up at the second listen(). Once one listens, a third bind fails at once.
#[test]
fn reuseaddr_conflict_fails_at_listen() {
    in_netns("listen-inuse", |c| {
        let mut obs = Observer::watch(c, &["--no-conflicts"]);
        let a = Sock::tcp4().set(Opt::ReuseAddr, true);
        let b = Sock::tcp4().set(Opt::ReuseAddr, true);
        let late = Sock::tcp4().set(Opt::ReuseAddr, true);
        assert_eq!(a.bind("127.0.0.1:5000"), 0);
        assert_eq!(b.bind("127.0.0.1:5000"), 0);
        assert_eq!(a.listen(), 0);
        assert_eq!(b.listen(), libc::EADDRINUSE);
        assert_eq!(late.bind("127.0.0.1:5000"), libc::EADDRINUSE);
        let p = "127.0.0.1:5000";
        obs.expect(&[
            bind_event(c, &a, p).bound(p).flag(Opt::ReuseAddr),
            bind_event(c, &b, p).bound(p).flag(Opt::ReuseAddr),
            listen_event(c, &a).bound(p).flag(Opt::ReuseAddr),
            listen_event(c, &b)
                .bound(p)
                .flag(Opt::ReuseAddr)
                .fails("EADDRINUSE", 98),
            bind_event(c, &late, p)
                .flag(Opt::ReuseAddr)
                .fails("EADDRINUSE", 98),
        ]);
        obs.stop();
    });
}

/// 192.0.2.1 (TEST-NET-1) is not local: a plain bind fails, IP_FREEBIND allows it. A bind sends
/// no traffic. The thread name is longer than 15 bytes: `comm` is its first 15.
#[test]
fn non_local_address_needs_freebind() {
    in_netns("eaddrnotavail-vs-freebind", |c| {
        assert_eq!(c.comm, "eaddrnotavail-v");
        // The event as captured; its explanation is tests/refusals.rs's.
        let mut obs = Observer::watch(c, &["--no-conflicts"]);
        let plain = Sock::tcp4();
        let free = Sock::tcp4().set(Opt::FreeBind, true);
        assert_eq!(plain.bind("192.0.2.1:5000"), libc::EADDRNOTAVAIL);
        assert_eq!(free.bind("192.0.2.1:5000"), 0);
        obs.expect(&[
            bind_event(c, &plain, "192.0.2.1:5000").fails("EADDRNOTAVAIL", 99),
            bind_event(c, &free, "192.0.2.1:5000")
                .bound("192.0.2.1:5000")
                .flag(Opt::FreeBind),
        ]);
        obs.stop();
    });
}

#[test]
fn unprivileged_low_port_is_eacces() {
    in_netns("eacces-nobody", |c| {
        // The event as captured; its explanation is tests/refusals.rs's.
        let mut obs = Observer::watch(c, &["--no-conflicts"]);
        let child = bind_as_nobody(c, "127.0.0.1:80".parse().unwrap());
        assert_eq!(child.errno, libc::EACCES);
        assert_ne!(child.caller.pid, c.pid);
        assert_eq!((child.caller.uid, child.sock.uid), (NOBODY, NOBODY));
        obs.expect(&[bind_event(&child.caller, &child.sock, "127.0.0.1:80").fails("EACCES", 13)]);
        obs.stop();
    });
}

#[test]
fn second_bind_of_one_socket_is_einval() {
    in_netns("einval-rebind", |c| {
        // The event as captured; its explanation is tests/refusals.rs's.
        let mut obs = Observer::watch(c, &["--no-conflicts"]);
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:5000"), 0);
        assert_eq!(s.bind("127.0.0.1:5001"), libc::EINVAL);
        obs.expect(&[
            bind_event(c, &s, "127.0.0.1:5000").bound("127.0.0.1:5000"),
            // A failed rebind leaves the first binding in place.
            bind_event(c, &s, "127.0.0.1:5001")
                .bound("127.0.0.1:5000")
                .fails("EINVAL", 22),
        ]);
        obs.stop();
    });
}

// ----- each option, set and cleared ----------------------------------------------------------

/// One socket with `opt` set binds `on`, one with `opt` set then cleared binds `off`: the
/// events report the option true, then false.
fn option_set_then_cleared(thread: &str, opt: Opt, new: fn() -> Sock, on: &str, off: &str) {
    in_netns(thread, |c| {
        let mut obs = Observer::watch(c, &[]);
        let set = new().set(opt, true);
        let cleared = new().set(opt, true).set(opt, false);
        assert_eq!(set.bind(on), 0);
        assert_eq!(cleared.bind(off), 0);
        obs.expect(&[
            bind_event(c, &set, on).bound(on).flag(opt),
            bind_event(c, &cleared, off).bound(off),
        ]);
        obs.stop();
    });
}

#[test]
fn option_reuseaddr() {
    let (on, off) = ("127.0.0.1:5000", "127.0.0.1:5001");
    option_set_then_cleared("opt-reuseaddr", Opt::ReuseAddr, Sock::tcp4, on, off);
}

#[test]
fn option_reuseport() {
    let (on, off) = ("127.0.0.1:5000", "127.0.0.1:5001");
    option_set_then_cleared("opt-reuseport", Opt::ReusePort, Sock::tcp4, on, off);
}

#[test]
fn option_v6only() {
    let (on, off) = ("[::]:5000", "[::]:5001");
    option_set_then_cleared("opt-v6only", Opt::V6Only, Sock::tcp6, on, off);
}

#[test]
fn option_freebind() {
    let (on, off) = ("127.0.0.1:5000", "127.0.0.1:5001");
    option_set_then_cleared("opt-freebind", Opt::FreeBind, Sock::tcp4, on, off);
}

#[test]
fn option_transparent() {
    let (on, off) = ("127.0.0.1:5000", "127.0.0.1:5001");
    option_set_then_cleared("opt-transparent", Opt::Transparent, Sock::tcp4, on, off);
}

/// With IP_BIND_ADDRESS_NO_PORT a port-0 bind succeeds without taking a port yet (it is chosen
/// at connect()): nothing is bound, as getsockname agrees. Cleared, the bind takes a port.
#[test]
fn option_bind_address_no_port() {
    in_netns("opt-no-port", |c| {
        let mut obs = Observer::watch(c, &[]);
        let set = Sock::tcp4().set(Opt::BindAddressNoPort, true);
        let cleared = Sock::tcp4()
            .set(Opt::BindAddressNoPort, true)
            .set(Opt::BindAddressNoPort, false);
        assert_eq!(set.bind("127.0.0.1:0"), 0);
        assert_eq!(cleared.bind("127.0.0.1:0"), 0);
        assert_eq!(set.local().to_string(), "127.0.0.1:0");
        let port = cleared.local().port();
        assert_ne!(port, 0);
        obs.expect(&[
            // The socket holds the address, without a port yet (getsockname: 127.0.0.1:0).
            bind_event(c, &set, "127.0.0.1:0")
                .bound("127.0.0.1:0")
                .flag(Opt::BindAddressNoPort),
            bind_event(c, &cleared, "127.0.0.1:0").bound(&format!("127.0.0.1:{port}")),
        ]);
        obs.stop();
    });
}

// ----- filters -------------------------------------------------------------------------------

#[test]
fn errors_filter_shows_only_failures() {
    in_netns("filter-errors", |c| {
        let mut obs = Observer::watch(c, &["--errors", "--no-conflicts"]);
        let ok = Sock::tcp4();
        let failing = Sock::tcp4();
        assert_eq!(ok.bind("127.0.0.1:5000"), 0);
        assert_eq!(failing.bind("127.0.0.1:5000"), libc::EADDRINUSE);
        obs.expect(&[bind_event(c, &failing, "127.0.0.1:5000").fails("EADDRINUSE", 98)]);
        let summary = obs.stop();
        assert_filter_accounting(&summary, 1, &[("EADDRINUSE", 1)]);
    });
}

/// The summary of an observer whose filters let `shown` of this test's calls through (with
/// these `results`), the rest of its calls dropped. `filtered` itself cannot be exact:
/// the filters run in userspace, so every event of the other tests' namespaces (and of the
/// host) counts there too. What is exact: `shown` events, and every record received is
/// shown, filtered or undecodable, so a drop the filter failed to count (or counted twice)
/// breaks the sum whatever else ran.
fn assert_filter_accounting(summary: &serde_json::Value, shown: u64, results: &[(&str, u64)]) {
    let n = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {summary}"))
    };
    assert_eq!(n("events"), shown, "{summary}");
    assert_eq!(
        n("received"),
        n("events") + n("filtered") + n("decode_errors"),
        "{summary}"
    );
    let results: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    assert_eq!(
        summary["results"],
        serde_json::Value::Object(results),
        "{summary}"
    );
}

/// `--port` matches the requested or the bound port: the listen() of the socket bound to the
/// port shows too, the other socket's calls do not.
#[test]
fn port_filter_shows_only_that_port() {
    in_netns("filter-port", |c| {
        let mut obs = Observer::watch(c, &["--port", "5000"]);
        let wanted = Sock::tcp4();
        let other = Sock::tcp4();
        assert_eq!(other.bind("127.0.0.1:5001"), 0);
        assert_eq!(wanted.bind("127.0.0.1:5000"), 0);
        assert_eq!(other.listen(), 0);
        assert_eq!(wanted.listen(), 0);
        obs.expect(&[
            bind_event(c, &wanted, "127.0.0.1:5000").bound("127.0.0.1:5000"),
            listen_event(c, &wanted).bound("127.0.0.1:5000"),
        ]);
        let summary = obs.stop();
        assert_filter_accounting(&summary, 2, &[("OK", 2)]);
    });
}

// ----- command line and lifecycle ------------------------------------------------------------

/// Bad usage: exit 2, no output on stdout, one `error:` line naming the problem (clap adds its
/// usage / `--help` hints after it).
#[test]
fn usage_errors_exit_2() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let cases: [(&[&str], &[&str]); 4] = [
        (&["watch", "--port", "70000"], &["'70000'", "--port"]),
        (&["watch", "--pid", "abc"], &["'abc'", "--pid"]),
        (
            &["watch", "--buffer-size", "3000"],
            &[
                "'3000'",
                "--buffer-size",
                "power of two",
                &format!("{page} bytes"),
            ],
        ),
        (&["bogus"], &["unrecognized subcommand 'bogus'"]),
    ];
    refused(&cases);
}

/// `--duration` ends the run by itself, with a summary; no filter, so other tests' events may
/// show and are not checked. Without lookups: they would explain other tests' failures by
/// probing in those tests' namespaces (a real bind each, which those tests would see), and a
/// slow one would hold up the end.
#[test]
fn duration_ends_the_run() {
    let obs = Observer::start(
        &["watch", "--json", "--duration", "1", "--no-conflicts"],
        Stdout::Read,
    );
    let summary = obs.finish();
    assert_eq!(summary["reason"], "duration", "{summary}");
    let secs = summary["duration_secs"].as_f64().unwrap();
    assert!((1.0..20.0).contains(&secs), "{summary}");
}

/// A reader that goes away ends the run cleanly (exit 0) at the next write.
#[test]
fn closed_output_ends_the_run() {
    in_netns("closed-output", |c| {
        let netns = c.netns.to_string();
        let args = ["watch", "--json", "--netns", &netns];
        let mut obs = Observer::start(&args, Stdout::CloseAfterStart);
        obs.wait_stdout_closed();
        // No copy of the read end (in a child another test forks) may keep the pipe open.
        let _no_forks = no_forks();
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:5000"), 0);
        let (status, stderr) = obs.wait_exit();
        assert_eq!(status.code(), Some(0), "stderr: {stderr}");
        for line in stderr.lines() {
            assert_eq!(line, "observer: mounted tracefs on /sys/kernel/tracing");
        }
    });
}

/// An idle observer notices the closed pipe by itself (EPOLLERR), without waiting for a
/// write: `observer watch | head -1` ends when `head` does.
#[test]
fn closed_output_ends_an_idle_run() {
    in_netns("closed-idle", |c| {
        let netns = c.netns.to_string();
        let args = ["watch", "--json", "--netns", &netns];
        let mut obs = Observer::start(&args, Stdout::CloseAfterStart);
        obs.wait_stdout_closed();
        let _no_forks = no_forks();
        let (status, stderr) = obs.wait_exit();
        assert_eq!(status.code(), Some(0), "stderr: {stderr}");
        for line in stderr.lines() {
            assert_eq!(line, "observer: mounted tracefs on /sys/kernel/tracing");
        }
    });
}
