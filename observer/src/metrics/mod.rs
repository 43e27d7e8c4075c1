//! Prometheus metrics: the counters behind `observer watch --metrics`, filled by a [`Sink`]
//! like the other outputs, and served by [`server`].
//!
//! Every label has a bounded set of values, so a host that binds millions of distinct ports
//! cannot grow the registry: families, protocols, ops and errno names are finite, and a
//! failure's port keeps its own label only when it is on the watch list (`--metrics-ports`,
//! by default the ports below 1024); every other port folds into `"other"`.

pub mod server;

use crate::model::{BindEvent, Requested};
use crate::model::{LostRecord, StartRecord, Summary};
use crate::sink::Sink;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

/// Labels of `observer_bind_attempts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `inet`, `inet6`, `af<N>`, or `unknown`.
    pub family: Cow<'static, str>,
    /// `tcp`, `udp`, ..., or `unknown`.
    pub protocol: Cow<'static, str>,
    /// `bind`, `listen`, `get_port`, `connect`.
    pub op: &'static str,
    /// `OK` or the errno name.
    pub result: Cow<'static, str>,
}

/// Labels of `observer_bind_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The errno name, e.g. `EADDRINUSE`.
    pub errno: Cow<'static, str>,
    /// The port asked for (a listen's: the port held), when it is on the watch list;
    /// `other` otherwise, `none` when the call named no port.
    pub port: Cow<'static, str>,
}

/// Labels of `observer_conflicts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The kernel rule that refused the port (`reuseaddr-vs-listener`, ...), or the verdict
    /// when no socket was in the way (`free`, `ephemeral`, `uncertain`).
    pub rule: Cow<'static, str>,
}

/// Labels of `observer_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The errno name.
    pub errno: Cow<'static, str>,
    /// The refusal's rule (`privileged-port`, `address-not-local`, ..., `not-explained`).
    pub rule: Cow<'static, str>,
}

/// Labels of `observer_port_shares_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShareLabels {
    /// `tcp` or `udp`.
    pub protocol: Cow<'static, str>,
    /// Where the traffic goes: `reuseport-group`, `udp-one-receiver`, `most-specific-address`.
    pub rule: Cow<'static, str>,
}

/// Labels of `observer_backend_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
    version: &'static str,
    kernel: String,
}

/// Which failure ports keep their own label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchPorts {
    /// The well-known ports, 1 to 1023.
    WellKnown,
    /// Exactly these (from `--metrics-ports`).
    List(BTreeSet<u16>),
}

impl WatchPorts {
    /// The label of `port`.
    pub fn label(&self, port: Option<u16>) -> Cow<'static, str> {
        let Some(port) = port else {
            return Cow::Borrowed("none");
        };
        let watched = match self {
            WatchPorts::WellKnown => (1..1024).contains(&port),
            WatchPorts::List(ports) => ports.contains(&port),
        };
        if watched {
            Cow::Owned(port.to_string())
        } else {
            Cow::Borrowed("other")
        }
    }
}

/// Running totals the collector reports at each tick (see [`Sink::progress`]), as counters.
#[derive(Default)]
struct Totals {
    lost: Counter,
    filtered: Counter,
    undecodable: Counter,
    read_errors: Counter,
    unpaired: Counter,
}

/// The registry and the counters in it. Counters are atomics: the sink updates them on the
/// collector thread while the server encodes them on its own.
pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    conflicts: Family<RuleLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    shares: Family<ShareLabels, Counter>,
    totals: Totals,
    /// The endpoint's own counters.
    pub(crate) server: server::ServerCounters,
    watch_ports: WatchPorts,
}

/// What the start record says about the run, for `observer_backend_info`.
pub struct RunInfo {
    pub backend: &'static str,
    pub kernel: String,
}

impl Metrics {
    pub fn new(watch_ports: WatchPorts, run: RunInfo) -> Self {
        let mut registry = Registry::with_prefix("observer");
        let attempts = Family::<AttemptLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let conflicts = Family::<RuleLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let shares = Family::<ShareLabels, Counter>::default();
        let totals = Totals::default();
        registry.register(
            "backend",
            "The kernel hooks in use, the observer's version and the kernel's",
            Info::new(BackendLabels {
                backend: run.backend,
                version: env!("CARGO_PKG_VERSION"),
                kernel: run.kernel,
            }),
        );
        registry.register(
            "bind_attempts",
            "bind(), listen() and port allocations seen, by family, protocol, op and result",
            attempts.clone(),
        );
        registry.register(
            "bind_failures",
            "Failed calls by errno and port (ports off the watch list are \"other\")",
            failures.clone(),
        );
        registry.register(
            "conflicts",
            "EADDRINUSE failures diagnosed, by the kernel rule that refused the port",
            conflicts.clone(),
        );
        registry.register(
            "refusals",
            "Other failed bind() and listen() calls explained, by errno and the kernel rule \
             (not-explained: no rule could be named, the explanation says why)",
            refusals.clone(),
        );
        registry.register(
            "port_shares",
            "Successful bind() and listen() calls that put a socket beside other processes' \
             sockets on its port, by protocol and where the traffic then goes",
            shares.clone(),
        );
        let totals_help: [(&str, &str, &Counter); 5] = [
            (
                "events_lost",
                "Events the kernel could not queue (ring buffer full)",
                &totals.lost,
            ),
            (
                "events_filtered",
                "Events received but dropped by the filters (not in bind_attempts)",
                &totals.filtered,
            ),
            (
                "records_undecodable",
                "Records from the kernel that could not be decoded",
                &totals.undecodable,
            ),
            (
                "read_errors",
                "Kernel memory reads that failed (fields reported as null)",
                &totals.read_errors,
            ),
            (
                "unpaired",
                "Returns whose entry was not seen (kprobe backend)",
                &totals.unpaired,
            ),
        ];
        for (name, help, counter) in totals_help {
            registry.register(name, help, counter.clone());
        }
        let server = server::ServerCounters::default();
        registry.register(
            "metrics_connections_rejected",
            "Connections to this endpoint closed on accept: too many open at once",
            server.rejected.clone(),
        );
        registry.register(
            "metrics_connections_failed",
            "Connections to this endpoint ended by a timeout, an oversized request or a protocol error",
            server.failed.clone(),
        );
        registry.register(
            "metrics_accept_errors",
            "Failed accept() calls on this endpoint (e.g. EMFILE); each is followed by a pause",
            server.accept_errors.clone(),
        );
        Metrics {
            registry,
            attempts,
            failures,
            conflicts,
            refusals,
            shares,
            totals,
            server,
            watch_ports,
        }
    }

