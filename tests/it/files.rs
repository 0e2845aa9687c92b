//! Files under kinetail as operators and log libraries treat them: rotated
//! by the real logrotate, deleted and recreated on a reused inode.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(180);

fn logrotate_bin() -> PathBuf {
    for p in ["/usr/sbin/logrotate", "/usr/bin/logrotate"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("logrotate is not installed (scripts/test.sh installs it)");
}

/// Appends `n` numbered lines to `path` in bursts, as an application does:
/// its file stays open, and it reopens the path only when told to (the
/// `postrotate` signal of logrotate's `create` mode, modelled by a counter
/// the rotator bumps). Without `reopen` it never reopens (the application
/// `copytruncate` exists for).
fn write_lines(
    path: &Path,
    n: usize,
    burst: usize,
    pause: Duration,
    reopen: Option<Arc<AtomicUsize>>,
) {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log")
    };
    let mut f = open();
    let mut seen = 0;
    let mut i = 0;
    while i < n {
        if let Some(r) = &reopen {
            let now = r.load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                f = open();
            }
        }
        let mut buf = Vec::new();
        for j in i..(i + burst).min(n) {
            writeln!(buf, "w{j:07} the quick brown fox jumps over the lazy dog").expect("format");
        }
        f.write_all(&buf).expect("append");
        i += burst;
        std::thread::sleep(pause);
    }
}

fn expected_lines(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|j| format!("w{j:07} the quick brown fox jumps over the lazy dog").into_bytes())
        .collect()
}

