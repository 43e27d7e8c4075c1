//! The demo's report: per scenario, the note's claim, what Linux does, and for each observed
//! call the declared result, the kernel's result and the observer's event, with a verdict;
//! under a failed call the observer's explanation, as `watch` prints it, and whether it names
//! the declared rule; then one line of totals. Written for a person reading a terminal.

use super::Scenario;
use super::check::{Checked, StepCheck};
use crate::errno;
use crate::sink::{endpoint, opts};
use std::fmt::Write as _;

fn result(errno_value: i32) -> String {
    errno::name(errno_value).into_owned()
}

fn seen(check: &StepCheck) -> String {
    match &check.event {
        None => "nothing".into(),
        Some(e) => {
            let bound = e.bound.as_ref().map_or_else(|| "-".into(), endpoint);
            format!("{} {} {bound}", e.result, opts(e))
        }
    }
}

fn verdict(check: &StepCheck) -> String {
    match (check.kernel_as_declared(), check.event_right()) {
        (true, true) => "ok".into(),
        (false, true) => format!("LINUX DIFFERS (declared {})", result(check.outcome.expect)),
        (_, false) => format!("OBSERVER WRONG: {}", check.mismatches.join("; ")),
    }
}

/// The explanation under a failed call: a headline saying whether it names the declared rule,
/// then the lines `watch`'s table prints under a failure (escaped there).
fn explanation_lines(check: &StepCheck) -> Vec<String> {
    let declared = check.outcome.rule.as_deref();
    let head = match (declared, check.explanation_right()) {
        (Some(rule), true) => format!("explained: rule {rule}, as declared"),
        (Some(_), false) => format!(
            "EXPLANATION WRONG: {}",
            check.explanation_mismatches.join("; ")
        ),
        (None, _)
            if check
                .explanation
                .as_ref()
                .is_some_and(|c| c.sharing.is_some()) =>
        {
            "the observer names who shares the port now:".into()
        }
        (None, _) => "explained (no rule declared):".into(),
    };
    let mut out = vec![head];
    if let Some(c) = &check.explanation {
        out.extend(
            crate::conflict::report::lines(c)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
    }
    out
}

/// The checked steps of one scenario.
fn steps_of<'a>(checked: &'a Checked, scenario: &str) -> Vec<&'a StepCheck> {
    checked
        .steps
        .iter()
        .filter(|s| s.outcome.scenario == scenario)
        .collect()
}

