//! Kinesis Data Firehose: flows with `firehose = "..."`, against moto (a
//! widely used AWS stand-in, started per test on a free loopback port)
//! whose delivery streams write each `PutRecordBatch` call as one object
//! into its own S3. What the tests read back is those objects, as a reader
//! of the bucket would.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fault::{self, Faults};
use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(90);

fn moto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto")
}

fn python() -> PathBuf {
    let p = moto_dir().join(".venv/bin/python");
    assert!(
        p.exists(),
        "moto is not installed: run `python3 -m venv tests/moto/.venv && tests/moto/.venv/bin/pip install -r tests/moto/requirements.txt` (scripts/test.sh does)"
    );
    p
}

/// moto's server: Firehose and S3.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let mut child = Command::new(python())
            .arg(moto_dir().join("server.py"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let stdout = child.stdout.take().expect("moto stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read moto's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("moto did not start: {line:?}"));
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn s3(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(python())
            .arg(moto_dir().join("s3.py"))
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("run tests/moto/s3.py");
        assert!(
            out.status.success(),
            "s3.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A delivery stream `stream` writing to the bucket `bucket`.
    pub fn create(&self, stream: &str, bucket: &str) {
        self.s3(&["create", stream, bucket]);
    }

    /// The bucket's objects' data, in the order they were written.
    pub fn objects(&self, bucket: &str) -> Vec<Vec<u8>> {
        use base64::Engine;
        let out = self.s3(&["objects", bucket]);
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(l).expect("object line");
                base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str().unwrap_or(""))
                    .expect("base64")
            })
            .collect()
    }

    /// The lines the bucket's objects hold, gzip members decompressed.
    pub fn lines(&self, bucket: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for data in self.objects(bucket) {
            let plain = if data.starts_with(&[0x1f, 0x8b]) {
                let mut plain = Vec::new();
                flate2::read::MultiGzDecoder::new(&data[..])
                    .read_to_end(&mut plain)
                    .expect("gzip");
                plain
            } else {
                data
            };
            assert!(
                plain.ends_with(b"\n"),
                "every object ends with a line's newline"
            );
            out.extend(complete_lines(&plain));
        }
        out
    }

    /// Waits until the bucket holds at least `n` lines (or `timeout`).
    pub async fn wait_for_lines(&self, bucket: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines(bucket);
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            // Reading every object back loads moto: not too often.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A flow of `{logs}/NAME/*.log` to the delivery stream NAME, with `extra`
/// settings.
fn flow(name: &str, extra: &str) -> String {
    format!(
        "[[flow]]\nname = \"{name}\"\npaths = [\"{{logs}}/{name}/*.log\"]\nfirehose = \"{name}\"\n{extra}\n"
    )
}

/// Writes `text` to `dir/NAME/app.log`.
fn write_log(s: &Scratch, name: &str, text: &[u8]) -> PathBuf {
    let dir = s.logs().join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("app.log");
    std::fs::write(&path, text).expect("write");
    path
}

/// Copies the loghub samples into `dir` (CRLF endings and all); returns
/// their bytes, or nothing where the folder is absent (reported as a skip).
fn loghub_into(test: &str, dir: &Path) -> Vec<u8> {
    let Some(src) = loghub_dir(test) else {
        return Vec::new();
    };
    std::fs::create_dir_all(dir).expect("dir");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&src).expect("loghub") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let bytes = std::fs::read(&path).expect("read");
            std::fs::write(dir.join(path.file_name().expect("name")), &bytes).expect("copy");
            all.extend_from_slice(&bytes);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_reaches_s3_once_line_by_line_in_full_records() {
    let moto = Moto::start();
    moto.create("fh", "fh-bucket");
    let s = Scratch::new();
    let generated = numbered_lines("generated", 0, 20_000);
    write_log(&s, "fh", &generated);
    let loghub = loghub_into(
        "every_line_reaches_s3_once_line_by_line_in_full_records",
        &s.logs().join("fh"),
    );
    let mut expected = complete_lines(&generated);
    expected.extend(
        std::fs::read_dir(s.logs().join("fh"))
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n != "app.log"))
            .flat_map(|p| complete_lines(&std::fs::read(p).expect("read"))),
    );
    assert!(
        loghub.is_empty() || expected.len() > 30_000,
        "loghub lines in"
    );
    // Defaults but the destination: aggregation on, not paced. Through an
    // endpoint that forwards every call as it is and counts the records.
    let proxy = fault::start(&moto.endpoint(), Faults::default()).await;
    let config = s.config(&proxy.endpoint(), "", &flow("fh", ""));
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = moto
        .wait_for_lines("fh-bucket", expected.len(), TIMEOUT)
        .await;
    assert_eq!(
        multiset(got.iter().cloned()),
        multiset(expected.iter().cloned()),
        "every line once, as it was written (CR stripped); log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
    // `kinetail status` says the same of a Firehose flow's files: every
    // complete line confirmed (a last line without its newline waits for
    // it), the last RecordId, the destination.
    let status = status_json(&config);
    let files = status.as_array().expect("status is a list");
    assert!(!files.is_empty(), "{status}");
    for f in files {
        let bytes = std::fs::read(f["path"].as_str().unwrap_or_default()).expect("file");
        let partial = bytes.iter().rev().take_while(|b| **b != b'\n').count();
        assert_eq!(f["destination"], "firehose fh", "{f}");
        assert_eq!(f["bytes_behind"], partial, "{f}");
        assert!(
            f["last_sequence"].as_str().is_some_and(|s| !s.is_empty()),
            "{f}"
        );
    }
    // Whole lines joined into records of up to 1,000 KiB: a few records
    // for the whole backlog, not one per line.
    let bytes: usize = expected.iter().map(|l| l.len() + 1).sum();
    let records = proxy
        .stats
        .entries_forwarded
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert!(
        records <= bytes.div_ceil(1_000_000) * 2 + 8,
        "{records} records for {bytes} bytes"
    );
    // Everything was confirmed and saved: a restart sends nothing again.
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    daemon.wait_running(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        moto.lines("fh-bucket").len(),
        expected.len(),
        "nothing sent twice"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_single_and_gzip_records_give_the_same_s3_lines() {
    let moto = Moto::start();
    let s = Scratch::new();
    let text: Vec<u8> = (0..5_000)
        .map(|i| format!("line {i:05} \u{e9}t\u{e9} {}\r\n", "x".repeat(i % 300)))
        .collect::<String>()
        .into_bytes();
    let mut flows = String::new();
    // The default (aggregate on), one line a record (a transformation
    // Lambda wants that), and gzip records (concatenated gzip members make
    // one valid .gz object).
    for (name, extra) in [
        ("joined", ""),
        ("single", "aggregate = false"),
        ("gzipped", "compression = \"gzip\""),
    ] {
        moto.create(name, &format!("{name}-bucket"));
        write_log(&s, name, &text);
        flows.push_str(&flow(name, extra));
    }
    let config = s.config(&moto.endpoint(), "", &flows);
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let expected = multiset(complete_lines(&text));
    for name in ["joined", "single", "gzipped"] {
        let got = moto
            .wait_for_lines(&format!("{name}-bucket"), 5_000, TIMEOUT)
            .await;
        assert_eq!(multiset(got), expected, "{name}: the same lines");
    }
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_entries_throttled_and_unanswered_calls_lose_nothing() {
    let moto = Moto::start();
    moto.create("faulty", "faulty-bucket");
    let proxy = fault::start(
        &moto.endpoint(),
        Faults {
            entry_fail: 0.3,
            call_throttle: 0.2,
            call_500: 0.1,
            close_after_forward: 0.1,
            ..Faults::default()
        },
    )
    .await;
    let s = Scratch::new();
    let text = numbered_lines("faulty", 0, 6_000);
    write_log(&s, "faulty", &text);
    // One line a record, so that entries fail one by one.
    let config = s.config(&proxy.endpoint(), "", &flow("faulty", "aggregate = false"));
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let want: HashSet<Vec<u8>> = complete_lines(&text).into_iter().collect();
    // Reading every object back loads moto: not too often.
    let (missing, got) = until_all_arrived(&want, TIMEOUT, Duration::from_secs(2), async || {
        moto.lines("faulty-bucket")
    })
    .await;
    assert_eq!(
        missing,
        0,
        "every line arrives; log:\n{}",
        daemon.log_text()
    );
    let stats = &proxy.stats;
    assert!(
        stats
            .entries_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        stats
            .calls_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // Only calls that were stored and never answered may be sent twice.
    let unanswered = stats
        .entries_unanswered
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert!(
        got.len() <= want.len() + unanswered,
        "{} lines for {} written, {unanswered} unanswered",
        got.len(),
        want.len()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_an_outage_and_kill_9_lose_nothing() {
    let moto = Moto::start();
    moto.create("outage", "outage-bucket");
    let proxy = fault::start(&moto.endpoint(), Faults::default()).await;
    let s = Scratch::new();
    let file = write_log(&s, "outage", &numbered_lines("outage", 0, 5_000));
    let config = s.config(&proxy.endpoint(), "", &flow("outage", ""));
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    moto.wait_for_lines("outage-bucket", 5_000, TIMEOUT).await;
    // The endpoint goes down; more is written; a stop comes meanwhile.
    proxy.set_down(true);
    append(&file, &numbered_lines("outage", 5_000, 10_000));
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.signal("TERM");
    daemon.wait(Duration::from_secs(30));
    proxy.set_down(false);
    // Then kill -9 in the middle of shipping, twice, with lines written
    // between the runs.
    for (i, (from, to)) in [(10_000, 40_000), (40_000, 42_000)].into_iter().enumerate() {
        append(&file, &numbered_lines("outage", from, to));
        let mut daemon = Daemon::start(&config, &s.path(&format!("daemon{i}.log")));
        moto.wait_for_lines("outage-bucket", from / 2, TIMEOUT)
            .await;
        daemon.kill9();
    }
    let mut daemon = Daemon::start(&config, &s.path("daemon-last.log"));
    let want: HashSet<Vec<u8>> = complete_lines(&std::fs::read(&file).expect("read"))
        .into_iter()
        .collect();
    let (missing, _) = until_all_arrived(&want, TIMEOUT, Duration::from_secs(1), async || {
        moto.lines("outage-bucket")
    })
    .await;
    assert_eq!(
        missing,
        0,
        "every line arrives at least once; log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}