    /// The registry, for the server.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn event(&self, e: &BindEvent) {
        self.calls(e, 1);
        if let Some(c) = &e.conflict {
            self.conflict(c);
        }
    }

    /// `n` calls like `e` (an event, or the repeats folded after it).
    fn calls(&self, e: &BindEvent, n: u64) {
        let unknown = || Cow::Borrowed("unknown");
        self.attempts
            .get_or_create(&AttemptLabels {
                family: e.family.clone().unwrap_or_else(unknown),
                protocol: e.protocol.clone().unwrap_or_else(unknown),
                op: e.op.as_str(),
                result: e.result.clone(),
            })
            .inc_by(n);
        if e.errno != 0 {
            // A connect's: the port it connected to.
            let port = match (&e.requested, e.remote.endpoint()) {
                (_, Some(remote)) => Some(remote.port),
                (Some(Requested::Inet(ep)), _) => Some(ep.port),
                _ => e.bound.map(|b| b.port),
            };
            self.failures
                .get_or_create(&FailureLabels {
                    errno: e.result.clone(),
                    port: self.watch_ports.label(port),
                })
                .inc_by(n);
        }
    }

    /// A conflict is counted once, when its answer is known: a `"pending"` one is counted
    /// when its explanation comes.
    fn conflict(&self, c: &crate::model::Conflict) {
        if c.verdict == "pending" {
            return;
        }
        if let Some(sh) = &c.sharing {
            let protocol = match sh.protocol {
                crate::model::Proto::Tcp => "tcp",
                crate::model::Proto::Udp => "udp",
            };
            self.shares
                .get_or_create(&ShareLabels {
                    protocol: Cow::Borrowed(protocol),
                    rule: Cow::Borrowed(sh.rule),
                })
                .inc();
            return;
        }
        if let Some(r) = &c.refusal {
            self.refusals
                .get_or_create(&RefusalLabels {
                    errno: r.errno.clone(),
                    rule: Cow::Borrowed(r.rule),
                })
                .inc();
            return;
        }
        for rule in rules(c) {
            self.conflicts.get_or_create(&RuleLabels { rule }).inc();
        }
    }
}

/// The distinct rules of a conflict's holders, or its verdict when none is in the way.
fn rules(c: &crate::model::Conflict) -> BTreeSet<Cow<'static, str>> {
    let named: BTreeSet<Cow<'static, str>> = c
        .holders
        .iter()
        .map(|h| Cow::Borrowed(h.rule.name.as_str()))
        .collect();
    if named.is_empty() {
        BTreeSet::from([Cow::Borrowed(c.verdict)])
    } else {
        named
    }
}

/// Feeds [`Metrics`] from the event stream.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsSink { metrics }
    }
}

/// Raises `counter` to `total` (the collector reports running totals, counters take steps).
fn raise(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Sink for MetricsSink {
    fn start(&mut self, _: &StartRecord) -> io::Result<()> {
        Ok(())
    }
    fn event(&mut self, e: &BindEvent) -> io::Result<()> {
        self.metrics.event(e);
        Ok(())
    }
    fn explanation(&mut self, x: &crate::model::ExplanationRecord) -> io::Result<()> {
        self.metrics.conflict(&x.conflict);
        Ok(())
    }
    /// Every folded call counts as the call it repeats.
    fn repeat(&mut self, r: &crate::model::Repeat, of: &BindEvent) -> io::Result<()> {
        self.metrics.calls(of, r.count);
        Ok(())
    }
    /// The collector hands the same total to [`Sink::progress`] right after.
    fn lost(&mut self, _: &LostRecord) -> io::Result<()> {
        Ok(())
    }
    fn progress(&mut self, s: &Summary) -> io::Result<()> {
        let t = &self.metrics.totals;
        raise(&t.lost, s.lost);
        raise(&t.filtered, s.filtered);
        raise(&t.undecodable, s.decode_errors);
        raise(&t.read_errors, s.read_errors);
        raise(&t.unpaired, s.unpaired);
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.progress(s)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
