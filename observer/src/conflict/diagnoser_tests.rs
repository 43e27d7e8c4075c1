//! The lookup queue with a lookup that blocks until the test lets it go: handing events over
//! never waits, a full queue declines the event and counts it, answers come back in order by
//! `seq`, a retry points at the event that asked first, and the end of a run returns the
//! answers that came, counting the unfinished lookups.

use super::*;
use crate::model::{Endpoint, Flags};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

fn event(seq: u64, port: u16) -> BindEvent {
    let mut e = BindEvent::blank();
    e.seq = seq;
    e.time = format!("t{seq}");
    e.pid = 1;
    e.tid = 1;
    e.comm = "t".into();
    e.netns = Some(1);
    e.family = Some("inet".into());
    e.protocol = Some("tcp".into());
    e.fd = Some(3);
    e.requested = Some(Requested::Inet(Endpoint {
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        scope_id: None,
    }));
    e.flags = Flags::default();
    e.bound_dev_if = Some(0);
    e.sock_uid = Some(0);
    e.sock_ino = Some(9);
    e.result = "EADDRINUSE".into();
    e.errno = libc::EADDRINUSE;
    e.hook = "tracepoint:sys_exit_bind";
    e
}

fn marked(job: &Job) -> Conflict {
    let e = &job.event;
    Conflict {
        verdict: "free",
        holders: Vec::new(),
        fixes: Vec::new(),
        ephemeral: None,
        connect: None,
        notes: vec![format!("port {}", e.requested_port().unwrap())],
        refusal: None,
        sharing: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn wants_only_inet_eaddrinuse_of_a_call() {
    assert!(wants(&event(1, 1)));
    let mut other = event(1, 1);
    other.errno = libc::EACCES;
    assert!(!wants(&other));
    other = event(1, 1);
    other.family = Some("af1".into());
    assert!(!wants(&other));
    other = event(1, 1);
    other.op = Op::GetPort;
    assert!(!wants(&other), "the bind it ran inside is looked up");
}

/// A connect is looked up when it found no local port: TCP's EADDRNOTAVAIL toward its
/// destination, UDP's EAGAIN as the port-0 bind its autobind made on the address it holds.
#[test]
fn connects_without_a_port_are_looked_up_and_udp_asks_for_its_autobind() {
    let connect = |proto: &'static str, errno: i32| {
        let mut e = event(1, 0);
        e.op = Op::Connect;
        e.requested = None;
        e.bound = None;
        e.remote = crate::model::Remote::Inet(Endpoint {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 53,
            scope_id: None,
        });
        e.protocol = Some(proto.into());
        e.errno = errno;
        e
    };
    assert!(wants(&connect("tcp", libc::EADDRNOTAVAIL)));
    assert!(wants(&connect("udp", libc::EAGAIN)));
    assert!(!wants(&connect("udp", libc::EADDRNOTAVAIL)));
    assert!(!wants(&connect("tcp", libc::EAGAIN)));
    assert!(!wants(&connect("tcp", libc::ECONNREFUSED)));

    let tcp = request_of(&connect("tcp", libc::EADDRNOTAVAIL)).unwrap();
    assert_eq!(
        (tcp.proto, tcp.addr.to_string(), tcp.port),
        (Proto::Tcp, "127.0.0.1".into(), 53)
    );
    let mut udp = connect("udp", libc::EAGAIN);
    udp.flags.set(Opt::ReuseAddr, Some(true));
    let r = request_of(&udp).unwrap();
    assert_eq!(
        (r.proto, r.addr.to_string(), r.port, r.reuseaddr),
        (Proto::Udp, "0.0.0.0".into(), 0, true)
    );
    udp.family = Some("inet6".into());
    assert_eq!(request_of(&udp).unwrap().addr.to_string(), "::");
    // Bound to an address with IP_BIND_ADDRESS_NO_PORT: the autobind keeps it.
    udp.bound = Some(Endpoint {
        addr: std::net::Ipv6Addr::LOCALHOST.into(),
        port: 0,
        scope_id: None,
    });
    assert_eq!(request_of(&udp).unwrap().addr.to_string(), "::1");
}

#[test]
fn a_stuck_lookup_never_blocks_and_nothing_is_lost() {
    let (started_tx, started) = mpsc::channel();
    let (gate, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    // One worker: the first job blocks it, the queue fills behind.
    let started_tx = Mutex::new(started_tx);
    let (mut submitter, done) = start_with(1, move |e| {
        let _ = started_tx.lock().unwrap().send(());
        // Blocks until the test sends or drops the gate.
        let _ = gate_rx.lock().unwrap().recv();
        marked(e)
    })
    .unwrap();
    let began = Instant::now();
    assert_eq!(submitter.submit(&event(1, 1)), Submitted::Lookup);
    started
        .recv_timeout(Duration::from_secs(20))
        .expect("the worker took the first event");
    for port in 2..=(QUEUE as u16 + 1) {
        assert_eq!(
            submitter.submit(&event(u64::from(port), port)),
            Submitted::Lookup,
            "port {port}"
        );
    }
    assert_eq!(
        submitter.submit(&event(60_000, 60_000)),
        Submitted::QueueFull
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "submitting waited"
    );
    assert_eq!(
        (submitter.submitted, submitter.queue_full),
        (QUEUE as u64 + 1, 1)
    );
    assert_eq!(submitter.in_flight(), QUEUE + 1);

    // One lookup finishes; the rest are still stuck when the run ends.
    gate.send(()).unwrap();
    let (answers, unfinished) =
        runtime().block_on(done.finish(submitter, Duration::from_millis(300)));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, 1);
    assert_eq!(answers[0].1.notes, ["port 1"]);
    assert_eq!(unfinished, QUEUE as u64);
    drop(gate);
}

#[test]
fn answers_come_back_in_order_by_seq() {
    let (mut submitter, mut done) = start_with(1, marked).unwrap();
    for (seq, port) in [(10, 5), (11, 6), (12, 7)] {
        assert_eq!(submitter.submit(&event(seq, port)), Submitted::Lookup);
    }
    let rt = runtime();
    let got: Vec<(u64, Vec<String>)> = (0..3)
        .map(|_| {
            let (seq, c) = rt.block_on(done.next());
            (seq, c.notes)
        })
        .collect();
    assert_eq!(
        got,
        [
            (10, vec!["port 5".to_string()]),
            (11, vec!["port 6".to_string()]),
            (12, vec!["port 7".to_string()])
        ]
    );
    let (rest, unfinished) = rt.block_on(done.finish(submitter, Duration::from_secs(1)));
    assert!(rest.is_empty());
    assert_eq!(unfinished, 0);
}

#[test]
fn a_retry_loop_gets_one_lookup_per_window_and_points_at_it() {
    let (mut submitter, mut done) = start_with(1, marked).unwrap();
    assert_eq!(submitter.submit(&event(1, 7)), Submitted::Lookup);
    for seq in 2..1002 {
        assert_eq!(
            submitter.submit(&event(seq, 7)),
            Submitted::Repeat {
                of: 1,
                time: "t1".into(),
                flags_differ: false
            },
            "a repeat goes out at once, pointing at the first"
        );
    }
    assert_eq!(
        submitter.submit(&event(1002, 8)),
        Submitted::Lookup,
        "another port is another question"
    );
    let mut udp = event(1003, 7);
    udp.protocol = Some("udp".into());
    assert_eq!(
        submitter.submit(&udp),
        Submitted::Lookup,
        "another protocol too"
    );
    let mut reuse = event(1004, 7);
    reuse.flags.set(Opt::ReuseAddr, Some(true));
    assert_eq!(
        submitter.submit(&reuse),
        Submitted::Lookup,
        "a retry with SO_REUSEADDR asks another question"
    );
    let mut freebind = event(1005, 7);
    freebind.flags.set(Opt::FreeBind, Some(true));
    assert_eq!(
        submitter.submit(&freebind),
        Submitted::Repeat {
            of: 1,
            time: "t1".into(),
            flags_differ: true
        },
        "IP_FREEBIND does not change the answer, but the retry says it differs"
    );
    // Back to the first question after others: found through the map, not `last`.
    assert!(matches!(
        submitter.submit(&event(1006, 7)),
        Submitted::Repeat { of: 1, .. }
    ));
    assert_eq!(
        (submitter.submitted, submitter.repeats, submitter.queue_full),
        (4, 1002, 0)
    );
    let rt = runtime();
    let seqs: Vec<u64> = (0..4).map(|_| rt.block_on(done.next()).0).collect();
    assert_eq!(seqs, [1, 1002, 1003, 1004]);
}

#[test]
fn a_slow_lookup_does_not_hold_up_the_others() {
    let (gate, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let (mut submitter, mut done) = start_with(2, move |job| {
        if job.event.seq == 1 {
            // The slow namespace: held until the test lets it go.
            let _ = gate_rx.lock().unwrap().recv();
        }
        marked(job)
    })
    .unwrap();
    assert_eq!(submitter.submit(&event(1, 1)), Submitted::Lookup);
    assert_eq!(submitter.submit(&event(2, 2)), Submitted::Lookup);
    assert_eq!(submitter.submit(&event(3, 3)), Submitted::Lookup);
    let rt = runtime();
    let first_two: Vec<u64> = (0..2).map(|_| rt.block_on(done.next()).0).collect();
    assert_eq!(first_two, [2, 3], "answered while 1 is stuck");
    gate.send(()).unwrap();
    assert_eq!(rt.block_on(done.next()).0, 1);
}
