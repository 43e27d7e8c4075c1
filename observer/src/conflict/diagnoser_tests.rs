//! The lookup queue with a lookup that blocks until the test lets it go: handing events over
//! never waits, a full queue gives the event back and counts it, results come back in order,
//! and the end of a run returns every event, with or without its conflict, counting the
//! unfinished lookups.

use super::*;
use crate::model::{Endpoint, Flags};
use std::sync::mpsc;
use std::time::Instant;

fn event(port: u16) -> BindEvent {
    BindEvent {
        record_type: "bind",
        time: String::new(),
        op: Op::Bind,
        pid: 1,
        tid: 1,
        uid: 0,
        comm: "t".into(),
        netns: Some(1),
        family: Some("inet".into()),
        protocol: Some("tcp".into()),
        fd: Some(3),
        requested: Some(Requested::Inet(Endpoint {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            scope_id: None,
        })),
        bound: None,
        flags: Flags::default(),
        bound_dev_if: Some(0),
        sock_uid: Some(0),
        sock_ino: Some(9),
        result: "EADDRINUSE".into(),
        errno: libc::EADDRINUSE,
        hook: "tracepoint:sys_exit_bind",
        call_id: None,
        cgroup: None,
        cgroup_id: 0,
        conflict: None,
    }
}

fn marked(e: &BindEvent) -> Conflict {
    Conflict {
        verdict: "free",
        holders: Vec::new(),
        fixes: Vec::new(),
        ephemeral: None,
        notes: vec![format!("port {}", e.requested_port().unwrap())],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn wants_only_inet_eaddrinuse() {
    assert!(wants(&event(1)));
    let mut other = event(1);
    other.errno = libc::EACCES;
    assert!(!wants(&other));
    other = event(1);
    other.family = Some("af1".into());
    assert!(!wants(&other));
}

#[test]
fn a_stuck_lookup_never_blocks_and_nothing_is_lost() {
    let (started_tx, started) = mpsc::channel();
    let (gate, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let (mut submitter, done) = start_with(move |e| {
        let _ = started_tx.send(());
        // Blocks until the test sends or drops the gate.
        let _ = gate_rx.lock().unwrap().recv();
        marked(e)
    })
    .unwrap();
    let began = Instant::now();
    assert!(submitter.submit(&event(1)));
    started
        .recv_timeout(Duration::from_secs(20))
        .expect("the worker took the first event");
    for port in 2..=(QUEUE as u16 + 1) {
        assert!(submitter.submit(&event(port)), "port {port}");
    }
    assert!(
        !submitter.submit(&event(999)),
        "a full queue declines it (it is written as it is)"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "submitting waited"
    );
    assert_eq!(
        (submitter.submitted, submitter.queue_full),
        (QUEUE as u64 + 1, 1)
    );

    // One lookup finishes; the rest are still stuck when the run ends.
    gate.send(()).unwrap();
    let (events, unfinished) =
        runtime().block_on(done.finish(submitter, Duration::from_millis(300)));
    assert_eq!(events.len(), QUEUE + 1);
    assert_eq!(events[0].conflict.as_ref().unwrap().notes, ["port 1"]);
    assert!(events[1..].iter().all(|e| e.conflict.is_none()));
    let ports: Vec<u16> = events.iter().filter_map(|e| e.requested_port()).collect();
    assert_eq!(ports, (1..=QUEUE as u16 + 1).collect::<Vec<_>>());
    assert_eq!(unfinished, QUEUE as u64);
    drop(gate);
}

#[test]
fn results_come_back_in_order_with_their_conflict() {
    let (mut submitter, mut done) = start_with(marked).unwrap();
    for port in [5, 6, 7] {
        assert!(submitter.submit(&event(port)));
    }
    let rt = runtime();
    let got: Vec<Vec<String>> = (0..3)
        .map(|_| rt.block_on(done.next()).conflict.unwrap().notes)
        .collect();
    assert_eq!(got, [["port 5"], ["port 6"], ["port 7"]]);
    let (rest, unfinished) = rt.block_on(done.finish(submitter, Duration::from_secs(1)));
    assert!(rest.is_empty());
    assert_eq!(unfinished, 0);
}

#[test]
fn a_retry_loop_gets_one_lookup_per_window() {
    let (mut submitter, mut done) = start_with(marked).unwrap();
    assert!(submitter.submit(&event(7)), "the first is looked up");
    for _ in 0..1000 {
        assert!(!submitter.submit(&event(7)), "a repeat goes out at once");
    }
    assert!(
        submitter.submit(&event(8)),
        "another port is another question"
    );
    let mut udp = event(7);
    udp.protocol = Some("udp".into());
    assert!(submitter.submit(&udp), "another protocol too");
    assert_eq!(
        (submitter.submitted, submitter.repeats, submitter.queue_full),
        (3, 1000, 0)
    );
    let rt = runtime();
    let notes: Vec<Vec<String>> = (0..3)
        .map(|_| rt.block_on(done.next()).conflict.unwrap().notes)
        .collect();
    assert_eq!(notes, [["port 7"], ["port 8"], ["port 7"]]);
}
