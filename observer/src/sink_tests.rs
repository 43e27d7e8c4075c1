use super::*;
use crate::model::{Flags, Op, Skipped};
use crate::sockopt::Opt;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TIME: &str = "2026-11-21T16:23:51.000123Z";

fn v4(port: u16) -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        scope_id: None,
    }
}

fn v6(addr: &str, port: u16, scope_id: Option<u32>) -> Endpoint {
    Endpoint {
        addr: IpAddr::V6(addr.parse::<Ipv6Addr>().unwrap()),
        port,
        scope_id,
    }
}

const REUSEADDR_ONLY: Flags = Flags([
    Some(true),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
]);

/// A successful TCP bind of 127.0.0.1:8080 with SO_REUSEADDR.
pub(crate) fn event() -> BindEvent {
    BindEvent {
        record_type: "bind",
        seq: 0,
        time: TIME.to_string(),
        op: Op::Bind,
        pid: 4242,
        tid: 4242,
        uid: 1000,
        comm: "nginx".to_string(),
        netns: Some(4_026_531_840),
        family: Some("inet".into()),
        protocol: Some("tcp".into()),
        fd: Some(3),
        requested: Some(Requested::Inet(v4(8080))),
        bound: Some(v4(8080)),
        remote: crate::model::Remote::Absent,
        flags: REUSEADDR_ONLY,
        bound_dev_if: Some(0),
        sock_uid: Some(1000),
        sock_ino: Some(123_456),
        result: "OK".into(),
        errno: 0,
        hook: "tracepoint:sys_exit_bind",
        call_id: None,
        cgroup: None,
        cgroup_id: 0,
        unreadable: crate::model::Unreadable::NONE,
        repeat_of: None,
        repeat_time: None,
        repeat_flags_differ: false,
        conflict: None,
    }
}

fn start() -> StartRecord {
    StartRecord {
        record_type: "start",
        time: TIME.to_string(),
        version: "0.1.0",
        backend: "tracepoint",
        hooks: vec![
            "tracepoint:sys_exit_bind".to_string(),
            "tracepoint:sys_exit_listen".to_string(),
        ],
        skipped_backends: vec![Skipped {
            backend: "fentry",
            reason: "no BTF".to_string(),
        }],
        kernel: "6.8.0-test".to_string(),
        pid: 77,
        unknown_fields: vec!["freebind".to_string()],
        buffer_bytes: 262_144,
        capabilities: vec!["CAP_SYS_PTRACE".to_string(), "CAP_SYS_ADMIN".to_string()],
    }
}

fn lost() -> LostRecord {
    LostRecord {
        record_type: "lost",
        time: TIME.to_string(),
        count: 3,
        total: 10,
    }
}

