//! Matching the observer's events to the workload's steps.
//!
//! Every `bind`/`listen` step must produce exactly one event, found by network namespace,
//! thread, fd and op (in order), whose result, addresses, owner and options equal what the
//! kernel told the workload through the socket API. An option only one side can state (the
//! workload's `getsockopt` failed, or it names an option the event has no flag for) is a
//! difference too, never a comparison left out. Any other event from a scenario's namespace
//! is an extra and fails the check.
//!
//! Under a kernel-function backend a call also yields the port allocations it made
//! (`get_port`, same `tid` and `call_id`): each is checked against the call (same result; on
//! success the port the socket got), and a successful `bind` to port 0 and a `listen` on a
//! socket without a port must show one.

use super::StepOutcome;
use crate::model::{BindEvent, Op, Requested};
use crate::sockopt::Opt;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// One step and what the observer saw of it.
#[derive(Debug, Clone)]
pub struct StepCheck {
    pub outcome: StepOutcome,
    /// The matching event (observed steps only).
    pub event: Option<BindEvent>,
    /// Port allocations linked to the event.
    pub get_port: Vec<BindEvent>,
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

/// Matches `events` (everything observed during the run) to `outcomes`. `allocations`: the
/// backend reports port allocations (the kernel-function backends do).
pub fn check(outcomes: &[StepOutcome], events: &[BindEvent], allocations: bool) -> Checked {
    let namespaces: BTreeSet<u64> = outcomes.iter().map(|o| o.netns).collect();
    let mut used = vec![false; events.len()];
    let mut steps = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let Some(op) = outcome.op.as_deref() else {
            steps.push(StepCheck {
                outcome: outcome.clone(),
                event: None,
                get_port: Vec::new(),
                mismatches: Vec::new(),
            });
            continue;
        };
        let found = events.iter().enumerate().position(|(i, e)| {
            !used[i]
                && e.netns.map(u64::from) == Some(outcome.netns)
                && e.tid == outcome.tid
                && e.fd == Some(outcome.fd)
                && e.op.as_str() == op
        });
        let (event, mut mismatches) = match found {
            Some(i) => {
                used[i] = true;
                (Some(events[i].clone()), compare(outcome, &events[i]))
            }
            None => (None, vec!["no event".to_string()]),
        };
        let mut get_port = Vec::new();
        if let Some(id) = event.as_ref().and_then(|e| e.call_id) {
            for (i, e) in events.iter().enumerate() {
                if !used[i] && e.op == Op::GetPort && e.tid == outcome.tid && e.call_id == Some(id)
                {
                    used[i] = true;
                    get_port.push(e.clone());
                }
            }
        }
        if allocations && event.is_some() {
            let before = bound_before(outcomes, outcome);
            mismatches.extend(compare_allocations(outcome, before, &get_port));
        }
        steps.push(StepCheck {
            outcome: outcome.clone(),
            event,
            get_port,
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

/// What the step's socket held before the step (the last earlier step on it says).
fn bound_before(outcomes: &[StepOutcome], step: &StepOutcome) -> Option<(IpAddr, u16)> {
    outcomes
        .iter()
        .take_while(|o| !std::ptr::eq(*o, step))
        .filter(|o| o.scenario == step.scenario && o.sock == step.sock)
        .last()
        .and_then(|o| o.bound)
}

/// The port allocations of one call against what the kernel told the workload.
fn compare_allocations(
    o: &StepOutcome,
    before: Option<(IpAddr, u16)>,
    get_port: &[BindEvent],
) -> Vec<String> {
    let mut diffs = Vec::new();
    for g in get_port {
        if g.errno != o.errno {
            diffs.push(format!(
                "get_port errno: call {}, get_port {}",
                o.errno, g.errno
            ));
        }
        if o.errno == 0 && g.bound.map(|b| b.port) != o.bound.map(|b| b.1) {
            diffs.push(format!(
                "get_port port: kernel {:?}, observer {:?}",
                o.bound.map(|b| b.1),
                g.bound.map(|b| b.port)
            ));
        }
    }
    let ephemeral_bind = o.op.as_deref() == Some("bind")
        && o.requested.is_some_and(|r| r.1 == 0)
        && !o
            .options
            .get("bind_address_no_port")
            .copied()
            .unwrap_or(false);
    let autobind = o.op.as_deref() == Some("listen") && before.is_none();
    let asked_any = get_port.iter().any(|g| g.requested_port() == Some(0));
    if o.errno == 0 && (ephemeral_bind || autobind) && !asked_any {
        diffs.push("no get_port event for port 0".to_string());
    }
    diffs
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
        format!("{:?}", Some(o.ino)),
        format!("{:?}", e.sock_ino),
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
    diffs.extend(compare_options(o, e));
    diffs
}

/// Every option the event reports against what `getsockopt` gave the workload. Both sides must
/// speak of the same options: one the workload could not read, or read under a key the event
/// has no flag for, is a difference, not a comparison left out.
fn compare_options(o: &StepOutcome, e: &BindEvent) -> Vec<String> {
    let mut diffs = Vec::new();
    for (opt, event) in Opt::ALL.iter().zip(e.flags.in_order()) {
        match o.options.get(opt.key()) {
            Some(&kernel) if Some(kernel) == event => {}
            Some(&kernel) => diffs.push(format!(
                "{}: kernel {kernel}, observer {event:?}",
                opt.key()
            )),
            None => diffs.push(format!(
                "{}: the workload did not read it, observer {event:?}",
                opt.key()
            )),
        }
    }
    for key in o.options.keys() {
        if !Opt::ALL.iter().any(|opt| opt.key() == key) {
            diffs.push(format!("{key}: an option the event has no flag for"));
        }
    }
    diffs
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
