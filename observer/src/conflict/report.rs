//! A [`Conflict`] for people: a few indented lines per socket in the way (what it is, who holds
//! it, the overlap and the rule), then what would have worked. Used under a failing row of the
//! table sink and by `observer why`.

use crate::model::{Conflict, Holder, Refusal};
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

fn holder_lines(h: &Holder) -> Vec<String> {
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
    for o in &h.owners {
        out.push(format!(
            "  held by pid {} ({}): {}",
            o.pid, o.comm, o.cmdline
        ));
    }
    if let Some(note) = h.owner_note {
        out.push(format!("  {note}"));
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
        for o in &p.owners {
            out.push(format!(
                "  held by pid {} ({}): {}",
                o.pid, o.comm, o.cmdline
            ));
        }
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
    for h in c.holders.iter().take(shown) {
        out.extend(holder_lines(h));
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