fn summary() -> Summary {
    Summary {
        record_type: "summary",
        time: TIME.to_string(),
        duration_secs: 12.34,
        received: 9,
        events: 5,
        repeats: 7,
        repeats_unknown: 0,
        fold_busy: 0,
        filtered: 4,
        lost: 10,
        decode_errors: 1,
        unpaired: 2,
        pair_full: 0,
        read_errors: 6,
        results: [("OK".to_string(), 4), ("EADDRINUSE".to_string(), 1)]
            .into_iter()
            .collect(),
        reason: "signal".to_string(),
        conflict_lookups: 1,
        refusal_lookups: 0,
        refusals_explained: 0,
        port_shares: 0,
        share_lookups: 0,
        refusals_unexplained: 0,
        conflict_queue_full: 0,
        conflict_repeats: 0,
        conflict_unfinished: 0,
        explanations_late: 0,
        events_held: 0,
        hold_max_ms: 0,
        cgroup_unresolved: 3,
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

/// The table line for one event, on `out`; `diag` must stay empty.
fn table_line(e: &BindEvent) -> String {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    TableSink::new(&mut out, &mut diag).event(e).unwrap();
    assert!(diag.is_empty());
    let line = text(&out).to_string();
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    line
}

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn json_sink_writes_one_typed_line_per_record() {
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out);
    let failed = BindEvent {
        result: "EADDRINUSE".into(),
        errno: 98,
        bound: None,
        ..event()
    };
    sink.start(&start()).unwrap();
    sink.event(&event()).unwrap();
    sink.event(&failed).unwrap();
    sink.lost(&lost()).unwrap();
    sink.summary(&summary()).unwrap();
    sink.flush().unwrap();
    drop(sink);

    let out = text(&out);
    assert!(out.ends_with('\n'));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    let types: Vec<&str> = lines.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["start", "bind", "bind", "lost", "summary"]);

    assert_eq!(lines[1], serde_json::to_value(event()).unwrap());
    assert_eq!(lines[2]["result"], json!("EADDRINUSE"));
    assert_eq!(lines[2]["bound"], json!(null));
    assert_eq!(
        lines[0]["skipped_backends"],
        json!([{"backend": "fentry", "reason": "no BTF"}])
    );
    assert_eq!(lines[0]["unknown_fields"], json!(["freebind"]));
    assert_eq!(
        lines[3],
        json!({"type": "lost", "time": TIME, "count": 3, "total": 10})
    );
    assert_eq!(lines[4]["results"], json!({"EADDRINUSE": 1, "OK": 4}));
    assert_eq!(lines[4]["duration_secs"], json!(12.34));
    assert_eq!(lines[4]["reason"], json!("signal"));
}

/// Counts flushes, to check which records the sink flushes on its own.
#[derive(Default)]
struct FlushCounter {
    data: Vec<u8>,
    flushes: usize,
}

impl Write for FlushCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn json_sink_flushes_start_and_summary_but_not_events() {
    let mut w = FlushCounter::default();
    let mut sink = JsonSink::new(&mut w);
    sink.start(&start()).unwrap();
    sink.event(&event()).unwrap();
    sink.lost(&lost()).unwrap();
    let mid = sink.out.flushes;
    sink.summary(&summary()).unwrap();
    drop(sink);
    assert_eq!((mid, w.flushes), (1, 2));
}

#[test]
fn json_sink_hands_events_over_in_chunks_and_on_flush() {
    let mut w = FlushCounter::default();
    let mut sink = JsonSink::new(&mut w);
    sink.event(&event()).unwrap();
    assert!(sink.out.data.is_empty(), "one event stays buffered");
    sink.flush().unwrap();
    let one = sink.out.data.len();
    assert!(one > 100 && sink.out.data.ends_with(b"\n"));
    // Enough events for more than one 64 KiB chunk: handed over without a flush, whole lines
    // only, and the rest on the next flush.
    let n = 2 * (64 * 1024) / one + 1;
    for _ in 0..n {
        sink.event(&event()).unwrap();
    }
    let before_flush = sink.out.data.len();
    assert!(before_flush > one && (before_flush - one) % one == 0);
    sink.flush().unwrap();
    drop(sink);
    assert_eq!(w.data.len(), (n + 1) * one);
    assert_eq!(text(&w.data).lines().count(), n + 1);
}

