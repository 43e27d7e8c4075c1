//! `observer why` against the kernel's own answer: for each combination (a non-local address,
//! a privileged port as `nobody`, an unknown IPv6 scope, a link-local address without one, a
//! mapped address on an IPV6_V6ONLY socket, a port in use, and each offered fix applied), the
//! result `why` predicts and its exit status are compared with what a real bind in the same
//! namespace returns.

#[allow(unused_imports)]
mod common;

use common::proc::run_observer;
use common::{Opt, Sock, bind_as_nobody, in_netns};
use serde_json::Value;
use std::net::SocketAddrV4;

/// `observer why ARGS --json`: the predicted result and the exit status.
fn why(args: &[&str]) -> (String, i32, Value) {
    let mut all = vec!["why"];
    all.extend_from_slice(args);
    all.push("--json");
    let (status, out, stderr) = run_observer(&all);
    assert!(stderr.is_empty(), "why {args:?}: stderr {stderr}");
    let v: Value = serde_json::from_str(&out[0]).unwrap();
    (
        v["result"].as_str().unwrap().to_string(),
        status.code().unwrap(),
        v,
    )
}

fn name(errno: i32) -> String {
    match errno {
        0 => "OK".into(),
        e => observer::errno::name(e).into_owned(),
    }
}

/// The exit status documented for a result.
fn code_for(result: &str) -> i32 {
    match result {
        "OK" => 0,
        "EADDRINUSE" => 3,
        _ => 5,
    }
}

/// `why` first, then the real bind (whose socket is closed before the next case).
fn agree(args: &[&str], real: impl FnOnce() -> i32, rule: Option<&str>) {
    let (result, code, v) = why(args);
    let real = real();
    assert_eq!(result, name(real), "why {args:?} against the kernel: {v}");
    assert_eq!(code, code_for(&result), "why {args:?}: exit status");
    if let Some(rule) = rule {
        assert_eq!(v["refusal"]["rule"], rule, "why {args:?}: {v}");
        assert!(!v["refusal"]["fixes"].as_array().unwrap().is_empty(), "{v}");
        assert!(v.get("conflict").is_none(), "{v}");
    }
}

#[test]
fn why_agrees_with_the_kernel_before_the_port() {
    in_netns("why-refusals", |c| {
        agree(
            &["1.2.3.4:80"],
            || Sock::tcp4().bind("1.2.3.4:80"),
            Some("address-not-local"),
        );
        // The fix it offers, applied.
        agree(
            &["1.2.3.4:80", "--freebind"],
            || Sock::tcp4().set(Opt::FreeBind, true).bind("1.2.3.4:80"),
            None,
        );
        let nobody = |port| bind_as_nobody(c, SocketAddrV4::new([127, 0, 0, 1].into(), port)).errno;
        let nobody_far = || bind_as_nobody(c, SocketAddrV4::new([1, 2, 3, 4].into(), 80)).errno;
        agree(
            &["127.0.0.1:80", "--uid", "65534"],
            || nobody(80),
            Some("privileged-port"),
        );
        // IPv4 checks the address before the port.
        agree(
            &["1.2.3.4:80", "--uid", "65534"],
            nobody_far,
            Some("address-not-local"),
        );
        agree(
            &["127.0.0.1:80"],
            || Sock::tcp4().bind("127.0.0.1:80"),
            None,
        );
        agree(
            &["[fe80::1%999]:80"],
            || Sock::tcp6().bind("[fe80::1%999]:80"),
            Some("unknown-scope"),
        );
        agree(
            &["[fe80::1]:80"],
            || Sock::tcp6().bind("[fe80::1]:80"),
            Some("link-local-needs-scope"),
        );
        agree(
            &["[::ffff:127.0.0.1]:80", "--v6only"],
            || {
                Sock::tcp6()
                    .set(Opt::V6Only, true)
                    .bind("[::ffff:127.0.0.1]:80")
            },
            Some("mapped-on-v6only"),
        );
        agree(
            &["[2001:db8::1]:80"],
            || Sock::tcp6().bind("[2001:db8::1]:80"),
            Some("address-not-local"),
        );
        agree(
            &["--udp", "1.2.3.4:53"],
            || Sock::udp4().bind("1.2.3.4:53"),
            Some("address-not-local"),
        );
        // A port in use: the checks before the port pass, and the lookup answers.
        let holder = Sock::tcp4();
        assert_eq!(holder.bind("127.0.0.1:7600"), 0);
        assert_eq!(holder.listen(), 0);
        agree(
            &["127.0.0.1:7600"],
            || Sock::tcp4().bind("127.0.0.1:7600"),
            None,
        );

        // The sysctl fixes, applied in this namespace only.
        std::fs::write("/proc/sys/net/ipv4/ip_nonlocal_bind", "1").unwrap();
        agree(&["1.2.3.4:80"], || Sock::tcp4().bind("1.2.3.4:80"), None);
        std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "80").unwrap();
        agree(&["127.0.0.1:80", "--uid", "65534"], || nobody(80), None);
        agree(
            &["127.0.0.1:79", "--uid", "65534"],
            || nobody(79),
            Some("privileged-port"),
        );
    });
}
