//! Identical repeats of a failed call are folded in the kernel: a thread retrying the same
//! failing bind() gives one `bind` event and `repeat` records naming it, whose counts add up to
//! the retries exactly; another call ends the run (its count comes first); a run that simply
//! stops is reported by the collector's tick; `--every-call` sends every call; successful
//! calls are never folded. Real sockets in a private namespace, loopback only.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::{BOUND, Caller, Observer, Sock, in_netns};
use serde_json::Value;
use std::time::{Duration, Instant};

const RETRIES: u64 = 10_000;

/// A listener on 127.0.0.1:`port` (its bind and listen are events 1 and 2 of a fresh
/// observer).
fn listener(port: u16) -> Sock {
    let l = Sock::tcp4();
    assert_eq!(l.bind(&format!("127.0.0.1:{port}")), 0);
    assert_eq!(l.listen(), 0);
    l
}

/// Reads records until `want` is true of one (it is returned with those before it).
fn until(o: &mut Observer, what: &str, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + BOUND;
    let mut got = Vec::new();
    loop {
        let r = o.next_any(deadline, what);
        let done = want(&r);
        got.push(r);
        if done {
            return got;
        }
    }
}

fn kind(r: &Value) -> &str {
    r["type"].as_str().unwrap_or_default()
}

/// The bind event numbered `seq` of `c`, failing with EADDRINUSE on `port`.
fn assert_failed_bind(r: &Value, c: &Caller, seq: u64, port: u16) {
    assert_eq!(kind(r), "bind", "{r}");
    assert_eq!(r["seq"], seq, "{r}");
    assert_eq!(r["op"], "bind", "{r}");
    assert_eq!(r["tid"], c.tid, "{r}");
    assert_eq!(r["result"], "EADDRINUSE", "{r}");
    assert_eq!(r["requested"]["port"], port, "{r}");
}

/// Checks that `records` are repeat records of event `of` by `c` and returns their counts'
/// sum; each `total` is the running sum.
fn repeats_of(records: &[Value], c: &Caller, of: u64) -> u64 {
    let mut sum = 0;
    for r in records {
        assert_eq!(kind(r), "repeat", "{r}");
        assert_eq!(r["of"], of, "{r}");
        assert_eq!(r["tid"], c.tid, "{r}");
        assert_eq!(r["pid"], c.pid, "{r}");
        let count = r["count"].as_u64().unwrap();
        assert!(count > 0, "{r}");
        sum += count;
        assert_eq!(r["total"], sum, "{r}");
    }
    sum
}

#[test]
fn a_retry_loop_is_one_event_and_its_exact_repeats_and_another_call_ends_it() {
    in_netns("fold-retry", |c| {
        let mut o = Observer::watch(c, &["--no-conflicts"]);
        let _a = listener(7101);
        let _b = listener(7102);
        let s = Sock::tcp4();
        for _ in 0..RETRIES {
            assert_eq!(s.bind("127.0.0.1:7101"), libc::EADDRINUSE);
        }
        // Another call (another address) ends the run.
        assert_eq!(s.bind("127.0.0.1:7102"), libc::EADDRINUSE);
        let first = until(&mut o, "the first failed bind", |r| {
            kind(r) == "bind" && r["seq"] == 5
        });
        assert_eq!(first.len(), 5, "{first:?}");
        assert_failed_bind(&first[4], c, 5, 7101);
        let rest = until(&mut o, "the bind that ended the run", |r| kind(r) == "bind");
        let (event, repeats) = rest.split_last().unwrap();
        assert_failed_bind(event, c, 6, 7102);
        assert_eq!(repeats_of(repeats, c, 5), RETRIES - 1, "{repeats:?}");
        // The thread's own program sent the last count, before the call that ended the run.
        assert_eq!(repeats.last().unwrap()["reason"], "ended", "{repeats:?}");
        let summary = o.finish_after_signal();
        assert_eq!(summary["events"], 6, "{summary}");
        assert_eq!(summary["repeats"], RETRIES - 1, "{summary}");
        assert_eq!(summary["repeats_unknown"], 0, "{summary}");
        assert_eq!(summary["fold_busy"], 0, "{summary}");
        assert_eq!(summary["results"]["EADDRINUSE"], RETRIES + 1, "{summary}");
        assert_eq!(summary["results"]["OK"], 4, "{summary}");
    });
}