/// Records the length of every write.
#[derive(Default)]
struct Writes {
    data: Vec<u8>,
    lengths: Vec<usize>,
}

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        self.lengths.push(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_sink_into_a_file_ends_full_chunks_on_page_boundaries_of_the_file() {
    let (offset, page) = (1000u64, 4096usize);
    let (mut into_file, mut plain) = (Writes::default(), Vec::new());
    {
        let mut file = JsonSink::for_file(&mut into_file, offset, page);
        let mut other = JsonSink::new(&mut plain);
        file.start(&start()).unwrap();
        other.start(&start()).unwrap();
        for n in 0..2000u32 {
            let e = BindEvent { pid: n, ..event() };
            file.event(&e).unwrap();
            other.event(&e).unwrap();
        }
        file.summary(&summary()).unwrap();
        other.summary(&summary()).unwrap();
    }
    assert_eq!(
        text(&into_file.data),
        text(&plain),
        "the same bytes, in order"
    );
    let lengths = &into_file.lengths;
    // The start line, the full chunks, then what the summary wrote out.
    assert!(lengths.len() > 4, "{lengths:?}");
    let mut at = offset;
    for (i, len) in lengths.iter().enumerate() {
        at += *len as u64;
        if i > 0 && i < lengths.len() - 1 {
            assert_eq!(
                at % page as u64,
                0,
                "write {i} of {lengths:?} ends inside a page"
            );
            assert!(*len >= 64 * 1024 - page, "write {i} is a full chunk: {len}");
        }
    }
}

#[test]
fn table_start_prints_header_on_out_and_messages_on_diag() {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    TableSink::new(&mut out, &mut diag).start(&start()).unwrap();
    assert_eq!(text(&out), format!("{TABLE_HEADER}\n"));
    assert_eq!(
        text(&diag),
        "observer: watching bind() and listen() with the tracepoint backend \
         (tracepoint:sys_exit_bind, tracepoint:sys_exit_listen); Ctrl-C to stop\n\
         observer: skipped fentry: no BTF\n\
         observer: this kernel's BTF lacks freebind; shown as '?'\n"
    );

    let quiet = StartRecord {
        skipped_backends: vec![],
        unknown_fields: vec![],
        ..start()
    };
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    TableSink::new(&mut out, &mut diag).start(&quiet).unwrap();
    assert_eq!(text(&out), format!("{TABLE_HEADER}\n"));
    assert_eq!(text(&diag).lines().count(), 1);
}

#[test]
fn table_event_line_for_ipv4() {
    let line = table_line(&event());
    assert_eq!(
        line,
        "16:23:51.000123 4242    nginx            1000   4026531840 bind     tcp   \
         127.0.0.1:8080               127.0.0.1:8080               R..... OK\n"
    );
    // The columns line up with the header.
    let header_bound = TABLE_HEADER.find("BOUND").unwrap();
    assert_eq!(
        line.find("127.0.0.1:8080").unwrap(),
        TABLE_HEADER.find("REQUESTED").unwrap()
    );
    assert_eq!(line.rfind("127.0.0.1:8080").unwrap(), header_bound);
    assert_eq!(
        line.find("R.....").unwrap(),
        TABLE_HEADER.find("OPTS").unwrap()
    );
    assert_eq!(
        line.find(" OK").unwrap() + 1,
        TABLE_HEADER.find("RESULT").unwrap()
    );
}

#[test]
fn table_event_line_for_ipv6_and_failures() {
    let e = BindEvent {
        family: Some("inet6".into()),
        protocol: Some("udp".into()),
        requested: Some(Requested::Inet(v6("fe80::1", 8080, Some(2)))),
        bound: Some(v6("::1", 53, None)),
        result: "EADDRINUSE".into(),
        errno: 98,
        ..event()
    };
    assert_eq!(
        columns(&table_line(&e)),
        [
            "16:23:51.000123",
            "4242",
            "nginx",
            "1000",
            "4026531840",
            "bind",
            "udp6",
            "[fe80::1%2]:8080",
            "[::1]:53",
            "R.....",
            "EADDRINUSE"
        ]
    );

    let listen = BindEvent {
        op: Op::Listen,
        requested: None,
        bound: None,
        protocol: None,
        family: None,
        flags: Flags::default(),
        ..event()
    };
    assert_eq!(
        columns(&table_line(&listen))[5..],
        ["listen", "?", "-", "-", "??????", "OK"]
    );

    let unix = BindEvent {
        requested: Some(Requested::Other {
            sa_family: 1,
            addrlen: 110,
        }),
        ..event()
    };
    assert!(table_line(&unix).contains(" af1 (110 bytes) "));
}

#[test]
fn table_time_column_tolerates_odd_time_text() {
    let short = BindEvent {
        time: "bogus".to_string(),
        ..event()
    };
    assert!(table_line(&short).starts_with("bogus "));
    // Byte 11 inside a multi-byte character: no slicing panic, the whole text is used.
    let odd = BindEvent {
        time: "ééééééééééééééé".to_string(),
        ..event()
    };
    assert!(table_line(&odd).starts_with("ééééééééééééééé "));
}

#[test]
fn opts_letters() {
    assert_eq!(opts(&event()), "R.....");
    let all = Flags([
        Some(true),
        Some(true),
        Some(true),
        Some(true),
        Some(true),
        Some(true),
    ]);
    assert_eq!(
        opts(&BindEvent {
            flags: all,
            ..event()
        }),
        "Rr6FTN"
    );
    assert_eq!(
        opts(&BindEvent {
            flags: Flags::default(),
            ..event()
        }),
        "??????"
    );
    let mut mixed = REUSEADDR_ONLY;
    mixed.set(Opt::ReusePort, Some(true));
    mixed.set(Opt::FreeBind, None);
    mixed.set(Opt::BindAddressNoPort, Some(true));
    assert_eq!(
        opts(&BindEvent {
            flags: mixed,
            ..event()
        }),
        "Rr.?.N"
    );
}

#[test]
fn table_lost_goes_to_out_and_summary_to_diag() {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let mut sink = TableSink::new(&mut out, &mut diag);
    sink.lost(&lost()).unwrap();
    sink.summary(&summary()).unwrap();
    sink.flush().unwrap();
    assert_eq!(
        text(&out),
        "*** 3 events lost (ring buffer full; 10 in total) ***\n"
    );
    assert_eq!(
        text(&diag),
        "observer: 5 events, 7 repeats folded (4 filtered), 10 lost, 2 unpaired, 6 read errors, \
         1 undecodable in 12.3s (signal)\n\
         observer: explanations: 1 looked up, 0 retries pointed at an earlier one, \
         0 not looked up (queue full), 0 unfinished at the end, 0 written after their event\n\
         observer: 3 events with a cgroup id that could not be turned into a path\n"
    );
}

#[test]
fn table_rows_escape_hostile_names_and_tell_namespaces_and_owners_apart() {
    let e = BindEvent {
        comm: "\x1b[31mEVIL\x07".into(),
        sock_uid: None,
        netns: Some(4_026_532_999),
        ..event()
    };
    let line = table_line(&e);
    assert!(!line.trim_end().chars().any(char::is_control), "{line:?}");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2..5], ["\\x1b[31mEVIL\\x07", "?", "4026532999"]);
    // A conflict's owner (comm and command line from /proc) is escaped too, line by line.
    let mut conflict = crate::model::Conflict::with_note("in_use", "x".into());
    conflict.notes = vec!["held by \u{202e}evil\nforged row".into()];
    let e = BindEvent {
        conflict: Some(conflict),
        ..event()
    };
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    TableSink::new(&mut out, &mut diag).event(&e).unwrap();
    let text = text(&out).to_string();
    assert_eq!(text.lines().count(), 2, "{text:?}");
    assert!(
        text.contains("held by \\u{202e}evil\\nforged row"),
        "{text:?}"
    );
}

