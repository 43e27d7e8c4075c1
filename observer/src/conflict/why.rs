//! `observer why ADDR:PORT`: would a bind succeed right now, and if not, who is in the way,
//! by which rule, and what would work. One shot, no eBPF: the socket table, the owners and the
//! rule engine only. `observer why --connect DST:PORT [--from ADDR] [--udp]` asks the same of
//! a connect: would it find a local port ([`run_connect`]).

use super::report::{SHOWN_GROUPS, addr_port, lines_up_to};
use super::rules::Request;
use super::{Query, diagnose, refusal};
use crate::model::Proto;
use crate::model::WhyRecord;
use crate::netns::Netns;
use clap::Args;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit code of `why` when the bind would fail with EADDRINUSE.
pub const EXIT_WOULD_FAIL: u8 = 3;
/// Exit code of `why` when the answer depends on flags that could not be read.
pub const EXIT_UNCERTAIN: u8 = 4;
/// Exit code of `why` when the bind would fail with another errno than EADDRINUSE (named in
/// the answer): the address, the port's privilege or the scope id is refused before any port
/// is looked at.
pub const EXIT_REFUSED: u8 = 5;

pub const WHY_HELP: &str = "Exit status: 0 the bind would succeed now; 3 it would fail with \
EADDRINUSE; 4 it depends on flags of a socket in the way that could not be read; 5 it would \
fail with another error (EADDRNOTAVAIL, EACCES, ENODEV, EINVAL: named in the answer); 1 the \
lookup failed; 2 bad usage. Port 0 asks about the ephemeral port range instead. An IPv6 scope \
id is given as [ADDR%INDEX]:PORT. With --connect DST:PORT (a TCP connect, from --from ADDR or \
the route's source address; with --udp, an unbound UDP socket's, or one bound to --from ADDR \
with port 0 and IP_BIND_ADDRESS_NO_PORT): 0 a local port is free toward DST:PORT; 3 none is, the connect would fail with \
EADDRNOTAVAIL (TCP) or EAGAIN (UDP); 1 the lookup failed.";

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// Address and port, e.g. 127.0.0.1:8080, 0.0.0.0:80, [::]:443, [::ffff:10.0.0.1]:53.
    #[arg(value_name = "ADDR:PORT", value_parser = parse_addr,
          required_unless_present = "connect", conflicts_with = "connect")]
    pub addr: Option<SocketAddr>,
    /// Ask about a connect() to DST:PORT instead (TCP, or UDP with --udp): would it find a
    /// local port.
    #[arg(long, value_name = "DST:PORT", value_parser = parse_addr)]
    pub connect: Option<SocketAddr>,
    /// With --connect: the source address the socket would be bound to (default: the one
    /// the route to DST gives).
    #[arg(long, value_name = "ADDR", requires = "connect")]
    pub from: Option<std::net::IpAddr>,
    /// A UDP socket (default TCP).
    #[arg(long)]
    pub udp: bool,
    /// The socket would have SO_REUSEADDR.
    #[arg(long)]
    pub reuseaddr: bool,
    /// The socket would have SO_REUSEPORT.
    #[arg(long)]
    pub reuseport: bool,
    /// The socket would have IPV6_V6ONLY (IPv6 addresses only).
    #[arg(long)]
    pub v6only: bool,
    /// The socket would have IP_FREEBIND (a non-local address is accepted).
    #[arg(long)]
    pub freebind: bool,
    /// The socket would have IP_TRANSPARENT (a non-local address is accepted).
    #[arg(long)]
    pub transparent: bool,
    /// Owner uid of the socket, and the caller: a process of this uid without capabilities
    /// (default: this process, with its uid and capabilities).
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Network namespace to look in, as a file: /proc/PID/ns/net, /run/netns/NAME
    /// (default: this process's).
    #[arg(long, value_name = "PATH", value_parser = parse_netns)]
    pub netns: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// List every socket in the way on its own (by default, sockets that are alike are one
    /// group with a count).
    #[arg(long)]
    pub all: bool,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not ADDR:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)"))
}

