//! A [`Conflict`] for people: a few indented lines per socket in the way (what it is, who holds
//! it, the overlap and the rule), then what would have worked. Used under a failing row of the
//! table sink and by `observer why`.

use crate::model::{Conflict, Holder, Owner, Refusal};
use std::net::IpAddr;

/// `addr:port` with IPv6 in brackets.
pub fn addr_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

fn flag(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

/// Owners shown under one socket (or group) unless every one is asked for: a prefork server's
/// listener is held by each of its workers.
pub const SHOWN_OWNERS: usize = 4;

/// One line per owner, at most `shown`, then how many more (the JSON lists every one).
fn owner_lines(owners: &[Owner], shown: usize) -> Vec<String> {
    let mut out: Vec<String> = owners
        .iter()
        .take(shown)
        .map(|o| format!("  held by pid {} ({}): {}", o.pid, o.comm, o.cmdline))
        .collect();
    if owners.len() > shown {
        let more = owners.len() - shown;
        let first = owners[shown].pid;
        out.push(format!(
            "  and {more} more process(es) from pid {first} on: `--json` lists every one"
        ));
    }
    out
}

/// The lines of one holder; `previous` is the holder shown just before it, whose overlap and
/// rule are not repeated.
fn holder_lines(h: &Holder, previous: Option<&Holder>, owners_shown: usize) -> Vec<String> {
    let mut head = match h.count {
        1 => String::new(),
        n => format!("{n} sockets like this: "),
    };
    head.push_str(&format!(
        "{} {} {}",
        h.protocol_name(),
        h.state,
        addr_port(h.addr, h.port)
    ));
    if let Some(left) = h.time_left_ms {
        let soonest = if h.count > 1 {
            "the first goes in "
        } else {
            ""
        };
        head.push_str(&format!(
            " ({soonest}{:.1} s left)",
            f64::from(left) / 1000.0
        ));
    }
    head.push_str(&format!(
        " SO_REUSEADDR {} SO_REUSEPORT {}",
        flag(h.reuseaddr),
        flag(h.reuseport)
    ));
    if h.family == "inet6" {
        head.push_str(&format!(" IPV6_V6ONLY {}", flag(h.v6only)));
    }
    if let Some(dev) = &h.bound_dev {
        head.push_str(&format!(" dev {dev}"));
    }
    if let Some(uid) = h.uid {
        head.push_str(&format!(" uid {uid}"));
    }
    if !h.certain {
        head.push_str(" (in the way only for some values of its unknown flags)");
    }
    let mut out = vec![head];
    out.extend(owner_lines(&h.owners, owners_shown));
    if let Some(note) = h.owner_note {
        out.push(format!("  {note}"));
    }
    let same =
        |p: &Holder| p.overlap == h.overlap && p.rule == h.rule && p.kernel_check == h.kernel_check;
    if previous.is_some_and(same) {
        // Groups that differ only by owner (one per worker of a server) would repeat the
        // same two sentences each.
        out.push(format!(
            "  {}, {}: as above",
            kebab(&h.overlap.name),
            kebab(&h.rule.name)
        ));
        return out;
    }
    out.push(format!("  {}: {}", kebab(&h.overlap.name), h.overlap.text));
    out.push(format!(
        "  {}: {} ({})",
        kebab(&h.rule.name),
        h.rule.text,
        h.kernel_check
    ));
    out
}

/// The serde name of a unit enum value.
fn kebab<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Holder {
    fn protocol_name(&self) -> String {
        let p = kebab(&self.protocol);
        if self.family == "inet6" {
            format!("{p}6")
        } else {
            p
        }
    }
}

/// Groups of sockets in the way shown at most by [`lines`]; the rest are counted.
pub const SHOWN_GROUPS: usize = 8;

/// The body of a report (no headline), each line to be indented by the caller; at most
/// [`SHOWN_GROUPS`] groups of holders.
pub fn lines(c: &Conflict) -> Vec<String> {
    lines_up_to(c, SHOWN_GROUPS)
}

/// A refusal for people: the rule and its text, the facts it read, what would work (not yet
/// escaped: the caller escapes every line).
pub fn refusal_lines(r: &Refusal) -> Vec<String> {
    let mut out = vec![format!("{}: {}", r.rule, r.text)];
    out.extend(r.facts.iter().cloned());
    if !r.fixes.is_empty() {
        out.push("would work:".into());
        out.extend(r.fixes.iter().map(|f| format!("  {f}")));
    }
    out
}

/// A shared port for people: where the traffic goes, then each socket of another process.
fn sharing_lines(sh: &crate::model::Sharing) -> Vec<String> {
    let mut out = vec![format!("shares its port ({}): {}", sh.rule, sh.effect)];
    for p in sh.with.iter().take(SHOWN_GROUPS) {
        out.push(format!(
            "{} {} SO_REUSEADDR {} SO_REUSEPORT {} uid {}",
            p.state,
            addr_port(p.addr, p.port),
            flag(p.reuseaddr),
            flag(p.reuseport),
            p.uid
        ));
        out.extend(owner_lines(&p.owners, SHOWN_OWNERS));
    }
    if sh.with.len() > SHOWN_GROUPS {
        out.push(format!("and {} more sockets", sh.with.len() - SHOWN_GROUPS));
    }
    out
}

/// [`lines`] with every holder (`why --all`).
pub fn lines_up_to(c: &Conflict, shown: usize) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = &c.refusal {
        out.extend(refusal_lines(r));
    }
    if let Some(sh) = &c.sharing {
        out.extend(sharing_lines(sh));
    }
    match c.verdict {
        "free" => out.push("nothing is in the way now".into()),
        "uncertain" => {
            out.push("in the way or not depending on flags that could not be read:".into())
        }
        _ => {}
    }
    // `why --all` (every socket) lists every owner too.
    let owners_shown = if shown == usize::MAX {
        usize::MAX
    } else {
        SHOWN_OWNERS
    };
    let mut previous = None;
    for h in c.holders.iter().take(shown) {
        out.extend(holder_lines(h, previous, owners_shown));
        previous = Some(h);
    }
    if c.holders.len() > shown {
        let rest = &c.holders[shown..];
        out.push(format!(
            "... and {} more group(s) of sockets in the way ({} sockets): `observer why --all` lists every one",
            rest.len(),
            rest.iter().map(|h| h.count).sum::<u64>()
        ));
    }
    if let Some(e) = &c.ephemeral {
        out.push(format!(
            "ephemeral ports {}-{}: {} in use, {} reserved, {} free (ip_local_reserved_ports: {})",
            e.range[0],
            e.range[1],
            e.in_use,
            e.reserved_in_range,
            e.free,
            if e.reserved.is_empty() {
                "none"
            } else {
                &e.reserved
            }
        ));
    }
    if let Some(p) = &c.connect {
        out.extend(super::connect::lines(p));
    }
    if !c.fixes.is_empty() {
        out.push("would work:".into());
        out.extend(c.fixes.iter().map(|f| format!("  {f}")));
    }
    out.extend(c.notes.iter().map(|n| format!("note: {n}")));
    // Owners' names and command lines, interface names and paths come from other processes.
    out.into_iter()
        .map(|l| match crate::termsafe::escape(&l) {
            std::borrow::Cow::Borrowed(_) => l,
            std::borrow::Cow::Owned(escaped) => escaped,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefork server's listener: the first few workers by name, the rest counted.
    #[test]
    fn many_owners_are_shown_bounded() {
        let owners: Vec<Owner> = (100..110)
            .map(|pid| Owner {
                pid,
                comm: "nginx".into(),
                cmdline: "nginx: worker process".into(),
                fd: 6,
            })
            .collect();
        let lines = owner_lines(&owners, SHOWN_OWNERS);
        assert_eq!(
            lines,
            [
                "  held by pid 100 (nginx): nginx: worker process",
                "  held by pid 101 (nginx): nginx: worker process",
                "  held by pid 102 (nginx): nginx: worker process",
                "  held by pid 103 (nginx): nginx: worker process",
                "  and 6 more process(es) from pid 104 on: `--json` lists every one",
            ]
        );
        assert_eq!(owner_lines(&owners, usize::MAX).len(), 10);
        assert_eq!(owner_lines(&owners[..4], SHOWN_OWNERS).len(), 4);
    }

    /// Groups that differ only by owner (a server's workers, each with its connections)
    /// state their overlap and rule once.
    #[test]
    fn a_repeated_overlap_and_rule_are_not_restated() {
        use crate::model::Rule;
        let mut other = Holder::wildcard_listener(Rule::NoReuseFlags);
        other.state = "ESTABLISHED";
        let c = Conflict {
            verdict: "in_use",
            holders: vec![
                Holder::wildcard_listener(Rule::NoReuseFlags),
                other,
                Holder::wildcard_listener(Rule::ReuseaddrVsListener),
            ],
            ..Conflict::with_note("in_use", String::new())
        };
        let lines = lines(&Conflict {
            notes: Vec::new(),
            ..c
        });
        let rules: Vec<&String> = lines.iter().filter(|l| l.starts_with("  ")).collect();
        assert_eq!(rules.len(), 5, "{lines:#?}");
        assert!(rules[0].starts_with("  wildcard: "), "{lines:#?}");
        assert!(rules[1].starts_with("  no-reuse-flags: "), "{lines:#?}");
        assert_eq!(rules[2], "  wildcard, no-reuse-flags: as above");
        assert!(rules[3].starts_with("  wildcard: "), "{lines:#?}");
        assert!(
            rules[4].starts_with("  reuseaddr-vs-listener: "),
            "{lines:#?}"
        );
    }
}
