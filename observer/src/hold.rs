//! Call order with explanations. An EADDRINUSE event waits for its lookup (a few
//! milliseconds on most hosts); the events read after it wait behind it, so that the output
//! reads in the order the calls were made, each explained failure with its explanation. The
//! wait is bounded: after [`HOLD`], or once [`HOLD_MAX`] events wait, the event goes out with
//! a `"pending"` conflict and its answer follows as its own `"explanation"` record naming the
//! event's `seq`. Nothing waits on a slow lookup for longer than that, and while nothing waits
//! (almost always) an event goes straight to the sink, as before.

use crate::model::{BindEvent, Conflict, ExplanationRecord, Repeat};
use crate::sink::Sink;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

/// How long events wait behind one whose explanation is pending.
pub const HOLD: Duration = Duration::from_millis(500);

/// Events held at most (about 600 bytes each); past it the oldest wait ends at once.
pub const HOLD_MAX: usize = 4096;

struct Held {
    /// The event, or for a repeat record the event it repeats.
    event: BindEvent,
    /// A repeat record (folded calls of `event`), written in its place in the order.
    repeat: Option<Box<Repeat>>,
    /// Waiting for its own lookup's answer.
    waiting: bool,
    /// When it was read, in coarse monotonic nanoseconds.
    read_at: u64,
}

/// The events held back, oldest first, and the answers owed to events already written.
#[derive(Default)]
pub struct Hold {
    queue: VecDeque<Held>,
    /// Events written with a `"pending"` conflict: `seq` → their time, for the explanation.
    late: HashMap<u64, String>,
    /// Events written later than they were read.
    pub held: u64,
    /// The longest such wait, in nanoseconds.
    pub max_ns: u64,
    /// Explanations written as their own record.
    pub late_explanations: u64,
}

impl Hold {
    /// An event whose answer will come through [`Hold::answer`]: it and every later event
    /// wait for it.
    pub fn wait(&mut self, event: &BindEvent, now: u64) {
        self.queue.push_back(Held {
            event: event.clone(),
            repeat: None,
            waiting: true,
            read_at: now,
        });
    }

    /// An event to write: at once when nothing waits, else behind what does.
    pub fn write(&mut self, event: &BindEvent, now: u64, sink: &mut dyn Sink) -> io::Result<()> {
        if self.queue.is_empty() {
            return sink.event(event);
        }
        self.behind(event, None, now, sink)
    }

    /// A repeat record of the event `of`: at once when nothing waits, else behind what does.
    pub fn write_repeat(
        &mut self,
        repeat: Repeat,
        of: &BindEvent,
        now: u64,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        if self.queue.is_empty() {
            return sink.repeat(&repeat, of);
        }
        self.behind(of, Some(Box::new(repeat)), now, sink)
    }

    /// Queues a record behind those that wait; past [`HOLD_MAX`] the oldest wait ends.
    fn behind(
        &mut self,
        event: &BindEvent,
        repeat: Option<Box<Repeat>>,
        now: u64,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        self.queue.push_back(Held {
            event: event.clone(),
            repeat,
            waiting: false,
            read_at: now,
        });
        if self.queue.len() > HOLD_MAX {
            return self.release(now, sink);
        }
        Ok(())
    }

    /// A lookup's answer for the event numbered `seq`: attached to it while it waits, else
    /// written as an explanation record (its event went out already). `time` is now, as
    /// wall-clock text, for that record.
    pub fn answer(
        &mut self,
        seq: u64,
        conflict: Conflict,
        now: u64,
        time: impl FnOnce() -> String,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        if let Some(held) = self
            .queue
            .iter_mut()
            .find(|h| h.waiting && h.event.seq == seq)
        {
            // Nobody to share the port with: nothing to say about a successful call.
            held.event.conflict =
                (conflict.verdict != crate::conflict::sharing::ALONE).then_some(conflict);
            held.waiting = false;
            return self.flush(now, sink);
        }
        if let Some(event_time) = self.late.remove(&seq) {
            if conflict.verdict == crate::conflict::sharing::ALONE {
                return Ok(());
            }
            self.late_explanations += 1;
            sink.explanation(&ExplanationRecord {
                record_type: "explanation",
                time: time(),
                of: seq,
                event_time,
                conflict,
            })?;
        }
        Ok(())
    }

