//! A running `observer watch --json` (or any `observer` command that prints a start record):
//! started and checked up to its start record, its events taken with a bound and compared
//! with [`Expect`]ations, then stopped and its summary checked against what was taken.

use super::expect::{Expect, check_times, compare_event, unix_micros_now};
use super::proc::{Next, Proc, Stdout};
use super::{BOUND, Caller, require_root};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Instant;

/// A running `observer watch --json`, past its start record.
pub struct Observer {
    proc: Proc,
    /// The start record.
    pub start: Value,
    /// Every record after the start record, for failure messages.
    records: Vec<Value>,
    /// The bind records handed out by [`Observer::expect`].
    events: Vec<Value>,
    /// Wall clock when the observer was started, in Unix microseconds.
    started_us: i64,
}

impl Observer {
    /// `observer watch --json --netns <caller's netns> <extra...>`, started and ready.
    pub fn watch(caller: &Caller, extra: &[&str]) -> Observer {
        let netns = caller.netns.to_string();
        let mut args = vec!["watch", "--json", "--netns", &netns];
        args.extend_from_slice(extra);
        Observer::start(&args, Stdout::Read)
    }

    /// `observer <args>`, waiting (bounded) for its start record.
    pub fn start(args: &[&str], stdout: Stdout) -> Observer {
        Observer::start_via(&[], args, stdout)
    }

