//! Where events go: one [`Sink`] interface, with a table sink for people and a JSON Lines sink
//! for programs. Both print only to the writer they are given (stdout in the binary); neither
//! flushes per event: the collector flushes after each batch it drains.

use crate::model::{
    BindEvent, Endpoint, ExplanationRecord, LostRecord, Repeat, Requested, StartRecord, Summary,
};
use serde::Serialize;
use std::io::{self, Write};

/// One output format.
pub trait Sink {
    fn start(&mut self, start: &StartRecord) -> io::Result<()>;
    fn event(&mut self, event: &BindEvent) -> io::Result<()>;
    /// An explanation that came after its event (see `crate::hold`).
    fn explanation(&mut self, x: &ExplanationRecord) -> io::Result<()>;
    fn lost(&mut self, lost: &LostRecord) -> io::Result<()>;
    /// Calls folded in the kernel as repeats of the event `of` (already written).
    fn repeat(&mut self, _repeat: &Repeat, _of: &BindEvent) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, summary: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// The run's totals so far, at every tick (a sink that exports counters keeps them
    /// current); the printing sinks ignore it.
    fn progress(&mut self, _totals: &Summary) -> io::Result<()> {
        Ok(())
    }
}

/// Several sinks fed the same records, in order (`--metrics` with JSON or the table).
pub struct Fanout(pub Vec<Box<dyn Sink>>);

impl Sink for Fanout {
    fn start(&mut self, start: &StartRecord) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.start(start))
    }
    fn event(&mut self, event: &BindEvent) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.event(event))
    }
    fn explanation(&mut self, x: &ExplanationRecord) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.explanation(x))
    }
    fn lost(&mut self, lost: &LostRecord) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.lost(lost))
    }
    fn repeat(&mut self, repeat: &Repeat, of: &BindEvent) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.repeat(repeat, of))
    }
    fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.summary(summary))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }
    fn progress(&mut self, totals: &Summary) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.progress(totals))
    }
}

/// `--quiet`: no events; the start, lost and summary lines of the table on `diag` (stderr),
/// so that an agent that only serves metrics still says what it attached and what it missed.
pub struct QuietSink<D: Write>(pub D);

impl<D: Write> Sink for QuietSink<D> {
    fn start(&mut self, s: &StartRecord) -> io::Result<()> {
        start_lines(&mut self.0, s)
    }
    fn event(&mut self, _: &BindEvent) -> io::Result<()> {
        Ok(())
    }
    fn explanation(&mut self, _: &ExplanationRecord) -> io::Result<()> {
        Ok(())
    }
    fn lost(&mut self, l: &LostRecord) -> io::Result<()> {
        lost_line(&mut self.0, l)
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        summary_line(&mut self.0, s)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// JSON Lines: one object per line, each with a `"type"`.
pub struct JsonSink<W: Write> {
    out: W,
    /// Records encoded since the last write to `out`: one buffer, no allocation per line and
    /// no second copy through a `BufWriter`.
    buf: Vec<u8>,
    /// When `out` is a regular file: the file offset the next write lands at, and the page
    /// size. Full chunks are then cut at a page boundary of the file (see `write_chunk`).
    file: Option<(u64, usize)>,
}

/// Bytes of encoded events handed to `out` in one write: at least a `BufWriter`'s capacity
/// (64 KiB in `cli`), so it passes them straight through.
const JSON_CHUNK: usize = 64 * 1024;

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink {
            out,
            buf: Vec::with_capacity(JSON_CHUNK + 4096),
            file: None,
        }
    }

    /// A sink writing into a regular file whose next write lands at `offset`, in pages of
    /// `page` bytes.
    pub fn for_file(out: W, offset: u64, page: usize) -> Self {
        let mut sink = JsonSink::new(out);
        sink.file = (page > 0).then_some((offset, page));
        sink
    }

