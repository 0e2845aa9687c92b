//! Model-based test of following a file: random sequences of writes,
//! partial lines, rename rotation, copytruncate, truncation, deletion,
//! reopening by the writer and daemon restarts, run against the real
//! binary and server, on default settings. What the stream holds must
//! equal what was written.
//!
//! The flow follows `app.log*`, so copytruncate's copies (`app.log.N`)
//! are under its globs, as with logrotate's default names. The oracle is
//! the copytruncate guarantee (ARCHITECTURE.md, Invariants): every line
//! that some followed file held arrives exactly once, whether kinetail
//! had caught up when the copy was made, was behind, or was in the middle
//! of a line, and whether the copy is renamed afterwards.
//!
//! Some destructive steps (deletion, restart, a truncation without a copy)
//! first wait until kinetail has caught up. Two do not: a truncation and
//! refill while kinetail may be behind, and one in the middle of a line.
//! Lines they destroy before kinetail read them may be lost (the documented
//! window), so they are expected at most once; every other line exactly
//! once, and nothing else (no piece of a line) may arrive.

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
    /// Write this many long lines, then at once copy the file aside,
    /// truncate it and write as many again: kinetail is most likely behind
    /// (the burst is larger than its default buffer, so it waits for room
    /// between reads), and the refill passes where it was reading.
    CopyTruncateBehind(u16),
    /// Write lines and the start of another, then copy and truncate: the
    /// started line is in the copy only, never finished.
    CopyTruncateMidLine(u16),
    /// Rename the newest copy (`app.log.N` to `app.log.N.old`).
    RenameCopy,
    /// Truncate the file to zero.
    Truncate,
    /// Delete the file; the writer keeps its handle.
    Delete,
    /// Stop kinetail with SIGTERM and start it again.
    Restart,
    /// Truncate without waiting for kinetail, then write this many lines.
    TruncateRefill(u8),
    /// Write the start of a line, truncate, then write this many lines.
    TruncateMidLine(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..30).prop_map(Op::Write),
        1 => Just(Op::WritePartial),
        1 => Just(Op::RenameRotate),
        2 => Just(Op::Reopen),
        1 => Just(Op::CopyTruncate),
        2 => (1u16..12_000).prop_map(Op::CopyTruncateBehind),
        1 => (1u16..12_000).prop_map(Op::CopyTruncateMidLine),
        1 => Just(Op::RenameCopy),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        1 => Just(Op::Restart),
        1 => (1u8..60).prop_map(Op::TruncateRefill),
        1 => (1u8..60).prop_map(Op::TruncateMidLine),
    ]
}

struct World {
    s: Scratch,
    client: aws_sdk_kinesis::Client,
    stream: String,
    config: PathBuf,
    daemon: Daemon,
    writer: Option<File>,
    /// Lines that must arrive exactly once.
    expected: Vec<Vec<u8>>,
    /// How many of them kinetail had shipped at the last catch-up.
    caught_up: usize,
    /// Lines a truncation may have destroyed unread: at most once.
    may: Vec<Vec<u8>>,
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

    /// Waits until every line that must arrive has.
    async fn catch_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: std::collections::HashSet<Vec<u8>> = read_all(&self.client, &self.stream)
                .await
                .into_iter()
                .map(|g| g.data)
                .collect();
            if self.expected.iter().all(|e| got.contains(e)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kinetail caught up; log:\n{}",
                self.daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.caught_up = self.expected.len();
    }

    /// Copies the file to `app.log.N` (under the flow's glob) and
    /// truncates it, with no write in between: every line is in the copy
    /// or in the file afterwards.
    fn copy_truncate(&mut self) {
        self.rotated += 1;
        std::fs::copy(
            self.path(),
            self.s.logs().join(format!("app.log.{}", self.rotated)),
        )
        .expect("copy");
        OpenOptions::new()
            .write(true)
            .open(self.path())
            .and_then(|f| f.set_len(0))
            .expect("truncate");
    }

    /// Appends `n` numbered lines that must arrive.
    fn write_lines(&mut self, n: u16) {
        self.write_padded(n, 0);
    }

    /// Appends `n` numbered lines of about 500 bytes that must arrive.
    fn write_long_lines(&mut self, n: u16) {
        self.write_padded(n, 500);
    }

