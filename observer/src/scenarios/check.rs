//! Matching the observer's events to the workload's steps.
//!
//! Every `bind`/`listen` step must produce exactly one event, found by network namespace,
//! thread, fd and op (in order), whose result, addresses, owner and options equal what the
//! kernel told the workload through the socket API. Any other event from a scenario's
//! namespace is an extra and fails the check.

use super::{Opt, StepOutcome};
use crate::event::{BindEvent, Requested};
use std::collections::BTreeSet;

/// One step and what the observer saw of it.
#[derive(Debug, Clone)]
pub struct StepCheck {
    pub outcome: StepOutcome,
    /// The matching event (observed steps only).
    pub event: Option<BindEvent>,
    /// Differences between event and kernel (empty = the observer was right).
    pub mismatches: Vec<String>,
}

impl StepCheck {
    /// The kernel returned what the scenario declares.
    pub fn kernel_as_declared(&self) -> bool {
        self.outcome.errno == self.outcome.expect
    }

    /// The observer reported the call exactly (vacuously true for unobserved steps).
    pub fn observer_right(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The whole run's verdict.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub steps: Vec<StepCheck>,
    /// Events from a scenario's namespace that match no step.
    pub extra: Vec<BindEvent>,
}

impl Checked {
    pub fn observer_right(&self) -> bool {
        self.extra.is_empty() && self.steps.iter().all(StepCheck::observer_right)
    }
    pub fn kernel_as_declared(&self) -> bool {
        self.steps.iter().all(StepCheck::kernel_as_declared)
    }
}

/// Matches `events` (everything observed during the run) to `outcomes`.
pub fn check(outcomes: &[StepOutcome], events: &[BindEvent]) -> Checked {
    let namespaces: BTreeSet<u64> = outcomes.iter().map(|o| o.netns).collect();
    let mut used = vec![false; events.len()];
    let mut steps = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let Some(op) = outcome.op.as_deref() else {
            steps.push(StepCheck {
                outcome: outcome.clone(),
                event: None,
                mismatches: Vec::new(),
            });
            continue;
        };
        let found = events.iter().enumerate().position(|(i, e)| {
            !used[i]
                && e.netns.map(u64::from) == Some(outcome.netns)
                && e.tid == outcome.tid
                && e.fd == outcome.fd
                && e.op.as_str() == op
        });
        let (event, mismatches) = match found {
            Some(i) => {
                used[i] = true;
                (Some(events[i].clone()), compare(outcome, &events[i]))
            }
            None => (None, vec!["no event".to_string()]),
        };
        steps.push(StepCheck {
            outcome: outcome.clone(),
            event,
            mismatches,
        });
    }
    let extra = events
        .iter()
        .zip(&used)
        .filter(|(e, used)| !**used && e.netns.is_some_and(|n| namespaces.contains(&u64::from(n))))
        .map(|(e, _)| e.clone())
        .collect();
    Checked { steps, extra }
}

/// Every field the workload knows independently of the observer.
fn compare(o: &StepOutcome, e: &BindEvent) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut differ = |what: &str, kernel: String, event: String| {
        if kernel != event {
            diffs.push(format!("{what}: kernel {kernel}, observer {event}"));
        }
    };
    differ("errno", o.errno.to_string(), e.errno.to_string());
    differ("pid", o.pid.to_string(), e.pid.to_string());
    differ("uid", o.uid.to_string(), e.uid.to_string());
    differ(
        "sock_ino",
        o.ino.to_string(),
        format!("{:?}", e.sock_ino.unwrap_or(0)),
    );
    let requested = match &e.requested {
        Some(Requested::Inet(ep)) => Some((ep.addr, ep.port)),
        _ => None,
    };
    if o.op.as_deref() == Some("bind") {
        differ(
            "requested",
            format!("{:?}", o.requested),
            format!("{requested:?}"),
        );
    }
    let bound = e.bound.map(|b| (b.addr, b.port));
    differ("bound", format!("{:?}", o.bound), format!("{bound:?}"));
    for (opt, event) in Opt::ALL.iter().zip(e.flags.in_order()) {
        if let Some(&kernel) = o.options.get(opt.key())
            && Some(kernel) != event
        {
            diffs.push(format!(
                "{}: kernel {kernel}, observer {event:?}",
                opt.key()
            ));
        }
    }
    diffs
}