#[test]
fn endpoint_text() {
    assert_eq!(endpoint(&v4(8080)), "127.0.0.1:8080");
    assert_eq!(endpoint(&v4(0)), "127.0.0.1:0");
    // A scope id on an IPv4 endpoint has no meaning and is not shown.
    assert_eq!(
        endpoint(&Endpoint {
            scope_id: Some(3),
            ..v4(1)
        }),
        "127.0.0.1:1"
    );
    assert_eq!(endpoint(&v6("::1", 53, None)), "[::1]:53");
    assert_eq!(endpoint(&v6("::", 443, None)), "[::]:443");
    assert_eq!(endpoint(&v6("fe80::1", 8080, Some(2))), "[fe80::1%2]:8080");
    assert_eq!(
        endpoint(&v6("::ffff:127.0.0.1", 80, None)),
        "[::ffff:127.0.0.1]:80"
    );
    assert_eq!(
        endpoint(&v6("2001:db8::dead:beef", 65535, None)),
        "[2001:db8::dead:beef]:65535"
    );
}

#[test]
fn conflict_goes_indented_under_the_row_and_into_the_json() {
    use crate::model::{Conflict, Holder, Named, Overlap, Owner, Proto, Rule};
    let mut e = event();
    e.result = "EADDRINUSE".into();
    e.errno = 98;
    e.conflict = Some(Conflict {
        verdict: "in_use",
        holders: vec![Holder {
            protocol: Proto::Tcp,
            family: "inet",
            state: "TIME_WAIT",
            time_left_ms: Some(41_250),
            addr: "127.0.0.1".parse().unwrap(),
            port: 8080,
            reuseaddr: Some(false),
            reuseport: Some(false),
            v6only: None,
            bound_dev: Some("lo".into()),
            uid: None,
            inode: None,
            owners: vec![Owner {
                pid: 42,
                comm: "srv".into(),
                cmdline: "srv --port 8080".into(),
                fd: 3,
            }],
            owner_note: None,
            overlap: Named {
                name: Overlap::SameAddress,
                text: "same",
            },
            rule: Named {
                name: Rule::TimeWaitKeepsFlags,
                text: "kept",
            },
            kernel_check: "inet_csk_bind_conflict",
            certain: true,
            count: 1,
        }],
        fixes: vec!["wait 42 s".into()],
        ephemeral: None,
        connect: None,
        notes: vec!["n".into()],
        refusal: None,
        sharing: None,
    });
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    TableSink::new(&mut out, &mut diag).event(&e).unwrap();
    assert!(diag.is_empty());
    let rest: Vec<&str> = text(&out).lines().skip(1).collect();
    assert_eq!(
        rest,
        [
            "    tcp TIME_WAIT 127.0.0.1:8080 (41.2 s left) SO_REUSEADDR off SO_REUSEPORT off dev lo",
            "      held by pid 42 (srv): srv --port 8080",
            "      same-address: same",
            "      time-wait-keeps-flags: kept (inet_csk_bind_conflict)",
            "    would work:",
            "      wait 42 s",
            "    note: n",
        ]
    );
    let mut out = Vec::new();
    JsonSink::new(&mut out).event(&e).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["conflict"]["holders"][0]["time_left_ms"], 41_250);
    assert_eq!(
        v["conflict"]["holders"][0]["rule"]["name"],
        "time-wait-keeps-flags"
    );
    assert_eq!(v["conflict"]["fixes"][0], "wait 42 s");
}