/// Renders the report for `scenarios` from the check of the whole run.
pub fn render(scenarios: &[Scenario], checked: &Checked) -> String {
    let mut out = String::new();
    let mut observed = 0;
    let mut observer_ok = 0;
    let mut kernel_ok = 0;
    let mut declared = 0;
    let mut explained_ok = 0;
    let mut claims_fail = Vec::new();
    for scenario in scenarios {
        let steps = steps_of(checked, scenario.name);
        let holds = if scenario.claim_holds {
            "claim holds on Linux"
        } else {
            claims_fail.push(scenario.name);
            "CLAIM DOES NOT HOLD ON LINUX"
        };
        let _ = writeln!(
            out,
            "\n{}  [{holds}]  (note {})",
            scenario.name, scenario.note
        );
        let _ = writeln!(out, "  claim: {}", scenario.claim);
        let _ = writeln!(out, "  linux: {}", scenario.linux);
        let _ = writeln!(
            out,
            "    {:<2} {:<28} {:<13} {:<13} {:<38} verdict",
            "", "call", "linux says", "kernel gave", "observer saw (result opts bound)"
        );
        for s in steps {
            let shown = s.outcome.op.is_some() || !s.kernel_as_declared();
            if !shown {
                continue;
            }
            if s.outcome.op.is_some() {
                observed += 1;
                observer_ok += usize::from(s.event_right());
                kernel_ok += usize::from(s.kernel_as_declared());
            }
            if s.explanation_declared() {
                declared += 1;
                explained_ok += usize::from(s.explanation_right());
            }
            let _ = writeln!(
                out,
                "    {:<2} {:<28} {:<13} {:<13} {:<38} {}",
                s.outcome.sock,
                s.outcome.call,
                result(s.outcome.expect),
                result(s.outcome.errno),
                if s.outcome.op.is_some() {
                    seen(s)
                } else {
                    "-".into()
                },
                verdict(s)
            );
            let failed = s.event.as_ref().is_some_and(|e| e.errno != 0);
            // A successful call that joined another process's port says so too.
            let shared = s.explanation.as_ref().is_some_and(|c| c.sharing.is_some());
            if s.explanation_declared() || failed || shared {
                for line in explanation_lines(s) {
                    let _ = writeln!(out, "         {line}");
                }
            }
        }
    }
    for e in &checked.extra {
        let _ = writeln!(
            out,
            "\nEXTRA EVENT (matches no step): {} {} pid {} fd {} {}",
            e.op.as_str(),
            e.result,
            e.pid,
            e.fd.map_or_else(|| "?".into(), |fd| fd.to_string()),
            crate::termsafe::escape(&e.comm)
        );
    }
    let _ = writeln!(
        out,
        "\n{} scenarios, {observed} observed calls: observer matched the kernel in {observer_ok}/{observed}, \
         {} extra events; its explanation named the declared rule in {explained_ok}/{declared} failed calls; \
         kernel matched Linux's declared result in {kernel_ok}/{observed}; \
         the note's claim does not hold on Linux in {} ({}).",
        scenarios.len(),
        checked.extra.len(),
        claims_fail.len(),
        claims_fail.join(", ")
    );
    out
}

/// One JSON line per scenario: whether the observer matched the kernel in every observed call
/// (and the scenario's namespace had no extra event), with the differences. For `vm-test`.
pub fn verdicts(scenarios: &[Scenario], checked: &Checked, backend: &str) -> String {
    let mut out = String::new();
    for scenario in scenarios {
        let steps = steps_of(checked, scenario.name);
        let netns: Vec<u64> = steps.iter().map(|s| s.outcome.netns).collect();
        let mut mismatches: Vec<String> = steps
            .iter()
            .flat_map(|s| {
                s.mismatches
                    .iter()
                    .chain(&s.explanation_mismatches)
                    .map(move |m| format!("step {} {}: {m}", s.outcome.step, s.outcome.call))
            })
            .collect();
        for e in &checked.extra {
            if e.netns.is_some_and(|n| netns.contains(&u64::from(n))) {
                mismatches.push(format!(
                    "extra event: {} {} ({})",
                    e.op.as_str(),
                    e.result,
                    e.hook
                ));
            }
        }
        // What the explanations noted (a kernel walk that could not serve, flags left
        // unread): `vm-test` fails a guest whose explanations were made the slow way.
        let mut notes: Vec<&str> = Vec::new();
        for note in steps
            .iter()
            .filter_map(|s| s.explanation.as_ref())
            .flat_map(|c| &c.notes)
        {
            if !notes.contains(&note.as_str()) {
                notes.push(note);
            }
        }
        let record = serde_json::json!({
            "type": "verdict",
            "scenario": scenario.name,
            "backend": backend,
            "observed": steps.iter().filter(|s| s.outcome.op.is_some()).count(),
            "get_port": steps.iter().map(|s| s.get_port.len()).sum::<usize>(),
            "kernel_as_declared": steps.iter().all(|s| s.kernel_as_declared()),
            "explanations_declared": steps.iter().filter(|s| s.explanation_declared()).count(),
            "explanations_matched": steps
                .iter()
                .filter(|s| s.explanation_declared() && s.explanation_right())
                .count(),
            "pass": mismatches.is_empty(),
            "mismatches": mismatches,
            "notes": notes,
        });
        let _ = writeln!(out, "{record}");
    }
    out
}