    /// Hands everything encoded to `out`.
    fn write_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.out.write_all(&self.buf);
        if let Some((offset, _)) = &mut self.file {
            *offset += self.buf.len() as u64;
        }
        self.buf.clear();
        result
    }

    /// Hands a full buffer to `out`. Into a file, only up to the last page boundary it
    /// reaches; the rest starts the next chunk. A write that ends inside a page the kernel no
    /// longer holds in its cache makes it read that page from disk first, and waits for it:
    /// the case of a log file overwritten in place, or of a host that reclaims idle page cache
    /// (these VMs do within seconds). Under a flood that was a disk read per chunk.
    fn write_chunk(&mut self) -> io::Result<()> {
        let Some((offset, page)) = self.file else {
            return self.write_buffered();
        };
        let end = offset + self.buf.len() as u64;
        let cut = self.buf.len() - (end % page as u64) as usize;
        if cut == 0 {
            return self.write_buffered();
        }
        let result = self.out.write_all(&self.buf[..cut]);
        self.buf.drain(..cut);
        self.file = Some((offset + cut as u64, page));
        result
    }

    /// A record written through serde (start, lost, summary, an event with a conflict), after
    /// the events before it and with them.
    fn line<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.buf, value).map_err(io::Error::from)?;
        self.buf.push(b'\n');
        self.write_buffered()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn start(&mut self, start: &StartRecord) -> io::Result<()> {
        self.line(start)?;
        // Readers wait for this line before they start their binds: never leave it buffered.
        self.out.flush()
    }
    fn event(&mut self, event: &BindEvent) -> io::Result<()> {
        let mark = self.buf.len();
        if !crate::jsonline::encode(&mut self.buf, event) {
            self.buf.truncate(mark);
            return self.line(event);
        }
        self.buf.push(b'\n');
        if self.buf.len() >= JSON_CHUNK {
            self.write_chunk()?;
        }
        Ok(())
    }
    fn explanation(&mut self, x: &ExplanationRecord) -> io::Result<()> {
        self.line(x)
    }
    fn lost(&mut self, lost: &LostRecord) -> io::Result<()> {
        self.line(lost)
    }
    fn repeat(&mut self, repeat: &Repeat, _of: &BindEvent) -> io::Result<()> {
        self.line(repeat)
    }
    fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        self.line(summary)?;
        self.out.flush()
    }
    fn flush(&mut self) -> io::Result<()> {
        self.write_buffered()?;
        self.out.flush()
    }
}

impl<W: Write> Drop for JsonSink<W> {
    /// Like a `BufWriter`, hands over what is still buffered; an error here has nowhere to go
    /// (the collector flushes, and sees errors, after every drain).
    fn drop(&mut self) {
        let _ = self.write_buffered();
    }
}

/// A table for people: events on `out`, start and summary lines on `diag` (stderr), so that
/// `observer watch > file` keeps only events.
pub struct TableSink<W: Write, D: Write> {
    out: W,
    diag: D,
}

/// Column header of the table; `OPTS` letters are explained in the README and by `--help`.
///
/// `UID` is the socket's owner (`sk_uid`, which `reuseport-same-uid` compares), `NETNS` the
/// inode of its network namespace (as `--netns` takes it): two rows for the same address from
/// different namespaces are no contradiction.
pub const TABLE_HEADER: &str = "TIME            PID     COMM             UID    NETNS      OP       PROTO REQUESTED                    BOUND                        OPTS   RESULT";

impl<W: Write, D: Write> TableSink<W, D> {
    pub fn new(out: W, diag: D) -> Self {
        TableSink { out, diag }
    }
}

impl<W: Write, D: Write> Sink for TableSink<W, D> {
    fn start(&mut self, s: &StartRecord) -> io::Result<()> {
        start_lines(&mut self.diag, s)?;
        writeln!(self.out, "{TABLE_HEADER}")?;
        self.out.flush()
    }

