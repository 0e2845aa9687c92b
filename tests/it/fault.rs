//! A fault-injecting Kinesis endpoint: forwards to a real server and fails
//! a chosen share of `PutRecords` entries (those are not forwarded) and of
//! whole calls. It stands in for Kinesis only in the tests that use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// What to break, as shares between 0 and 1.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Entries answered with an error code and not forwarded.
    pub entry_fail: f64,
    /// Calls answered 500 InternalFailure without forwarding.
    pub call_500: f64,
    /// The first this many calls are answered so too.
    pub first_calls_500: u64,
    /// Bytes of padding in the message of those answers (an endpoint whose
    /// error bodies are huge).
    pub error_padding: usize,
    /// Calls answered 400 ProvisionedThroughputExceededException.
    pub call_throttle: f64,
    /// Calls forwarded, then answered only after `slow_delay`.
    pub slow: f64,
    pub slow_delay: Duration,
    /// Calls forwarded, then the connection is closed without an answer
    /// (the records are stored; the client must send them again).
    pub close_after_forward: f64,
    /// Kinesis's per-shard write limits, enforced entry by entry over each
    /// shard's sliding second, for the stream's open shards as the server
    /// behind lists them at each call (so splits and merges count at once,
    /// as they do in Kinesis).
    pub shard_limit: Option<ShardLimit>,
    /// The endpoint's clock is this far ahead of the machine's: a call
    /// signed more than 5 minutes off it is refused as Kinesis refuses it
    /// (400 InvalidSignatureException), with the endpoint's `Date`.
    pub clock_ahead: Option<Duration>,
    /// Calls signed with these access key ids are refused as expired
    /// (400 ExpiredTokenException).
    pub expired_keys: Vec<String>,
}

/// What one shard takes in any sliding second.
#[derive(Debug, Clone, Copy)]
pub struct ShardLimit {
    pub records: u64,
    /// Data and partition key.
    pub bytes: u64,
}

impl ShardLimit {
    /// Kinesis's: 1,000 records and 1 MiB a second.
    pub const KINESIS: ShardLimit = ShardLimit {
        records: 1_000,
        bytes: 1 << 20,
    };

    pub fn records(records: u64) -> ShardLimit {
        ShardLimit {
            records,
            ..ShardLimit::KINESIS
        }
    }
}

/// One entry the shard limiter let through.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub at: std::time::Instant,
    pub shard: String,
    pub bytes: u64,
}

/// The open shards of a stream, `(starting hash key, id)` sorted.
type Map = Vec<(u128, String)>;

/// The shard limiter's state: each shard's second.
#[derive(Default)]
struct Limiter {
    windows:
        std::collections::HashMap<String, std::collections::VecDeque<(std::time::Instant, u64)>>,
}

#[derive(Debug, Default)]
pub struct FaultStats {
    pub calls: AtomicU64,
    pub entries_failed: AtomicU64,
    pub entries_forwarded: AtomicU64,
    pub calls_failed: AtomicU64,
    pub calls_slow: AtomicU64,
    pub calls_closed: AtomicU64,
    /// Entries stored upstream in calls whose answer was never sent.
    pub entries_unanswered: AtomicU64,
    /// Connections closed at once while the proxy plays "down".
    pub refused: AtomicU64,
    /// Entries that went past the shard limit and were refused.
    pub entries_throttled: AtomicU64,
    /// Entries seen by the shard limiter.
    pub entries_seen: AtomicU64,
    /// Entries the shard limiter let through, in order.
    pub accepted: std::sync::Mutex<Vec<Accepted>>,
    /// The access key id that signed the last PutRecords call.
    pub last_access_key: std::sync::Mutex<Option<String>>,
    /// PutRecords calls signed with the harness's credentials whose SigV4
    /// signature was checked here against the body received: right, wrong.
    pub signatures_valid: AtomicU64,
    pub signatures_invalid: AtomicU64,
    /// Calls refused for a signature time off the endpoint's clock.
    pub calls_skewed: AtomicU64,
    /// Calls refused for expired credentials.
    pub calls_expired: AtomicU64,
}

