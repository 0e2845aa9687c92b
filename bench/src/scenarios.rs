//! The scenarios: a backlog shipped as fast as it goes, a steady rate,
//! quiet files, and the floor (the work itself, no shipper).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use kinetail::records::batcher::MAX_RECORDS_PER_CALL;
use sha2::Digest;
use testkit::Scratch;
use testkit::procfs::{Peak, usage};

use crate::endpoint::{Counts, ca_file, endpoint, endpoint_tls, now_nanos};
use crate::report::Row;
use crate::shippers::{
    Lines, Shipper, Target, generate, start_kinetail, start_kinetail_at, start_other,
};

/// Ships `n` pre-written lines; returns the row once the endpoint counted
/// every line.
pub async fn backlog(
    name: &str,
    n: u64,
    shipper: Shipper<'_>,
    kind: Lines,
    shards: u64,
    tls: bool,
) -> std::io::Result<Row> {
    let dir = Scratch::try_new()?;
    let log = dir.root().join("logs/app.log");
    let bytes = generate(&log, n, kind)?;
    let counts = Arc::new(Counts::default());
    counts.shards.store(shards, Ordering::Relaxed);
    let port = endpoint(counts.clone()).await?;
    let started = Instant::now();
    let mut child = match shipper {
        Shipper::Kinetail { top, flow_extra } => {
            let target = match tls {
                false => Target::plain(port),
                true => Target {
                    url: format!("https://127.0.0.1:{}", endpoint_tls(counts.clone()).await?),
                    ca: Some(ca_file()?),
                },
            };
            start_kinetail_at(dir.root(), &target, top, flow_extra)?
        }
        Shipper::Other { command } => start_other(dir.root(), port, &counts, command).await?,
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
pub async fn steady(rate: u64, seconds: u64) -> std::io::Result<(Row, u64, u64)> {
    let dir = Scratch::try_new()?;
    let path = dir.root().join("logs/app.log");
    std::fs::write(&path, b"")?;
    let counts = Arc::new(Counts::default());
    let port = endpoint(counts.clone()).await?;
    // The default linger (200 ms): the delay target is linger + 100 ms.
    let mut child = start_kinetail(dir.root(), port, "", "pace = false\nlinger_ms = 200")?;
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
pub async fn quiet_files(
    files: u64,
    seconds: u64,
    each: bool,
    shipper: Shipper<'_>,
) -> std::io::Result<Row> {
    let dir = Scratch::try_new()?;
    for i in 0..files {
        std::fs::write(
            dir.root().join(format!("logs/f{i:05}.log")),
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
            dir.root(),
            port,
            &format!("max_open_files = {}\n{top}", files + 64),
            flow_extra,
        )?,
        Shipper::Other { command } => start_other(dir.root(), port, &counts, command).await?,
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
                .open(dir.root().join(format!("logs/f{i:05}.log")))?;
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
pub fn floor(n: u64) -> std::io::Result<Row> {
    let dir = Scratch::try_new()?;
    let path = dir.root().join("app.log");
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
