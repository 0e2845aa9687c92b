//! `kinetail-bench`: what kinetail costs per line, against the cost of the
//! work itself.
//!
//! It starts a fast local PutRecords endpoint (parses every request fully:
//! JSON, base64, the API limits; answers a sequence number per record),
//! writes generated logs, runs the real `kinetail` binary (next to this one)
//! over them, and reads the shipper's CPU time and peak memory from /proc.
//! The floor is one thread doing the unavoidable part of the work on the
//! same lines: read, split, base64, serialize the PutRecords JSON bodies and
//! hash each with SHA-256 as SigV4 does; no network. Timings are wall-clock
//! and noisy on shared machines: compare ratios taken in the same run.
//!
//! Usage: kinetail-bench [--quick] [--lines N] [--only a,b,...,n] [--repeat N] [--json FILE]
//!                       [--against NAME=COMMAND]
//!
//! `--repeat N` runs each backlog scenario N times and reports the run with
//! the median CPU per line (shared machines are noisy).
//!
//! `--against NAME=COMMAND` runs another shipper on the backlog of (a), after
//! each run of (a), and on the quiet files of (c) and (j), after kinetail,
//! and reports it as rows (x): `COMMAND` is run by the shell with `{port}`
//! (the endpoint's) and `{dir}` (whose `logs/*.log` are the files to ship)
//! filled in; it should ship every line to `http://127.0.0.1:{port}` and
//! keep its own state under `{dir}`.
//!
//! `KINETAIL_BENCH_TOP` (say `max_buffer_bytes = 4194304`) is added to the
//! top of every configuration, to try other settings.

