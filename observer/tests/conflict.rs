//! The conflict diagnosis against the real kernel, as root.
//!
//! * Every case of `common::cases` is played on real sockets in its own network
//!   namespace: the kernel must give the case's answer, and `diagnose` (socket table, owners,
//!   flags read by the socket iterators, rule engine), asked just before the call, must agree with
//!   the kernel, naming the case's overlap and rule.
//! * A real third-party server (`python3 -m http.server`) holds a port; a bind against it fails;
//!   `observer why` names the server's pid and comm, as `ss -ltnp` does, with the right rule.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::cases::{self, Fate, PORT, Spec};
use common::{BOUND, Observer, Opt, Sock, bind_event, in_netns, no_forks};
use observer::conflict::rules::{Request, TCP_TIME_WAIT};
use observer::conflict::socktable;
use observer::conflict::{Query, diagnose};
use observer::model::Conflict;
use observer::model::Proto;
use observer::netns::Netns;
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Instant;

/// A socket of `spec`'s kind and flags, created with `spec.uid` as fsuid (the kernel takes
/// the socket's owner uid from it).
fn socket(spec: &Spec) -> Socket {
    let domain = if spec.ip().is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let ty = match spec.proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    // SAFETY: setfsuid changes only this thread's filesystem uid; restored right after.
    let old = unsafe { libc::setfsuid(spec.uid) };
    let s = Socket::new(domain, ty, None);
    // SAFETY: as above.
    unsafe { libc::setfsuid(old as libc::uid_t) };
    let s = s.expect("socket");
    s.set_reuse_address(spec.reuseaddr).unwrap();
    s.set_reuse_port(spec.reuseport).unwrap();
    if spec.v6only {
        s.set_only_v6(true).unwrap();
    }
    s
}

fn addr(spec: &Spec) -> socket2::SockAddr {
    SocketAddr::new(spec.ip(), PORT).into()
}

fn errno(r: std::io::Result<()>) -> i32 {
    r.err().map_or(0, |e| e.raw_os_error().unwrap())
}

fn inode(s: &Socket) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
        .unwrap()
        .ino()
}

/// Leaves a TIME_WAIT socket of `spec`'s flags on `spec`'s address and PORT: a listener
/// accepts a connection, the server side closes first, then the listener goes.
fn time_wait(spec: &Spec) {
    let listener = socket(spec);
    listener.bind(&addr(spec)).expect("TIME_WAIT listener bind");
    listener.listen(1).unwrap();
    let client = Socket::new(
        Domain::for_address(SocketAddr::new(spec.ip(), PORT)),
        Type::STREAM,
        None,
    )
    .unwrap();
    client.connect(&addr(spec)).expect("connect");
    let (server_side, _) = listener.accept().unwrap();
    drop(server_side);
    drop(client);
    drop(listener);
    let deadline = Instant::now() + BOUND;
    loop {
        let on_port: Vec<_> = socktable::dump(Proto::Tcp, None)
            .unwrap()
            .into_iter()
            .filter(|s| s.port == PORT)
            .collect();
        if on_port.len() == 1 && on_port[0].state == TCP_TIME_WAIT {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no lone TIME_WAIT socket: {on_port:?}"
        );
        std::thread::yield_now();
    }
}

/// Plays a case; returns the kernel's errno for the request and the diagnosis made just
/// before it.
fn play(case: &cases::Case) -> (i32, Conflict) {
    let mut keep = Vec::new();
    for e in case.existing.iter().filter(|e| e.fate != Fate::TimeWait) {
        let s = socket(e);
        assert_eq!(errno(s.bind(&addr(e))), 0, "{}: existing {e:?}", case.name);
        keep.push((s, e));
    }
    let req = &case.request;
    let s = socket(req);
    let listen = req.fate == Fate::Listen;
    if listen {
        assert_eq!(errno(s.bind(&addr(req))), 0, "{}: request bind", case.name);
    }
    for (sock, e) in &keep {
        if e.fate == Fate::Listen {
            assert_eq!(errno(sock.listen(8)), 0, "{}: existing listen", case.name);
        }
    }
    for e in case.existing.iter().filter(|e| e.fate == Fate::TimeWait) {
        time_wait(e);
    }
    let query = Query {
        request: req.request(),
        netns: Netns::Current,
        exclude_inode: listen.then(|| inode(&s)),
        all: false,
    };
    let conflict = diagnose(&query).expect("diagnose");
    let result = if listen {
        errno(s.listen(8))
    } else {
        errno(s.bind(&addr(req)))
    };
    (result, conflict)
}

