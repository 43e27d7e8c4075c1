//! Reading the observer's `/metrics` the way a scraper does, from the test's namespace (where
//! `--metrics` without an address listens: 127.0.0.1:9847).

use super::BOUND;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;

/// Where `observer watch --metrics` listens by default.
pub const METRICS: &str = "127.0.0.1:9847";

/// The value of the sample line `name` (with its labels, as exposed), or `None` if the endpoint
/// does not answer 200 or has no such line.
pub fn metric(name: &str) -> Option<u64> {
    let mut s = TcpStream::connect(METRICS).ok()?;
    s.set_read_timeout(Some(BOUND)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    if !reply.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    reply
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
