//! Unit tests of the metrics: label folding, counting from events, the encoded text and the
//! endpoint's routing. No root, no sockets.

use super::server::route;
use super::*;
use hyper::{Method, StatusCode};
use std::collections::BTreeSet;

fn metrics(ports: WatchPorts) -> Metrics {
    Metrics::new(
        ports,
        RunInfo {
            backend: "tracepoint",
            kernel: "6.18.0".into(),
        },
    )
}

fn text(m: &Metrics) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, m.registry()).unwrap();
    s
}

#[test]
fn ports_fold_outside_the_watch_list() {
    let known = WatchPorts::WellKnown;
    assert_eq!(known.label(Some(80)), "80");
    assert_eq!(known.label(Some(1023)), "1023");
    assert_eq!(known.label(Some(1024)), "other");
    assert_eq!(known.label(Some(0)), "other");
    assert_eq!(known.label(None), "none");
    let list = WatchPorts::List(BTreeSet::from([8080, 0]));
    assert_eq!(list.label(Some(8080)), "8080");
    assert_eq!(list.label(Some(0)), "0");
    assert_eq!(list.label(Some(80)), "other");
}

#[test]
fn backend_info_and_zero_totals_are_exported_from_the_start() {
    let t = text(&metrics(WatchPorts::WellKnown));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        t.contains(&format!(
            "observer_backend_info{{backend=\"tracepoint\",version=\"{version}\",kernel=\"6.18.0\"}} 1\n"
        )),
        "{t}"
    );
    for name in [
        "observer_events_lost_total 0\n",
        "observer_events_filtered_total 0\n",
        "observer_records_undecodable_total 0\n",
        "observer_metrics_connections_rejected_total 0\n",
    ] {
        assert!(t.contains(name), "{name} missing in\n{t}");
    }
    assert!(t.ends_with("# EOF\n"));
}

#[test]
fn routing_answers_only_get_and_head_of_metrics() {
    let m = metrics(WatchPorts::WellKnown);
    assert_eq!(route(&Method::GET, "/metrics", &m).status(), StatusCode::OK);
    assert_eq!(
        route(&Method::HEAD, "/metrics", &m).status(),
        StatusCode::OK
    );
    assert_eq!(route(&Method::GET, "/", &m).status(), StatusCode::NOT_FOUND);
    assert_eq!(
        route(&Method::GET, "/metrics/x", &m).status(),
        StatusCode::NOT_FOUND
    );
    let post = route(&Method::POST, "/metrics", &m);
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[test]
fn events_and_totals_become_counters() {
    let m = Arc::new(metrics(WatchPorts::List(BTreeSet::from([8080]))));
    let mut sink = MetricsSink::new(m.clone());
    let ok = crate::sink::tests::event();
    let failed = |port| BindEvent {
        result: "EADDRINUSE".into(),
        errno: 98,
        bound: None,
        requested: Some(Requested::Inet(crate::model::Endpoint {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            scope_id: None,
        })),
        ..crate::sink::tests::event()
    };
    for e in [&ok, &ok, &failed(8080), &failed(9090), &failed(9091)] {
        sink.event(e).unwrap();
    }
    let totals = Summary {
        lost: 7,
        filtered: 3,
        decode_errors: 1,
        ..Summary::default()
    };
    sink.progress(&totals).unwrap();
    sink.progress(&totals).unwrap(); // running totals: counted once
    let t = text(&m);
    for line in [
        "observer_bind_attempts_total{family=\"inet\",protocol=\"tcp\",op=\"bind\",result=\"OK\"} 2\n",
        "observer_bind_attempts_total{family=\"inet\",protocol=\"tcp\",op=\"bind\",result=\"EADDRINUSE\"} 3\n",
        "observer_bind_failures_total{errno=\"EADDRINUSE\",port=\"8080\"} 1\n",
        "observer_bind_failures_total{errno=\"EADDRINUSE\",port=\"other\"} 2\n",
        "observer_events_lost_total 7\n",
        "observer_events_filtered_total 3\n",
        "observer_records_undecodable_total 1\n",
    ] {
        assert!(t.contains(line), "{line} missing in\n{t}");
    }
}

#[test]
fn failed_accepts_pause_longer_and_longer_up_to_a_second() {
    use super::server::accept_pause;
    let ms = |n| accept_pause(n).as_millis();
    assert_eq!(
        [ms(1), ms(2), ms(3), ms(7), ms(8), ms(1000)],
        [10, 20, 40, 640, 1000, 1000]
    );
}

#[test]
fn folded_repeats_count_as_the_calls_they_repeat() {
    let m = Arc::new(metrics(WatchPorts::List(BTreeSet::from([8080]))));
    let mut sink = MetricsSink::new(m.clone());
    let failed = BindEvent {
        result: "EADDRINUSE".into(),
        errno: 98,
        bound: None,
        requested: Some(Requested::Inet(crate::model::Endpoint {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 8080,
            scope_id: None,
        })),
        ..crate::sink::tests::event()
    };
    sink.event(&failed).unwrap();
    let repeat = crate::model::Repeat {
        count: 14_203,
        ..crate::sink::tests::repeat(14_203, "tick")
    };
    sink.repeat(&repeat, &failed).unwrap();
    let t = text(&m);
    for line in [
        "observer_bind_attempts_total{family=\"inet\",protocol=\"tcp\",op=\"bind\",result=\"EADDRINUSE\"} 14204\n",
        "observer_bind_failures_total{errno=\"EADDRINUSE\",port=\"8080\"} 14204\n",
    ] {
        assert!(t.contains(line), "{line} missing in\n{t}");
    }
}
