//! Expected events: the exact-JSON [`Expect`] builder for one `"type":"bind"` record, and the
//! checks a received record must pass (every field but `time` equal; `time` well formed, within
//! the run and in order).

use super::sock::parse_addr;
use super::{Caller, Opt, SockId};
use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// One expected `"type":"bind"` record, every field but `time` (checked for shape only).
#[derive(Debug, Clone)]
pub struct Expect(Map<String, Value>);

/// The event of a `bind(requested)` call by `caller` on `sock`; by default it succeeded, left
/// nothing bound and every option clear: state what differs with the methods below.
pub fn bind_event(caller: &Caller, sock: impl AsRef<SockId>, requested: &str) -> Expect {
    Expect::new(caller, sock.as_ref(), "bind", endpoint(requested))
}

/// The event of a `listen()` call (no requested address).
pub fn listen_event(caller: &Caller, sock: impl AsRef<SockId>) -> Expect {
    Expect::new(caller, sock.as_ref(), "listen", Value::Null)
}

/// The event of a `connect(remote)` call: no requested address, `remote` set; by default it
/// succeeded and left nothing bound.
pub fn connect_event(caller: &Caller, sock: impl AsRef<SockId>, remote: &str) -> Expect {
    let mut e = Expect::new(caller, sock.as_ref(), "connect", Value::Null);
    e.0.insert("remote".into(), endpoint(remote));
    e
}

fn endpoint(addr: &str) -> Value {
    let addr = parse_addr(addr);
    json!({"addr": addr.ip().to_string(), "port": addr.port()})
}

impl Expect {
    fn new(caller: &Caller, sock: &SockId, op: &str, requested: Value) -> Expect {
        let mut v = json!({
            "type": "bind",
            "op": op,
            "pid": caller.pid,
            "tid": caller.tid,
            "uid": caller.uid,
            "comm": caller.comm,
            "netns": caller.netns,
            "family": sock.family,
            "protocol": sock.protocol,
            "fd": sock.fd,
            "requested": requested,
            "bound": null,
            "bound_dev_if": 0,
            "sock_uid": sock.uid,
            "sock_ino": sock.ino,
            "result": "OK",
            "errno": 0,
            "hook": format!("tracepoint:sys_exit_{op}"),
            "call_id": null,
            "cgroup": own_cgroup(),
        });
        let map = v.as_object_mut().unwrap();
        for opt in Opt::ALL {
            map.insert(opt.key().into(), false.into());
        }
        Expect(map.clone())
    }

    /// What the socket holds after the call, e.g. `"127.0.0.1:5000"`.
    pub fn bound(mut self, addr: &str) -> Expect {
        self.0.insert("bound".into(), endpoint(addr));
        self
    }

    /// This option is set on the socket after the call.
    pub fn flag(mut self, opt: Opt) -> Expect {
        self.0.insert(opt.key().into(), true.into());
        self
    }

    /// The call failed with this errno (`result` is its name).
    pub fn fails(mut self, name: &str, errno: i32) -> Expect {
        self.0.insert("result".into(), name.into());
        self.0.insert("errno".into(), errno.into());
        self
    }

    /// The event carries this `conflict` object (an EADDRINUSE looked up).
    pub fn conflict(mut self, conflict: Value) -> Expect {
        self.0.insert("conflict".into(), conflict);
        self
    }

    /// The caller's cgroup, as the observer reports it.
    pub fn cgroup(mut self, cgroup: Value) -> Expect {
        self.0.insert("cgroup".into(), cgroup);
        self
    }

