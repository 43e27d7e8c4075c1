//! Call order around pending explanations, on a sink that records what it is given.

use super::*;
use crate::model::{LostRecord, StartRecord, Summary};

#[derive(Default)]
struct Record(Vec<String>);

impl Sink for Record {
    fn start(&mut self, _: &StartRecord) -> io::Result<()> {
        Ok(())
    }
    fn event(&mut self, e: &BindEvent) -> io::Result<()> {
        let verdict = e.conflict.as_ref().map_or("-", |c| c.verdict);
        self.0.push(format!("event {} {verdict}", e.seq));
        Ok(())
    }
    fn explanation(&mut self, x: &ExplanationRecord) -> io::Result<()> {
        self.0.push(format!(
            "explanation of {} at {} {}",
            x.of, x.event_time, x.conflict.verdict
        ));
        Ok(())
    }
    fn lost(&mut self, _: &LostRecord) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A failed call (a successful one waits only to learn whether it shares its port, see
/// `a_success_that_waits_is_written_without_a_pending_answer`).
fn event(seq: u64) -> BindEvent {
    let mut e = BindEvent::blank();
    e.seq = seq;
    e.time = format!("t{seq}");
    e.errno = libc::EADDRINUSE;
    e
}

fn answer(verdict: &'static str) -> Conflict {
    Conflict::with_note(verdict, String::new())
}

const MS: u64 = 1_000_000;

#[test]
fn nothing_waits_when_nothing_is_pending() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    hold.write(&event(1), 0, &mut sink).unwrap();
    hold.write(&event(2), 0, &mut sink).unwrap();
    assert_eq!(sink.0, ["event 1 -", "event 2 -"]);
    assert_eq!(hold.deadline(), None);
    assert_eq!(hold.held, 0);
}

#[test]
fn later_events_wait_behind_a_pending_explanation_and_keep_call_order() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    hold.write(&event(1), 0, &mut sink).unwrap();
    hold.wait(&event(2), 10 * MS);
    hold.write(&event(3), 11 * MS, &mut sink).unwrap();
    hold.wait(&event(4), 12 * MS);
    hold.write(&event(5), 13 * MS, &mut sink).unwrap();
    assert_eq!(sink.0, ["event 1 -"], "everything after 2 waits");
    assert_eq!(hold.deadline(), Some(10 * MS + HOLD.as_nanos() as u64));
    // 4's answer first: 2 still waits, so nothing moves.
    hold.answer(4, answer("free"), 20 * MS, || "now".into(), &mut sink)
        .unwrap();
    assert_eq!(sink.0, ["event 1 -"]);
    hold.answer(2, answer("in_use"), 30 * MS, || "now".into(), &mut sink)
        .unwrap();
    assert_eq!(
        sink.0,
        [
            "event 1 -",
            "event 2 in_use",
            "event 3 -",
            "event 4 free",
            "event 5 -"
        ]
    );
    assert_eq!((hold.held, hold.max_ns), (4, 20 * MS));
    assert_eq!(hold.deadline(), None);
}

#[test]
fn a_slow_lookup_holds_nothing_longer_than_the_bound_and_its_answer_follows() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    hold.wait(&event(1), 0);
    hold.write(&event(2), MS, &mut sink).unwrap();
    let bound = HOLD.as_nanos() as u64;
    hold.flush(bound - 1, &mut sink).unwrap();
    assert!(sink.0.is_empty(), "not yet");
    hold.flush(bound, &mut sink).unwrap();
    assert_eq!(sink.0, ["event 1 pending", "event 2 -"]);
    hold.write(&event(3), bound, &mut sink).unwrap();
    hold.answer(1, answer("in_use"), bound + MS, || "now".into(), &mut sink)
        .unwrap();
    assert_eq!(
        sink.0,
        [
            "event 1 pending",
            "event 2 -",
            "event 3 -",
            "explanation of 1 at t1 in_use"
        ]
    );
    assert_eq!(hold.late_explanations, 1);
    // An answer nobody is owed (given already) is dropped.
    hold.answer(1, answer("free"), bound + MS, || "now".into(), &mut sink)
        .unwrap();
    assert_eq!(sink.0.len(), 4);
}

#[test]
fn a_full_hold_lets_the_oldest_go() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    hold.wait(&event(1), 0);
    for seq in 2..=(HOLD_MAX as u64) {
        hold.write(&event(seq), 0, &mut sink).unwrap();
    }
    assert!(sink.0.is_empty(), "{HOLD_MAX} events may wait");
    hold.write(&event(HOLD_MAX as u64 + 1), 0, &mut sink)
        .unwrap();
    assert_eq!(sink.0.len(), HOLD_MAX + 1, "the wait ended: all written");
    assert_eq!(sink.0[0], "event 1 pending");
    assert_eq!(sink.0[HOLD_MAX], format!("event {} -", HOLD_MAX + 1));
}

#[test]
fn the_end_writes_what_is_held_and_keeps_every_promise() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    hold.wait(&event(1), 0);
    hold.flush(HOLD.as_nanos() as u64, &mut sink).unwrap();
    hold.wait(&event(2), HOLD.as_nanos() as u64);
    hold.write(&event(3), HOLD.as_nanos() as u64, &mut sink)
        .unwrap();
    hold.end(HOLD.as_nanos() as u64, "end", &mut sink).unwrap();
    assert_eq!(
        sink.0,
        [
            "event 1 pending",
            "event 2 unavailable",
            "event 3 -",
            "explanation of 1 at t1 unavailable"
        ]
    );
}

#[test]
fn an_event_settled_without_a_lookup_goes_out_changed_and_in_order() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    hold.wait(&event(1), 0);
    hold.write(&event(2), 0, &mut sink).unwrap();
    assert!(
        hold.settle(1, MS, &mut sink, |e| e.conflict = Some(answer("free")))
            .unwrap()
    );
    assert_eq!(sink.0, ["event 1 free", "event 2 -"]);
    assert!(
        !hold
            .settle(1, MS, &mut sink, |_| panic!("not waiting any more"))
            .unwrap()
    );
}

#[test]
fn a_success_that_waits_is_written_without_a_pending_answer() {
    let (mut hold, mut sink) = (Hold::default(), Record::default());
    let mut ok = event(1);
    ok.errno = 0;
    let mut ok2 = event(2);
    ok2.errno = 0;
    hold.wait(&ok, 0);
    hold.wait(&ok2, 0);
    // The first learns it is alone in time: nothing is attached.
    hold.answer(
        1,
        answer(crate::conflict::sharing::ALONE),
        MS,
        || "now".into(),
        &mut sink,
    )
    .unwrap();
    assert_eq!(sink.0, ["event 1 -"]);
    // The second outlives the bound: written as it is, and a "shared" answer follows.
    let bound = HOLD.as_nanos() as u64;
    hold.flush(bound, &mut sink).unwrap();
    assert_eq!(sink.0, ["event 1 -", "event 2 -"]);
    hold.answer(2, answer("shared"), bound + MS, || "now".into(), &mut sink)
        .unwrap();
    assert_eq!(sink.0[2], "explanation of 2 at t2 shared");
    // An "alone" answer that comes late writes nothing.
    let mut ok3 = event(3);
    ok3.errno = 0;
    hold.wait(&ok3, bound);
    hold.flush(2 * bound, &mut sink).unwrap();
    hold.answer(
        3,
        answer(crate::conflict::sharing::ALONE),
        2 * bound,
        || "now".into(),
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        sink.0,
        [
            "event 1 -",
            "event 2 -",
            "explanation of 2 at t2 shared",
            "event 3 -"
        ]
    );
}