/// The secret key `util::kinetail()` gives the daemon (with key id "test").
const TEST_SECRET: &str = "test";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], msg: &str) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Whether a request carries a SigV4 signature (AWS4-HMAC-SHA256) that is
/// right for `secret` over its method, path, the headers it names and the
/// body as received: an independent check of what the SDK signed.
fn signature_valid(parts: &hyper::http::request::Parts, body: &[u8], secret: &str) -> bool {
    use sha2::Digest;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let Some(rest) = header("authorization").strip_prefix("AWS4-HMAC-SHA256 ") else {
        return false;
    };
    let fields: std::collections::HashMap<&str, &str> = rest
        .split(',')
        .filter_map(|p| p.trim().split_once('='))
        .collect();
    let (Some(cred), Some(signed), Some(signature)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return false;
    };
    let scope: Vec<&str> = cred.split('/').collect();
    if scope.len() != 5 {
        return false;
    }
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let value: Vec<&str> = header(name).split_whitespace().collect();
        canonical_headers.push_str(&format!("{name}:{}\n", value.join(" ")));
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        hex(&sha2::Sha256::digest(body))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        header("x-amz-date"),
        scope[1..].join("/"),
        hex(&sha2::Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), scope[1]);
    for part in &scope[2..] {
        key = hmac_sha256(&key, part);
    }
    hex(&hmac_sha256(&key, &string_to_sign)) == *signature
}

pub struct FaultProxy {
    pub port: u16,
    pub stats: Arc<FaultStats>,
    down: Arc<AtomicBool>,
    lie: Arc<std::sync::Mutex<Option<String>>>,
    /// The proxy's own runtime, on a thread of its own: the test's work
    /// (reading back thousands of records) never delays its answers, nor
    /// the times it counts calls at.
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Waits until the shard limiter has let `n` entries through (cheap to
    /// ask, unlike reading the stream back, which loads the machine whose
    /// timing a rate test measures).
    pub async fn accepted_at_least(&self, n: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.stats.accepted.lock().expect("accepted").len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the endpoint took fewer than {n} entries in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// While down, every connection is closed at once, as a stopped server
    /// or a broken network looks to a client.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// While set, every `PutRecords` call is answered 200 with this as
    /// every entry's `SequenceNumber`, and nothing is stored: an endpoint
    /// that lies.
    pub fn set_lie(&self, sequence_number: Option<&str>) {
        *self.lie.lock().expect("lie") = sequence_number.map(str::to_string);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

struct Ctx {
    /// While set, requests on open connections are dropped too.
    down: Arc<AtomicBool>,
    lie: Arc<std::sync::Mutex<Option<String>>>,
    limiter: std::sync::Mutex<Limiter>,
    upstream: String,
    faults: Faults,
    client: HttpClient<HttpConnector, Full<Bytes>>,
    stats: Arc<FaultStats>,
}

pub async fn start(upstream: &str, faults: Faults) -> FaultProxy {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fault-proxy")
        .enable_all()
        .build()
        .expect("fault proxy runtime");
    let stats = Arc::new(FaultStats::default());
    let down = Arc::new(AtomicBool::new(false));
    let lie = Arc::new(std::sync::Mutex::new(None));
    let ctx = Arc::new(Ctx {
        down: down.clone(),
        lie: lie.clone(),
        limiter: std::sync::Mutex::new(Limiter::default()),
        upstream: upstream.to_string(),
        faults,
        client: HttpClient::builder(TokioExecutor::new()).build_http(),
        stats: stats.clone(),
    });
    let is_down = down.clone();
    let gate_ctx = ctx.clone();
    let gate = move || {
        if is_down.load(Ordering::SeqCst) {
            gate_ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            testkit::http::Admit::Close
        } else {
            testkit::http::Admit::Serve
        }
    };
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        // An answer of None drops the connection without answering.
        testkit::http::serve_gated(listener, gate, move |req| {
            let ctx = ctx.clone();
            async move { handle(&ctx, req).await }
        })
        .await
    });
    FaultProxy {
        port,
        stats,
        down,
        lie,
        runtime: Some(runtime),
    }
}

/// The answer Kinesis gives a call signed more than 5 minutes off its
/// clock (here `ahead` of the machine's), or `None` for a call in time.
fn skewed(parts: &hyper::http::request::Parts, ahead: Duration) -> Option<Response<Full<Bytes>>> {
    let theirs = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now() + ahead);
    let signed = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, "%Y%m%dT%H%M%SZ").ok())
        .map(|t| t.and_utc());
    if signed.is_some_and(|t| (theirs - t).num_seconds().abs() <= 300) {
        return None;
    }
    let mut refused = json_response(
        400,
        json!({"__type": "InvalidSignatureException", "message": format!("Signature expired: {signed:?} is now earlier than {theirs} - 5 min.")}),
    );
    let date = theirs.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    refused
        .headers_mut()
        .insert("date", date.parse().expect("a header value"));
    Some(refused)
}

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "fault-proxy")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