/// A file that names a network namespace: checked here so that a wrong path is bad usage
/// (exit 2) rather than a failed lookup.
fn parse_netns(s: &str) -> Result<PathBuf, String> {
    use std::os::fd::AsRawFd as _;
    /// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, linux/nsfs.h): the namespace's `CLONE_NEW*` type.
    // `libc::Ioctl`: the request type is `c_ulong` on glibc, `c_int` on musl.
    const NS_GET_NSTYPE: libc::Ioctl = 0xb703;
    let file = std::fs::File::open(s).map_err(|e| format!("cannot open `{s}`: {e}"))?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor, which `file`
    // keeps open for the call.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind == -1 {
        return Err(format!(
            "`{s}` is not a namespace file (e.g. /proc/PID/ns/net, /run/netns/NAME)"
        ));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(format!(
            "`{s}` is a namespace of another kind, not a network namespace"
        ));
    }
    Ok(PathBuf::from(s))
}

/// Runs `why`, prints the answer; returns the exit code for it.
pub fn run(args: &WhyArgs) -> Result<u8, WhyError> {
    // A one-shot answer: its time is mostly the iterator programs' load.
    super::kiter::parallel_load();
    let addr = match (args.addr, args.connect) {
        (_, Some(dst)) => return run_connect(args, dst),
        (Some(addr), None) => addr,
        (None, None) => return Err(WhyError::Usage("ADDR:PORT or --connect DST:PORT".into())),
    };
    if args.v6only && addr.is_ipv4() {
        return Err(WhyError::Usage(
            "--v6only applies to IPv6 addresses only (see `observer why --help`)".into(),
        ));
    }
    let request = Request {
        proto: if args.udp { Proto::Udp } else { Proto::Tcp },
        addr: addr.ip(),
        port: addr.port(),
        reuseaddr: args.reuseaddr,
        reuseport: args.reuseport,
        v6only: args.v6only,
        bound_dev_if: 0,
        // SAFETY: geteuid has no preconditions.
        uid: args.uid.unwrap_or_else(|| unsafe { libc::geteuid() }),
    };
    let netns = args.netns.clone().map_or(Netns::Current, Netns::Path);
    let ask = refusal::Ask {
        proto: request.proto,
        addr: request.addr,
        port: request.port,
        scope_id: match addr {
            SocketAddr::V6(a) => a.scope_id(),
            SocketAddr::V4(_) => 0,
        },
        v6only: request.v6only,
        freebind: args.freebind,
        transparent: args.transparent,
        bound_dev_if: 0,
        caller: args.uid.map_or(refusal::Caller::This, refusal::Caller::Uid),
    };
    let refused = refusal::check(&ask, &netns).map_err(|err| {
        WhyError::Lookup(super::Error::Netns {
            path: netns.to_string(),
            err,
        })
    })?;
    let conflict = match &refused {
        Some(_) => None,
        None => {
            let query = Query {
                request: request.clone(),
                netns,
                exclude_inode: None,
                all: args.all,
            };
            Some(diagnose(&query).map_err(WhyError::Lookup)?)
        }
    };
    let (result, code): (&str, u8) = match (&refused, conflict.as_ref().map(|c| c.verdict)) {
        (Some(r), _) => (&r.errno, EXIT_REFUSED),
        (None, Some("in_use")) => ("EADDRINUSE", EXIT_WOULD_FAIL),
        (None, Some("uncertain")) => ("UNCERTAIN", EXIT_UNCERTAIN),
        (None, Some("ephemeral"))
            if conflict
                .as_ref()
                .and_then(|c| c.ephemeral.as_ref())
                .is_some_and(|e| e.free == 0) =>
        {
            ("EADDRINUSE", EXIT_WOULD_FAIL)
        }
        _ => ("OK", 0),
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        let record = WhyRecord {
            record_type: "why",
            protocol: request.proto,
            addr: request.addr,
            port: request.port,
            reuseaddr: request.reuseaddr,
            reuseport: request.reuseport,
            v6only: request.v6only,
            uid: request.uid,
            result,
            refusal: refused.as_ref(),
            conflict: conflict.as_ref(),
        };
        serde_json::to_writer(&mut out, &record)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let proto = if args.udp { "udp" } else { "tcp" };
        let verdict = match result {
            "OK" => "would succeed now".to_string(),
            "UNCERTAIN" => "might fail with EADDRINUSE".to_string(),
            errno => format!("would fail with {errno}"),
        };
        let shown = match addr {
            SocketAddr::V6(a) if a.scope_id() != 0 => {
                format!("[{}%{}]:{}", a.ip(), a.scope_id(), a.port())
            }
            _ => addr_port(request.addr, request.port),
        };
        // Facts name interfaces, which other processes name: each line escaped. The conflict's
        // lines come escaped from `lines_up_to`; escaping them again would double every
        // backslash of an escape.
        let mut lines = vec![format!("{proto} {shown}: bind() {verdict}")];
        if let Some(r) = &refused {
            lines.extend(
                super::report::refusal_lines(r)
                    .iter()
                    .map(|l| format!("  {l}")),
            );
        }
        let mut safe: String = lines
            .iter()
            .flat_map(|l| l.lines())
            .map(|l| format!("{}\n", crate::termsafe::escape(l)))
            .collect();
        if let Some(conflict) = &conflict {
            let shown = if args.all { usize::MAX } else { SHOWN_GROUPS };
            for line in lines_up_to(conflict, shown) {
                safe.push_str(&format!("  {line}\n"));
            }
        }
        out.write_all(safe.as_bytes())
    };
    written.map_err(WhyError::Output)?;
    Ok(code)
}