    /// `<via...> observer <args>` (e.g. under `setpriv`), waiting (bounded) for its start
    /// record.
    pub fn start_via(via: &[&str], args: &[&str], stdout: Stdout) -> Observer {
        require_root();
        let started_us = unix_micros_now();
        let mut proc = Proc::spawn_via(via, args, stdout);
        let deadline = Instant::now() + BOUND;
        let start = match proc.next_line(deadline) {
            Next::Line(line) => parse_record(&line),
            other => {
                let status = proc.wait_exit(Instant::now());
                panic!(
                    "no start record from `observer {}` ({other:?}, exit {status:?}); stderr:\n{}",
                    args.join(" "),
                    proc.stderr()
                )
            }
        };
        assert_eq!(start["type"], "start", "first record: {start}");
        assert_eq!(start["pid"], proc.pid(), "start record pid: {start}");
        assert_eq!(start["backend"], "tracepoint", "{start}");
        // This machine's kernel refuses fexit and has no kprobes (shared/PLATFORM.md): `auto`
        // says why it skipped each, in one line.
        let skipped: Vec<&str> = start["skipped_backends"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["backend"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(skipped, ["fexit", "kprobe"], "{start}");
        for s in start["skipped_backends"].as_array().into_iter().flatten() {
            let reason = s["reason"].as_str().unwrap_or_default();
            assert!(!reason.is_empty() && !reason.contains('\n'), "{start}");
        }
        assert_eq!(
            start["hooks"],
            json!([
                "tracepoint:sys_exit_bind",
                "tracepoint:sys_exit_listen",
                "tracepoint:sys_exit_connect"
            ]),
            "{start}"
        );
        assert_eq!(
            start["unknown_fields"],
            json!([]),
            "this kernel's BTF lacks fields the tests assert: {start}"
        );
        Observer {
            proc,
            start,
            records: Vec::new(),
            events: Vec::new(),
            started_us,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The next record, or a panic that says what arrived so far.
    fn next_record(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        match self.proc.next_line(deadline) {
            Next::Line(line) => {
                let record = parse_record(&line);
                self.records.push(record.clone());
                record
            }
            other => {
                let status = self.proc.wait_exit(Instant::now());
                panic!(
                    "waiting for {waiting_for}: {other:?} (bound {BOUND:?}, exit {status:?})\n\
                     records so far:\n{}\nstderr:\n{}",
                    self.dump(),
                    self.proc.stderr()
                )
            }
        }
    }

    /// The next record of any type, waiting at most until `deadline`.
    pub fn next_any(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        self.next_record(deadline, waiting_for)
    }

    /// The next record, which must be the late explanation (`"type":"explanation"`) of the
    /// event numbered `of`: written after its event when the lookup took longer than the
    /// collector holds events for (a loaded machine).
    pub fn take_explanation(&mut self, of: u64) -> Value {
        let deadline = Instant::now() + BOUND;
        let record = self.next_record(deadline, &format!("the explanation of event {of}"));
        assert_eq!(record["type"], "explanation", "{record}");
        assert_eq!(record["of"], of, "{record}");
        record
    }

    fn dump(&self) -> String {
        if self.records.is_empty() {
            return "  (none)".into();
        }
        self.records
            .iter()
            .map(|r| format!("  {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (bounded) for exactly the next `n` events; any other record fails the test.
    fn next_events(&mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + BOUND;
        let mut got = Vec::new();
        while got.len() < n {
            let what = format!("{n} events, {} so far", got.len());
            let record = self.next_record(deadline, &what);
            match record["type"].as_str() {
                Some("bind") => {
                    // Every event is numbered in the order written, which is call order.
                    let seq = self.events.len() + got.len() + 1;
                    assert_eq!(
                        record["seq"],
                        seq,
                        "event out of order or missing: {record}\nall:\n{}",
                        self.dump()
                    );
                    got.push(record)
                }
                _ => panic!(
                    "unexpected record while {what}: {record}\nall:\n{}",
                    self.dump()
                ),
            }
        }
        got
    }

    /// Waits (bounded) for exactly the next `expected.len()` events and compares each, in
    /// order, field by field.
    pub fn expect(&mut self, expected: &[Expect]) {
        let got = self.next_events(expected.len());
        check_times(&got, self.started_us);
        for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
            compare_event(i, &want.json(), got);
        }
        self.events.extend(got);
    }

    /// [`Observer::expect`] for one failed call: its explanation may come late on a loaded
    /// machine (`"verdict":"pending"`, then an `explanation` record right after): that answer
    /// takes the pending one's place before the comparison. Returns the event.
    pub fn expect_explained(&mut self, want: Expect) -> Value {
        let mut got = self.next_events(1).remove(0);
        check_times(std::slice::from_ref(&got), self.started_us);
        if got["conflict"]["verdict"] == "pending" {
            let seq = got["seq"].as_u64().unwrap();
            got["conflict"] = self.take_explanation(seq)["conflict"].clone();
        }
        compare_event(0, &want.json(), &got);
        self.events.push(got.clone());
        got
    }

    /// [`Observer::take`] for events that may carry a lookup's answer: an event whose
    /// lookup outlasted the hold (`"verdict":"pending"`, a loaded machine) gets the answer
    /// its `explanation` record brings, wherever that record comes among the events.
    pub fn take_explained(&mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + BOUND;
        let mut got: Vec<Value> = Vec::new();
        let pending = |got: &[Value]| got.iter().any(|e| e["conflict"]["verdict"] == "pending");
        while got.len() < n || pending(&got) {
            let what = format!("{n} events and their explanations, {} so far", got.len());
            let record = self.next_record(deadline, &what);
            match record["type"].as_str() {
                Some("bind") => {
                    let seq = self.events.len() + got.len() + 1;
                    assert_eq!(record["seq"], seq, "event out of order: {record}");
                    got.push(record);
                }
                Some("explanation") => {
                    let of = &record["of"];
                    let Some(event) = got
                        .iter_mut()
                        .find(|e| e["seq"] == *of && e["conflict"]["verdict"] == "pending")
                    else {
                        panic!(
                            "an explanation of no pending event: {record}\nall:\n{}",
                            self.dump()
                        );
                    };
                    event["conflict"] = record["conflict"].clone();
                }
                _ => panic!(
                    "unexpected record while {what}: {record}\nall:\n{}",
                    self.dump()
                ),
            }
        }
        self.events.extend(got.iter().cloned());
        got
    }

    /// Waits (bounded) for the next `n` events and returns them, checked only for their
    /// order (`seq`), for a test that asserts on them itself.
    pub fn take(&mut self, n: usize) -> Vec<Value> {
        let got = self.next_events(n);
        self.events.extend(got.iter().cloned());
        got
    }

    /// SIGTERM, then reads to the summary (reason `"signal"`): no event may arrive besides
    /// those [`Observer::expect`] took. Returns the summary.
    pub fn stop(self) -> Value {
        self.stop_with(libc::SIGTERM)
    }

    /// [`Observer::stop`] with another signal (SIGINT: Ctrl-C).
    pub fn stop_with(mut self, sig: libc::c_int) -> Value {
        self.proc.signal(sig);
        let summary = self.end(true);
        assert_eq!(summary["reason"], "signal", "summary: {summary}");
        summary
    }

    /// SIGTERM, then reads to the summary, allowing `repeat` records on the way (they are
    /// the test's to count from the summary); checks the exit like [`Observer::stop`].
    pub fn finish_after_signal(mut self) -> Value {
        self.proc.signal(libc::SIGTERM);
        self.end(false)
    }

    /// Sends `sig` and nothing else (SIGKILL: then [`Observer::wait_exit`]).
    pub fn signal(&self, sig: libc::c_int) {
        self.proc.signal(sig);
    }

    /// Sends `sig` and reads every record to the end of the output, checking nothing: for
    /// tests that do their own accounting (losses). Returns the records after the start
    /// record, the exit status and stderr.
    pub fn stop_unchecked(mut self, sig: libc::c_int) -> (Vec<Value>, ExitStatus, String) {
        self.proc.signal(sig);
        let deadline = Instant::now() + BOUND;
        let mut records = Vec::new();
        loop {
            match self.proc.next_line(deadline) {
                Next::Line(line) => records.push(parse_record(&line)),
                Next::End | Next::Closed => break,
                Next::Timeout => panic!(
                    "observer {} output still open {BOUND:?} after signal {sig}; stderr:\n{}",
                    self.pid(),
                    self.proc.stderr()
                ),
            }
        }
        let (status, rest, stderr) = self.proc.wait_end(deadline);
        assert!(rest.is_empty(), "output after the end: {rest:?}");
        (records, status, stderr)
    }

    /// Waits for the observer to end by itself (e.g. `--duration`); events it prints on the
    /// way are not checked.
    pub fn finish(mut self) -> Value {
        self.end(false)
    }

    /// Reads to the summary and checks it, the exit status and that nothing follows. With
    /// `strict`, no event may arrive besides those [`Observer::expect`] took, and the summary
    /// must count exactly those.
    fn end(&mut self, strict: bool) -> Value {
        let deadline = Instant::now() + BOUND;
        let mut extra = Vec::new();
        let summary = loop {
            let record = self.next_record(deadline, "the summary record");
            match record["type"].as_str() {
                Some("summary") => break record,
                Some("bind") => extra.push(record),
                Some("repeat") if !strict => {}
                _ => panic!("unexpected record: {record}\nall:\n{}", self.dump()),
            }
        };
        let (status, rest, stderr) = self.proc.wait_end(deadline);
        assert!(
            status.success(),
            "observer exited with {status:?} (signal {:?}); stderr:\n{stderr}",
            status.signal()
        );
        assert!(rest.is_empty(), "output after the summary: {rest:?}");
        assert_eq!(summary["lost"], 0, "summary: {summary}");
        assert_eq!(summary["decode_errors"], 0, "summary: {summary}");
        if strict {
            assert!(
                extra.is_empty(),
                "events beyond the expected ones:\n{}",
                extra
                    .iter()
                    .map(|r| format!("  {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert_eq!(summary["events"], self.events.len(), "summary: {summary}");
            let mut results: BTreeMap<String, u64> = BTreeMap::new();
            for event in &self.events {
                *results
                    .entry(event["result"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            assert_eq!(summary["results"], json!(results), "summary: {summary}");
        }
        summary
    }

    /// For a closed output: waits (bounded) for the end of the observer, returns its status
    /// and its stderr.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + BOUND;
        match self.proc.wait_exit(deadline) {
            Some(status) => {
                let stderr = self.proc.stderr().to_string();
                (status, stderr)
            }
            None => panic!(
                "observer {} still running after {BOUND:?}; stderr:\n{}",
                self.pid(),
                self.proc.stderr()
            ),
        }
    }

    /// For [`Stdout::CloseWhenTold`]: closes the read end of the observer's stdout now.
    pub fn close_stdout(&mut self) {
        self.proc.close_stdout();
    }

    /// For [`Stdout::CloseAfterStart`] (or after [`Observer::close_stdout`]): waits (bounded)
    /// until the read end is closed.
    pub fn wait_stdout_closed(&mut self) {
        match self.proc.next_line(Instant::now() + BOUND) {
            Next::Closed => {}
            other => panic!("expected the closed stdout, got {other:?}"),
        }
    }
}

fn parse_record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"))
}