    pub fn json(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// The `conflict` of a failure other than EADDRINUSE: verdict `refused` (or `unavailable` for
/// the rule `not-explained`) with its refusal.
pub fn refused(errno: &str, rule: &str, text: &str, facts: &[&str], fixes: &[&str]) -> Value {
    json!({
        "verdict": if rule == "not-explained" { "unavailable" } else { "refused" },
        "holders": [],
        "fixes": [],
        "notes": [],
        "refusal": {"errno": errno, "rule": rule, "text": text, "facts": facts, "fixes": fixes},
    })
}

/// The `conflict` of a SO_REUSEADDR bind to 127.0.0.1:`port` against a TCP listener there
/// with SO_REUSEADDR, owned by uid 0, socket `inode`, held by `owner`
/// (`{"pid", "comm", "cmdline", "fd"}`), with port + 1 free.
pub fn reuseaddr_listener_conflict(port: u16, inode: u64, owner: Value) -> Value {
    json!({
        "verdict": "in_use",
        "holders": [{
            "protocol": "tcp", "family": "inet", "state": "LISTEN",
            "addr": "127.0.0.1", "port": port,
            "reuseaddr": true, "reuseport": false, "v6only": null, "bound_dev": null,
            "uid": 0, "inode": inode,
            "owners": [owner],
            "overlap": {"name": "same-address", "text": "both sockets are on the same address and port"},
            "rule": {"name": "reuseaddr-vs-listener", "text": "SO_REUSEADDR, which both sockets have, does not let a TCP socket share a port with a listening socket"},
            "kernel_check": "inet_csk_bind_conflict",
            "certain": true,
            "count": 1
        }],
        "fixes": [
            "set SO_REUSEPORT on this socket and the sockets in the way that lack it (same owner uid)",
            format!("port {} is free for this socket", port + 1)
        ],
        "notes": []
    })
}

/// Microseconds since the Unix epoch, now.
pub(super) fn unix_micros_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    since.as_micros() as i64
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (RFC 3339, UTC, microseconds) to Unix microseconds.
fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape = b.len() == 27
        && [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ]
        .iter()
        .all(|&(i, c)| b[i] == c);
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| text.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, us) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us)
}

/// Checks each event's `time`: RFC 3339 UTC with microseconds, within the run (from `since`
/// to now, give or take a second) and never before the previous event's.
pub(super) fn check_times(events: &[Value], since_us: i64) {
    let now_us = unix_micros_now();
    let mut previous = since_us - 1_000_000;
    for event in events {
        let text = event["time"].as_str().unwrap_or_default();
        let Some(t) = parse_time(text) else {
            panic!("bad time {:?} in {event}", event["time"]);
        };
        assert!(
            t >= previous && t <= now_us + 1_000_000,
            "time {text} out of order or outside the run (started {since_us} us, now {now_us} \
             us): {event}"
        );
        previous = t;
    }
}

/// Compares one event with the expected one: every field but `time` exactly.
pub(super) fn compare_event(index: usize, want: &Value, got: &Value) {
    let mut got = got.clone();
    got.as_object_mut().unwrap().remove("time");
    // Checked where events are taken, against the count taken before (`Observer`).
    got.as_object_mut().unwrap().remove("seq");
    if *want != got {
        let (w, g) = (want.as_object().unwrap(), got.as_object().unwrap());
        let mut keys: Vec<&String> = w.keys().chain(g.keys()).collect();
        keys.sort();
        keys.dedup();
        let diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| w.get(*k) != g.get(*k))
            .map(|k| {
                format!(
                    "  {k}: expected {}, got {}",
                    w.get(k).map_or("(absent)".into(), Value::to_string),
                    g.get(k).map_or("(absent)".into(), Value::to_string)
                )
            })
            .collect();
        panic!(
            "event #{index} differs:\n{}\nexpected: {want}\ngot:      {got}",
            diffs.join("\n")
        );
    }
}

/// The cgroup v2 mount point (from `/proc/self/mountinfo`), read independently of the
/// observer's own code.
pub fn cgroup2_root() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .map(std::path::PathBuf::from)
        .expect("a cgroup v2 hierarchy is mounted")
}

/// `{"id", "path", "container", "pod_uid"}` of the cgroup directory `path` (below the root).
pub fn cgroup_json(path: &str, container: Value, pod_uid: Value) -> Value {
    use std::os::unix::fs::MetadataExt as _;
    let dir = cgroup2_root().join(path.trim_start_matches('/'));
    let id = std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino();
    json!({"id": id, "path": path, "container": container, "pod_uid": pod_uid})
}

/// The test process's own cgroup (threads share it).
pub fn own_cgroup() -> Value {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    cgroup_json(path, Value::Null, Value::Null)
}