/// `observer why --json --connect`'s record.
#[derive(serde::Serialize)]
struct WhyConnect<'a> {
    #[serde(rename = "type")]
    record_type: &'static str,
    op: &'static str,
    protocol: Proto,
    addr: std::net::IpAddr,
    port: u16,
    from: Option<std::net::IpAddr>,
    result: &'a str,
    conflict: &'a crate::model::Conflict,
}

/// `why --connect DST:PORT`: would a connect find a local port toward DST:PORT now. TCP asks
/// the connect lookup ([`super::connect`]); a UDP socket's connect autobinds, which is a
/// port-0 bind on the address it holds, whatever the destination ([`super::ephemeral`]).
fn run_connect(args: &WhyArgs, dst: SocketAddr) -> Result<u8, WhyError> {
    let netns = args.netns.clone().map_or(Netns::Current, Netns::Path);
    let (protocol, conflict, failure) = if args.udp {
        let any: std::net::IpAddr = if dst.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let query = Query {
            request: Request {
                proto: Proto::Udp,
                addr: args.from.unwrap_or(any),
                port: 0,
                reuseaddr: args.reuseaddr,
                reuseport: args.reuseport,
                v6only: args.v6only,
                bound_dev_if: 0,
                // SAFETY: geteuid has no preconditions.
                uid: args.uid.unwrap_or_else(|| unsafe { libc::geteuid() }),
            },
            netns,
            exclude_inode: None,
            all: args.all,
        };
        let conflict = diagnose(&query).map_err(WhyError::Lookup)?;
        let none_free = conflict.ephemeral.as_ref().is_some_and(|e| e.free == 0);
        (Proto::Udp, conflict, none_free.then_some("EAGAIN"))
    } else {
        let ask = super::connect::Ask {
            dst,
            source: args.from,
            bound_port: None,
            exclude_inode: None,
        };
        let conflict = super::connect::explain(&ask, &netns).map_err(WhyError::Lookup)?;
        let exhausted = conflict.verdict == "exhausted";
        (Proto::Tcp, conflict, exhausted.then_some("EADDRNOTAVAIL"))
    };
    let (result, code) = failure.map_or(("OK", 0), |errno| (errno, EXIT_WOULD_FAIL));
    let mut out = io::stdout().lock();
    let written = if args.json {
        let record = WhyConnect {
            record_type: "why",
            op: "connect",
            protocol,
            addr: dst.ip(),
            port: dst.port(),
            from: args.from,
            result,
            conflict: &conflict,
        };
        serde_json::to_writer(&mut out, &record)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let verdict = match result {
            "OK" => "would find a local port now".to_string(),
            errno => format!("would fail with {errno}"),
        };
        let proto = if args.udp { "udp" } else { "tcp" };
        let mut text = format!(
            "{proto} connect() to {}: {verdict}\n",
            addr_port(dst.ip(), dst.port())
        );
        let shown = if args.all { usize::MAX } else { SHOWN_GROUPS };
        for line in lines_up_to(&conflict, shown) {
            text.push_str(&format!("  {line}\n"));
        }
        out.write_all(text.as_bytes())
    };
    written.map_err(WhyError::Output)?;
    Ok(code)
}

#[derive(Debug, thiserror::Error)]
pub enum WhyError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Lookup(super::Error),
    #[error("writing the answer: {0}")]
    Output(io::Error),
}