    fn event(&mut self, e: &BindEvent) -> io::Result<()> {
        let time = short_time(&e.time);
        let requested = match (&e.requested, &e.remote) {
            // A connect: where to, in the REQUESTED column.
            (_, crate::model::Remote::Inet(ep)) => format!("->{}", endpoint(ep)),
            (_, crate::model::Remote::Unknown) => "->?".into(),
            (Some(Requested::Inet(ep)), _) => endpoint(ep),
            (Some(Requested::Other { sa_family, addrlen }), _) => {
                format!("af{sa_family} ({addrlen} bytes)")
            }
            (None, _) => "-".into(),
        };
        let bound = e.bound.as_ref().map_or_else(|| "-".into(), endpoint);
        let proto = e.protocol.as_deref().unwrap_or("?");
        let proto = match e.family.as_deref() {
            Some("inet6") => format!("{proto}6"),
            _ => proto.to_string(),
        };
        let uid = e.sock_uid.map_or_else(|| "?".into(), |u| u.to_string());
        let netns = e.netns.map_or_else(|| "?".into(), |n| n.to_string());
        writeln!(
            self.out,
            "{time:<15} {:<7} {:<16} {uid:<6} {netns:<10} {:<8} {proto:<5} {requested:<28} {bound:<28} {} {}",
            e.pid,
            crate::termsafe::escape(&e.comm),
            e.op.as_str(),
            opts(e),
            e.result
        )?;
        if let Some(of) = e.repeat_of {
            let at = e.repeat_time.as_deref().map(short_time).unwrap_or("?");
            writeln!(
                self.out,
                "    the same failure as at {at} (event {of}): its explanation applies{}",
                if e.repeat_flags_differ {
                    "; this call's other options differ (see OPTS)"
                } else {
                    ""
                }
            )?;
        }
        if let Some(c) = &e.conflict {
            for line in crate::conflict::report::lines(c) {
                writeln!(self.out, "    {line}")?;
            }
        }
        Ok(())
    }

    fn explanation(&mut self, x: &ExplanationRecord) -> io::Result<()> {
        writeln!(
            self.out,
            "{:<15} explanation of the failure at {} (event {}), looked up late:",
            short_time(&x.time),
            short_time(&x.event_time),
            x.of
        )?;
        for line in crate::conflict::report::lines(&x.conflict) {
            writeln!(self.out, "    {line}")?;
        }
        Ok(())
    }

    fn lost(&mut self, l: &LostRecord) -> io::Result<()> {
        lost_line(&mut self.out, l)
    }

