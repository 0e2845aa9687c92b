//! The HTTP API (`[api] listen`): Prometheus metrics and health probes.
//!
//! - `/metrics`: counters and gauges in the Prometheus text format, with a
//!   line per file for its lag (bytes written but not yet confirmed).
//! - `/health`: 200 while the daemon's runtime answers (a liveness probe;
//!   a Kinesis outage is not a reason to restart kinetail).
//! - `/ready`: 200 once checkpoints are loaded and flows started, 503 before
//!   that and once a stop has begun.
//!
//! It only reads shared state; nothing here can slow the pipeline down
//! beyond a lock held for a snapshot.
//!
//! It is reachable by every local user (and, with `allow_remote`, by the
//! network), so it defends its file descriptors, which it shares with the
//! tailed files and the connections to Kinesis: one request per
//! connection, headers within [`HEADER_TIMEOUT`], a connection closed after
//! [`CONNECTION_TIMEOUT`] whatever it does, at most [`MAX_CONNECTIONS`] at
//! once (a new one closes the oldest, so a probe still gets in while idle
//! connections pile up), and a pause after a failed `accept` (out of file
//! descriptors) instead of a spin. Methods other than GET and HEAD get 405.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::metrics::{self, Family, Metrics};
use crate::service::status::{file_lag, size_now};
use crate::state::checkpoint::Checkpoints;

/// What the API shows.
#[derive(Debug)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub checkpoints: Arc<Checkpoints>,
    pub ready: AtomicBool,
}

/// The most connections served at once; past it the oldest is closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, answered or not.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after `accept` fails (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long to wait before trying again to listen on an address that is
/// taken.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// Listens on `addr` and serves the API there until `stop`. An address
/// that cannot be taken (another process holds the port) is an error in
/// the log and is tried again every [`BIND_RETRY`]: shipping never waits
/// for the API, and a `/health` that does not answer is the operator's
/// signal.
pub async fn listen_and_serve(
    addr: std::net::SocketAddr,
    state: Arc<ApiState>,
    stop: CancellationToken,
) {
    let mut last_error: Option<String> = None;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::error!(%addr, error = %msg,
                        "cannot listen for the API (is another process on this port?); shipping goes on without /metrics, /health and /ready, and the address is tried again every 5 s");
                    last_error = Some(msg);
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(BIND_RETRY) => {}
                }
            }
        }
    };
    tracing::info!(%addr, "API listening: /metrics, /health, /ready");
    serve(listener, state, stop).await;
}

/// Serves the API on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, stop: CancellationToken) {
    // Oldest first.
    let mut open: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    let mut last_error: Option<String> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "API cannot accept a connection; pausing");
                    last_error = Some(msg);
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        last_error = None;
        open.retain(|h| !h.is_finished());
        while open.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = open.pop_front() {
                oldest.abort();
            }
        }
        let state = state.clone();
        open.push_back(tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        }));
    }
    for h in open {
        h.abort();
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn answer<B>(state: &ApiState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", render(state)),
        "/health" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" if state.ready.load(Ordering::SeqCst) => {
            text(StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /health or /ready\n".into(),
        ),
    }
}

/// A Prometheus label value, escaped; bidirectional formatting characters
/// (which would reorder what a person reads) are written as `\\u{..}`.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if crate::redact::is_bidi_control(c) => {
                out.push_str(&c.escape_unicode().to_string().replace('\\', "\\\\"))
            }
            c => out.push(c),
        }
    }
    out
}

/// At most this many files get series of their own on `/metrics`.
pub use crate::service::metrics::MAX_FILE_SERIES;

/// The metrics in the Prometheus text format.
pub fn render(state: &ApiState) -> String {
    let mut out = String::new();
    render_process(&mut out, &state.metrics);
    render_files(&mut out, &state.checkpoints.live_files());
    out
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, f: &Family) {
    let _ = writeln!(
        out,
        "# HELP kinetail_{0} {1}\n# TYPE kinetail_{0} {2}",
        f.name, f.help, f.kind
    );
}

/// The daemon's own counters and gauges.
fn render_process(out: &mut String, m: &Metrics) {
    for c in crate::service::metrics::COUNTERS {
        family(
            out,
            &Family {
                name: c.name,
                kind: "counter",
                help: c.help,
            },
        );
        let _ = writeln!(out, "kinetail_{} {}", c.name, (c.get)(m));
    }
    family(out, &metrics::RETRIES);
    for (reason, n) in m
        .retries_by_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "kinetail_retries_total{{reason=\"{}\"}} {n}",
            label(reason)
        );
    }
    family(out, &metrics::IN_FLIGHT_CALLS);
    let _ = writeln!(
        out,
        "kinetail_in_flight_calls {}",
        m.in_flight.load(Ordering::Relaxed)
    );
    family(out, &metrics::CHECKPOINT_AGE);
    let last = Metrics::get(&m.last_checkpoint_unix_ms);
    let age = if last == 0 {
        -1.0
    } else {
        crate::clock::now_ms().saturating_sub(last) as f64 / 1000.0
    };
    let _ = writeln!(out, "kinetail_checkpoint_age_seconds {age}");
}

/// Each file's lag and last confirmation: the files furthest behind first;
/// past MAX_FILE_SERIES they are summed per flow (a neighbour's thousands
/// of files must not make the page, and a scraper's series, grow without
/// bound).
fn render_files(out: &mut String, files: &[crate::state::store::SavedFile]) {
    let mut sized: Vec<(&crate::state::store::SavedFile, Option<u64>)> =
        files.iter().map(|f| (f, size_now(f).0)).collect();
    sized.sort_by_key(|(f, size)| std::cmp::Reverse(file_lag(f, *size)));
    family(out, &metrics::FILE_LAG);
    let mut confirmed = String::new();
    let mut others: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (f, size) in sized.iter().skip(MAX_FILE_SERIES) {
        *others.entry(f.flow.as_str()).or_default() += file_lag(f, *size).unwrap_or(0);
    }
    for (flow, lag) in &others {
        let _ = writeln!(
            out,
            "kinetail_file_lag_bytes{{flow=\"{}\",path=\"(other files)\"}} {lag}",
            label(flow)
        );
    }
    for &(f, size) in sized.iter().take(MAX_FILE_SERIES) {
        let labels = format!(
            "flow=\"{}\",path=\"{}\"",
            label(&f.flow),
            label(&f.path.display().to_string())
        );
        if let Some(lag) = file_lag(f, size) {
            let _ = writeln!(out, "kinetail_file_lag_bytes{{{labels}}} {lag}");
        }
        if let Some(t) = f.last_confirmed_unix_ms {
            let _ = writeln!(
                confirmed,
                "kinetail_file_last_confirmed_timestamp_seconds{{{labels}}} {}",
                t as f64 / 1000.0
            );
        }
    }
    family(out, &metrics::FILE_LAST_CONFIRMED);
    out.push_str(&confirmed);
}
