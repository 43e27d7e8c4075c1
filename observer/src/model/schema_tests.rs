//! `SCHEMA.md` documents every field of every record: each record type is serialized with
//! every field present, and each field path (`bind.requested.port`: the record type, then
//! nested keys joined by `.`, array elements as `[]`) must appear in the document as
//! `` `type.path` ``; the conflict object, the same in `bind` and `why`, as `` `conflict.path` ``.

use super::*;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const SCHEMA: &str = include_str!("../../SCHEMA.md");

fn paths(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{prefix}.{k}");
                out.insert(p.clone());
                paths(&p, v, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                paths(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {}
    }
}

fn owner() -> Owner {
    Owner {
        pid: 1,
        comm: "c".into(),
        cmdline: "c".into(),
        fd: 3,
    }
}

fn conflict() -> Conflict {
    Conflict {
        verdict: "in_use",
        holders: vec![Holder {
            protocol: Proto::Tcp,
            family: "inet",
            state: "TIME_WAIT",
            time_left_ms: Some(1),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1,
            reuseaddr: Some(true),
            reuseport: Some(true),
            v6only: Some(true),
            bound_dev: Some("lo".into()),
            uid: Some(0),
            inode: Some(1),
            owners: vec![owner()],
            owner_note: Some("n"),
            overlap: Named {
                name: Overlap::SameAddress,
                text: "t",
            },
            rule: Named {
                name: Rule::NoReuseFlags,
                text: "t",
            },
            kernel_check: "k",
            certain: true,
            count: 1,
        }],
        fixes: vec!["f".into()],
        ephemeral: Some(Ephemeral {
            range: [1, 2],
            reserved: String::new(),
            reserved_in_range: 0,
            in_use: 0,
            free: 0,
        }),
        connect: Some(Box::new(ConnectPorts::two_ports_in_use(1))),
        notes: vec!["n".into()],
        // Never both in one answer; here so that every field is checked.
        refusal: Some(super::Refusal {
            errno: "EPERM".into(),
            rule: "cgroup-bpf",
            text: String::new(),
            facts: vec![String::new()],
            fixes: vec![String::new()],
        }),
        sharing: Some(super::Sharing {
            protocol: Proto::Udp,
            rule: "udp-one-receiver",
            effect: String::new(),
            with: vec![super::Partner {
                state: "UNCONN",
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 1,
                reuseaddr: Some(true),
                reuseport: None,
                uid: 0,
                inode: 1,
                owners: Vec::new(),
            }],
        }),
    }
}

fn event() -> BindEvent {
    let mut e = BindEvent::blank();
    e.requested = Some(Requested::Inet(Endpoint {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 1,
        scope_id: Some(1),
    }));
    e.bound = e.requested.as_ref().and_then(|r| match r {
        Requested::Inet(ep) => Some(*ep),
        Requested::Other { .. } => None,
    });
    e.family = Some(Cow::Borrowed("inet"));
    e.remote = Remote::Inet(Endpoint {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 1,
        scope_id: Some(1),
    });
    e.cgroup = Some(Arc::new(Cgroup::new(
        1,
        Some("/".into()),
        Some(Container {
            id: "i".into(),
            runtime: Some("docker"),
        }),
        Some("p".into()),
    )));
    e.conflict = Some(conflict());
    e.repeat_of = Some(1);
    e.repeat_flags_differ = true;
    e.unreadable = super::Unreadable::of(super::Unreadable::BOUND);
    e
}

fn documented(record: &str, v: Value) -> Vec<String> {
    let mut found = BTreeSet::new();
    paths(record, &v, &mut found);
    found
        .into_iter()
        // The conflict object is one type wherever it appears: documented once.
        .map(|p| match p.split_once(".conflict.") {
            Some((_, rest)) => format!("conflict.{rest}"),
            None => p,
        })
        .filter(|p| !SCHEMA.contains(&format!("`{p}`")))
        .collect()
}

#[test]
fn every_field_of_every_record_is_documented() {
    let mut missing = Vec::new();
    let e = event();
    missing.extend(documented("bind", serde_json::to_value(&e).unwrap()));
    let mut other = e.clone();
    other.requested = Some(Requested::Other {
        sa_family: 1,
        addrlen: 2,
    });
    missing.extend(documented("bind", serde_json::to_value(&other).unwrap()));
    let start = StartRecord {
        record_type: "start",
        time: String::new(),
        version: "",
        backend: "",
        hooks: vec![String::new()],
        skipped_backends: vec![Skipped {
            backend: "",
            reason: String::new(),
        }],
        kernel: String::new(),
        pid: 0,
        unknown_fields: vec![String::new()],
        buffer_bytes: 0,
        capabilities: vec![String::new()],
    };
    missing.extend(documented("start", serde_json::to_value(&start).unwrap()));
    let lost = LostRecord {
        record_type: "lost",
        time: String::new(),
        count: 0,
        total: 0,
    };
    missing.extend(documented("lost", serde_json::to_value(&lost).unwrap()));
    let repeat = crate::sink::tests::repeat(1, "tick");
    missing.extend(documented("repeat", serde_json::to_value(&repeat).unwrap()));
    let explanation = ExplanationRecord {
        record_type: "explanation",
        time: String::new(),
        of: 1,
        event_time: String::new(),
        conflict: conflict(),
    };
    missing.extend(documented(
        "explanation",
        serde_json::to_value(&explanation).unwrap(),
    ));
    let mut summary = Summary::default();
    summary.results.insert("OK".into(), 1);
    let mut summary = serde_json::to_value(&summary).unwrap();
    // Keys of `results` are errno names, not fields.
    summary["results"] = Value::Object(Default::default());
    missing.extend(documented("summary", summary));
    let c = conflict();
    let why = WhyRecord {
        record_type: "why",
        protocol: Proto::Tcp,
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 1,
        reuseaddr: false,
        reuseport: false,
        v6only: false,
        uid: 0,
        result: "OK",
        refusal: None,
        conflict: Some(&c),
    };
    missing.extend(documented("why", serde_json::to_value(&why).unwrap()));
    let refusal = Refusal {
        errno: "EACCES".into(),
        rule: "privileged-port",
        text: String::new(),
        facts: vec![String::new()],
        fixes: vec![String::new()],
    };
    let refused = WhyRecord {
        refusal: Some(&refusal),
        conflict: None,
        ..why
    };
    missing.extend(documented("why", serde_json::to_value(&refused).unwrap()));
    assert!(
        missing.is_empty(),
        "fields missing from observer/SCHEMA.md: {missing:?}"
    );
}

#[test]
fn the_check_can_fail() {
    assert_eq!(
        documented("bind", serde_json::json!({"no_such_field": 1})),
        ["bind.no_such_field"]
    );
}
