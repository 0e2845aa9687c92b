//! A fast local Kinesis endpoint: it parses every PutRecords request fully
//! (JSON, base64, the API limits), counts what arrives (lines, records,
//! payload units, write-to-confirmation delays), and answers a sequence
//! number per record; ListShards answers equal hash-key ranges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use kinetail::records::batcher::{
    MAX_BYTES_PER_CALL, MAX_BYTES_PER_RECORD, MAX_KEY_CHARS, MAX_RECORDS_PER_CALL, PAYLOAD_UNIT,
};

#[derive(Default)]
pub struct Counts {
    pub kinesis_records: AtomicU64,
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    pub calls: AtomicU64,
    pub rejected: AtomicU64,
    /// PUT payload units (25,000 bytes, key included, rounded up per record).
    pub units: AtomicU64,
    /// Shards the endpoint's `ListShards` answers (4 when 0).
    pub shards: AtomicU64,
    /// Write-to-confirmation delays (microseconds) of lines carrying a
    /// `t=<unix nanos>` stamp.
    pub delays_us: std::sync::Mutex<Vec<u64>>,
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The write time stamped into a line by the steady writer.
pub fn stamp(data: &[u8]) -> Option<u64> {
    let at = data.windows(2).position(|w| w == b"t=")?;
    let digits: Vec<u8> = data[at + 2..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

pub fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    testkit::http::response(status, "application/x-amz-json-1.1", body)
}

/// The part of a PutRecords request the endpoint reads, borrowed from the
/// body where it can be (strings with escapes are unescaped into a copy).
#[derive(serde::Deserialize)]
pub struct PutRecordsBody<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RequestEntry<'a>>,
}

#[derive(serde::Deserialize)]
pub struct RequestEntry<'a> {
    #[serde(rename = "Data", borrow)]
    data: std::borrow::Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    key: std::borrow::Cow<'a, str>,
}

/// The part of a PutRecordBatch request the endpoint reads.
#[derive(serde::Deserialize)]
pub struct PutRecordBatchBody<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<BatchEntry<'a>>,
}

#[derive(serde::Deserialize)]
pub struct BatchEntry<'a> {
    #[serde(rename = "Data", borrow)]
    data: std::borrow::Cow<'a, str>,
}

/// One PutRecordBatch request (Firehose), checked and counted as Firehose
/// would: 500 records and 4 MiB a call, 1,000 KiB a record; lines are the
/// newlines in the (decompressed) data. Units are Firehose's 5 KB billing
/// steps.
pub fn put_record_batch(counts: &Counts, body: &[u8]) -> Response<Full<Bytes>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(req) = serde_json::from_slice::<PutRecordBatchBody>(body) else {
        return json(400, r#"{"__type":"SerializationException"}"#.into());
    };
    let limits = kinetail::records::batcher::FIREHOSE;
    let n = req.records.len();
    let reject = |message: &str| {
        counts.rejected.fetch_add(1, Ordering::Relaxed);
        json(
            400,
            format!(r#"{{"__type":"InvalidArgumentException","message":"{message}"}}"#),
        )
    };
    if n == 0 || n > limits.call_records {
        return reject("1 to 500 records");
    }
    let (mut total, mut lines, mut units) = (0usize, 0u64, 0u64);
    let mut data = Vec::new();
    for r in &req.records {
        data.clear();
        if b64.decode_vec(r.data.as_bytes(), &mut data).is_err() {
            return reject("base64");
        }
        if data.len() > limits.record.bytes {
            return reject("1,000 KiB per record");
        }
        total += data.len();
        units += data
            .len()
            .div_ceil(kinetail::records::batcher::FIREHOSE_BILLING_UNIT) as u64;
        let plain = decompress(&data);
        let plain = plain.as_deref().unwrap_or(&data);
        lines += plain.iter().filter(|b| **b == b'\n').count() as u64;
    }
    if total > limits.call_bytes {
        return reject("4 MiB per call");
    }
    let seq = counts.calls.fetch_add(1, Ordering::Relaxed);
    counts
        .kinesis_records
        .fetch_add(n as u64, Ordering::Relaxed);
    counts.lines.fetch_add(lines, Ordering::Relaxed);
    counts.units.fetch_add(units, Ordering::Relaxed);
    counts.bytes.fetch_add(total as u64, Ordering::Relaxed);
    let mut out = String::with_capacity(n * 60 + 64);
    out.push_str(r#"{"FailedPutCount":0,"Encrypted":false,"RequestResponses":["#);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(r#"{{"RecordId":"{seq:020}{i:05}"}}"#));
    }
    out.push_str("]}");
    json(200, out)
}

/// gzip or zstd data decompressed, by its magic; `None` for other data.
pub fn decompress(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(data).ok()
    } else {
        None
    }
}

