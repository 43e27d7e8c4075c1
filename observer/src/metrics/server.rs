//! The metrics endpoint: `GET /metrics` over HTTP/1.1 on its own thread, so a slow or hostile
//! client can never stall the event path.
//!
//! Everything a client can make the server hold is bounded: connections at once
//! ([`MAX_CONNECTIONS`]; more are closed on accept and counted), request head size and header
//! count, time to send a request head (also the idle time between requests on a kept-alive
//! connection), and a connection's whole life. Only `GET` and `HEAD` of `/metrics` answer 200;
//! another path gets 404, another method on `/metrics` 405.

use super::Metrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Request line and headers, in bytes (hyper's floor for its read buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 8192;
/// Header lines in a request.
pub const MAX_HEADERS: usize = 32;
/// Time to send a request head, and the longest a kept-alive connection may sit idle.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any one connection lives.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// OpenMetrics text, which Prometheus negotiates and prometheus-client writes.
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint's own counters, registered with the rest.
#[derive(Clone, Default)]
pub struct ServerCounters {
    /// Connections closed on accept because [`MAX_CONNECTIONS`] were open.
    pub rejected: Counter,
    /// Connections ended for a timeout, an oversized head or a protocol error.
    pub failed: Counter,
    /// `accept()` calls that failed (EMFILE, ENFILE, ENOMEM, a reset before accept).
    pub accept_errors: Counter,
}

/// The pause after a failed `accept()`, doubled for each failure in a row up to
/// [`ACCEPT_PAUSE_MAX`]: out of descriptors, accept fails at once for as long as the shortage
/// lasts, and retrying at once would spin a core.
pub const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// The longest pause between failed `accept()` calls.
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// The pause after `failures` failed accepts in a row (1, 2, ...).
pub fn accept_pause(failures: u32) -> Duration {
    ACCEPT_PAUSE_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(ACCEPT_PAUSE_MAX)
}

/// Binds `addr` now, so that a port in use is reported before the programs are loaded.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `metrics` on `listener` from a new thread, for the rest of the process.
pub fn spawn(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(serve(listener, metrics)))?;
    Ok(())
}

async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) {
    let counters = metrics.server.clone();
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        eprintln!("observer: the metrics listener could not be registered; not serving");
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut failures = 0u32;
    loop {
        // Accept errors (EMFILE, a reset before accept) concern one connection, not the
        // endpoint: keep serving, after a pause that grows while they last.
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(_) => {
                counters.accept_errors.inc();
                failures = failures.saturating_add(1);
                tokio::time::sleep(accept_pause(failures)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.rejected.inc();
            drop(stream);
            continue;
        };
        let (metrics, failed) = (metrics.clone(), counters.failed.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(route(req.method(), req.uri().path(), &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    failed.inc();
                }
            }
            drop(slot);
        });
    }
}

/// The response to a request for `path`.
pub(super) fn route(method: &Method, path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut body = String::with_capacity(4096);
    if prometheus_client::encoding::text::encode(&mut body, metrics.registry()).is_err() {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
