//! `observer watch --metrics`, scraped by a real Prometheus server (Debian's `prometheus`,
//! installed by `cargo xtask setup`), both inside the test's private network namespace: after
//! real binds, Prometheus's own query API must return the expected series with exact values.

#[allow(unused_imports)]
mod common;

use common::{BOUND, Observer, Sock, bind_event, in_netns, no_forks};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the test's Prometheus listens (inside the private namespace, so always free).
const PROMETHEUS: &str = "127.0.0.1:9090";

/// A Prometheus server of this test, ended by pid when dropped.
struct Prometheus {
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, and waits (bounded) until it is ready.
    fn start(target: &str) -> Prometheus {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: observer\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let guard = no_forks();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package; `cargo xtask setup` installs it)");
        drop(guard);
        let p = Prometheus { child };
        let deadline = Instant::now() + BOUND;
        while get("/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a readiness endpoint
        }
        p
    }

    /// The value of the one series `query` selects, once it equals `want` (bounded): a scrape
    /// every second makes it converge; any other final value fails the test.
    fn wait_for(&self, query: &str, want: f64) {
        let deadline = Instant::now() + BOUND;
        let mut last = None;
        while Instant::now() < deadline {
            last = instant_value(query);
            if last == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100)); // polling Prometheus's API
        }
        panic!("prometheus: {query} is {last:?}, want {want}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` from the test's Prometheus: status and body, `None` if it does not answer.
fn get(path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(PROMETHEUS).ok()?;
    s.set_read_timeout(Some(BOUND)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {PROMETHEUS}\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let status = reply.get(9..12)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of an instant query that selects exactly one series.
fn instant_value(query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = get(&format!("/api/v1/query?query={encoded}"))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_exact_counts() {
    in_netns("metrics", |c| {
        let prometheus = Prometheus::start("127.0.0.1:9847");
        // `--metrics` without an address: the loopback default, 127.0.0.1:9847.
        let mut obs = Observer::watch(c, &["--metrics", "--metrics-ports", "5000"]);
        let a = Sock::tcp4();
        let b = Sock::tcp4();
        let d = Sock::tcp4();
        let e = Sock::udp4();
        assert_eq!(a.bind("127.0.0.1:5000"), 0);
        assert_eq!(b.bind("127.0.0.1:5000"), libc::EADDRINUSE);
        assert_eq!(d.bind("127.0.0.1:5001"), 0);
        assert_eq!(b.bind("127.0.0.1:5001"), libc::EADDRINUSE);
        assert_eq!(e.bind("127.0.0.1:0"), 0);
        let udp_port = e.local().port();
        // Each event is matched by its socket and requested port; a lookup that outlasted
        // the hold on a loaded machine brings its answer in an explanation record.
        let events = obs.take_explained(5);
        let find = |ino: u64, port: u16| {
            let matching: Vec<&Value> = events
                .iter()
                .filter(|e| e["sock_ino"] == ino && e["requested"]["port"] == port)
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "one event of socket {ino} for port {port}: {events:#?}"
            );
            matching[0].clone()
        };
        for (sock, port, bound) in [(&a, 5000, 5000), (&d, 5001, 5001), (&e, 0, udp_port)] {
            let event = find(sock.as_ref().ino, port);
            assert_eq!(event["result"], "OK", "{event}");
            assert_eq!(event["bound"]["port"], bound, "{event}");
            assert_eq!(event["comm"], c.comm, "{event}");
        }
        for port in [5000, 5001] {
            let event = find(b.as_ref().ino, port);
            assert_eq!(event["result"], "EADDRINUSE", "{event}");
            let holders = event["conflict"]["holders"].as_array().expect("holders");
            assert_eq!(holders.len(), 1, "{event}");
            assert_eq!(holders[0]["rule"]["name"], "no-reuse-flags", "{event}");
            assert_eq!(holders[0]["port"], port, "{event}");
        }

        let attempts = |proto: &str, result: &str| {
            format!(
                "observer_bind_attempts_total{{family=\"inet\",protocol=\"{proto}\",op=\"bind\",result=\"{result}\"}}"
            )
        };
        prometheus.wait_for(&attempts("tcp", "OK"), 2.0);
        prometheus.wait_for(&attempts("tcp", "EADDRINUSE"), 2.0);
        prometheus.wait_for(&attempts("udp", "OK"), 1.0);
        prometheus.wait_for(
            "observer_bind_failures_total{errno=\"EADDRINUSE\",port=\"5000\"}",
            1.0,
        );
        prometheus.wait_for(
            "observer_bind_failures_total{errno=\"EADDRINUSE\",port=\"other\"}",
            1.0,
        );
        prometheus.wait_for("observer_conflicts_total{rule=\"no-reuse-flags\"}", 2.0);
        prometheus.wait_for("observer_events_lost_total", 0.0);
        prometheus.wait_for("observer_backend_info{backend=\"tracepoint\"}", 1.0);
        prometheus.wait_for("up{job=\"observer\"}", 1.0);
        obs.stop();
    });
}

/// A raw connection to the observer's metrics endpoint.
fn connect() -> TcpStream {
    let s = TcpStream::connect(common::scrape::METRICS).expect("metrics endpoint");
    s.set_read_timeout(Some(BOUND)).unwrap();
    s
}

/// Sends `request` and reads until the server closes: the status code (`None` if it closed
/// without answering).
fn exchange(request: &[u8]) -> Option<u16> {
    let mut s = connect();
    // The server may close before all of an oversized request is written: not an error here.
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The value of one sample line of `/metrics`, which must be there.
fn sample(name: &str) -> u64 {
    common::scrape::metric(name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn malformed_and_slow_clients_neither_stop_serving_nor_observing() {
    in_netns("metrics-abuse", |c| {
        let mut obs = Observer::watch(c, &["--metrics"]);
        // Wrong paths and methods.
        assert_eq!(
            exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            Some(404)
        );
        assert_eq!(
            exchange(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            Some(405)
        );
        assert_eq!(
            exchange(b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            Some(405)
        );
        // Garbage, a header line larger than the head limit, too many headers.
        assert_eq!(exchange(b"\x00\x01\x02 not http at all\r\n\r\n"), Some(400));
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        assert_eq!(exchange(huge.as_bytes()), Some(431));
        let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
        let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(exchange(many.as_bytes()), Some(431));

        // A slow client: half a request head, then nothing. The server ends it after its head
        // timeout (5 s), well within the bound.
        let started = Instant::now();
        let mut slow = connect();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
        let mut buf = Vec::new();
        let _ = slow.read_to_end(&mut buf);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(4) && waited < BOUND,
            "slow client closed after {waited:?}"
        );

        // A flood: 16 idle connections take every slot; the 17th is closed at once, unanswered.
        let idle: Vec<TcpStream> = (0..16).map(|_| connect()).collect();
        assert_eq!(exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        drop(idle);
        // Slots come back as the server sees the idle connections close; then scrapes work
        // again. (Attempts before that are rejected too: at least one rejection.)
        let deadline = Instant::now() + BOUND;
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        while exchange(get) != Some(200) {
            assert!(Instant::now() < deadline, "the endpoint did not recover");
            std::thread::sleep(Duration::from_millis(20)); // polling for free slots
        }
        let rejected = sample("observer_metrics_connections_rejected_total");
        assert!(rejected >= 1, "rejected connections: {rejected}");
        // Timed-out, oversized and garbage connections are counted as failed.
        assert!(sample("observer_metrics_connections_failed_total") >= 4);

        // And the observer still observes, exactly.
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:7100"), 0);
        obs.expect(&[bind_event(c, &s, "127.0.0.1:7100").bound("127.0.0.1:7100")]);
        assert_eq!(
            sample(
                "observer_bind_attempts_total{family=\"inet\",protocol=\"tcp\",op=\"bind\",result=\"OK\"}"
            ),
            1
        );
        obs.stop();
    });
}
