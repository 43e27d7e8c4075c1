//! What would have worked: each candidate change (a flag on this socket, a flag on both
//! sides, waiting out TIME_WAIT, another address, another port) is tried against the same
//! socket table with the rule engine, and offered only if the engine then finds nothing in the
//! way for certain.

use super::rules::{Existing, Finding, Request, TCP_TIME_WAIT};
use std::net::IpAddr;

/// How far above the requested port to look for a free one (the socket table a lookup reads
/// holds these ports too).
pub const PORT_SEARCH: u16 = 64;

/// What the advice may try besides flags.
pub struct Context<'a> {
    /// Every socket of the request's protocol in the namespace on its port and the
    /// [`PORT_SEARCH`] ports above it.
    pub table: &'a [Existing],
    /// TIME_WAIT time left per table index, in milliseconds.
    pub time_left_ms: &'a dyn Fn(usize) -> Option<u32>,
    /// The namespace's local addresses.
    pub local_addrs: &'a [IpAddr],
    /// Whether a table socket's options can still be changed: a process holds it (not a
    /// TIME_WAIT socket, not one the kernel holds).
    pub has_owner: &'a dyn Fn(usize) -> bool,
}

fn free(r: &Request, table: &[Existing]) -> bool {
    !super::rules::any(r, table)
}

/// Changes that would have let `r` bind, given what blocks it (`findings`, indices into
/// `ctx.table`). Empty when nothing blocks it.
pub fn fixes(r: &Request, findings: &[Finding], ctx: &Context<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if findings.is_empty() {
        return out;
    }
    let table = ctx.table;
    let mut own = Vec::new();
    if !r.reuseaddr {
        own.push((
            "SO_REUSEADDR",
            Request {
                reuseaddr: true,
                ..r.clone()
            },
        ));
    }
    if !r.reuseport {
        own.push((
            "SO_REUSEPORT",
            Request {
                reuseport: true,
                ..r.clone()
            },
        ));
    }
    if matches!(r.addr, IpAddr::V6(a) if a.is_unspecified()) && !r.v6only {
        own.push((
            "IPV6_V6ONLY",
            Request {
                v6only: true,
                ..r.clone()
            },
        ));
    }
    for (flag, changed) in &own {
        if free(changed, table) {
            out.push(format!("set {flag} on this socket"));
        }
    }
    // Both reuse flags here, when neither alone is enough (a TIME_WAIT socket that had
    // SO_REUSEADDR beside SO_REUSEPORT listeners).
    if out.is_empty() && !r.reuseaddr && !r.reuseport {
        let both = Request {
            reuseaddr: true,
            reuseport: true,
            ..r.clone()
        };
        if free(&both, table) {
            out.push("set SO_REUSEADDR and SO_REUSEPORT on this socket".into());
        }
    }
    // Only a process can set a flag on its socket.
    let all_owned = findings.iter().all(|f| (ctx.has_owner)(f.index));
    if out.is_empty() && all_owned {
        both_sides(r, findings, table, &mut out);
    }
    wait_time_wait(findings, ctx, &mut out);
    other_address(r, ctx, &mut out);
    if let Some(port) = (r.port.saturating_add(1)..=r.port.saturating_add(PORT_SEARCH))
        .find(|&port| port != r.port && free(&Request { port, ..r.clone() }, table))
    {
        out.push(format!("port {port} is free for this socket"));
    }
    out
}

/// A reuse flag set on this socket and on every socket in the way.
fn both_sides(r: &Request, findings: &[Finding], table: &[Existing], out: &mut Vec<String>) {
    let with = |set: &dyn Fn(&mut Existing)| {
        let mut t = table.to_vec();
        for f in findings {
            set(&mut t[f.index]);
        }
        t
    };
    let lacking = |get: &dyn Fn(&Existing) -> Option<bool>| {
        findings.iter().any(|f| get(&table[f.index]) != Some(true))
    };
    if lacking(&|e| e.reuseaddr)
        && free(
            &Request {
                reuseaddr: true,
                ..r.clone()
            },
            &with(&|e| e.reuseaddr = Some(true)),
        )
    {
        out.push(format!(
            "set SO_REUSEADDR on {}the sockets in the way that lack it",
            if r.reuseaddr { "" } else { "this socket and " }
        ));
    }
    if lacking(&|e| e.reuseport)
        && free(
            &Request {
                reuseport: true,
                ..r.clone()
            },
            &with(&|e| e.reuseport = Some(true)),
        )
    {
        out.push(format!(
            "set SO_REUSEPORT on {}the sockets in the way that lack it (same owner uid)",
            if r.reuseport { "" } else { "this socket and " }
        ));
    }
}

fn wait_time_wait(findings: &[Finding], ctx: &Context<'_>, out: &mut Vec<String>) {
    let all_tw = findings
        .iter()
        .all(|f| ctx.table[f.index].state == TCP_TIME_WAIT);
    if !all_tw {
        return;
    }
    let left = findings
        .iter()
        .map(|f| (ctx.time_left_ms)(f.index).unwrap_or(0))
        .max()
        .unwrap_or(0);
    out.push(format!(
        "wait {:.0} s: the TIME_WAIT socket{} then gone",
        (f64::from(left) / 1000.0).ceil(),
        if findings.len() > 1 { "s are" } else { " is" },
    ));
}

/// The first local address of the same family on which the port is free.
fn other_address(r: &Request, ctx: &Context<'_>, out: &mut Vec<String>) {
    let same_family = |a: &IpAddr| a.is_ipv4() == r.addr.is_ipv4();
    if let Some(addr) = ctx
        .local_addrs
        .iter()
        .filter(|a| same_family(a) && **a != r.addr)
        .find(|&&addr| free(&Request { addr, ..r.clone() }, ctx.table))
    {
        let shown = match addr {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        out.push(format!("address {shown} is free on port {}", r.port));
    }
}