async fn forward(
    ctx: &Ctx,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<(u16, Bytes, String), String> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", ctx.upstream));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = ctx.client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-amz-json-1.1")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body, ctype))
}

/// The open shards of the stream a `PutRecords` call names, as the server
/// behind lists them now.
async fn shard_map(ctx: &Ctx, parts: &hyper::http::request::Parts, request: &Value) -> Map {
    let stream = request["StreamName"]
        .as_str()
        .or_else(|| {
            request["StreamARN"]
                .as_str()
                .and_then(|a| a.rsplit('/').next())
        })
        .unwrap_or("")
        .to_string();
    // The server behind does not check signatures: the call's own headers
    // carry the ListShards call.
    let mut list = parts.clone();
    list.headers.insert(
        "x-amz-target",
        hyper::header::HeaderValue::from_static("Kinesis_20131202.ListShards"),
    );
    let body = Bytes::from(json!({ "StreamName": stream }).to_string());
    let mut map = Map::new();
    if let Ok((200, answer, _)) = forward(ctx, &list, body).await {
        let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        for shard in v["Shards"].as_array().into_iter().flatten() {
            let open = shard["SequenceNumberRange"]["EndingSequenceNumber"].is_null();
            let start = shard["HashKeyRange"]["StartingHashKey"]
                .as_str()
                .and_then(|s| s.parse::<u128>().ok());
            if let (true, Some(start), Some(id)) = (open, start, shard["ShardId"].as_str()) {
                map.push((start, id.to_string()));
            }
        }
        map.sort();
    }
    map
}

fn raw_response(status: u16, ctype: &str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body))
        .expect("response")
}

