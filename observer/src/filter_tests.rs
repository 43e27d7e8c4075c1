use super::*;
use crate::model::{Endpoint, Flags, Op, Requested};
use std::net::{IpAddr, Ipv4Addr};

const NETNS: u32 = 4_026_531_840;

fn v4(port: u16) -> Endpoint {
    Endpoint {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port,
        scope_id: None,
    }
}

/// A successful TCP bind of 0.0.0.0:8080 by `nginx` (pid 100) in the initial netns.
fn event() -> BindEvent {
    BindEvent {
        record_type: "bind",
        seq: 0,
        time: "2026-11-21T16:23:51.000123Z".to_string(),
        op: Op::Bind,
        pid: 100,
        tid: 100,
        uid: 0,
        comm: "nginx".to_string(),
        netns: Some(NETNS),
        family: Some("inet".into()),
        protocol: Some("tcp".into()),
        fd: Some(6),
        requested: Some(Requested::Inet(v4(8080))),
        bound: Some(v4(8080)),
        remote: crate::model::Remote::Absent,
        flags: Flags::default(),
        bound_dev_if: Some(0),
        sock_uid: Some(0),
        sock_ino: Some(99),
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

fn failed() -> BindEvent {
    BindEvent {
        result: "EADDRINUSE".into(),
        errno: 98,
        bound: None,
        ..event()
    }
}

fn unix() -> BindEvent {
    BindEvent {
        family: Some("unix".into()),
        protocol: Some("ip".into()),
        requested: Some(Requested::Other {
            sa_family: 1,
            addrlen: 110,
        }),
        bound: None,
        ..event()
    }
}

#[test]
fn default_filter_shows_every_inet_event() {
    let f = Filter::default();
    assert!(f.matches(&event()));
    assert!(f.matches(&failed()));
    let inet6 = BindEvent {
        family: Some("inet6".into()),
        ..event()
    };
    assert!(f.matches(&inet6));
}

#[test]
fn non_inet_families_need_all_families() {
    let f = Filter::default();
    assert!(!f.matches(&unix()));
    assert!(!f.matches(&BindEvent {
        family: Some("af17".into()),
        ..event()
    }));
    // No socket family (bind on an fd that is not a socket): shown, unless its sockaddr says
    // it was meant for another family.
    assert!(f.matches(&BindEvent {
        family: None,
        ..event()
    }));
    assert!(f.matches(&BindEvent {
        family: None,
        requested: None,
        ..event()
    }));
    assert!(!f.matches(&BindEvent {
        family: None,
        requested: Some(Requested::Other {
            sa_family: 1,
            addrlen: 110
        }),
        ..event()
    }));

    let all = Filter {
        all_families: true,
        ..Filter::default()
    };
    assert!(all.matches(&unix()));
    assert!(all.matches(&BindEvent {
        family: None,
        ..event()
    }));
    assert!(all.matches(&event()));
}

#[test]
fn pid_filter() {
    let f = Filter {
        pid: Some(100),
        ..Filter::default()
    };
    assert!(f.matches(&event()));
    assert!(!f.matches(&BindEvent {
        pid: 101,
        ..event()
    }));
    // The pid is the thread group id, not the thread id.
    assert!(!f.matches(&BindEvent {
        pid: 5,
        tid: 100,
        ..event()
    }));
}

#[test]
fn comm_filter_is_an_exact_match() {
    let f = Filter {
        comm: Some("nginx".to_string()),
        ..Filter::default()
    };
    assert!(f.matches(&event()));
    for other in ["ngin", "nginx-worker", "NGINX", "nginx ", ""] {
        let e = BindEvent {
            comm: other.to_string(),
            ..event()
        };
        assert!(!f.matches(&e), "{other:?}");
    }
}

#[test]
fn port_filter_matches_requested_or_bound() {
    let f = Filter {
        port: Some(4242),
        ..Filter::default()
    };
    // bind(port 0) that got 4242 from the kernel.
    let ephemeral = BindEvent {
        requested: Some(Requested::Inet(v4(0))),
        bound: Some(v4(4242)),
        ..event()
    };
    assert!(f.matches(&ephemeral));
    // A failed bind of 4242: nothing bound, but the request names the port.
    let refused = BindEvent {
        requested: Some(Requested::Inet(v4(4242))),
        ..failed()
    };
    assert!(f.matches(&refused));
    // listen() has no requested address: the bound port decides.
    let listen = BindEvent {
        op: Op::Listen,
        requested: None,
        bound: Some(v4(4242)),
        ..event()
    };
    assert!(f.matches(&listen));

    assert!(!f.matches(&event()));
    let nothing = BindEvent {
        requested: None,
        bound: None,
        ..event()
    };
    assert!(!f.matches(&nothing));
    let other = BindEvent {
        requested: Some(Requested::Other {
            sa_family: 2,
            addrlen: 4242,
        }),
        bound: None,
        ..event()
    };
    assert!(!f.matches(&other), "addrlen is not a port");
}

#[test]
fn errors_only_filter() {
    let f = Filter {
        errors_only: true,
        ..Filter::default()
    };
    assert!(!f.matches(&event()));
    assert!(f.matches(&failed()));
}

#[test]
fn netns_filter() {
    let f = Filter {
        netns: Some(NETNS),
        ..Filter::default()
    };
    assert!(f.matches(&event()));
    assert!(!f.matches(&BindEvent {
        netns: Some(NETNS + 1),
        ..event()
    }));
    assert!(!f.matches(&BindEvent {
        netns: None,
        ..event()
    }));
}

#[test]
fn combined_filters_need_every_condition() {
    let f = Filter {
        pid: Some(100),
        comm: Some("nginx".to_string()),
        port: Some(8080),
        errors_only: true,
        netns: Some(NETNS),
        all_families: false,
        cgroup: Some("/system.slice".into()),
    };
    let target = BindEvent {
        cgroup: Some(std::sync::Arc::new(crate::cgroup::for_test(
            "/system.slice/nginx.service",
        ))),
        requested: Some(Requested::Inet(v4(8080))),
        ..failed()
    };
    assert!(f.matches(&target));

    type Spoil = fn(&mut BindEvent);
    let spoilers: [(&str, Spoil); 8] = [
        ("pid", |e| e.pid = 1),
        ("comm", |e| e.comm = "sshd".to_string()),
        ("port", |e| e.requested = Some(Requested::Inet(v4(80)))),
        ("errors", |e| e.errno = 0),
        ("netns", |e| e.netns = Some(1)),
        ("family", |e| e.family = Some("unix".into())),
        ("cgroup", |e| {
            e.cgroup = Some(std::sync::Arc::new(crate::cgroup::for_test(
                "/system.slice2/nginx.service",
            )))
        }),
        ("unresolved cgroup", |e| e.cgroup = None),
    ];
    for (what, spoil) in spoilers {
        let mut e = target.clone();
        spoil(&mut e);
        assert!(!f.matches(&e), "{what}");
    }

    let unix_target = BindEvent {
        family: Some("unix".into()),
        ..target.clone()
    };
    assert!(!f.matches(&unix_target));
    let all = Filter {
        all_families: true,
        ..f
    };
    assert!(all.matches(&unix_target));
}

#[test]
fn port_filter_matches_a_connects_remote_port() {
    let connect = BindEvent {
        op: Op::Connect,
        requested: None,
        bound: None,
        remote: crate::model::Remote::Inet(v4(5432)),
        result: "EADDRNOTAVAIL".into(),
        errno: 99,
        ..event()
    };
    let only = |port| Filter {
        port: Some(port),
        ..Filter::default()
    };
    assert!(only(5432).matches(&connect));
    assert!(!only(8080).matches(&connect));
    // Its local port, once it has one, matches too.
    let bound = BindEvent {
        bound: Some(v4(40000)),
        ..connect
    };
    assert!(only(40000).matches(&bound));
}