#[test]
fn every_case_kernel_and_diagnosis_agree() {
    let mut wrong = Vec::new();
    for case in cases::all() {
        let (errno, conflict) = in_netns("conflict-case", |_| play(&case));
        assert!(
            errno == 0 || errno == libc::EADDRINUSE,
            "{}: errno {errno}",
            case.name
        );
        let refused = errno == libc::EADDRINUSE;
        if refused != case.refused.is_some() {
            wrong.push(format!(
                "{}: the kernel gives errno {errno}, the case says {:?}",
                case.name, case.refused
            ));
        }
        let first = conflict
            .holders
            .first()
            .map(|h| (h.overlap.name, h.rule.name));
        // Every flag is read (TIME_WAIT ones by iter/tcp): the answer is never uncertain.
        let agrees = match conflict.verdict {
            "in_use" => refused && first == case.refused && conflict.notes.is_empty(),
            "free" => !refused && conflict.notes.is_empty(),
            _ => false,
        };
        if !agrees {
            wrong.push(format!(
                "{}: kernel errno {errno}, diagnosis {}",
                case.name,
                serde_json::to_string(&conflict).unwrap()
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The pid and comm `ss -ltnp` gives for the listener on `port`.
fn ss_listener(port: u16) -> (u32, String) {
    let guard = no_forks();
    let out = Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    drop(guard);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // users:(("python3",pid=1234,fd=3))
    let users = text
        .split("users:((\"")
        .nth(1)
        .unwrap_or_else(|| panic!("ss: {text:?}"));
    let (comm, rest) = users.split_once('"').unwrap();
    let pid = rest
        .split("pid=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    (pid.parse().unwrap(), comm.to_string())
}

/// `python3 -m http.server` on 127.0.0.1:`port` in the calling thread's namespace, ready
/// (it prints its banner after listen()).
struct HttpServer(std::process::Child);

impl HttpServer {
    fn start(port: u16) -> HttpServer {
        let guard = no_forks();
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        drop(guard);
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let banner = format!("Serving HTTP on 127.0.0.1 port {port}");
        assert!(line.starts_with(&banner), "{line:?}");
        HttpServer(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The listening socket's inode (its fd 3) and the command line, as /proc shows them.
    fn socket_and_cmdline(&self) -> (u64, String) {
        let link = std::fs::read_link(format!("/proc/{}/fd/3", self.pid())).unwrap();
        let link = link.to_str().unwrap();
        let ino = link["socket:[".len()..link.len() - 1].parse().unwrap();
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid())).unwrap();
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (ino, args.join(" "))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The conflict object expected for a SO_REUSEADDR bind on 127.0.0.1:`port` against `server`
/// (http.server sets SO_REUSEADDR: socketserver's allow_reuse_address).
fn expected_conflict(server: &HttpServer, port: u16, comm: &str) -> Value {
    let (ino, cmdline) = server.socket_and_cmdline();
    let owner = json!({"pid": server.pid(), "comm": comm, "cmdline": cmdline, "fd": 3});
    common::expect::reuseaddr_listener_conflict(port, ino, owner)
}

#[test]
fn why_names_a_real_http_server_like_ss() {
    in_netns("why-http", |_| {
        let server = HttpServer::start(8000);
        let mine = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        mine.set_reuse_address(true).unwrap();
        let target: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(errno(mine.bind(&target.into())), libc::EADDRINUSE);

        let (ss_pid, ss_comm) = ss_listener(8000);
        assert_eq!(ss_pid, server.pid());
        assert_eq!(ss_comm, "python3");
        let guard = no_forks();
        let out = Command::new(env!("CARGO_BIN_EXE_observer"))
            .args(["why", "127.0.0.1:8000", "--reuseaddr", "--json"])
            .output()
            .unwrap();
        drop(guard);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "why", "protocol": "tcp", "addr": "127.0.0.1", "port": 8000,
                "reuseaddr": true, "reuseport": false, "v6only": false, "uid": 0,
                "result": "EADDRINUSE",
                "conflict": expected_conflict(&server, 8000, &ss_comm)
            })
        );
    });
}

/// `observer watch` sees the failing bind and, off the event path, attaches the conflict:
/// the python server's pid and comm, as `ss -ltnp` names them, and the rule.
#[test]
fn watch_attaches_the_conflict_to_eaddrinuse() {
    in_netns("watch-http", |c| {
        let server = HttpServer::start(8001);
        let mut obs = Observer::watch(c, &[]);
        let mine = Sock::tcp4().set(Opt::ReuseAddr, true);
        assert_eq!(mine.bind("127.0.0.1:8001"), libc::EADDRINUSE);
        let (ss_pid, ss_comm) = ss_listener(8001);
        assert_eq!(ss_pid, server.pid());
        obs.expect_explained(
            bind_event(c, &mine, "127.0.0.1:8001")
                .flag(Opt::ReuseAddr)
                .fails("EADDRINUSE", 98)
                .conflict(expected_conflict(&server, 8001, &ss_comm)),
        );
        let summary = obs.stop();
        assert_eq!(summary["conflict_lookups"], 1, "{summary}");
        assert_eq!(summary["conflict_queue_full"], 0, "{summary}");
        assert_eq!(summary["conflict_repeats"], 0, "{summary}");
        assert_eq!(summary["conflict_unfinished"], 0, "{summary}");
    });
}

/// A port-0 bind that fails because the ephemeral range is used up: the event's conflict
/// reports the range, the reserved ports and how many are in use; `why ADDR:0` agrees.
#[test]
fn ephemeral_exhaustion_reports_the_range() {
    in_netns("ephemeral", |c| {
        // Per network namespace: only this test's.
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001").unwrap();
        let mut obs = Observer::watch(c, &[]);
        let a = Sock::tcp4();
        let b = Sock::tcp4();
        let late = Sock::tcp4();
        assert_eq!(a.bind("127.0.0.1:0"), 0);
        assert_eq!(b.bind("127.0.0.1:0"), 0);
        assert_eq!(late.bind("127.0.0.1:0"), libc::EADDRINUSE);
        let bound = |s: &Sock| format!("127.0.0.1:{}", s.local().port());
        let ephemeral = json!({
            "verdict": "ephemeral",
            "holders": [],
            "fixes": ["widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\" (28230 ports of it free for this socket)"],
            "ephemeral": {"range": [40000, 40001], "reserved": "", "reserved_in_range": 0, "in_use": 2, "free": 0},
            "notes": []
        });
        obs.expect(&[
            bind_event(c, &a, "127.0.0.1:0").bound(&bound(&a)),
            bind_event(c, &b, "127.0.0.1:0").bound(&bound(&b)),
        ]);
        obs.expect_explained(
            bind_event(c, &late, "127.0.0.1:0")
                .fails("EADDRINUSE", 98)
                .conflict(ephemeral.clone()),
        );
        obs.stop();
        let guard = no_forks();
        let out = Command::new(env!("CARGO_BIN_EXE_observer"))
            .args(["why", "127.0.0.1:0", "--json"])
            .output()
            .unwrap();
        drop(guard);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["conflict"], ephemeral);
        // The fix, applied: the bind finds a port.
        let fix = ephemeral["fixes"][0].as_str().unwrap();
        std::fs::write(
            "/proc/sys/net/ipv4/ip_local_port_range",
            fix.split('"').nth(1).unwrap(),
        )
        .unwrap();
        let again = Sock::tcp4();
        assert_eq!(again.bind("127.0.0.1:0"), 0);
    });
}

/// The lookup runs after the failure: when the holder has gone by then, the event says so;
/// when the whole namespace has gone, it says that.
#[test]
fn lookup_after_the_holder_is_gone_says_so() {
    use observer::conflict::diagnoser::conflict_of;
    use observer::model::{BindEvent, Endpoint, Flags, Op, Requested};
    in_netns("holder-gone", |c| {
        let holder = Sock::tcp4();
        let failing = Sock::tcp4();
        assert_eq!(holder.bind("127.0.0.1:7100"), 0);
        assert_eq!(failing.bind("127.0.0.1:7100"), libc::EADDRINUSE);
        let event = BindEvent {
            record_type: "bind",
            seq: 0,
            time: String::new(),
            op: Op::Bind,
            pid: c.pid,
            tid: c.tid,
            uid: c.uid,
            comm: c.comm.clone(),
            netns: Some(c.netns as u32),
            family: Some("inet".into()),
            protocol: Some("tcp".into()),
            fd: Some(failing.fd()),
            requested: Some(Requested::Inet(Endpoint {
                addr: "127.0.0.1".parse().unwrap(),
                port: 7100,
                scope_id: None,
            })),
            bound: None,
            remote: observer::model::Remote::Absent,
            flags: Flags::default(),
            bound_dev_if: Some(0),
            sock_uid: Some(0),
            sock_ino: None,
            result: "EADDRINUSE".into(),
            errno: libc::EADDRINUSE,
            hook: "tracepoint:sys_exit_bind",
            call_id: None,
            cgroup: None,
            cgroup_id: 0,
            unreadable: observer::model::Unreadable::NONE,
            repeat_of: None,
            repeat_time: None,
            repeat_flags_differ: false,
            conflict: None,
        };
        assert_eq!(conflict_of(&event).verdict, "in_use");
        drop(holder);
        let gone = conflict_of(&event);
        assert_eq!(gone.verdict, "free");
        assert!(gone.holders.is_empty());
        assert_eq!(
            gone.notes,
            ["the socket in the way has gone since the failure"]
        );
        let elsewhere = BindEvent {
            netns: Some(1),
            ..event
        };
        let unavailable = conflict_of(&elsewhere);
        assert_eq!(unavailable.verdict, "unavailable");
        assert_eq!(
            unavailable.notes,
            [
                "no way into network namespace 1 is left: the failing thread is in another namespace now and no process is in it any more"
            ]
        );
    });
}

/// `why --netns` looks into another namespace than its own: from the host's, the server's.
#[test]
fn why_looks_into_the_namespace_it_is_given() {
    let server = in_netns("why-netns", |_| HttpServer::start(8002));
    let ns = format!("/proc/{}/ns/net", server.pid());
    let ask = |netns: Option<&str>| {
        let mut args = vec!["why", "127.0.0.1:8002", "--reuseaddr", "--json"];
        if let Some(ns) = netns {
            args.extend(["--netns", ns]);
        }
        let guard = no_forks();
        let out = Command::new(env!("CARGO_BIN_EXE_observer"))
            .args(&args)
            .output()
            .unwrap();
        drop(guard);
        out
    };
    let there = ask(Some(&ns));
    assert_eq!(there.status.code(), Some(3), "{there:?}");
    let v: Value = serde_json::from_slice(&there.stdout).unwrap();
    assert_eq!(
        v["conflict"]["holders"][0]["owners"][0]["pid"],
        server.pid()
    );
    // The host's own namespace knows nothing of it (the port is free there, unless something
    // on the host holds it: then the holder is not the server).
    let here = ask(None);
    let v: Value = serde_json::from_slice(&here.stdout).unwrap();
    let holders = v["conflict"]["holders"].as_array().unwrap();
    assert!(
        holders
            .iter()
            .all(|h| h["owners"][0]["pid"] != server.pid()),
        "{v}"
    );
    // A path that names no network namespace is bad usage, refused before any lookup.
    let missing = ask(Some("/nonexistent/ns"));
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "observer: invalid value '/nonexistent/ns' for '--netns <PATH>': cannot open \
         `/nonexistent/ns`: No such file or directory (os error 2) (see `observer --help`)\n"
    );
}

/// A port the kernel itself holds (a VXLAN device's UDP socket): no owner process, its options
/// read by iter/udp, and no advice to change them.
#[test]
fn kernel_held_udp_port_has_no_owner_but_known_flags() {
    in_netns("kernel-udp", |_| {
        for args in [
            &[
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                "1",
                "dstport",
                "4789",
                "local",
                "127.0.0.1",
            ][..],
            &["link", "set", "vx0", "up"][..],
        ] {
            let guard = no_forks();
            let status = Command::new("ip").args(args).status().expect("ip");
            drop(guard);
            assert!(status.success(), "ip {args:?}");
        }
        let spec = cases::udp("0.0.0.0");
        let s = socket(&spec);
        let query = Query {
            request: Request {
                port: 4789,
                ..spec.request()
            },
            netns: Netns::Current,
            exclude_inode: None,
            all: false,
        };
        let conflict = diagnose(&query).expect("diagnose");
        let target: SocketAddr = "0.0.0.0:4789".parse().unwrap();
        assert_eq!(errno(s.bind(&target.into())), libc::EADDRINUSE);
        assert_eq!(conflict.verdict, "in_use");
        let h = &conflict.holders[0];
        assert_eq!((h.state, h.port, h.uid), ("UNCONN", 4789, Some(0)));
        assert!(h.owners.is_empty());
        assert_eq!(
            h.owner_note,
            Some("no process has a descriptor for it (closed since, or held by the kernel)")
        );
        assert_eq!((h.reuseaddr, h.reuseport), (Some(false), Some(false)));
        assert_eq!(conflict.fixes, ["port 4790 is free for this socket"]);
        assert!(conflict.notes.is_empty(), "{:?}", conflict.notes);
    });
}

/// The free port a fix offers is free for real: the ports above the request are in the
/// lookup's socket table too (a port taken by a wildcard listener is skipped), and the
/// offered one binds.
#[test]
fn the_port_offered_is_free_when_the_next_ones_are_taken() {
    in_netns("next-port", |_| {
        let held: Vec<Socket> = ["127.0.0.1:7300", "0.0.0.0:7301", "127.0.0.1:7302"]
            .iter()
            .map(|a| {
                let spec = cases::tcp(a.split(':').next().unwrap());
                let s = socket(&spec);
                let at: SocketAddr = a.parse().unwrap();
                assert_eq!(errno(s.bind(&at.into())), 0, "{a}");
                assert_eq!(errno(s.listen(8)), 0, "{a}");
                s
            })
            .collect();
        let query = Query {
            request: Request {
                port: 7300,
                ..cases::tcp("127.0.0.1").request()
            },
            netns: Netns::Current,
            exclude_inode: None,
            all: false,
        };
        let conflict = diagnose(&query).expect("diagnose");
        assert_eq!(conflict.verdict, "in_use");
        let offered: Vec<&String> = conflict
            .fixes
            .iter()
            .filter(|f| f.starts_with("port "))
            .collect();
        assert_eq!(offered, ["port 7303 is free for this socket"]);
        for (port, want) in [
            (7301, libc::EADDRINUSE),
            (7302, libc::EADDRINUSE),
            (7303, 0),
        ] {
            let s = socket(&cases::tcp("127.0.0.1"));
            let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            assert_eq!(errno(s.bind(&at.into())), want, "port {port}");
        }
        drop(held);
    });
}
