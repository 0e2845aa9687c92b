//! Model-based test of following a file: random sequences of writes,
//! partial lines, rename rotation, copytruncate, truncation, deletion,
//! reopening by the writer and daemon restarts, run against the real
//! binary and server. What the stream holds must equal what was written.
//!
//! Destructive steps (truncation, deletion, copytruncate, restart) first
//! wait until kinetail has caught up: what they destroy unread is the
//! documented loss window of those operations, not what this test checks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::util::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append this many complete lines through the writer's handle.
    Write(u8),
    /// Append the start of a line; the next step finishes it.
    WritePartial,
    /// Rename the file out of the glob; the writer keeps its handle.
    RenameRotate,
    /// The writer reopens the path (creating a new file if needed).
    Reopen,
    /// Copy the file aside and truncate it in place.
    CopyTruncate,
    /// Truncate the file to zero.
    Truncate,
    /// Delete the file; the writer keeps its handle.
    Delete,
    /// Stop kinetail with SIGTERM and start it again.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..30).prop_map(Op::Write),
        1 => Just(Op::WritePartial),
        1 => Just(Op::RenameRotate),
        2 => Just(Op::Reopen),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        1 => Just(Op::Restart),
    ]
}

struct World {
    s: Scratch,
    client: aws_sdk_kinesis::Client,
    stream: String,
    config: PathBuf,
    daemon: Daemon,
    writer: Option<File>,
    expected: Vec<Vec<u8>>,
    partial: Option<String>,
    next: usize,
    rotated: usize,
}

impl World {
    fn path(&self) -> PathBuf {
        self.s.logs().join("app.log")
    }

    fn handle(&mut self) -> &mut File {
        let path = self.path();
        self.writer.get_or_insert_with(|| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open log")
        })
    }

    fn append(&mut self, bytes: &[u8]) {
        self.handle().write_all(bytes).expect("append");
    }

    async fn catch_up(&self) {
        let got = wait_for_count(
            &self.client,
            &self.stream,
            self.expected.len(),
            Duration::from_secs(60),
        )
        .await;
        assert!(
            got.len() >= self.expected.len(),
            "kinetail caught up; log:\n{}",
            self.daemon.log_text()
        );
    }

    async fn apply(&mut self, op: &Op) {
        if let Some(p) = self.partial.take() {
            self.append(b" end\n");
            self.expected.push(format!("{p} end").into_bytes());
        }
        let exists = self.path().exists();
        match op {
            Op::Write(n) => {
                let mut buf = String::new();
                for _ in 0..*n {
                    let line = format!("line {:06}", self.next);
                    self.next += 1;
                    buf.push_str(&line);
                    buf.push('\n');
                    self.expected.push(line.into_bytes());
                }
                self.append(buf.as_bytes());
            }
            Op::WritePartial => {
                let p = format!("line {:06} partial", self.next);
                self.next += 1;
                self.append(p.as_bytes());
                self.partial = Some(p);
            }
            Op::RenameRotate if exists => {
                // Discovery must have seen the file for its lines to be
                // drained after it leaves the glob.
                self.catch_up().await;
                self.rotated += 1;
                let to = self.s.path(&format!("rotated.{}", self.rotated));
                std::fs::rename(self.path(), to).expect("rotate");
            }
            Op::Reopen => self.writer = None,
            Op::CopyTruncate if exists => {
                self.catch_up().await;
                self.rotated += 1;
                std::fs::copy(self.path(), self.s.path(&format!("copy.{}", self.rotated)))
                    .expect("copy");
                OpenOptions::new()
                    .write(true)
                    .open(self.path())
                    .and_then(|f| f.set_len(0))
                    .expect("truncate");
            }
            Op::Truncate if exists => {
                self.catch_up().await;
                OpenOptions::new()
                    .write(true)
                    .open(self.path())
                    .and_then(|f| f.set_len(0))
                    .expect("truncate");
            }
            Op::Delete if exists => {
                self.catch_up().await;
                std::fs::remove_file(self.path()).expect("delete");
            }
            Op::Restart => {
                self.catch_up().await;
                let status = self.daemon.stop(Duration::from_secs(30));
                assert!(
                    status.success(),
                    "clean stop: {status}; log:\n{}",
                    self.daemon.log_tail(40)
                );
                // An application restarted with it opens its log anew.
                self.writer = None;
                self.daemon = Daemon::start(&self.config, &self.s.path("daemon.log"));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_case(server: &Kinesalite, case: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let client = server.client();
    let stream = format!("model-{case}");
    create_stream(&client, &stream, 1).await;
    let s = Scratch::new();
    let config = s.config(
        &server.endpoint(),
        "rescan_interval_ms = 200",
        &format!("[[flow]]\nname = \"model\"\npaths = [\"{{logs}}/app.log\"]\nstream = \"{stream}\"\nlinger_ms = 10\n"),
    );
    let daemon = Daemon::start(&config, &s.path("daemon.log"));
    let mut w = World {
        s,
        client,
        stream,
        config,
        daemon,
        writer: None,
        expected: Vec::new(),
        partial: None,
        next: 0,
        rotated: 0,
    };
    for op in ops {
        w.apply(op).await;
    }
    w.apply(&Op::Write(1)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = read_all(&w.client, &w.stream).await;
    while got.len() < w.expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = read_all(&w.client, &w.stream).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = read_all(&w.client, &w.stream).await;
    let got = multiset(got.into_iter().map(|g| g.data));
    let want = multiset(w.expected.clone());
    if got != want {
        let missing: Vec<String> = want
            .keys()
            .filter(|k| got.get(*k) < want.get(*k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .take(5)
            .collect();
        let extra: Vec<String> = got
            .keys()
            .filter(|k| got.get(*k) > want.get(*k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .take(5)
            .collect();
        return Err(TestCaseError::fail(format!(
            "ops {ops:?}: missing {missing:?}, extra {extra:?}; log:\n{}",
            w.daemon.log_text()
        )));
    }
    w.daemon.stop(Duration::from_secs(30));
    Ok(())
}

#[test]
fn shipped_equals_written_under_random_file_operations() {
    let server = Kinesalite::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cases = std::env::var("KINETAIL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&proptest::collection::vec(op(), 1..14), |ops| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(run_case(&server, n, &ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
