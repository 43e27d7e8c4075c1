//! The demo's report: per scenario, the note's claim, what Linux does, and for each observed
//! call the declared result, the kernel's result and the observer's event, with a verdict;
//! then one line of totals. Written for a person reading a terminal.

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
    match (check.kernel_as_declared(), check.observer_right()) {
        (true, true) => "ok".into(),
        (false, true) => format!("LINUX DIFFERS (declared {})", result(check.outcome.expect)),
        (_, false) => format!("OBSERVER WRONG: {}", check.mismatches.join("; ")),
    }
}

/// Renders the report for `scenarios` from the check of the whole run.
pub fn render(scenarios: &[Scenario], checked: &Checked) -> String {
    let mut out = String::new();
    let mut observed = 0;
    let mut observer_ok = 0;
    let mut kernel_ok = 0;
    let mut claims_fail = Vec::new();
    for scenario in scenarios {
        let steps: Vec<&StepCheck> = checked
            .steps
            .iter()
            .filter(|s| s.outcome.scenario == scenario.name)
            .collect();
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
                observer_ok += usize::from(s.observer_right());
                kernel_ok += usize::from(s.kernel_as_declared());
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
        }
    }
    for e in &checked.extra {
        let _ = writeln!(
            out,
            "\nEXTRA EVENT (matches no step): {} {} pid {} fd {} {}",
            e.op.as_str(),
            e.result,
            e.pid,
            e.fd,
            e.comm
        );
    }
    let _ = writeln!(
        out,
        "\n{} scenarios, {observed} observed calls: observer matched the kernel in {observer_ok}/{observed}, \
         {} extra events; kernel matched Linux's declared result in {kernel_ok}/{observed}; \
         the note's claim does not hold on Linux in {} ({}).",
        scenarios.len(),
        checked.extra.len(),
        claims_fail.len(),
        claims_fail.join(", ")
    );
    out
}
