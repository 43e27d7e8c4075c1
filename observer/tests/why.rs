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
use std::sync::{Mutex, MutexGuard};

/// Held by each test: a `why` walks the files of every process with a thread in its
/// namespace, this test binary among them, and holds each file for a moment as it goes (as
/// `ss -p` does through `/proc/PID/fd`). A socket the other test closes in that moment stays
/// bound until the walk lets go, and that test's immediate rebind would fail.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    let _one = one_at_a_time();
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

/// A socket in the way, as a test makes it: protocol, address, options, listening or not.
#[derive(Clone)]
struct Holder {
    udp: bool,
    addr: &'static str,
    opts: Vec<Opt>,
    listen: bool,
}

impl Holder {
    fn make(&self) -> Sock {
        let mut s = if self.udp { Sock::udp4() } else { Sock::tcp4() };
        for opt in &self.opts {
            s = s.set(*opt, true);
        }
        assert_eq!(s.bind(self.addr), 0, "holder {}", self.addr);
        if self.listen {
            assert_eq!(s.listen(), 0);
        }
        s
    }
}

fn opt_named(name: &str) -> Opt {
    match name {
        "SO_REUSEADDR" => Opt::ReuseAddr,
        "SO_REUSEPORT" => Opt::ReusePort,
        "IPV6_V6ONLY" => Opt::V6Only,
        other => panic!("a fix names an option this test does not know: {other}"),
    }
}

/// Applies one offered fix for real (the holders re-made where it changes them) and returns
/// the kernel's answer to the bind it then makes.
fn apply(
    fix: &str,
    holder: &Holder,
    held: &mut Option<Sock>,
    udp: bool,
    addr: &str,
    opts: &[Opt],
) -> i32 {
    let fresh = |extra: &[Opt]| {
        let mut s = if udp { Sock::udp4() } else { Sock::tcp4() };
        for opt in opts.iter().chain(extra) {
            s = s.set(*opt, true);
        }
        s
    };
    if let Some(rest) = fix.strip_prefix("port ") {
        let port: u16 = rest.split(' ').next().unwrap().parse().unwrap();
        let ip = addr.rsplit_once(':').unwrap().0;
        return fresh(&[]).bind(&format!("{ip}:{port}"));
    }
    if let Some(rest) = fix.strip_prefix("address ") {
        let ip = rest.split(' ').next().unwrap();
        let port = addr.rsplit_once(':').unwrap().1;
        return fresh(&[]).bind(&format!("{ip}:{port}"));
    }
    let Some(rest) = fix.strip_prefix("set ") else {
        panic!("a fix this test cannot apply: {fix:?}");
    };
    let (flags, place) = rest.split_once(" on ").unwrap_or_else(|| panic!("{fix:?}"));
    let flags: Vec<Opt> = flags.split(" and ").map(opt_named).collect();
    let here = place.starts_with("this socket");
    if place.contains("the sockets in the way") {
        // Re-made with the flags added (closing a listener without connections leaves no
        // TIME_WAIT socket behind).
        drop(held.take());
        let mut changed = holder.clone();
        changed.opts.extend(&flags);
        *held = Some(changed.make());
    }
    fresh(if here { &flags } else { &[] }).bind(addr)
}

#[test]
fn every_offered_fix_works_when_applied() {
    let _one = one_at_a_time();
    type Case = (
        Holder,
        bool,
        &'static str,
        Vec<Opt>,
        &'static [&'static str],
    );
    let tcp = |addr, opts: Vec<Opt>| Holder {
        udp: false,
        addr,
        opts,
        listen: true,
    };
    let udp = |addr, opts: Vec<Opt>| Holder {
        udp: true,
        addr,
        opts,
        listen: false,
    };
    let cases: Vec<Case> = vec![
        // A SO_REUSEADDR listener, a bind without flags (python's http.server and socat).
        (
            tcp("127.0.0.1:7100", vec![Opt::ReuseAddr]),
            false,
            "127.0.0.1:7100",
            vec![],
            &[],
        ),
        // The same with SO_REUSEADDR here: it never helps against a listener.
        (
            tcp("127.0.0.1:7110", vec![Opt::ReuseAddr]),
            false,
            "127.0.0.1:7110",
            vec![Opt::ReuseAddr],
            &["--reuseaddr"],
        ),
        // SO_REUSEPORT here, not on the listener (a Go listener against an older one).
        (
            tcp("0.0.0.0:7120", vec![]),
            false,
            "127.0.0.1:7120",
            vec![Opt::ReusePort],
            &["--reuseport"],
        ),
        // A SO_REUSEPORT listener.
        (
            tcp("127.0.0.1:7130", vec![Opt::ReusePort]),
            false,
            "127.0.0.1:7130",
            vec![],
            &[],
        ),
        // UDP with SO_REUSEADDR on the holder; and with it on both but on a wildcard.
        (
            udp("127.0.0.1:7140", vec![Opt::ReuseAddr]),
            true,
            "127.0.0.1:7140",
            vec![],
            &["--udp"],
        ),
        (
            udp("0.0.0.0:7150", vec![]),
            true,
            "127.0.0.1:7150",
            vec![Opt::ReuseAddr],
            &["--udp", "--reuseaddr"],
        ),
    ];
    in_netns("why-fixes", |_| {
        let mut applied = 0;
        for (holder, is_udp, addr, opts, flags) in &cases {
            let mut held = Some(holder.make());
            let mut args = vec![*addr];
            args.extend_from_slice(flags);
            let (result, _, v) = why(&args);
            assert_eq!(result, "EADDRINUSE", "why {args:?}: {v}");
            let mut real = if *is_udp { Sock::udp4() } else { Sock::tcp4() };
            for opt in opts {
                real = real.set(*opt, true);
            }
            assert_eq!(real.bind(addr), libc::EADDRINUSE, "{args:?}");
            drop(real);
            let fixes: Vec<String> = v["conflict"]["fixes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            assert!(!fixes.is_empty(), "why {args:?} offers nothing: {v}");
            for fix in &fixes {
                // No fix asks for a flag this socket already has.
                for opt in opts {
                    let name = match opt {
                        Opt::ReuseAddr => "SO_REUSEADDR",
                        Opt::ReusePort => "SO_REUSEPORT",
                        _ => continue,
                    };
                    assert!(
                        !(fix.contains(name) && fix.contains("this socket")),
                        "why {args:?}: {fix:?} asks for {name}, which the socket has"
                    );
                }
                let errno = apply(fix, holder, &mut held, *is_udp, addr, opts);
                assert_eq!(
                    errno, 0,
                    "why {args:?}: the fix {fix:?}, applied, got errno {errno}"
                );
                applied += 1;
                // Back to the state why saw, for the next fix.
                drop(held.take());
                held = Some(holder.make());
            }
        }
        assert!(applied >= cases.len() * 2, "{applied} fixes applied");
    });
}
