//! Matching the observer's events to the workload's steps.
//!
//! Every `bind`/`listen` step, and every `connect` step that failed, must produce exactly one
//! event, found by network namespace, thread, fd and op (in order), whose result, addresses,
//! owner and options equal what the kernel told the workload through the socket API. An option only one side can state (the
//! workload's `getsockopt` failed, or it names an option the event has no flag for) is a
//! difference too, never a comparison left out. Any other event of the workload's processes
//! in a scenario's namespace is an extra and fails the check (events of other processes are
//! not: a namespace's inode number is reused once it is gone, by another program's too).
//!
//! A call declared to fail names the rule the observer's explanation must give (the
//! `conflict` the event carries, or the `explanation` record that came after it): an
//! explanation naming another rule, none, or still pending when the run ended is a mismatch
//! too, kept apart from the event's own ([`StepCheck::explanation_mismatches`]).
//!
//! Under a kernel-function backend a call also yields the port allocations it made
//! (`get_port`, same `tid` and `call_id`): each is checked against the call (same result; on
//! success the port the socket got), and a successful `bind` to port 0 and a `listen` on a
//! socket without a port must show one.

use super::StepOutcome;
use crate::model::{BindEvent, Conflict, Op, Requested};
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
    /// The explanation the observer gave the call (its event's, or the event's it repeats).
    pub explanation: Option<Conflict>,
    /// How the explanation differs from the declared rule (empty = it names it, or the step
    /// declares none).
    pub explanation_mismatches: Vec<String>,
}

impl StepCheck {
    /// The kernel returned what the scenario declares.
    pub fn kernel_as_declared(&self) -> bool {
        self.outcome.errno == self.outcome.expect
    }

    /// The observer reported the call exactly and, for a call declared to fail, explained it
    /// by the declared rule (vacuously true for unobserved steps).
    pub fn observer_right(&self) -> bool {
        self.event_right() && self.explanation_right()
    }

    /// The observer's event equals what the kernel told the workload.
    pub fn event_right(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// The step declares a rule its explanation must name.
    pub fn explanation_declared(&self) -> bool {
        self.outcome.op.is_some() && self.outcome.rule.is_some()
    }

    /// The explanation names the declared rule (vacuously true when none is declared).
    pub fn explanation_right(&self) -> bool {
        self.explanation_mismatches.is_empty()
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
                explanation: None,
                explanation_mismatches: Vec::new(),
            });
            continue;
        };
        let found = events
            .iter()
            .enumerate()
            .position(|(i, e)| !used[i] && is_event_of(outcome, op, e));
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
        let explanation = event
            .as_ref()
            .and_then(|e| explanation_of(events, e))
            .cloned();
        let explanation_mismatches = match (&outcome.rule, &event) {
            (Some(rule), Some(_)) => judge_explanation(rule, explanation.as_ref()),
            // No event: the event's mismatch says so; the explanation is missing with it.
            (Some(_), None) => vec!["no explanation (no event)".to_string()],
            (None, _) => Vec::new(),
        };
        steps.push(StepCheck {
            outcome: outcome.clone(),
            event,
            get_port,
            mismatches,
            explanation,
            explanation_mismatches,
        });
    }
    // The workload's processes: a namespace's inode is reused once it is gone, so another
    // program's namespace (another demo's, whose observer probes its own) may bear the number
    // of one the workload used earlier.
    let pids: BTreeSet<u32> = outcomes.iter().map(|o| o.pid).collect();
    let extra = events
        .iter()
        .zip(&used)
        .filter(|(e, used)| {
            !**used
                && pids.contains(&e.pid)
                && e.netns.is_some_and(|n| namespaces.contains(&u64::from(n)))
        })
        .map(|(e, _)| e.clone())
        .collect();
    Checked { steps, extra }
}

/// `e` reports the step `o` (whose op is `op`): same namespace, thread, descriptor and op.
fn is_event_of(o: &StepOutcome, op: &str, e: &BindEvent) -> bool {
    e.netns.map(u64::from) == Some(o.netns)
        && e.tid == o.tid
        && e.fd == Some(o.fd)
        && e.op.as_str() == op
}

/// The last of `events` that reports the step `o`, if any.
pub fn last_event_of<'a>(o: &StepOutcome, events: &'a [BindEvent]) -> Option<&'a BindEvent> {
    let op = o.op.as_deref()?;
    events.iter().rev().find(|e| is_event_of(o, op, e))
}

/// The explanation that applies to `e`: its own, or, for a retry that points at an earlier
/// failure (`repeat_of`), that one's.
pub fn explanation_of<'a>(events: &'a [BindEvent], e: &'a BindEvent) -> Option<&'a Conflict> {
    match e.repeat_of {
        Some(of) => events
            .iter()
            .find(|x| x.seq == of)
            .and_then(|x| x.conflict.as_ref()),
        None => e.conflict.as_ref(),
    }
}

/// Whether `c` is a final answer (not one still to come as an `explanation` record).
pub fn is_final(c: Option<&Conflict>) -> bool {
    c.is_some_and(|c| c.verdict != "pending")
}

/// The rule an `exhausted` explanation stands for: `__inet_hash_connect` found no port of
/// the range free toward the destination (the `connect` report says which ports, held how);
/// and an `ephemeral` one with no port free: a port-0 bind (a UDP connect's autobind among
/// them) found none in the range.
pub const PORTS_EXHAUSTED: &str = "ephemeral-ports-exhausted";

/// Whether `c` says the range had no port for the call.
fn range_used_up(c: &Conflict) -> bool {
    match c.verdict {
        "exhausted" => c.connect.is_some(),
        "ephemeral" => c.ephemeral.as_ref().is_some_and(|e| e.free == 0),
        _ => false,
    }
}

/// The rules an explanation names: a refusal's rule, the range used up at connect, or the
/// rules of the sockets in the way (each once, in order).
pub fn rules_named(c: &Conflict) -> Vec<&'static str> {
    if let Some(r) = &c.refusal {
        return vec![r.rule];
    }
    if range_used_up(c) {
        return vec![PORTS_EXHAUSTED];
    }
    let mut named: Vec<&'static str> = Vec::new();
    for h in &c.holders {
        let name = h.rule.name.as_str();
        if !named.contains(&name) {
            named.push(name);
        }
    }
    named
}

/// How the explanation `c` of a failed call differs from the declared `rule`: it must be a
/// final answer (`in_use` for sockets in the way, `refused` for a refusal, a range used up)
/// naming that rule and no other.
pub fn judge_explanation(rule: &str, c: Option<&Conflict>) -> Vec<String> {
    let Some(c) = c else {
        return vec![format!("no explanation (declared rule {rule})")];
    };
    if c.verdict == "pending" {
        return vec![format!(
            "the explanation never arrived (still pending at the end; declared rule {rule})"
        )];
    }
    let named = rules_named(c);
    if !matches!(c.verdict, "in_use" | "refused") && !range_used_up(c) {
        let what = if named.is_empty() {
            String::new()
        } else {
            format!(", rule {}", named.join(", "))
        };
        return vec![format!(
            "explanation: verdict {}{what}, declared rule {rule}",
            c.verdict
        )];
    }
    if named.as_slice() != [rule] {
        let named = if named.is_empty() {
            "none".to_string()
        } else {
            named.join(", ")
        };
        return vec![format!("explanation: rule {named}, declared {rule}")];
    }
    Vec::new()
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