/// A repeat record of event 12 (also the metrics' and the schema check's).
pub(crate) fn repeat(total: u64, reason: &'static str) -> Repeat {
    Repeat {
        record_type: "repeat",
        time: TIME.to_string(),
        of: Some(12),
        pid: 77,
        tid: 78,
        count: 3,
        total,
        span_secs: 1.04,
        reason,
    }
}

#[test]
fn json_repeat_names_its_event() {
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out);
    sink.repeat(&repeat(14_203, "tick"), &BindEvent::blank())
        .unwrap();
    sink.flush().unwrap();
    drop(sink);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"type": "repeat", "time": TIME, "of": 12, "pid": 77, "tid": 78, "count": 3,
               "total": 14203, "span_secs": 1.04, "reason": "tick"})
    );
}

#[test]
fn table_repeat_is_one_line() {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let mut sink = TableSink::new(&mut out, &mut diag);
    sink.repeat(&repeat(14_203, "tick"), &BindEvent::blank())
        .unwrap();
    sink.repeat(&repeat(5, "ended"), &BindEvent::blank())
        .unwrap();
    sink.flush().unwrap();
    let t = short_time(TIME);
    assert_eq!(
        text(&out),
        format!(
            "{t:<15} 77      ↳ event 12 repeated 14,203 times in 1.0 s\n\
             {t:<15} 77      ↳ event 12 repeated 5 times in 1.0 s (ended)\n"
        )
    );
}

#[test]
fn thousands_groups_digits() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(14_203), "14,203");
    assert_eq!(thousands(1_234_567), "1,234,567");
}