    /// Ends the wait of event `seq` without a lookup answer, changing it with `f` (a port
    /// allocation settled by the call it ran inside: a repeat, or a lookup declined). False
    /// when it no longer waits.
    pub fn settle(
        &mut self,
        seq: u64,
        now: u64,
        sink: &mut dyn Sink,
        f: impl FnOnce(&mut BindEvent),
    ) -> io::Result<bool> {
        let Some(held) = self
            .queue
            .iter_mut()
            .find(|h| h.waiting && h.event.seq == seq)
        else {
            return Ok(false);
        };
        f(&mut held.event);
        held.waiting = false;
        self.flush(now, sink)?;
        Ok(true)
    }

    /// Writes the events at the head that no longer wait, and ends the wait of one that has
    /// waited [`HOLD`].
    pub fn flush(&mut self, now: u64, sink: &mut dyn Sink) -> io::Result<()> {
        while let Some(head) = self.queue.front() {
            let expired = now.saturating_sub(head.read_at) >= HOLD.as_nanos() as u64;
            if head.waiting && !expired && self.queue.len() <= HOLD_MAX {
                break;
            }
            self.pop(now, false, sink)?;
        }
        Ok(())
    }

    /// Ends the wait of the oldest event, whatever it waits for, and writes what follows it.
    fn release(&mut self, now: u64, sink: &mut dyn Sink) -> io::Result<()> {
        self.pop(now, false, sink)?;
        self.flush(now, sink)
    }

    /// Writes the oldest event; one still waiting says why it has no answer: it follows, or
    /// (`ending`) the run ends before it.
    fn pop(&mut self, now: u64, ending: bool, sink: &mut dyn Sink) -> io::Result<()> {
        let Some(mut head) = self.queue.pop_front() else {
            return Ok(());
        };
        if let Some(repeat) = head.repeat {
            return sink.repeat(&repeat, &head.event);
        }
        if head.waiting && head.event.errno == 0 {
            // A successful call waiting to learn whether it shares its port: written without
            // an answer; one that finds other processes' sockets follows as an explanation.
            if !ending {
                self.late.insert(head.event.seq, head.event.time.clone());
            }
        } else if head.waiting && ending {
            head.event.conflict = Some(unfinished());
        } else if head.waiting {
            head.event.conflict = Some(Conflict::with_note(
                "pending",
                format!(
                    "the lookup is taking longer than {} ms; its answer follows as an explanation of event {}",
                    HOLD.as_millis(),
                    head.event.seq
                ),
            ));
            self.late.insert(head.event.seq, head.event.time.clone());
        }
        self.held += 1;
        self.max_ns = self.max_ns.max(now.saturating_sub(head.read_at));
        sink.event(&head.event)
    }

    /// When the oldest wait ends, in coarse monotonic nanoseconds; `None` when nothing waits.
    pub fn deadline(&self) -> Option<u64> {
        self.queue
            .front()
            .map(|h| h.read_at + HOLD.as_nanos() as u64)
    }

    /// The end of a run, once the answers that came have been given: writes everything still
    /// held, in order, and for the events already written whose answer did not come, an
    /// explanation saying so (they promised one).
    pub fn end(&mut self, now: u64, time: &str, sink: &mut dyn Sink) -> io::Result<()> {
        while !self.queue.is_empty() {
            self.pop(now, true, sink)?;
        }
        let mut owed: Vec<(u64, String)> = self.late.drain().collect();
        owed.sort_unstable();
        for (of, event_time) in owed {
            self.late_explanations += 1;
            sink.explanation(&ExplanationRecord {
                record_type: "explanation",
                time: time.to_string(),
                of,
                event_time,
                conflict: unfinished(),
            })?;
        }
        Ok(())
    }
}

fn unfinished() -> Conflict {
    Conflict::with_note(
        "unavailable",
        "the lookup did not finish before the run ended".into(),
    )
}

#[cfg(test)]
#[path = "hold_tests.rs"]
mod tests;
