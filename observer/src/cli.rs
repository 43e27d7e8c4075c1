//! The command line: argument parsing and validation, and the dispatch to each subcommand.

use crate::backend;
use crate::collector::{self, RunOptions};
use crate::errno;
use crate::filter::Filter;
use crate::metrics;
use crate::scenarios;
use crate::sink::{Fanout, JsonSink, QuietSink, Sink, TableSink};
use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

/// `print!` that returns the write's error instead of panicking (a reader that has gone, as
/// `head` does, is EPIPE: Rust ignores SIGPIPE).
macro_rules! out {
    ($($arg:tt)*) => {
        write!(io::stdout().lock(), $($arg)*).context("writing to standard output")?
    };
}

/// `println!` as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(io::stdout().lock(), $($arg)*).context("writing to standard output")?
    };
}

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "observer",
    version,
    about = "Watch every bind() and listen() on this host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every bind() and listen() attempt as it happens.
    #[command(after_help = OPTS_HELP)]
    Watch(WatchArgs),
    /// The scenario workload: each claim of the notes about bind(), played on real sockets.
    #[command(subcommand)]
    Scenarios(ScenariosCommand),
    /// Run every scenario under the observer and show the claim, Linux's result, the kernel's
    /// result and what the observer saw, side by side.
    Demo(DemoArgs),
    /// Would a bind to ADDR:PORT succeed now? If not: the sockets in the way, their owners,
    /// the rule that makes them conflict, and what would work.
    #[command(after_help = crate::conflict::why::WHY_HELP)]
    Why(crate::conflict::why::WhyArgs),
}

