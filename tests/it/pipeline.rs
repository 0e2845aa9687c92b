//! End to end: files on disk, the kinetail binary, a real Kinesis-compatible
//! server, and what the stream holds afterwards.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::fault::{self, Faults};
use crate::util::*;

const SHIP_TIMEOUT: Duration = Duration::from_secs(120);

fn saved_offset(s: &Scratch, file: &std::path::Path) -> u64 {
    kinetail::state::store::load(&s.state())
        .ok()
        .and_then(|files| files.into_iter().find(|f| f.path == file).map(|f| f.offset))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loghub_samples_arrive_exactly_once_crlf_stripped_and_in_order_per_key() {
    let Some(src) =
        loghub_dir("loghub_samples_arrive_exactly_once_crlf_stripped_and_in_order_per_key")
    else {
        return;
    };
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "loghub", 2).await;
    let s = Scratch::new();

    // (name, complete lines, trailing partial line)
    let mut files: Vec<(String, Vec<Vec<u8>>, bool)> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .expect("read loghub")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "the nine loghub samples");
    for name in &names {
        let bytes = std::fs::read(src.join(name)).expect("read sample");
        std::fs::write(s.logs().join(name), &bytes).expect("copy sample");
        files.push((
            name.clone(),
            complete_lines(&bytes),
            !bytes.ends_with(b"\n"),
        ));
    }
    let config = s.config(
        &server.endpoint(),
        "",
        r#"
[[flow]]
name = "loghub"
paths = ["{logs}/*.log"]
stream = "loghub"
partition_key = { from = "regex", pattern = '^\S+ \S+ \S+ (\S+)', fallback = "path" }
linger_ms = 50
pace = true
"#,
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));

    let complete: usize = files.iter().map(|f| f.1.len()).sum();
    let got = wait_for_count(&client, "loghub", complete, SHIP_TIMEOUT).await;
    assert_eq!(
        got.len(),
        complete,
        "every complete line arrives; log:\n{}",
        daemon.log_text()
    );

    // A last line without its newline waits; the writer finishing it ships it.
    let partial: Vec<&(String, Vec<Vec<u8>>, bool)> = files.iter().filter(|f| f.2).collect();
    assert!(!partial.is_empty(), "some samples end without a newline");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        read_all(&client, "loghub").await.len(),
        complete,
        "partial last lines are held back"
    );
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for (name, lines, has_partial) in files.iter_mut() {
        if *has_partial {
            append(&s.logs().join(name.as_str()), b"\r\n");
            let bytes = std::fs::read(s.logs().join(name.as_str())).expect("reread");
            *lines = complete_lines(&bytes);
        }
        expected.extend(lines.iter().cloned());
    }
    let got = wait_for_count(&client, "loghub", expected.len(), SHIP_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_again = read_all(&client, "loghub").await;
    assert_eq!(
        got_again.len(),
        got.len(),
        "nothing more arrives (no duplicates)"
    );
    assert_eq!(
        multiset(data_of(&got)),
        multiset(expected.clone()),
        "the stream holds exactly the lines written"
    );
    assert!(
        got.iter().all(|g| !g.data.ends_with(b"\r")),
        "CRLF is stripped"
    );
    let shards: HashSet<&str> = got.iter().map(|g| g.shard.as_str()).collect();
    assert_eq!(shards.len(), 2, "records spread over both shards");

    // Order: within each shard (sequence order), the records of one file and
    // one partition key appear in file order. Lines that occur more than
    // once anywhere are left out of this check (they cannot be placed).
    let mut occurrences: HashMap<&[u8], usize> = HashMap::new();
    for l in &expected {
        *occurrences.entry(l.as_slice()).or_default() += 1;
    }
    let mut place: HashMap<&[u8], (usize, usize)> = HashMap::new();
    for (fi, (_, lines, _)) in files.iter().enumerate() {
        for (li, l) in lines.iter().enumerate() {
            if occurrences[l.as_slice()] == 1 {
                place.insert(l.as_slice(), (fi, li));
            }
        }
    }
    let mut last: HashMap<(&str, &str, usize), usize> = HashMap::new();
    let mut checked = 0;
    for g in &got {
        if let Some(&(fi, li)) = place.get(g.data.as_slice()) {
            let prev = last.insert((g.shard.as_str(), g.key.as_str(), fi), li);
            if let Some(p) = prev {
                assert!(
                    p < li,
                    "line {li} of {} arrived after line {p} for key {}",
                    files[fi].0,
                    g.key
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > expected.len() / 2,
        "order checked on most lines ({checked})"
    );
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_sends_every_line_once() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "restart", 4).await;
    let s = Scratch::new();
    let file = s.logs().join("big.log");
    std::fs::write(&file, numbered_lines("big", 0, 30_000)).expect("write");
    // The smallest buffer, so that SIGTERM comes while most of the file is
    // still unread. Four shards: paced, they take about 3,600 lines a second.
    let config = s.config(
        &server.endpoint(),
        "max_buffer_bytes = 4194304",
        "[[flow]]\nname = \"big\"\npaths = [\"{logs}/*.log\"]\nstream = \"restart\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // Stop as soon as the first checkpoint shows progress: cheaper to poll
    // than the stream, so the stop lands early in the file.
    let deadline = std::time::Instant::now() + SHIP_TIMEOUT;
    while saved_offset(&s, &file) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint saved; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = daemon.stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{}",
        daemon.log_text()
    );
    let at_stop = read_all(&client, "restart").await.len();
    assert!(
        at_stop < 30_000,
        "stopped in the middle ({at_stop} of 30000); make the file larger if this fails"
    );

    append(&file, &numbered_lines("big", 30_000, 32_000));
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    let got = wait_for_count(&client, "restart", 32_000, SHIP_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_all = read_all(&client, "restart").await;
    assert_eq!(got_all.len(), got.len(), "no late duplicates");
    let expected = complete_lines(&std::fs::read(&file).expect("read back"));
    let d = Delivery::of(data_of(&got_all), expected);
    assert!(
        d.exactly_once(),
        "every line exactly once: {d}; log:\n{}",
        daemon.log_tail(30)
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_loses_nothing() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "crash", 2).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, numbered_lines("crash", 0, 30_000)).expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"crash\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "crash", 3_000, SHIP_TIMEOUT).await;
    assert!(
        got.len() >= 3_000,
        "shipping started; log:\n{}",
        daemon.log_text()
    );
    daemon.kill9();
    append(&file, &numbered_lines("crash", 30_000, 32_000));
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    let expected = complete_lines(&std::fs::read(&file).expect("read back"));
    let want: HashSet<Vec<u8>> = expected.iter().cloned().collect();
    let (missing, _) = until_all_arrived(
        &want,
        SHIP_TIMEOUT,
        Duration::from_millis(500),
        async || data_of(&read_all(&client, "crash").await),
    )
    .await;
    assert_eq!(
        missing,
        0,
        "every line arrives at least once; log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_entries_are_retried_and_checkpoints_never_pass_unconfirmed_records() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "faulty", 2).await;
    let proxy = fault::start(
        &server.endpoint(),
        Faults {
            entry_fail: 0.3,
            ..Faults::default()
        },
    )
    .await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let total = 20_000;
    let content = numbered_lines("faulty", 0, total);
    std::fs::write(&file, &content).expect("write");
    let config = s.config(
        &proxy.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"faulty\"\nlinger_ms = 20\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));

    // Watch the checkpoint store while shipping: every offset it saves must
    // be covered by records the server holds (read after the checkpoint).
    let mut checks = 0;
    let mut last_offset = 0;
    let deadline = std::time::Instant::now() + SHIP_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Ok(files) = kinetail::state::store::load(&s.state())
            && let Some(saved) = files.iter().find(|f| f.path == file)
        {
            let offset = saved.offset as usize;
            if offset != last_offset {
                let held: HashSet<Vec<u8>> = data_of(&read_all(&client, "faulty").await)
                    .into_iter()
                    .collect();
                for line in complete_lines(&content[..offset]) {
                    assert!(
                        held.contains(&line),
                        "checkpoint {offset} passes a record the server does not hold"
                    );
                }
                assert!(
                    content[..offset].ends_with(b"\n"),
                    "checkpoints fall on line boundaries"
                );
                checks += 1;
                last_offset = offset;
            }
            if offset == content.len() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last_offset,
        content.len(),
        "the checkpoint reaches the end; log:\n{}",
        daemon.log_text()
    );
    assert!(checks >= 2, "several checkpoints were checked ({checks})");
    let got = read_all(&client, "faulty").await;
    assert_eq!(
        multiset(data_of(&got)),
        multiset(complete_lines(&content)),
        "every line exactly once"
    );
    let failed = proxy
        .stats
        .entries_failed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        failed > (total as u64) / 5,
        "the proxy failed many entries ({failed})"
    );
    // Every call, retries included, was signed over the body that arrived.
    let valid = proxy
        .stats
        .signatures_valid
        .load(std::sync::atomic::Ordering::Relaxed);
    let invalid = proxy
        .stats
        .signatures_invalid
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        valid > 10 && invalid == 0,
        "SigV4: {valid} right, {invalid} wrong"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_refilled_file_is_read_from_its_start() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "trunc", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let first = numbered_lines("before", 0, 1_000);
    std::fs::write(&file, &first).expect("write");
    let config = s.config(&server.endpoint(), "", "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"trunc\"\nlinger_ms = 20\n");
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "trunc", 1_000, SHIP_TIMEOUT).await;
    assert_eq!(got.len(), 1_000, "log:\n{}", daemon.log_text());
    // As copytruncate leaves it when the writer is quick: truncated, then
    // refilled past the old offset before the tailer looks again.
    let second = numbered_lines("after", 0, 1_500);
    std::fs::write(&file, &second).expect("truncate and refill");
    let got = wait_for_count(&client, "trunc", 2_500, SHIP_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut expected = complete_lines(&first);
    expected.extend(complete_lines(&second));
    assert_eq!(
        multiset(data_of(&got)),
        multiset(expected),
        "every line of both contents, once; log:\n{}",
        daemon.log_text()
    );
    assert!(
        daemon.log_text().contains("truncated"),
        "the truncation is reported"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}