/// One PutRecords request, checked and counted as Kinesis would.
pub fn put_records(counts: &Counts, body: &[u8]) -> Response<Full<Bytes>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(req) = serde_json::from_slice::<PutRecordsBody>(body) else {
        return json(400, r#"{"__type":"SerializationException"}"#.into());
    };
    let records = req.records;
    let mut total = 0usize;
    let mut lines = 0u64;
    let mut units = 0u64;
    if records.is_empty() || records.len() > MAX_RECORDS_PER_CALL {
        counts.rejected.fetch_add(1, Ordering::Relaxed);
        return json(
            400,
            r#"{"__type":"ValidationException","message":"1 to 500 records"}"#.into(),
        );
    }
    let mut data = Vec::new();
    for r in &records {
        let key = &r.key;
        data.clear();
        if b64.decode_vec(r.data.as_bytes(), &mut data).is_err() {
            counts.rejected.fetch_add(1, Ordering::Relaxed);
            return json(400, r#"{"__type":"SerializationException"}"#.into());
        }
        let size = key.len() + data.len();
        let chars = key.chars().count();
        if !(1..=MAX_KEY_CHARS).contains(&chars) || size > MAX_BYTES_PER_RECORD {
            counts.rejected.fetch_add(1, Ordering::Relaxed);
            return json(
                400,
                r#"{"__type":"InvalidArgumentException","message":"record limits"}"#.into(),
            );
        }
        total += size;
        units += size.div_ceil(PAYLOAD_UNIT) as u64;
        // Compressed data (compression = "gzip" | "zstd") is what a consumer
        // decompresses first.
        let plain = decompress(&data);
        let data = plain.as_deref().unwrap_or(&data);
        lines += kinetail::records::aggregate::decode(data)
            .map(|inner| inner.len() as u64)
            .unwrap_or(1);
        if let Some(t) = stamp(data) {
            // Answered now: the line is confirmed once this response lands.
            let d = now_nanos().saturating_sub(t) / 1000;
            counts
                .delays_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(d);
        }
    }
    if total > MAX_BYTES_PER_CALL {
        counts.rejected.fetch_add(1, Ordering::Relaxed);
        return json(
            400,
            r#"{"__type":"InvalidArgumentException","message":"5 MiB per call"}"#.into(),
        );
    }
    let seq = counts.calls.fetch_add(1, Ordering::Relaxed);
    counts
        .kinesis_records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    counts.lines.fetch_add(lines, Ordering::Relaxed);
    counts.units.fetch_add(units, Ordering::Relaxed);
    counts.bytes.fetch_add(total as u64, Ordering::Relaxed);
    let mut out = String::with_capacity(records.len() * 80 + 64);
    out.push_str(r#"{"FailedRecordCount":0,"Records":["#);
    for i in 0..records.len() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"SequenceNumber":"{seq:020}{i:05}","ShardId":"shardId-000000000000"}}"#
        ));
    }
    out.push_str("]}");
    json(200, out)
}

/// `n` shards with equal hash-key ranges, for pacing and aggregation.
pub fn list_shards(n: u64) -> Response<Full<Bytes>> {
    let n = u128::from(n.max(1));
    let width = u128::MAX / n + 1;
    let shards: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let end = if i + 1 == n { u128::MAX } else { i * width + (width - 1) };
            serde_json::json!({
                "ShardId": format!("shardId-{i:012}"),
                "HashKeyRange": {"StartingHashKey": (i * width).to_string(), "EndingHashKey": end.to_string()},
                "SequenceNumberRange": {"StartingSequenceNumber": "0"}
            })
        })
        .collect();
    json(200, serde_json::json!({ "Shards": shards }).to_string())
}

/// Starts the endpoint on a loopback port; returns the port.
pub async fn endpoint(counts: Arc<Counts>) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(testkit::http::serve(
        listener,
        move |req: Request<hyper::body::Incoming>| {
            let counts = counts.clone();
            async move { Some(answer(&counts, req).await) }
        },
    ));
    Ok(port)
}

/// The endpoint of `counts` over TLS too, on a port of its own, for
/// shippers that speak only HTTPS (Fluent Bit's Kinesis output): its
/// certificate, for 127.0.0.1, is signed by a CA generated once per run,
/// whose PEM is at [`ca_file`].
pub async fn endpoint_tls(counts: Arc<Counts>) -> std::io::Result<u16> {
    let (_, config) = tls()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, counts) = (acceptor.clone(), counts.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let handler = move |req: Request<hyper::body::Incoming>| {
                    let counts = counts.clone();
                    async move { Some(answer(&counts, req).await) }
                };
                testkit::http::serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    Ok(port)
}

/// Where the PEM of the TLS endpoint's CA is.
pub fn ca_file() -> std::io::Result<std::path::PathBuf> {
    tls().map(|(path, _)| path.clone())
}

type Tls = (std::path::PathBuf, Arc<rustls::ServerConfig>);

/// The CA (written to a file) and the server's configuration, made once.
fn tls() -> std::io::Result<&'static Tls> {
    static TLS: std::sync::OnceLock<Result<Tls, String>> = std::sync::OnceLock::new();
    TLS.get_or_init(make_tls)
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))
}

fn make_tls() -> Result<Tls, String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A name of its own: OpenSSL takes a certificate whose issuer is its
    // own subject for a self-signed one.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kinetail-bench CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let cert = rcgen::CertificateParams::new(names)
        .map_err(e)?
        .signed_by(&key, &issuer)
        .map_err(e)?;
    let path = std::env::temp_dir().join(format!("kinetail-bench-ca-{}.pem", std::process::id()));
    std::fs::write(&path, ca_cert.pem()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| e.to_string())?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .map_err(|e| e.to_string())?;
    Ok((path, Arc::new(config)))
}

/// The answer to one request, by its `X-Amz-Target`.
async fn answer(counts: &Counts, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if target.ends_with(".PutRecords") {
        put_records(counts, &body)
    } else if target.ends_with(".PutRecordBatch") {
        put_record_batch(counts, &body)
    } else if target.ends_with(".ListShards") {
        list_shards(match counts.shards.load(Ordering::Relaxed) {
            0 => 4,
            n => n,
        })
    } else {
        json(400, r#"{"__type":"UnknownOperationException"}"#.into())
    }
}