use kinetail::records::batcher::MAX_KEY_CHARS;
use kinetail::records::batcher::{
    MAX_BYTES_PER_CALL, MAX_BYTES_PER_RECORD, MAX_RECORDS_PER_CALL, PAYLOAD_UNIT,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Digest;

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Default)]
struct Counts {
    kinesis_records: AtomicU64,
    lines: AtomicU64,
    bytes: AtomicU64,
    calls: AtomicU64,
    rejected: AtomicU64,
    /// PUT payload units (25,000 bytes, key included, rounded up per record).
    units: AtomicU64,
    /// Shards the endpoint's `ListShards` answers (4 when 0).
    shards: AtomicU64,
    /// Write-to-confirmation delays (microseconds) of lines carrying a
    /// `t=<unix nanos>` stamp.
    delays_us: std::sync::Mutex<Vec<u64>>,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The write time stamped into a line by the steady writer.
fn stamp(data: &[u8]) -> Option<u64> {
    let at = data.windows(2).position(|w| w == b"t=")?;
    let digits: Vec<u8> = data[at + 2..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = "application/x-amz-json-1.1".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The part of a PutRecords request the endpoint reads, borrowed from the
/// body where it can be (strings with escapes are unescaped into a copy).
#[derive(serde::Deserialize)]
struct PutRecordsBody<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RequestEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct RequestEntry<'a> {
    #[serde(rename = "Data", borrow)]
    data: std::borrow::Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    key: std::borrow::Cow<'a, str>,
}

/// gzip or zstd data decompressed, by its magic; `None` for other data.
fn decompress(data: &[u8]) -> Option<Vec<u8>> {
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
fn put_records(counts: &Counts, body: &[u8]) -> Response<Full<Bytes>> {
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
fn list_shards(n: u64) -> Response<Full<Bytes>> {
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

async fn endpoint(counts: Arc<Counts>) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counts = counts.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let counts = counts.clone();
                    async move {
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
                        let resp = if target.ends_with(".PutRecords") {
                            put_records(&counts, &body)
                        } else if target.ends_with(".ListShards") {
                            list_shards(match counts.shards.load(Ordering::Relaxed) {
                                0 => 4,
                                n => n,
                            })
                        } else {
                            json(400, r#"{"__type":"UnknownOperationException"}"#.into())
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

/// The kind of lines a scenario ships.
#[derive(Clone, Copy, PartialEq)]
enum Lines {
    Text,
    Json,
    /// Text lines padded to 2,048 bytes (a shard's bytes bind before its
    /// records do).
    Long,
}

/// Writes `n` lines of `kind` to `path` (about 100 bytes, but `Long`).
fn generate(path: &Path, n: u64, kind: Lines) -> std::io::Result<u64> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0;
    for i in 0..n {
        let (m, s, ms) = ((i / 60_000) % 60, (i / 1000) % 60, i % 1000);
        let line = match kind {
            Lines::Long => {
                let mut l = format!("2026-11-25T10:{m:02}:{s:02}.{ms:03}Z request {i:010} ");
                l.extend(std::iter::repeat_n('x', 2_047 - l.len()));
                l.push('\n');
                l
            }
            Lines::Text => format!(
                "2026-11-25T10:{m:02}:{s:02}.{ms:03}Z host-{} app[{}]: request {i:010} served in {} ms status 200 path /api/v1/items\n",
                i % 7,
                1000 + i % 97,
                i % 250
            ),
            Lines::Json => format!(
                "{{\"ts\":\"2026-11-25T10:{m:02}:{s:02}.{ms:03}Z\",\"level\":\"info\",\"req\":{i},\"ms\":{},\"path\":\"/api/v1/items\"}}\n",
                i % 250
            ),
        };
        f.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    f.flush()?;
    Ok(bytes)
}

/// What a process has used so far, from /proc.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// user + system seconds.
    cpu: f64,
    /// Peak resident set (KiB): anonymous memory and the pages of the
    /// binary and libraries it touched.
    hwm_kib: u64,
    /// Resident anonymous memory now (KiB): the heap and stacks, what the
    /// process itself costs beyond shared, reclaimable file pages.
    anon_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; after ") " they are at 11, 12.
    let cpu = (ticks(11) + ticks(12)) / TICKS_PER_SEC;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Usage {
        cpu,
        hwm_kib: kib("VmHWM:"),
        anon_kib: kib("RssAnon:"),
    }
}

/// The highest figures seen over repeated samples of a process.
#[derive(Default)]
struct Peak(Usage);

impl Peak {
    fn sample(&mut self, pid: u32) -> Usage {
        let u = usage(pid);
        if u.cpu > 0.0 {
            self.0.cpu = u.cpu;
        }
        self.0.hwm_kib = self.0.hwm_kib.max(u.hwm_kib);
        self.0.anon_kib = self.0.anon_kib.max(u.anon_kib);
        u
    }
}

struct Row {
    name: String,
    lines: u64,
    wall: f64,
    cpu: f64,
    rss_kib: u64,
    anon_kib: u64,
    kinesis_records: u64,
    mb: f64,
    /// PUT payload units of what was sent.
    units: u64,
    /// Megabytes sent (data and keys, as Kinesis counts them).
    sent_mb: f64,
    /// PutRecords calls answered (retries included).
    calls: u64,
}

/// A fresh scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> std::io::Result<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("kinetail-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs"))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kinetail_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("kinetail")
}

/// Starts kinetail on `dir/logs/*.log`; `top` goes before the first table,
/// `flow_extra` into the flow.
fn start_kinetail(dir: &Path, port: u16, top: &str, flow_extra: &str) -> std::io::Result<Child> {
    let config = dir.join("kinetail.toml");
    let top = format!(
        "{top}\n{}",
        std::env::var("KINETAIL_BENCH_TOP").unwrap_or_default()
    );
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}/state\"\n{top}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{port}\"\n\n\
             [[flow]]\nname = \"bench\"\npaths = [\"{}/logs/*.log\"]\nstream = \"bench\"\n{flow_extra}\n",
            dir.display(),
            dir.display()
        ),
    )?;
    Command::new(kinetail_bin())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// What ships a backlog: kinetail with a flow's extra settings, or another
/// shipper's command (see `--against`).
enum Shipper<'a> {
    /// `top` goes before the first table, `flow_extra` into the flow.
    Kinetail {
        top: &'a str,
        flow_extra: &'a str,
    },
    Other {
        command: &'a str,
    },
}

/// Starts another shipper: `command` run by `sh -c "exec ..."` (so the
/// process measured is the shipper itself), with `{port}` replaced by the
/// endpoint's port and `{dir}` by the scratch directory, whose `logs/`
/// holds the log to ship.
fn start_other(dir: &Path, port: u16, command: &str) -> std::io::Result<Child> {
    let command = command
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.display().to_string());
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Ships `n` pre-written lines; returns the row once the endpoint counted
/// every line.
async fn backlog(
    name: &str,
    n: u64,
    shipper: Shipper<'_>,
    kind: Lines,
    shards: u64,
) -> std::io::Result<Row> {
    let slug: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let dir = Scratch::new(&slug)?;
    let log = dir.path().join("logs/app.log");
    let bytes = generate(&log, n, kind)?;
    let counts = Arc::new(Counts::default());
    counts.shards.store(shards, Ordering::Relaxed);
    let port = endpoint(counts.clone()).await?;
    let started = Instant::now();
    let mut child = match shipper {
        Shipper::Kinetail { top, flow_extra } => start_kinetail(dir.path(), port, top, flow_extra)?,
        Shipper::Other { command } => start_other(dir.path(), port, command)?,
    };
    let pid = child.id();
    let mut peak = Peak::default();
    let deadline = started + Duration::from_secs(600);
    while counts.lines.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        peak.sample(pid);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    peak.sample(pid);
    let _ = child.kill();
    let _ = child.wait();
    if counts.lines.load(Ordering::Relaxed) < n {
        eprintln!(
            "{name}: only {} of {n} lines arrived",
            counts.lines.load(Ordering::Relaxed)
        );
    }
    Ok(Row {
        name: name.to_string(),
        lines: counts.lines.load(Ordering::Relaxed),
        wall,
        cpu: peak.0.cpu,
        rss_kib: peak.0.hwm_kib,
        anon_kib: peak.0.anon_kib,
        kinesis_records: counts.kinesis_records.load(Ordering::Relaxed),
        mb: bytes as f64 / 1e6,
        units: counts.units.load(Ordering::Relaxed),
        sent_mb: counts.bytes.load(Ordering::Relaxed) as f64 / 1e6,
        calls: counts.calls.load(Ordering::Relaxed),
    })
}

/// Lines appended at `rate` per second for `seconds`, each stamped with its
/// write time: the delay until the endpoint confirms it, and the CPU used.
async fn steady(rate: u64, seconds: u64) -> std::io::Result<(Row, u64, u64)> {
    let dir = Scratch::new("steady")?;
    let path = dir.path().join("logs/app.log");
    std::fs::write(&path, b"")?;
    let counts = Arc::new(Counts::default());
    let port = endpoint(counts.clone()).await?;
    // The default linger (200 ms): the delay target is linger + 100 ms.
    let mut child = start_kinetail(dir.path(), port, "", "pace = false\nlinger_ms = 200")?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut peak = Peak::default();
    let cpu0 = peak.sample(pid).cpu;
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let mut written = 0u64;
    let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
    for k in 0..seconds * 100 {
        let mut buf = String::with_capacity(per_tick as usize * 100);
        for _ in 0..per_tick {
            let t = now_nanos();
            buf.push_str(&format!(
                "2026-11-25T10:00:00Z host-1 app[7]: steady line {written:010} t={t} pad\n"
            ));
            written += 1;
        }
        f.write_all(buf.as_bytes())?;
        if k % 10 == 0 {
            peak.sample(pid);
        }
        let next = started + tick * (k as u32 + 1);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts.lines.load(Ordering::Relaxed) < written && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu1 = peak.sample(pid).cpu;
    let _ = child.kill();
    let _ = child.wait();
    let mut delays =
        std::mem::take(&mut *counts.delays_us.lock().unwrap_or_else(|p| p.into_inner()));
    delays.sort_unstable();
    let pct = |p: f64| {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let row = Row {
        name: format!("(b) steady {rate} lines/s for {seconds} s"),
        lines: counts.lines.load(Ordering::Relaxed),
        wall,
        cpu: cpu1 - cpu0,
        rss_kib: peak.0.hwm_kib,
        anon_kib: peak.0.anon_kib,
        kinesis_records: counts.kinesis_records.load(Ordering::Relaxed),
        mb: written as f64 * 100.0 / 1e6,
        units: 0,
        sent_mb: 0.0,
        calls: counts.calls.load(Ordering::Relaxed),
    };
    Ok((row, pct(0.5) / 1000, pct(0.99) / 1000))
}

/// 1,000 files that get one line a second each: idle CPU and memory.
/// `files` files that each got a first line, then, for `seconds`, a line a
/// second in each (`each`) or a line a second in all, to one file after the
/// other.
async fn quiet_files(
    files: u64,
    seconds: u64,
    each: bool,
    shipper: Shipper<'_>,
) -> std::io::Result<Row> {
    let dir = Scratch::new("quiet")?;
    for i in 0..files {
        std::fs::write(
            dir.path().join(format!("logs/f{i:05}.log")),
            format!("first line of file {i}\n"),
        )?;
    }
    let counts = Arc::new(Counts::default());
    let port = endpoint(counts.clone()).await?;
    // Every file keeps its descriptor: above max_open_files (512 by
    // default) quiet files would take turns, reopened when they change.
    // Everything else is the default.
    let mut child = match shipper {
        Shipper::Kinetail { top, flow_extra } => start_kinetail(
            dir.path(),
            port,
            &format!("max_open_files = {}\n{top}", files + 64),
            flow_extra,
        )?,
        Shipper::Other { command } => start_other(dir.path(), port, command)?,
    };
    let other = matches!(shipper, Shipper::Other { .. });
    let pid = child.id();
    // Let it open everything, then measure a quiet period with a line a
    // second per file.
    let settle = Instant::now() + Duration::from_secs(20);
    while counts.lines.load(Ordering::Relaxed) < files && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut peak = Peak::default();
    let cpu0 = peak.sample(pid).cpu;
    let started = Instant::now();
    for s in 0..seconds {
        let written = if each {
            0..files
        } else {
            s % files..s % files + 1
        };
        for i in written {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join(format!("logs/f{i:05}.log")))?;
            writeln!(f, "second {s} of file {i}")?;
        }
        let next = started + Duration::from_secs(s + 1);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        peak.sample(pid);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu1 = peak.sample(pid).cpu;
    let _ = child.kill();
    let _ = child.wait();
    Ok(Row {
        name: match (each, other) {
            (true, false) => format!("(c) {files} quiet files, 1 line/s each"),
            (false, false) => format!("(j) {files} quiet files, 1 line/s in all"),
            // Named by the caller, which knows the other shipper's name.
            (_, true) => String::new(),
        },
        lines: counts.lines.load(Ordering::Relaxed),
        wall,
        cpu: cpu1 - cpu0,
        rss_kib: peak.0.hwm_kib,
        anon_kib: peak.0.anon_kib,
        kinesis_records: counts.kinesis_records.load(Ordering::Relaxed),
        mb: 0.0,
        units: 0,
        sent_mb: 0.0,
        calls: counts.calls.load(Ordering::Relaxed),
    })
}

/// The floor: one thread reading the file, splitting lines, base64,
/// PutRecords JSON bodies of 500 records, SHA-256 of each body.
fn floor(n: u64) -> std::io::Result<Row> {
    let dir = Scratch::new("floor")?;
    let path = dir.path().join("app.log");
    let bytes = generate(&path, n, Lines::Text)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let cpu0 = usage(std::process::id()).cpu;
    let started = Instant::now();
    let data = std::fs::read(&path)?;
    let mut body = String::with_capacity(200_000);
    let mut in_batch = 0;
    let mut digest_bytes = 0u64;
    let mut flush = |body: &mut String, in_batch: &mut usize| {
        body.push_str("],\"StreamName\":\"bench\"}");
        digest_bytes += sha2::Sha256::digest(body.as_bytes())[0] as u64;
        body.clear();
        *in_batch = 0;
    };
    for (i, line) in data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if in_batch == 0 {
            body.push_str("{\"Records\":[");
        } else {
            body.push(',');
        }
        body.push_str("{\"Data\":\"");
        b64.encode_string(line, &mut body);
        body.push_str(&format!("\",\"PartitionKey\":\"{:016x}\"}}", i));
        in_batch += 1;
        if in_batch == MAX_RECORDS_PER_CALL {
            flush(&mut body, &mut in_batch);
        }
    }
    if in_batch > 0 {
        flush(&mut body, &mut in_batch);
    }
    let wall = started.elapsed().as_secs_f64();
    let end = usage(std::process::id());
    let cpu1 = end.cpu;
    std::hint::black_box(digest_bytes);
    Ok(Row {
        name: "floor (1 thread, no network)".into(),
        lines: n,
        wall,
        cpu: cpu1 - cpu0,
        rss_kib: end.hwm_kib,
        anon_kib: end.anon_kib,
        kinesis_records: 0,
        mb: bytes as f64 / 1e6,
        units: 0,
        sent_mb: 0.0,
        calls: 0,
    })
}

/// The run with the median CPU of `runs`, after printing every run's CPU
/// per million lines when there are several.
fn median(name: &str, mut runs: Vec<Row>, repeat: usize) -> Row {
    runs.sort_by(|x, y| x.cpu.total_cmp(&y.cpu));
    if repeat > 1 {
        let per_m: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.3}", r.cpu / (r.lines.max(1) as f64 / 1e6)))
            .collect();
        eprintln!("{name}: CPU s per million lines over {repeat} runs: {per_m:?}");
    }
    runs.swap_remove(runs.len() / 2)
}

fn print(rows: &[Row], floor: &Row) {
    println!(
        "{:<44} {:>10} {:>12} {:>8} {:>7} {:>14} {:>10} {:>9} {:>9} {:>12} {:>10} {:>9} {:>14} {:>10}",
        "scenario",
        "lines",
        "lines/s",
        "MB/s",
        "CPU %",
        "CPU s/M lines",
        "vs floor",
        "peak RSS",
        "anon RSS",
        "Kinesis recs",
        "units/GB",
        "sent MB",
        "CPU s/GB sent",
        "recs/call"
    );
    for r in rows.iter().chain(std::iter::once(floor)) {
        let per_m = if r.lines > 0 {
            r.cpu / (r.lines as f64 / 1e6)
        } else {
            0.0
        };
        let floor_per_m = floor.cpu / (floor.lines as f64 / 1e6);
        println!(
            "{:<44} {:>10} {:>12.0} {:>8.1} {:>7.1} {:>14.3} {:>9.1}x {:>6} MiB {:>6} MiB {:>12} {:>10.0} {:>9.1} {:>14.2} {:>10.1}",
            r.name,
            r.lines,
            r.lines as f64 / r.wall.max(1e-9),
            r.mb / r.wall.max(1e-9),
            100.0 * r.cpu / r.wall.max(1e-9),
            per_m,
            if floor_per_m > 0.0 && r.mb > 0.0 {
                per_m / floor_per_m
            } else {
                0.0
            },
            r.rss_kib / 1024,
            r.anon_kib / 1024,
            r.kinesis_records,
            // PUT payload units per GB of log read.
            r.units as f64 / (r.mb / 1000.0).max(1e-9),
            r.sent_mb,
            if r.sent_mb > 0.0 {
                r.cpu / (r.sent_mb / 1000.0)
            } else {
                0.0
            },
            r.kinesis_records as f64 / r.calls.max(1) as f64
        );
    }
}

fn to_json(rows: &[Row], floor: &Row) -> String {
    let all: Vec<serde_json::Value> = rows
        .iter()
        .chain(std::iter::once(floor))
        .map(|r| {
            serde_json::json!({
                "scenario": r.name, "lines": r.lines, "wall_seconds": r.wall, "cpu_seconds": r.cpu,
                "lines_per_second": r.lines as f64 / r.wall.max(1e-9),
                "cpu_seconds_per_million_lines": if r.lines > 0 { r.cpu / (r.lines as f64 / 1e6) } else { 0.0 },
                "peak_rss_kib": r.rss_kib, "peak_anon_rss_kib": r.anon_kib, "kinesis_records": r.kinesis_records, "megabytes": r.mb,
                "put_payload_units": r.units, "units_per_gb": r.units as f64 / (r.mb / 1000.0).max(1e-9), "sent_megabytes": r.sent_mb,
                "calls": r.calls,
            })
        })
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_default()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: u64 = value("--lines")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50_000 } else { 2_000_000 });
    if !kinetail_bin().exists() {
        eprintln!(
            "kinetail-bench: {} not found; build it with `cargo build --release`",
            kinetail_bin().display()
        );
        std::process::exit(2);
    }
    // Scenarios to run: all unless `--only` lists some (letters a to l;
    // m and n, one paced shard against its budget, only when named).
    let only = value("--only").unwrap_or_else(|| "a,b,c,d,e,f,g,h,i,j,k,l".into());
    let wants = |s: &str| only.split(',').any(|o| o.trim() == s);
    let mut rows = Vec::new();
    // Lines each backlog scenario writes (most write `n`).
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    let repeat: usize = value("--repeat")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // `--against NAME=COMMAND`: another shipper measured on the backlog of
    // (a), interleaved with it (see `start_other`).
    let against = value("--against").map(|v| match v.split_once('=') {
        Some((name, command)) => (name.to_string(), command.to_string()),
        None => ("other".to_string(), v),
    });
    // Default settings but `pace = false` (pacing holds a backlog to the
    // shards' write limits; (i) measures it).
    let unpaced = "pace = false";
    let backlogs = [
        (
            "a",
            "(a) backlog, 100-byte lines",
            String::new(),
            Lines::Text,
        ),
        (
            "l",
            "(l) backlog, worker_threads 1",
            String::new(),
            Lines::Text,
        ),
        (
            "k",
            "(k) backlog, tuned: max_in_flight 8, linger 20 ms",
            "max_in_flight = 8\nlinger_ms = 20".into(),
            Lines::Text,
        ),
        (
            "i",
            "(i) backlog, paced (the default), 64 shards",
            String::new(),
            Lines::Text,
        ),
        (
            "m",
            "(m) backlog, paced (the default), one shard: budget 900 records/s",
            String::new(),
            Lines::Text,
        ),
        (
            "n",
            "(n) backlog of 2 KB lines, paced, one shard: budget 0.94 MB/s",
            String::new(),
            Lines::Long,
        ),
        (
            "d",
            "(d) backlog, aggregated (4 shards)",
            "aggregate = true".into(),
            Lines::Text,
        ),
        (
            "e",
            "(e) backlog, JSON lines in JSON envelopes",
            "format = \"json\"\nparse = \"json\"".into(),
            Lines::Json,
        ),
        (
            "f",
            "(f) backlog, gzip",
            "compression = \"gzip\"".into(),
            Lines::Text,
        ),
        (
            "g",
            "(g) backlog, zstd",
            "compression = \"zstd\"".into(),
            Lines::Text,
        ),
        (
            "h",
            "(h) backlog, aggregated + zstd (4 shards)",
            "aggregate = true\ncompression = \"zstd\"".into(),
            Lines::Text,
        ),
    ];
    for (letter, name, extra, kind) in backlogs {
        // Unpaced, but for the paced scenario (pacing is the default).
        // (m): one paced shard; its lines/s is against its budget of 900
        // records a second (90% of 1,000), so a few seconds of it suffice.
        let (flow, shards, n) = match letter {
            "i" => (extra, 64, n),
            "m" => (extra, 1, n.min(18_000)),
            // (n): the same for bytes, 0.9 MiB a second; 18 MB of lines.
            "n" => (extra, 1, n.min(9_000)),
            _ => (format!("{unpaced}\n{extra}"), 4, n),
        };
        let flow = flow.as_str();
        if !wants(letter) {
            continue;
        }
        let mut runs = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..repeat {
            // (l): the same as (a) with one worker thread.
            let top = if letter == "l" {
                "worker_threads = 1"
            } else {
                ""
            };
            let shipper = Shipper::Kinetail {
                top,
                flow_extra: flow,
            };
            runs.push(backlog(name, n, shipper, kind, shards).await?);
            // Another shipper on the same backlog, run after each run of (a).
            if let (Some((other, command)), "a") = (&against, letter) {
                let name = format!("(x) {other}, the backlog of (a)");
                let shipper = Shipper::Other { command };
                theirs.push(backlog(&name, n, shipper, kind, shards).await?);
            }
        }
        wanted.insert(name.to_string(), n);
        rows.push(median(name, runs, repeat));
        if let Some(first) = theirs.first() {
            let name = first.name.clone();
            rows.push(median(&name, theirs, repeat));
        }
    }
    let mut delay = None;
    if wants("b") {
        let (row, p50, p99) = if quick {
            steady(5_000, 3).await?
        } else {
            steady(50_000, 30).await?
        };
        rows.push(row);
        delay = Some((p50, p99));
    }
    // (c) a line a second in each file, 30 s; (j) a line a second in all,
    // two minutes: two of the periodic rescans and four of the safety
    // polls of each file fall in it.
    for (letter, each, full_seconds) in [("c", true, 30), ("j", false, 120)] {
        if !wants(letter) {
            continue;
        }
        let files = if quick { 100 } else { 1_000 };
        let seconds = if quick { 3 } else { full_seconds };
        let shipper = Shipper::Kinetail {
            top: "",
            flow_extra: "",
        };
        rows.push(quiet_files(files, seconds, each, shipper).await?);
        if let Some((other, command)) = &against {
            let shipper = Shipper::Other { command };
            let mut row = quiet_files(files, seconds, each, shipper).await?;
            row.name = format!("(x) {other} on ({letter})");
            rows.push(row);
        }
    }
    let fl = floor(n)?;
    print(&rows, &fl);
    if let Some((p50, p99)) = delay {
        println!("(b) write-to-confirmation delay: p50 {p50} ms, p99 {p99} ms (linger 200 ms)");
    }
    if let Some(path) = value("--json") {
        let mut v: serde_json::Value =
            serde_json::from_str(&to_json(&rows, &fl)).unwrap_or_default();
        if let (Some(a), Some((p50, p99))) = (v.as_array_mut(), delay) {
            a.push(serde_json::json!({"scenario": "(b) delay", "p50_ms": p50, "p99_ms": p99}));
        }
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default())?;
    }
    let summary: BTreeMap<&str, u64> = rows.iter().map(|r| (r.name.as_str(), r.lines)).collect();
    let short: Vec<_> = rows
        .iter()
        .filter(|r| r.name.contains("backlog"))
        .filter(|r| r.lines < wanted.get(&r.name).copied().unwrap_or(n))
        .collect();
    if !short.is_empty() {
        eprintln!("kinetail-bench: not every line arrived: {summary:?}");
        std::process::exit(1);
    }
    Ok(())
}