    fn repeat(&mut self, r: &Repeat, _of: &BindEvent) -> io::Result<()> {
        let of = r.of.map_or_else(
            || "an event no longer known".into(),
            |s| format!("event {s}"),
        );
        writeln!(
            self.out,
            "{:<15} {:<7} ↳ {of} repeated {} times in {:.1} s{}",
            short_time(&r.time),
            r.pid,
            thousands(r.total),
            r.span_secs,
            if r.reason == "ended" { " (ended)" } else { "" }
        )
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.out.flush()?;
        summary_line(&mut self.diag, s)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `n` with a comma every three digits (`14,203`).
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The time of day of an RFC 3339 time (`HH:MM:SS.ffffff`), as the table shows it.
fn short_time(rfc3339: &str) -> &str {
    rfc3339.get(11..26).unwrap_or(rfc3339)
}

/// The table's start lines: the backend, backends skipped, fields unknown here.
fn start_lines(diag: &mut impl Write, s: &StartRecord) -> io::Result<()> {
    writeln!(
        diag,
        "observer: watching bind() and listen() with the {} backend ({}); Ctrl-C to stop",
        s.backend,
        s.hooks.join(", ")
    )?;
    for skipped in &s.skipped_backends {
        writeln!(
            diag,
            "observer: skipped {}: {}",
            skipped.backend, skipped.reason
        )?;
    }
    if !s.unknown_fields.is_empty() {
        writeln!(
            diag,
            "observer: this kernel's BTF lacks {}; shown as '?'",
            s.unknown_fields.join(", ")
        )?;
    }
    Ok(())
}

fn lost_line(out: &mut impl Write, l: &LostRecord) -> io::Result<()> {
    writeln!(
        out,
        "*** {} events lost (ring buffer full; {} in total) ***",
        l.count, l.total
    )
}

/// The table's summary lines (also written on stderr when a JSON summary could not be).
pub fn summary_line(diag: &mut impl Write, s: &Summary) -> io::Result<()> {
    writeln!(
        diag,
        "observer: {} events, {} repeats folded ({} filtered), {} lost, {} unpaired, {} read errors, {} undecodable in {:.1}s ({})",
        s.events,
        s.repeats,
        s.filtered,
        s.lost,
        s.unpaired,
        s.read_errors,
        s.decode_errors,
        s.duration_secs,
        s.reason
    )?;
    // What the explanations missed, said as plainly as what the events missed.
    let explained = s.conflict_lookups + s.conflict_repeats + s.conflict_queue_full;
    if explained > 0 {
        writeln!(
            diag,
            "observer: explanations: {} looked up, {} retries pointed at an earlier one, \
             {} not looked up (queue full), {} unfinished at the end, {} written after their event",
            s.conflict_lookups,
            s.conflict_repeats,
            s.conflict_queue_full,
            s.conflict_unfinished,
            s.explanations_late
        )?;
    }
    let refusals = s.refusals_explained + s.refusals_unexplained;
    if refusals > 0 {
        writeln!(
            diag,
            "observer: other failures: {} explained by a rule of the kernel, {} not explained \
             (each says why), {} of them looked up off the event path",
            s.refusals_explained, s.refusals_unexplained, s.refusal_lookups
        )?;
    }
    if s.port_shares > 0 {
        writeln!(
            diag,
            "observer: {} successful calls put their socket beside other processes' sockets on \
             the port (each says where the traffic goes)",
            s.port_shares
        )?;
    }
    if s.cgroup_unresolved > 0 {
        writeln!(
            diag,
            "observer: {} events with a cgroup id that could not be turned into a path",
            s.cgroup_unresolved
        )?;
    }
    Ok(())
}

/// Keeps events in memory (the demo checks them after the run); start, lost and summary
/// records are not kept: the run's summary is returned by the collector.
#[derive(Debug, Default)]
pub struct CollectSink {
    pub events: Vec<BindEvent>,
    pub lost: u64,
}

impl Sink for CollectSink {
    fn start(&mut self, _: &StartRecord) -> io::Result<()> {
        Ok(())
    }
    fn event(&mut self, event: &BindEvent) -> io::Result<()> {
        self.events.push(event.clone());
        Ok(())
    }
    /// Put in place: the event it explains gets the conflict.
    fn explanation(&mut self, x: &ExplanationRecord) -> io::Result<()> {
        if let Some(e) = self.events.iter_mut().rev().find(|e| e.seq == x.of) {
            e.conflict = Some(x.conflict.clone());
        }
        Ok(())
    }
    fn lost(&mut self, lost: &LostRecord) -> io::Result<()> {
        self.lost = lost.total;
        Ok(())
    }
    fn summary(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `addr:port`, IPv6 in brackets, with `%scope` when one was given.
pub fn endpoint(ep: &Endpoint) -> String {
    match (ep.addr, ep.scope_id) {
        (std::net::IpAddr::V6(a), Some(scope)) => format!("[{a}%{scope}]:{}", ep.port),
        (std::net::IpAddr::V6(a), None) => format!("[{a}]:{}", ep.port),
        (a, _) => format!("{a}:{}", ep.port),
    }
}

/// One letter per option of `observer_common::sockopt::ALL` (bindsnoop's order plus `6`:
/// `R` SO_REUSEADDR, `r` SO_REUSEPORT, `6` IPV6_V6ONLY, `F` IP_FREEBIND, `T` IP_TRANSPARENT,
/// `N` IP_BIND_ADDRESS_NO_PORT); `.` not set, `?` unknown on this kernel.
pub fn opts(e: &BindEvent) -> String {
    e.flags
        .in_order()
        .iter()
        .zip(
            observer_common::sockopt::ALL
                .iter()
                .map(|o| char::from(o.letter)),
        )
        .map(|(v, c)| match v {
            Some(true) => c,
            Some(false) => '.',
            None => '?',
        })
        .collect()
}

#[cfg(test)]
#[path = "sink_tests.rs"]
pub(crate) mod tests;