/// `None` closes the connection without an answer.
async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if ctx.down.load(Ordering::SeqCst) {
        // A kept-alive connection breaks as well: nothing is forwarded.
        ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    // Kinesis counts a call against its shards when it arrives.
    let arrived = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Some(json_response(
                500,
                json!({"__type": "InternalFailure", "message": e.to_string()}),
            ));
        }
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if target.ends_with(".PutRecordBatch") {
        return firehose_batch(ctx, &parts, body).await;
    }
    if !target.ends_with(".PutRecords") {
        return Some(match forward(ctx, &parts, body).await {
            Ok((status, body, ctype)) => raw_response(status, &ctype, body),
            Err(e) => json_response(500, json!({"__type": "InternalFailure", "message": e})),
        });
    }
    let stats = &ctx.stats;
    let call = stats.calls.fetch_add(1, Ordering::Relaxed) + 1;
    let akid = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .map(str::to_string);
    if akid.as_deref() == Some("test") {
        let counter = if signature_valid(&parts, &body, TEST_SECRET) {
            &stats.signatures_valid
        } else {
            &stats.signatures_invalid
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let f = &ctx.faults;
    if f.expired_keys
        .iter()
        .any(|k| akid.as_deref() == Some(k.as_str()))
    {
        stats.calls_expired.fetch_add(1, Ordering::Relaxed);
        return Some(json_response(
            400,
            json!({"__type": "ExpiredTokenException", "message": "The security token included in the request is expired"}),
        ));
    }
    *stats.last_access_key.lock().expect("lock") = akid;
    if let Some(ahead) = f.clock_ahead
        && let Some(refused) = skewed(&parts, ahead)
    {
        stats.calls_skewed.fetch_add(1, Ordering::Relaxed);
        return Some(refused);
    }
    if call <= f.first_calls_500 || rand::random::<f64>() < f.call_500 {
        stats.calls_failed.fetch_add(1, Ordering::Relaxed);
        let message = format!("injected failure{}", "x".repeat(f.error_padding));
        return Some(json_response(
            500,
            json!({"__type": "InternalFailure", "message": message}),
        ));
    }
    if rand::random::<f64>() < f.call_throttle {
        stats.calls_failed.fetch_add(1, Ordering::Relaxed);
        return Some(json_response(
            400,
            json!({"__type": "ProvisionedThroughputExceededException", "message": "injected throttle"}),
        ));
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Some(json_response(
                400,
                json!({"__type": "SerializationException", "message": e.to_string()}),
            ));
        }
    };
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let lie = ctx.lie.lock().expect("lie").clone();
    if let Some(seq) = lie {
        stats
            .entries_failed
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let entries: Vec<Value> = records
            .iter()
            .map(|_| json!({"SequenceNumber": seq, "ShardId": "shardId-000000000000"}))
            .collect();
        return Some(json_response(
            200,
            json!({"FailedRecordCount": 0, "Records": entries, "EncryptionType": "NONE"}),
        ));
    }
    let map = match f.shard_limit {
        Some(_) => shard_map(ctx, &parts, &request).await,
        None => Map::new(),
    };
    let mut keep = Vec::new();
    let mut failed_at = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        if let Some(limit) = f.shard_limit {
            stats.entries_seen.fetch_add(1, Ordering::Relaxed);
            let hash = r["ExplicitHashKey"]
                .as_str()
                .and_then(|e| e.parse::<u128>().ok())
                .unwrap_or_else(|| {
                    use md5::Digest;
                    let d = md5::Md5::digest(r["PartitionKey"].as_str().unwrap_or("").as_bytes());
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&d);
                    u128::from_be_bytes(b)
                });
            let shard = match map.iter().rev().find(|(start, _)| *start <= hash) {
                Some((_, id)) => id.clone(),
                None => String::from("(no map)"),
            };
            let data = r["Data"].as_str().unwrap_or("");
            let bytes = (data.len() / 4 * 3 - data.bytes().rev().take_while(|b| *b == b'=').count()
                + r["PartitionKey"].as_str().unwrap_or("").len()) as u64;
            let now = arrived;
            let mut l = ctx.limiter.lock().expect("limiter");
            let w = l.windows.entry(shard.clone()).or_default();
            while w
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1))
            {
                w.pop_front();
            }
            let used: u64 = w.iter().map(|(_, b)| b).sum();
            if w.len() as u64 >= limit.records || used + bytes > limit.bytes {
                stats.entries_throttled.fetch_add(1, Ordering::Relaxed);
                if std::env::var_os("KINETAIL_SHOW_THROTTLES").is_some() {
                    eprintln!(
                        "throttled on {shard} at {:?}: {} in its second",
                        now,
                        w.len()
                    );
                }
                failed_at.push(i);
                continue;
            }
            w.push_back((now, bytes));
            stats.accepted.lock().expect("accepted").push(Accepted {
                at: now,
                shard,
                bytes,
            });
        }
        if rand::random::<f64>() < f.entry_fail {
            failed_at.push(i);
        } else {
            keep.push(r);
        }
    }
    let total = keep.len() + failed_at.len();
    let forwarded = keep.len();
    let upstream = match forward_kept(ctx, &parts, request, keep, "Records").await {
        Ok(v) => v,
        Err(answer) => return Some(answer),
    };
    let upstream_entries = upstream["Records"].as_array().cloned().unwrap_or_default();
    let upstream_failed = upstream["FailedRecordCount"].as_u64().unwrap_or(0);
    if closes_unanswered(ctx, forwarded) {
        return None;
    }
    stats
        .entries_failed
        .fetch_add(failed_at.len() as u64, Ordering::Relaxed);
    let mut merged = Vec::with_capacity(total);
    let mut up = upstream_entries.into_iter();
    let mut fail = failed_at.iter().peekable();
    for i in 0..total {
        if fail.peek() == Some(&&i) {
            fail.next();
            let code = if i % 2 == 0 {
                "ProvisionedThroughputExceededException"
            } else {
                "InternalFailure"
            };
            merged.push(json!({"ErrorCode": code, "ErrorMessage": "injected entry failure"}));
        } else if let Some(e) = up.next() {
            merged.push(e);
        }
    }
    if rand::random::<f64>() < f.slow {
        stats.calls_slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(f.slow_delay).await;
    }
    let failed = failed_at.len() as u64 + upstream_failed;
    Some(json_response(
        200,
        json!({"FailedRecordCount": failed, "Records": merged, "EncryptionType": "NONE"}),
    ))
}