/// Runs logrotate in `mode` every `every` until `stop`; returns how many
/// rotations it performed.
fn rotate_until(
    dir: &Path,
    mode: &str,
    every: Duration,
    stop: Arc<AtomicBool>,
    rotated: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<usize> {
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!("{}/logs/app.log {{\n    {mode}\n    rotate 10000\n    missingok\n    notifempty\n    nocompress\n}}\n", dir.display()),
    )
    .expect("logrotate config");
    let state = dir.join("logrotate.state");
    let bin = logrotate_bin();
    std::thread::spawn(move || {
        let mut rotations = 0;
        while !stop.load(Ordering::Relaxed) {
            let out = Command::new(&bin)
                .arg("-f")
                .arg("-s")
                .arg(&state)
                .arg(&conf)
                .output()
                .expect("run logrotate");
            if out.status.success() {
                rotations += 1;
                rotated.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(every);
        }
        rotations
    })
}

async fn rotation_run(mode: &str, stream: &str) -> (Vec<Vec<u8>>, Vec<Got>, usize) {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, stream, 2).await;
    let s = Scratch::new();
    let log = s.logs().join("app.log");
    std::fs::write(&log, b"").expect("create log");
    let config = s.config(
        &server.endpoint(),
        "rescan_interval_ms = 500",
        &format!("[[flow]]\nname = \"app\"\npaths = [\"{{logs}}/app.log\"]\nstream = \"{stream}\"\nlinger_ms = 20\n"),
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let n = 100_000;
    let stop = Arc::new(AtomicBool::new(false));
    let rotated = Arc::new(AtomicUsize::new(0));
    let rotator = rotate_until(
        s.dir.path(),
        mode,
        Duration::from_millis(150),
        stop.clone(),
        rotated.clone(),
    );
    let writer_path = log.clone();
    let reopen = (mode == "create").then_some(rotated);
    // About 5,000 lines a second: below what the local server takes, so
    // kinetail keeps up and copytruncate's loss is its own window, not lag.
    let writer = std::thread::spawn(move || {
        write_lines(&writer_path, n, 50, Duration::from_millis(10), reopen)
    });
    let started = Instant::now();
    writer.join().expect("writer");
    eprintln!("{mode}: writer took {:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let rotations = rotator.join().expect("rotator");

    let deadline = Instant::now() + TIMEOUT;
    let mut got = read_all(&client, stream).await;
    let mut last_len = usize::MAX;
    // Wait until everything arrived, or nothing more arrives for a while.
    let mut quiet_since = Instant::now();
    while got.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        got = read_all(&client, stream).await;
        if got.len() != last_len {
            last_len = got.len();
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = read_all(&client, stream).await;
    eprintln!("{mode}: all read after {:?}", started.elapsed());
    assert!(
        daemon.stop(Duration::from_secs(30)).success(),
        "clean exit; log:\n{}",
        daemon.log_text()
    );
    if let Ok(keep) = std::env::var("KINETAIL_TEST_KEEP") {
        let _ = Command::new("cp")
            .arg("-r")
            .arg(s.dir.path())
            .arg(&keep)
            .status();
    }
    (expected_lines(n), got, rotations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_create_every_line_arrives_exactly_once() {
    let (expected, got, rotations) = rotation_run("create", "rot-create").await;
    assert!(
        rotations >= 5,
        "logrotate rotated the file several times ({rotations})"
    );
    let got = multiset(got.into_iter().map(|g| g.data));
    let want = multiset(expected);
    let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
    let dups: usize = got.values().filter(|c| **c > 1).map(|c| c - 1).sum();
    eprintln!(
        "logrotate create: {rotations} rotations, {missing} lines missing, {dups} duplicates"
    );
    let mut lost: Vec<String> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .map(|k| String::from_utf8_lossy(&k[..8]).into_owned())
        .collect();
    lost.sort();
    assert_eq!(
        missing,
        0,
        "no line lost across {rotations} rotations; first lost: {:?}",
        &lost[..lost.len().min(5)]
    );
    assert_eq!(dups, 0, "no line twice");
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_copytruncate_reports_its_window() {
    let (expected, got, rotations) = rotation_run("copytruncate", "rot-copy").await;
    assert!(
        rotations >= 5,
        "logrotate rotated the file several times ({rotations})"
    );
    let got = multiset(got.into_iter().map(|g| g.data));
    let missing = expected.iter().filter(|k| !got.contains_key(*k)).count();
    let dups: usize = got.values().filter(|c| **c > 1).map(|c| c - 1).sum();
    eprintln!(
        "logrotate copytruncate: {rotations} rotations, {missing} of {} lines lost, {dups} duplicated \
         (lines written between the copy and the truncation are the documented window)",
        expected.len()
    );
    let written: std::collections::HashSet<&Vec<u8>> = expected.iter().collect();
    assert!(
        got.keys().all(|k| written.contains(k)),
        "nothing arrives that was not written"
    );
    // The window is the time between logrotate's copy and its truncation:
    // a few bursts per rotation at most, never a large share.
    assert!(
        missing < expected.len() / 10,
        "losses stay inside the copytruncate window: {missing}"
    );
    // The tail of the file after the last rotation always arrives.
    let last = expected.last().expect("lines");
    assert!(got.contains_key(last), "the last line arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_inode_is_a_new_file_read_from_its_start() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "reuse", 1).await;
    let s = Scratch::new();
    let log = s.logs().join("app.log");
    let old: String = (0..200).map(|i| format!("old line {i:05}\n")).collect();
    std::fs::write(&log, &old).expect("write old");
    let old_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).expect("stat"));
    let config = s.config(&server.endpoint(), "", "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"reuse\"\nlinger_ms = 20\n");
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    assert_eq!(
        wait_for_count(&client, "reuse", 200, TIMEOUT).await.len(),
        200
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());

    // Delete it and create files until one lands on the same inode, with
    // more content than the old checkpoint covers.
    std::fs::remove_file(&log).expect("delete");
    let new: String = (0..300)
        .map(|i| format!("new line {i:05} with other content\n"))
        .collect();
    let mut tries = 0;
    let mut parked = Vec::new();
    loop {
        let candidate = s.path(&format!("candidate-{tries}"));
        std::fs::write(&candidate, &new).expect("write new");
        let ino =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&candidate).expect("stat"));
        if ino == old_ino {
            std::fs::rename(&candidate, &log).expect("move into place");
            break;
        }
        parked.push(candidate);
        tries += 1;
        assert!(tries < 10_000, "the filesystem never reused the inode");
    }
    for p in parked {
        let _ = std::fs::remove_file(p);
    }
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    let got = wait_for_count(&client, "reuse", 500, TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = read_all(&client, "reuse").await;
    let mut expected = complete_lines(old.as_bytes());
    expected.extend(complete_lines(new.as_bytes()));
    assert_eq!(
        multiset(got.into_iter().map(|g| g.data)),
        multiset(expected),
        "the new file on the reused inode is read from its start; log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}