    fn write_padded(&mut self, n: u16, pad: usize) {
        let mut buf = String::new();
        for _ in 0..n {
            let line = format!("line {:06}{:pad$}", self.next, "");
            self.next += 1;
            buf.push_str(&line);
            buf.push('\n');
            self.expected.push(line.into_bytes());
        }
        self.append(buf.as_bytes());
    }

    /// Truncates the file in place: lines written since the last catch-up
    /// may be gone unread.
    fn truncate_behind(&mut self) {
        let unread = self.expected.split_off(self.caught_up);
        self.may.extend(unread);
        OpenOptions::new()
            .write(true)
            .open(self.path())
            .and_then(|f| f.set_len(0))
            .expect("truncate");
    }

    async fn apply(&mut self, op: &Op) {
        if let Some(p) = self.partial.take() {
            self.append(b" end\n");
            self.expected.push(format!("{p} end").into_bytes());
        }
        let exists = self.path().exists();
        match op {
            Op::Write(n) => self.write_lines(u16::from(*n)),
            Op::TruncateRefill(n) if exists => {
                self.truncate_behind();
                self.write_lines(u16::from(*n));
            }
            Op::TruncateMidLine(n) if exists => {
                // Never completed: neither it nor a piece of it may arrive.
                let p = format!("line {:06} cut short", self.next);
                self.next += 1;
                self.append(p.as_bytes());
                tokio::time::sleep(Duration::from_millis(30)).await;
                self.truncate_behind();
                self.write_lines(u16::from(*n));
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
                self.copy_truncate();
            }
            Op::CopyTruncateBehind(n) if exists => {
                self.write_long_lines(*n);
                self.copy_truncate();
                self.write_long_lines(*n);
            }
            Op::CopyTruncateMidLine(n) if exists => {
                self.write_long_lines(*n);
                // In the copy only, and never finished: neither it nor a
                // piece of it may arrive.
                let p = format!("line {:06} in the copy only", self.next);
                self.next += 1;
                self.append(p.as_bytes());
                self.copy_truncate();
                self.write_long_lines(*n);
            }
            Op::RenameCopy if self.rotated > 0 => {
                let from = self.s.logs().join(format!("app.log.{}", self.rotated));
                let to = self.s.logs().join(format!("app.log.{}.old", self.rotated));
                if from.exists() {
                    std::fs::rename(from, to).expect("rename copy");
                }
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
    // Four shards, paced: about 3,600 records a second.
    create_stream(&client, &stream, 4).await;
    let s = Scratch::new();
    // Default settings: copies are found by discovery's own events and
    // scans, batches linger as they do for operators, and the default
    // buffer fills under the long bursts of the copytruncate steps.
    let config = s.config(
        &server.endpoint(),
        "",
        &format!(
            "[[flow]]\nname = \"model\"\npaths = [\"{{logs}}/app.log*\"]\nstream = \"{stream}\"\n"
        ),
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
        caught_up: 0,
        may: Vec::new(),
        partial: None,
        next: 0,
        rotated: 0,
    };
    for op in ops {
        w.apply(op).await;
    }
    w.apply(&Op::Write(1)).await;
    w.catch_up().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = multiset(
        read_all(&w.client, &w.stream)
            .await
            .into_iter()
            .map(|g| g.data),
    );
    let must = multiset(w.expected.clone());
    let may = multiset(w.may.clone());
    let mut problems = Vec::new();
    for (k, n) in &must {
        if got.get(k) != Some(n) {
            problems.push(format!(
                "{:?} {} times",
                String::from_utf8_lossy(&k[..k.len().min(40)]),
                got.get(k).copied().unwrap_or(0)
            ));
        }
    }
    for (k, n) in &got {
        if must.contains_key(k) {
            continue;
        }
        if may.get(k).is_none_or(|m| n > m) {
            problems.push(format!(
                "{:?} arrived {n} times, expected at most {}",
                String::from_utf8_lossy(&k[..k.len().min(40)]),
                may.get(k).copied().unwrap_or(0)
            ));
        }
    }
    if !problems.is_empty() {
        problems.truncate(8);
        return Err(TestCaseError::fail(format!(
            "ops {ops:?}: {problems:?}; log:\n{}",
            w.daemon.log_tail(60)
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