/// A `PutRecordBatch` call through the faults that apply to it: whole calls
/// answered 500 or throttled (`ServiceUnavailableException`, as a delivery
/// stream over its throughput answers), entries answered with an error code
/// and not forwarded, calls forwarded and then closed unanswered, slow
/// answers.
async fn firehose_batch(
    ctx: &Ctx,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Option<Response<Full<Bytes>>> {
    let stats = &ctx.stats;
    let f = &ctx.faults;
    let call = stats.calls.fetch_add(1, Ordering::Relaxed) + 1;
    if call <= f.first_calls_500 || rand::random::<f64>() < f.call_500 {
        stats.calls_failed.fetch_add(1, Ordering::Relaxed);
        return Some(json_response(
            500,
            json!({"__type": "InternalFailure", "message": "injected failure"}),
        ));
    }
    if rand::random::<f64>() < f.call_throttle {
        stats.calls_failed.fetch_add(1, Ordering::Relaxed);
        return Some(json_response(
            400,
            json!({"__type": "ServiceUnavailableException", "message": "Slow down. (injected)"}),
        ));
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let failed: Vec<bool> = records
        .iter()
        .map(|_| rand::random::<f64>() < f.entry_fail)
        .collect();
    let keep: Vec<Value> = records
        .into_iter()
        .zip(&failed)
        .filter(|(_, failed)| !**failed)
        .map(|(r, _)| r)
        .collect();
    let forwarded = keep.len();
    let upstream = match forward_kept(ctx, parts, request, keep, "RequestResponses").await {
        Ok(v) => v,
        Err(answer) => return Some(answer),
    };
    let answers = upstream["RequestResponses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if closes_unanswered(ctx, forwarded) {
        return None;
    }
    let n_failed = failed.iter().filter(|f| **f).count();
    stats
        .entries_failed
        .fetch_add(n_failed as u64, Ordering::Relaxed);
    let mut up = answers.into_iter();
    let merged: Vec<Value> = failed
        .iter()
        .map(|failed| match failed {
            true => json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "injected entry failure"}),
            false => up.next().unwrap_or(Value::Null),
        })
        .collect();
    if rand::random::<f64>() < f.slow {
        stats.calls_slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(f.slow_delay).await;
    }
    Some(json_response(
        200,
        json!({"FailedPutCount": n_failed, "Encrypted": false, "RequestResponses": merged}),
    ))
}

/// Forwards `request` with `kept` as its records (nothing when none is
/// kept): the upstream's answer, whose `answers` list has one entry per
/// record forwarded, or the answer to give back when it failed.
async fn forward_kept(
    ctx: &Ctx,
    parts: &hyper::http::request::Parts,
    mut request: Value,
    kept: Vec<Value>,
    answers: &str,
) -> Result<Value, Response<Full<Bytes>>> {
    let forwarded = kept.len();
    if forwarded == 0 {
        return Ok(Value::Null);
    }
    request["Records"] = Value::Array(kept);
    let (status, resp, ctype) = match forward(ctx, parts, Bytes::from(request.to_string())).await {
        Ok(r) => r,
        Err(e) => {
            return Err(json_response(
                500,
                json!({"__type": "InternalFailure", "message": e}),
            ));
        }
    };
    if status != 200 {
        return Err(raw_response(status, &ctype, resp));
    }
    let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
    assert_eq!(
        v[answers].as_array().map_or(0, Vec::len),
        forwarded,
        "upstream answered every forwarded record"
    );
    ctx.stats
        .entries_forwarded
        .fetch_add(forwarded as u64, Ordering::Relaxed);
    Ok(v)
}

/// Whether this call, forwarded, is closed without an answer (counted).
fn closes_unanswered(ctx: &Ctx, forwarded: usize) -> bool {
    if rand::random::<f64>() >= ctx.faults.close_after_forward {
        return false;
    }
    ctx.stats.calls_closed.fetch_add(1, Ordering::Relaxed);
    ctx.stats
        .entries_unanswered
        .fetch_add(forwarded as u64, Ordering::Relaxed);
    true
}