#[derive(Debug, Subcommand)]
pub enum ScenariosCommand {
    /// List the scenarios with the note and claim each comes from.
    List,
    /// Run scenarios (all when none is named), each in a private network namespace; exit 1 if
    /// the kernel gives any step another result than the one declared.
    Run {
        /// Print one JSON record per step.
        #[arg(long)]
        json: bool,
        /// (The demo's workload.) Print each record as it is made and, after a failed bind or
        /// listen, wait for a line on stdin before going on.
        #[arg(long, hide = true, requires = "json")]
        pace: bool,
        /// Scenario names.
        names: Vec<String>,
    },
    /// The second process of a scenario: performs the steps whose index comes on stdin.
    #[command(hide = true)]
    ServeSteps {
        /// The scenario.
        name: String,
    },
    /// Bind a TCP socket with io_uring's IORING_OP_BIND (Linux 6.11+) under each backend and
    /// say which backend saw it; exit 1 if a kernel-function backend that loaded missed it.
    IoUringCheck,
    /// The workload of `io-uring-check`: one IORING_OP_BIND in a private namespace.
    #[command(hide = true)]
    IoUringBind,
    /// Use up a two-port range toward a listener so a connect fails with EADDRNOTAVAIL,
    /// under each backend; exit 1 if a backend that loaded did not report exactly that
    /// connect (successful connects and the UDP autobind of a connect are no events).
    ConnectCheck,
    /// The workload of `connect-check`.
    #[command(hide = true)]
    ConnectExhaust,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Scenario names (all when none is named).
    pub names: Vec<String>,
    /// Ring buffer size (as for `watch`).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,
    /// Kernel hooks to use (as for `watch`).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: backend::Choice,
    /// Print one JSON verdict per scenario instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub(crate) const OPTS_HELP: &str = "OPTS column (table): R SO_REUSEADDR, r SO_REUSEPORT, 6 IPV6_V6ONLY, \
F IP_FREEBIND, T IP_TRANSPARENT, N IP_BIND_ADDRESS_NO_PORT; '.' not set, '?' unknown on this kernel.";

/// `--connects`: which `connect()` calls are events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Connects {
    /// Those failing with EADDRNOTAVAIL, EAGAIN or EADDRINUSE.
    Failed,
    /// Every one.
    All,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Print JSON Lines (a start record, one record per event, a summary record).
    #[arg(long)]
    pub json: bool,
    /// Only this process id.
    #[arg(long, value_name = "PID", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only processes with this command name (as in /proc/PID/comm).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,
    /// Only calls whose requested, bound or (connect) remote port is PORT.
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub port: Option<u16>,
    /// Only failed calls.
    #[arg(long)]
    pub errors: bool,
    /// Only sockets in the network namespace with this inode (as in `ls -L -i /proc/PID/ns/net`).
    #[arg(long, value_name = "INODE", allow_negative_numbers = true)]
    pub netns: Option<u32>,
    /// Only processes in this cgroup or below it: a path below the cgroup v2 root
    /// (`/system.slice/nginx.service`) or the directory itself (`/sys/fs/cgroup/...`).
    #[arg(long, value_name = "PATH", value_parser = crate::cgroup::filter_path)]
    pub cgroup: Option<String>,
    /// Also show sockets of other families (unix, netlink, packet, ...).
    #[arg(long)]
    pub all_families: bool,
    /// Which connect() calls are events: `failed` (default) only those that fail with
    /// EADDRNOTAVAIL, EAGAIN (UDP) or EADDRINUSE (a port problem); `all` every connect, and
    /// on the fexit and kprobe backends the implicit port allocations of UDP connects and
    /// sends too.
    #[arg(long, value_name = "WHICH", default_value = "failed")]
    pub connects: Connects,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Ring buffer size: a power of two, at least the page size (e.g. 4M, 512K).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,
    /// Kernel hooks: fexit (BPF trampolines), kprobe (kprobe/kretprobe), tracepoint (syscall
    /// tracepoints), or auto (the first of those three that loads, attaches and fires here).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: backend::Choice,
    /// Do not look up what is in the way of EADDRINUSE failures (no `conflict` in events).
    #[arg(long)]
    pub no_conflicts: bool,
    /// Send every call as its own event. By default the tracepoint programs fold a thread's
    /// identical repeats of a failed call (same op, fd, requested address and error, each
    /// within a second of the one before) into counts, reported as `repeat` records.
    #[arg(long)]
    pub every_call: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (default 127.0.0.1:9847: loopback
    /// only, unless an address is given).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9847",
          value_parser = parse_listen_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Ports that keep their own label in `observer_bind_failures_total` (comma-separated;
    /// default: 1-1023); failures on other ports are counted under `port="other"`.
    #[arg(long, value_name = "PORTS", requires = "metrics", value_parser = parse_port_list)]
    pub metrics_ports: Option<std::collections::BTreeSet<u16>>,
    /// No event output, only metrics (and the start and summary lines on stderr).
    #[arg(long, requires = "metrics", conflicts_with = "json")]
    pub quiet: bool,
}

fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("`{s}` is not an address and port (e.g. 127.0.0.1:9847 or [::1]:9847)")
    })
}

fn parse_port_list(s: &str) -> Result<std::collections::BTreeSet<u16>, String> {
    s.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!("`{p}` is not a port (1-65535)")),
        })
        .collect()
}