#[test]
fn the_tail_of_a_run_that_stops_comes_within_ticks() {
    in_netns("fold-tail", |c| {
        let mut o = Observer::watch(c, &["--no-conflicts"]);
        let _a = listener(7103);
        let s = Sock::tcp4();
        for _ in 0..RETRIES {
            assert_eq!(s.bind("127.0.0.1:7103"), libc::EADDRINUSE);
        }
        let stopped = Instant::now();
        // Nothing else happens: only the collector's tick can report the rest.
        let head = until(&mut o, "the failed bind", |r| {
            kind(r) == "bind" && r["seq"] == 3
        });
        assert_failed_bind(head.last().unwrap(), c, 3, 7103);
        let mut repeats = Vec::new();
        let mut sum = 0;
        while sum < RETRIES - 1 {
            let r = o.next_any(Instant::now() + BOUND, "the repeats");
            repeats.push(r);
            sum = repeats_of(&repeats, c, 3);
        }
        assert_eq!(sum, RETRIES - 1, "{repeats:?}");
        assert!(repeats.iter().all(|r| r["reason"] == "tick"), "{repeats:?}");
        // The tick is 100 ms; a loaded machine gets a generous bound.
        let waited = stopped.elapsed();
        assert!(waited < Duration::from_secs(5), "tail after {waited:?}");
        let summary = o.finish_after_signal();
        assert_eq!(summary["events"], 3, "{summary}");
        assert_eq!(summary["repeats"], RETRIES - 1, "{summary}");
    });
}

#[test]
fn every_call_sends_every_call() {
    const N: u64 = 2_000;
    in_netns("fold-every", |c| {
        let mut o = Observer::watch(c, &["--no-conflicts", "--every-call"]);
        let _a = listener(7104);
        let s = Sock::tcp4();
        for _ in 0..N {
            assert_eq!(s.bind("127.0.0.1:7104"), libc::EADDRINUSE);
        }
        let got = o.take(N as usize + 2);
        for (i, r) in got[2..].iter().enumerate() {
            assert_failed_bind(r, c, i as u64 + 3, 7104);
        }
        let summary = o.stop();
        assert_eq!(summary["repeats"], 0, "{summary}");
    });
}

#[test]
fn successful_calls_are_never_folded() {
    const N: usize = 200;
    in_netns("fold-ok", |c| {
        let mut o = Observer::watch(c, &["--no-conflicts"]);
        let l = Sock::tcp4();
        assert_eq!(l.bind("127.0.0.1:7105"), 0);
        // listen() on a listening socket succeeds again: the same call, the same result.
        for _ in 0..N {
            assert_eq!(l.listen(), 0);
        }
        let got = o.take(N + 1);
        assert!(
            got[1..]
                .iter()
                .all(|r| r["op"] == "listen" && r["result"] == "OK" && r["tid"] == c.tid)
        );
        let summary = o.stop();
        assert_eq!(summary["repeats"], 0, "{summary}");
    });
}

#[test]
fn alternating_failures_are_each_an_event() {
    in_netns("fold-alternate", |c| {
        let mut o = Observer::watch(c, &["--no-conflicts"]);
        let _a = listener(7106);
        let _b = listener(7107);
        let s = Sock::tcp4();
        for i in 0..100 {
            let port = if i % 2 == 0 { 7106 } else { 7107 };
            assert_eq!(s.bind(&format!("127.0.0.1:{port}")), libc::EADDRINUSE);
        }
        let got = o.take(104);
        for (i, r) in got[4..].iter().enumerate() {
            let port = if i % 2 == 0 { 7106 } else { 7107 };
            assert_failed_bind(r, c, i as u64 + 5, port);
        }
        let summary = o.stop();
        assert_eq!(summary["repeats"], 0, "{summary}");
    });
}
