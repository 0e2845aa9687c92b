//! Exactly once at the edges: graceful stops while the shards are behind,
//! files truncated and refilled while kinetail is behind on them, and files
//! renamed under it. Default settings unless a test says why not.

use std::time::{Duration, Instant};

use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `/metrics` until `ready` holds for it; panics after `timeout`.
async fn metrics_when(
    port: u16,
    timeout: Duration,
    daemon: &Daemon,
    ready: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) -> std::collections::HashMap<String, f64> {
    let what = format!("metrics as awaited; log:\n{}", daemon.log_tail(30));
    eventually(timeout, what, async || {
        let (_, body) = try_http_get(port, "/metrics").filter(|(s, _)| *s == 200)?;
        let m = parse_prometheus(&body);
        ready(&m).then_some(m)
    })
    .await
}

fn metric(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_pacing_sends_every_line_exactly_once() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "paced-stop", 2).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, numbered_lines("paced", 0, 25_000)).expect("write");
    let port = free_port();
    // Defaults (pacing on, a 4 MiB buffer) but a 3 s grace period: the
    // buffer then holds far more (about 14,000 records) than two paced
    // shards take in the grace period (about 5,400), the case where lanes
    // cannot empty themselves before the deadline.
    let config = s.config(
        &server.endpoint(),
        &format!("shutdown_grace_ms = 3000\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"paced-stop\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // SIGTERM once there is a backlog in memory: read, not yet confirmed.
    let m = metrics_when(port, TIMEOUT, &daemon, |m| {
        let read = metric(m, "kinetail_lines_read_total");
        let sent = metric(m, "kinetail_records_sent_total");
        sent >= 500.0 && read - sent >= 8_000.0
    })
    .await;
    eprintln!(
        "stopping with {} lines read, {} confirmed",
        metric(&m, "kinetail_lines_read_total"),
        metric(&m, "kinetail_records_sent_total")
    );
    let stopping = Instant::now();
    let status = daemon.stop(Duration::from_secs(30));
    assert!(status.success(), "clean exit: {status}");
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(
        !daemon.log_text().contains("grace period over"),
        "the holes were filled within the grace period; log:\n{}",
        daemon.log_tail(20)
    );
    let at_stop = read_all(&client, "paced-stop").await.len();
    assert!(at_stop < 25_000, "stopped in the middle ({at_stop})");

    append(&file, &numbered_lines("paced", 25_000, 27_000));
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    wait_for_count(&client, "paced-stop", 27_000, TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = read_all(&client, "paced-stop").await;
    let expected = complete_lines(&std::fs::read(&file).expect("read back"));
    let d = Delivery::of(data_of(&got), expected);
    assert!(
        d.exactly_once(),
        "every line exactly once across the stop: {d}; log:\n{}",
        daemon.log_tail(20)
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_and_refilled_while_kinetail_is_behind_is_read_again_from_its_start() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "trunc-behind", 4).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let old = numbered_lines("old", 0, 40_000);
    std::fs::write(&file, &old).expect("write");
    let port = free_port();
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"trunc-behind\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // Behind: the byte budget holds kinetail in the middle of the file.
    metrics_when(port, TIMEOUT, &daemon, |m| {
        let read = metric(m, "kinetail_bytes_read_total");
        metric(m, "kinetail_records_sent_total") >= 500.0 && read < old.len() as f64 / 2.0
    })
    .await;
    // `> app.log` and a burst: the new content runs past the old offset.
    let new = numbered_lines("new", 0, 30_000);
    std::fs::write(&file, &new).expect("truncate and refill");
    let news = complete_lines(&new);
    let deadline = Instant::now() + TIMEOUT;
    let mut got = read_all(&client, "trunc-behind").await;
    while got.iter().filter(|g| g.data.starts_with(b"new")).count() < news.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        got = read_all(&client, "trunc-behind").await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = read_all(&client, "trunc-behind").await;
    let (new_got, old_got): (Vec<Vec<u8>>, Vec<Vec<u8>>) = data_of(&got)
        .into_iter()
        .partition(|d| d.starts_with(b"new"));
    let d = Delivery::of(new_got, news);
    assert!(
        d.exactly_once(),
        "every new line once, no piece of one: {d}; log:\n{}",
        daemon.log_tail(20)
    );
    // Lines of the old content that were not read before the truncation
    // are gone with it; what arrived of it is whole lines, once each.
    let olds = complete_lines(&old);
    let d = Delivery::of(old_got.clone(), olds);
    assert!(
        d.duplicates == 0 && d.foreign == 0,
        "old content: whole lines, at most once: {d}"
    );
    eprintln!(
        "old content: {} of 40000 lines arrived before the truncation",
        old_got.len()
    );
    let (_, body) = http_get(port, "/metrics");
    assert!(
        metric(&parse_prometheus(&body), "kinetail_truncations_total") >= 1.0,
        "the truncation is counted"
    );
    assert!(
        daemon.log_text().contains("truncated"),
        "and reported in the log"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_file_shows_its_new_path_in_status_metrics_and_dead_letters() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "renamed", 1).await;
    let s = Scratch::new();
    let before = s.logs().join("a.log");
    let after = s.logs().join("b.log");
    std::fs::write(&before, numbered_lines("first", 0, 10)).expect("write");
    let port = free_port();
    // `oversize = "drop"`: a line too long for a record then goes to the
    // dead-letter file, whose entries name the file's path.
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"renamed\"\noversize = \"drop\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    assert_eq!(
        wait_for_count(&client, "renamed", 10, TIMEOUT).await.len(),
        10
    );
    std::fs::rename(&before, &after).expect("rename within the glob");
    // Lines read after kinetail noticed the rename carry the new path.
    daemon.logged("file renamed", TIMEOUT).await;
    let mut big = vec![b'y'; 1_100_000];
    big.push(b'\n');
    append(&after, &big);
    append(&after, &numbered_lines("second", 0, 10));
    assert_eq!(
        wait_for_count(&client, "renamed", 20, TIMEOUT).await.len(),
        20,
        "log:\n{}",
        daemon.log_tail(20)
    );
    let series = |p: &std::path::Path| {
        format!(
            "kinetail_file_lag_bytes{{flow=\"app\",path=\"{}\"}}",
            p.display()
        )
    };
    let m = metrics_when(port, TIMEOUT, &daemon, |m| m.contains_key(&series(&after))).await;
    assert!(
        !m.contains_key(&series(&before)),
        "no series for the old path: {m:?}"
    );
    let dead = dead_letters(&s.state(), &after);
    let bytes: usize = dead.iter().map(|d| d.3.len()).sum();
    assert_eq!(bytes, 1_100_000, "the long line, dead-lettered under b.log");
    assert!(dead_letters(&s.state(), &before).is_empty());
    // The store (and so `status`) has the new path after the next save.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status_json(&config);
        let text = st.to_string();
        if text.contains(&after.display().to_string()) {
            assert!(
                !text.contains(&before.display().to_string()),
                "status names b.log only: {text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "status shows b.log: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_closed_for_idleness_then_truncated_and_refilled_is_taken_up_again() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "idle-trunc", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let old = numbered_lines("before", 0, 100);
    std::fs::write(&file, &old).expect("write");
    // A short idle timeout (the default is a minute) so that the file is
    // closed within the test.
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"idle-trunc\"\nidle_timeout_ms = 300\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    assert_eq!(
        wait_for_count(&client, "idle-trunc", 100, TIMEOUT)
            .await
            .len(),
        100
    );
    // Closed for idleness by now; then `> app.log` and more lines than
    // before, so that the file is longer than what was read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new = numbered_lines("after", 0, 300);
    std::fs::write(&file, &new).expect("truncate and refill");
    let got = wait_for_count(&client, "idle-trunc", 400, Duration::from_secs(30)).await;
    let mut expected = complete_lines(&old);
    expected.extend(complete_lines(&new));
    let d = Delivery::of(data_of(&got), expected);
    assert!(
        d.exactly_once(),
        "the refilled file is read from its start: {d}; log:\n{}",
        daemon.log_tail(20)
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}