/// A name the kernel can hold: it keeps the first 15 bytes (`TASK_COMM_LEN` - 1), so a longer
/// one would silently match nothing.
fn parse_comm(s: &str) -> Result<String, String> {
    if s.len() > 15 {
        return Err(format!(
            "`{s}` is {} bytes; a process name has at most 15 (the kernel keeps the first 15: `{}`)",
            s.len(),
            String::from_utf8_lossy(&s.as_bytes()[..15])
        ));
    }
    Ok(s.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}` is not a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_buffer_size(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4M, 512K, 65536)"))?;
    let mult: u64 = match unit {
        "" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        "G" | "g" | "GiB" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use K, M or G)")),
    };
    let bytes = n.saturating_mul(mult);
    let page = crate::page_size() as u64;
    if !bytes.is_power_of_two() || bytes < page || bytes > 1 << 30 {
        return Err(format!(
            "`{s}` must be a power of two from {page} bytes to 1G"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("`{s}` is too large"))
}

/// Runs the program: parses arguments, runs the subcommand, maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help, --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let line = usage_line(&err);
            eprintln!("observer: {line} (see `observer --help`)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(EXIT_FAILURE),
        Ok(Outcome::Code(code)) => ExitCode::from(code),
        Err(err) if err.is::<UsageError>() => {
            eprintln!("observer: {err}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(err) => {
            eprintln!("observer: {}", error_line(&err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// An error and its causes on one line, each cause once: several of our dependencies' errors
/// print their source inside their own text and give it as their source too (aya's
/// `map error: failed to create map X: failed to create map X: ...`), and so do some of ours
/// across an `anyhow` context.
pub fn error_line(err: &anyhow::Error) -> String {
    let full = format!("{err:#}");
    let mut kept: Vec<&str> = Vec::new();
    for part in full.split(": ") {
        if !kept.contains(&part) {
            kept.push(part);
        }
    }
    kept.join(": ")
}

/// clap's error as one line: its first paragraph, which says what is wrong and, for a missing
/// argument or a bad choice, names them on the lines after the first; without the usage and
/// tips that follow (they are in `--help`).
pub fn usage_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap renders the whole help of the command that lacks a subcommand: name that
        // command (its usage line) and its subcommands.
        let usage = rendered
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .unwrap_or("observer <COMMAND>");
        let names: Vec<&str> = rendered
            .lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .collect();
        return format!("{usage}: a command is needed: {}", names.join(", "));
    }
    let text = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    let line = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "bad usage".into()
    } else {
        line
    }
}

/// What a subcommand found, beyond success or failure of the run itself.
enum Outcome {
    /// Everything as expected.
    Clean,
    /// The run worked but found a difference (a step's result, an observer mismatch).
    Differences,
    /// The subcommand's own exit code (`why`).
    Code(u8),
}

fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Watch(args) => watch(args).map(|()| Outcome::Clean),
        Command::Scenarios(ScenariosCommand::List) => {
            for s in scenarios::catalog::all() {
                outln!("{:<40} {}  {}", s.name, s.note, s.claim);
            }
            Ok(Outcome::Clean)
        }
        Command::Scenarios(ScenariosCommand::Run { json, pace, names }) => {
            scenarios_run(json, pace, &names)
        }
        Command::Scenarios(ScenariosCommand::ServeSteps { name }) => {
            let selected = select(std::slice::from_ref(&name))?;
            scenarios::serve_steps(&selected[0]).context("serving a scenario's steps")?;
            Ok(Outcome::Clean)
        }
        Command::Scenarios(ScenariosCommand::IoUringBind) => {
            let did = scenarios::uring::bind_once().context("io_uring bind")?;
            outln!("{}", serde_json::to_string(&did)?);
            Ok(Outcome::Clean)
        }
        Command::Scenarios(ScenariosCommand::IoUringCheck) => io_uring_check(),
        Command::Scenarios(ScenariosCommand::ConnectExhaust) => {
            let did = scenarios::connect::exhaust().context("connect workload")?;
            outln!("{}", serde_json::to_string(&did)?);
            Ok(Outcome::Clean)
        }
        Command::Scenarios(ScenariosCommand::ConnectCheck) => connect_check(),
        Command::Demo(args) => demo(args),
        Command::Why(args) => match crate::conflict::why::run(&args) {
            Ok(code) => Ok(Outcome::Code(code)),
            Err(crate::conflict::why::WhyError::Usage(msg)) => Err(UsageError(msg).into()),
            Err(err) => Err(err.into()),
        },
    }
}

fn select(names: &[String]) -> Result<Vec<scenarios::Scenario>> {
    scenarios::select(names).map_err(|msg| anyhow::Error::new(UsageError(msg)))
}

/// A usage error found after parsing (an unknown scenario name): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn scenarios_run(json: bool, pace: bool, names: &[String]) -> Result<Outcome> {
    let selected = select(names)?;
    let outcomes = scenarios::demo::run_workload(&selected, pace)?;
    let mut out = io::stdout().lock();
    // Paced, every record was printed as it was made.
    for o in outcomes.iter().filter(|_| !pace) {
        if json {
            serde_json::to_writer(&mut out, o)?;
            writeln!(out)?;
        } else if o.op.is_some() || o.errno != o.expect {
            let verdict = if o.errno == o.expect { "ok" } else { "DIFFERS" };
            writeln!(
                out,
                "{:<40} {} {:<28} declared {:<13} kernel {:<13} {verdict}",
                o.scenario,
                o.sock,
                o.call,
                errno::name(o.expect),
                errno::name(o.errno)
            )?;
        }
    }
    out.flush()?;
    Ok(if outcomes.iter().all(|o| o.errno == o.expect) {
        Outcome::Clean
    } else {
        Outcome::Differences
    })
}

fn io_uring_check() -> Result<Outcome> {
    use backend::Choice;
    let mut missed = false;
    for choice in [Choice::Fexit, Choice::Kprobe, Choice::Tracepoint] {
        match scenarios::uring::check(choice) {
            Err(err) => outln!("{choice:?}: not checked: {err:#}"),
            Ok(None) => {
                outln!("this kernel has no IORING_OP_BIND (Linux 6.11+)");
                return Ok(Outcome::Clean);
            }
            Ok(Some((caught, line))) => {
                let verdict = match (caught, choice) {
                    (true, _) => "seen",
                    (false, Choice::Tracepoint) => "not seen (no bind system call: expected)",
                    (false, _) => {
                        missed = true;
                        "MISSED"
                    }
                };
                outln!("{verdict}: {line}");
            }
        }
    }
    Ok(if missed {
        Outcome::Differences
    } else {
        Outcome::Clean
    })
}

fn connect_check() -> Result<Outcome> {
    use backend::Choice;
    let mut missed = false;
    for choice in [Choice::Fexit, Choice::Kprobe, Choice::Tracepoint] {
        match scenarios::connect::check(choice) {
            Err(err) => outln!("{choice:?}: not checked: {err:#}"),
            Ok((right, line)) => {
                missed |= !right;
                outln!("{}: {line}", if right { "right" } else { "WRONG" });
            }
        }
    }
    Ok(if missed {
        Outcome::Differences
    } else {
        Outcome::Clean
    })
}

fn demo(args: DemoArgs) -> Result<Outcome> {
    crate::stop::install().context("catching SIGINT, SIGTERM and SIGHUP")?;
    let selected = select(&args.names)?;
    let run = scenarios::demo::run(&args.names, args.buffer_size, args.backend)?;
    if args.json {
        out!(
            "{}",
            scenarios::report::verdicts(&selected, &run.checked, &run.backend)
        );
    } else {
        out!("{}", scenarios::report::render(&selected, &run.checked));
    }
    if run.summary.lost > 0 {
        outln!(
            "observer: {} events lost (ring buffer full)",
            run.summary.lost
        );
    }
    Ok(if run.checked.observer_right() && run.summary.lost == 0 {
        Outcome::Clean
    } else {
        Outcome::Differences
    })
}

/// Standard output as a `File` (sharing its offset) when it is a regular file, with the offset
/// its next write lands at; `None` for a pipe, socket or terminal.
fn stdout_file() -> Option<(std::fs::File, u64)> {
    use std::io::Seek as _;
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let mut file = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    // SAFETY: F_GETFL only reads the flags of an fd this function owns.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    let offset = if flags >= 0 && flags & libc::O_APPEND != 0 {
        meta.len()
    } else {
        file.stream_position().ok()?
    };
    Some((file, offset))
}

/// Descriptors a run needs at the least: maps, programs, links, tracefs files, the runtime.
const MIN_DESCRIPTORS: u64 = 64;
/// Descriptors a run asks for when the soft limit is lower and the hard one allows: the
/// conflict lookups hold namespaces open (up to 256) beside their sockets.
const WANT_DESCRIPTORS: u64 = 1024;

/// Raises the soft descriptor limit to [`WANT_DESCRIPTORS`] where the hard limit allows, and
/// refuses to start below [`MIN_DESCRIPTORS`]: some of the libraries' errors at a low limit
/// name another cause (aya says "tracefs not found").
fn descriptor_limit() -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur < WANT_DESCRIPTORS && lim.rlim_max > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: WANT_DESCRIPTORS.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur < MIN_DESCRIPTORS {
        anyhow::bail!(
            "the descriptor limit is {} (ulimit -n) and cannot be raised; a run needs at least \
             {MIN_DESCRIPTORS}",
            lim.rlim_cur
        );
    }
    Ok(())
}

fn watch(args: WatchArgs) -> Result<()> {
    crate::stop::install().context("catching SIGINT, SIGTERM and SIGHUP")?;
    descriptor_limit()?;
    let filter = Filter {
        pid: args.pid,
        comm: args.comm,
        port: args.port,
        errors_only: args.errors,
        netns: args.netns,
        all_families: args.all_families,
        cgroup: args.cgroup,
    };
    // Bound before the programs load, so a port in use ends the run at once.
    let listener = args
        .metrics
        .map(|addr| {
            metrics::server::bind(addr)
                .with_context(|| format!("serving metrics on {addr}"))
                // Port 0 asks the kernel for one: say the one it gave.
                .map(|l| (l.local_addr().unwrap_or(addr), l))
        })
        .transpose()?;
    backend::EVERY_CALL.store(args.every_call, std::sync::atomic::Ordering::Relaxed);
    let loaded = backend::load(
        args.backend,
        args.buffer_size,
        args.connects == Connects::All,
    )?;
    crate::privilege::drop_after_attach(!args.no_conflicts)?;
    if loaded.mounted_tracefs {
        eprintln!("observer: mounted tracefs on /sys/kernel/tracing");
    }
    let stdout = crate::stdout::Stdout::new();
    let mut sink: Box<dyn Sink> = if args.quiet {
        Box::new(QuietSink(io::stderr()))
    } else if args.json {
        match stdout_file() {
            Some((file, offset)) => Box::new(JsonSink::for_file(file, offset, crate::page_size())),
            None => Box::new(JsonSink::new(stdout)),
        }
    } else {
        Box::new(TableSink::new(stdout, io::stderr()))
    };
    if let Some((addr, listener)) = listener {
        let watch = match args.metrics_ports {
            Some(ports) => metrics::WatchPorts::List(ports),
            None => metrics::WatchPorts::WellKnown,
        };
        let run = metrics::RunInfo {
            backend: loaded.backend,
            kernel: collector::kernel_release(),
        };
        let m = std::sync::Arc::new(metrics::Metrics::new(watch, run));
        metrics::server::spawn(listener, m.clone()).context("starting the metrics server")?;
        eprintln!("observer: serving metrics at http://{addr}/metrics");
        sink = Box::new(Fanout(vec![sink, Box::new(metrics::MetricsSink::new(m))]));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let opts = RunOptions {
        filter,
        duration: args.duration,
        until: Some(collector::stdout_closed()),
        conflicts: !args.no_conflicts,
    };
    let summary = runtime.block_on(collector::run(loaded, sink.as_mut(), opts))?;
    drop(sink);
    let (lines, bytes) = crate::stdout::unwritten_lines();
    if lines > 0 || bytes > 0 {
        let sig = crate::stop::signal().map_or("a signal", crate::stop::name);
        eprintln!(
            "observer: stopped by {sig} while the output was blocked: {lines} lines ({bytes} bytes) \
             not written"
        );
        if args.json {
            // The summary record was among them.
            crate::sink::summary_line(&mut io::stderr(), &summary)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn error_lines_state_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read /sys/kernel/btf/vmlinux: {0}")]
        struct Read(#[source] std::io::Error);
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = anyhow::Error::new(Read(io)).context("reading the kernel's BTF");
        assert_eq!(
            error_line(&err),
            "reading the kernel's BTF: cannot read /sys/kernel/btf/vmlinux: \
             No such file or directory (os error 2)"
        );
        let err = anyhow::anyhow!("failed to create map `SCRATCH`: Too many open files")
            .context("map error: failed to create map `SCRATCH`")
            .context("loading the programs");
        assert_eq!(
            error_line(&err),
            "loading the programs: map error: failed to create map `SCRATCH`: Too many open files"
        );
        // An IPv6 address is no separator.
        let err = anyhow::anyhow!("[::1]:80: in use").context("serving metrics on [::1]:80");
        assert_eq!(
            error_line(&err),
            "serving metrics on [::1]:80: [::1]:80: in use"
        );
    }
}
