//! The service life cycle as systemd sees it: the notify protocol.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::util::*;

/// Receives notify datagrams until `done` says so or `timeout` passes.
fn receive(
    sock: &UnixDatagram,
    msgs: &mut Vec<String>,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !done(msgs) && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
}

fn index_of(msgs: &[String], what: &str) -> Option<usize> {
    msgs.iter().position(|m| m == what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_then_watchdog_then_stopping() {
    let server = Kinesalite::start();
    create_stream(&server.client(), "life", 1).await;
    let s = Scratch::new();
    std::fs::write(s.logs().join("a.log"), "one\ntwo\n").expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"life\"\n",
    );
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let sock_env = sock_path.display().to_string();
    let mut daemon = Daemon::start_with(
        &config,
        &s.path("daemon.log"),
        &[("NOTIFY_SOCKET", &sock_env), ("WATCHDOG_USEC", "200000")],
    );

    let mut msgs = Vec::new();
    receive(&sock, &mut msgs, Duration::from_secs(30), |m| {
        m.iter().filter(|x| *x == "WATCHDOG=1").count() >= 2
    });
    let ready = index_of(&msgs, "READY=1")
        .unwrap_or_else(|| panic!("READY=1 sent: {msgs:?}\n{}", daemon.log_text()));
    let watchdog =
        index_of(&msgs, "WATCHDOG=1").unwrap_or_else(|| panic!("WATCHDOG=1 sent: {msgs:?}"));
    assert!(
        ready < watchdog,
        "READY before the first watchdog ping: {msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with("STATUS=running")),
        "a status line: {msgs:?}"
    );

    daemon.signal("TERM");
    receive(&sock, &mut msgs, Duration::from_secs(30), |m| {
        m.iter().any(|x| x == "STOPPING=1")
    });
    let stopping =
        index_of(&msgs, "STOPPING=1").unwrap_or_else(|| panic!("STOPPING=1 sent: {msgs:?}"));
    assert!(stopping > ready);
    assert!(daemon.wait(Duration::from_secs(30)).success());
}

#[test]
fn no_ready_when_checkpoints_cannot_be_loaded() {
    let s = Scratch::new();
    // The state directory cannot be created under a regular file.
    std::fs::write(s.path("not-a-dir"), "x").expect("write");
    let text = format!(
        "state_dir = \"{}/state\"\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n[[flow]]\nname = \"a\"\npaths = [\"{}/*.log\"]\nstream = \"s\"\n",
        s.path("not-a-dir").display(),
        s.logs().display()
    );
    let config = s.path("kinetail.toml");
    std::fs::write(&config, text).expect("config");
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let sock_env = sock_path.display().to_string();
    let mut daemon = Daemon::start_with(
        &config,
        &s.path("daemon.log"),
        &[("NOTIFY_SOCKET", &sock_env)],
    );
    let status = daemon.wait(Duration::from_secs(30));
    assert!(
        !status.success(),
        "a state directory that cannot be created is fatal"
    );
    let mut msgs = Vec::new();
    receive(&sock, &mut msgs, Duration::from_millis(500), |_| false);
    assert!(
        index_of(&msgs, "READY=1").is_none(),
        "never READY: {msgs:?}"
    );
    assert!(
        daemon.log_text().contains("not-a-dir"),
        "the error names the path: {}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_lag_of_a_file_written_after_a_pause() {
    let mut server = Kinesalite::start();
    create_stream(&server.client(), "lag", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("a.log");
    std::fs::write(&file, "first line\nsecond line\n").expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"lag\"\nlinger_ms = 20\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let entry = |v: &serde_json::Value| {
        v.as_array().and_then(|a| {
            a.iter()
                .find(|f| f["path"] == file.display().to_string())
                .cloned()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status_json(&config);
        if entry(&v).is_some_and(|e| e["bytes_behind"] == 0) {
            let e = entry(&v).expect("entry");
            assert_eq!(e["confirmed_offset"], 23);
            assert!(
                e["last_sequence"].as_str().is_some_and(|s| !s.is_empty()),
                "a sequence number: {e}"
            );
            assert_eq!(e["destination"], "stream lag");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never caught up: {v}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server goes away; lines written now cannot be confirmed.
    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let more = "third line, written after a pause\n";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    std::io::Write::write_all(&mut f, more.as_bytes()).expect("append");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = entry(&status_json(&config)).expect("entry");
    assert_eq!(
        e["bytes_behind"],
        more.len() as u64,
        "lag is the unconfirmed bytes: {e}"
    );
    assert_eq!(e["confirmed_offset"], 23);
    let table = kinetail()
        .arg("status")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&file.display().to_string()) && text.contains(&more.len().to_string()),
        "{text}"
    );
    daemon.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_was_written_and_what_the_server_holds() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "metrics", 2).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let content: String = (0..3_000).map(|i| format!("metric line {i}\n")).collect();
    std::fs::write(&file, &content).expect("write");
    let port = free_port();
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"m\"\npaths = [\"{logs}/*.log\"]\nstream = \"metrics\"\nlinger_ms = 20\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "metrics", 3_000, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 3_000, "log:\n{}", daemon.log_text());
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        let m = parse_prometheus(&body);
        if m.get("kinetail_records_sent_total") == Some(&3000.0)
            && m.get("kinetail_checkpoint_age_seconds")
                .is_some_and(|a| *a >= 0.0)
        {
            break m;
        }
        assert!(Instant::now() < deadline, "metrics catch up: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        metrics["kinetail_lines_read_total"], 3000.0,
        "lines read = lines written"
    );
    assert_eq!(metrics["kinetail_bytes_read_total"], content.len() as f64);
    assert_eq!(
        metrics["kinetail_records_sent_total"],
        got.len() as f64,
        "records sent = records the server holds"
    );
    assert_eq!(metrics["kinetail_dead_lettered_total"], 0.0);
    let lag_key = format!(
        "kinetail_file_lag_bytes{{flow=\"m\",path=\"{}\"}}",
        file.display()
    );
    assert_eq!(
        metrics.get(&lag_key),
        Some(&0.0),
        "no lag once everything is confirmed: {metrics:?}"
    );
    assert_eq!(http_get(port, "/health").0, 200);
    assert_eq!(http_get(port, "/ready").0, 200);
    assert_eq!(http_get(port, "/nope").0, 404);
    // Lag shows bytes written while the server is away.
    drop(server);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"late line\n"))
        .expect("append");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = parse_prometheus(&http_get(port, "/metrics").1);
    assert_eq!(m.get(&lag_key), Some(&10.0), "lag is the unconfirmed bytes");
    assert!(
        m.keys()
            .any(|k| k.starts_with("kinetail_retries_total{reason=")),
        "retries by reason: {m:?}"
    );
    daemon.kill9();
}

#[test]
fn api_beyond_loopback_must_be_asked_for() {
    let s = Scratch::new();
    let config = s.config(
        "http://127.0.0.1:9",
        "[api]\nlisten = \"0.0.0.0:9810\"\n",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"s\"\n",
    );
    let out = kinetail()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("check");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_remote"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_flows_and_rejects_an_invalid_config() {
    let server = Kinesalite::start();
    let client = server.client();
    for s in ["keep", "gone", "change", "new"] {
        create_stream(&client, s, 1).await;
    }
    let s = Scratch::new();
    for d in ["keep", "gone", "change", "new"] {
        std::fs::create_dir_all(s.logs().join(d)).expect("dir");
    }
    let flow = |name: &str, linger: u32| {
        format!(
            "[[flow]]\nname = \"{name}\"\npaths = [\"{{logs}}/{name}/*.log\"]\nstream = \"{name}\"\nlinger_ms = {linger}\n"
        )
    };
    let v1 = format!(
        "{}{}{}",
        flow("keep", 20),
        flow("gone", 20),
        flow("change", 20)
    );
    let config = s.config(&server.endpoint(), "", &v1);
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let lines = |tag: &str, from: usize, to: usize| -> String {
        (from..to).map(|i| format!("{tag} {i:06}\n")).collect()
    };
    let append = |dir: &str, text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.logs().join(dir).join("app.log"))
            .expect("open");
        f.write_all(text.as_bytes()).expect("append");
    };
    // The unchanged flow's file is written all along, across both reloads.
    let keep_path = s.logs().join("keep/app.log");
    let writer = std::thread::spawn(move || {
        for i in 0..60 {
            let text: String = (i * 100..(i + 1) * 100)
                .map(|n| format!("keep {n:06}\n"))
                .collect();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&keep_path)
                .expect("open");
            f.write_all(text.as_bytes()).expect("append");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    append("gone", &lines("gone", 0, 500));
    append("change", &lines("change", 0, 500));
    assert_eq!(
        wait_for_count(&client, "gone", 500, Duration::from_secs(60))
            .await
            .len(),
        500
    );
    assert_eq!(
        wait_for_count(&client, "change", 500, Duration::from_secs(60))
            .await
            .len(),
        500
    );

    // Reload: "gone" removed, "change" changed, "new" added.
    let v2 = format!(
        "{}{}{}",
        flow("keep", 20),
        flow("change", 40),
        flow("new", 20)
    );
    let text = std::fs::read_to_string(&config).expect("config");
    let head = text.split("[[flow]]").next().expect("head").to_string();
    std::fs::write(
        &config,
        format!(
            "{head}{}",
            v2.replace("{logs}", &s.logs().display().to_string())
        ),
    )
    .expect("v2");
    daemon.signal("HUP");
    daemon
        .logged("configuration reloaded", Duration::from_secs(30))
        .await;
    append("gone", &lines("gone", 500, 600));
    append("change", &lines("change", 500, 800));
    append("new", &lines("new", 0, 300));
    assert_eq!(
        wait_for_count(&client, "new", 300, Duration::from_secs(60))
            .await
            .len(),
        300,
        "the new flow ships"
    );
    let change = wait_for_count(&client, "change", 800, Duration::from_secs(60)).await;
    assert_eq!(
        multiset(change.into_iter().map(|g| g.data)),
        multiset(complete_lines(lines("change", 0, 800).as_bytes())),
        "the changed flow goes on from where it was, once"
    );

    // An invalid configuration is rejected; shipping goes on.
    std::fs::write(&config, "this is = = not toml").expect("bad config");
    daemon.signal("HUP");
    daemon
        .logged("configuration rejected", Duration::from_secs(30))
        .await;
    append("new", &lines("new", 300, 400));
    assert_eq!(
        wait_for_count(&client, "new", 400, Duration::from_secs(60))
            .await
            .len(),
        400,
        "still shipping after the rejection"
    );

    writer.join().expect("writer");
    let keep = wait_for_count(&client, "keep", 6_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keep_all = read_all(&client, "keep").await;
    assert_eq!(keep_all.len(), keep.len());
    assert_eq!(
        multiset(keep_all.into_iter().map(|g| g.data)),
        multiset(complete_lines(lines("keep", 0, 6_000).as_bytes())),
        "the unchanged flow lost nothing and sent nothing twice"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        read_all(&client, "gone").await.len(),
        500,
        "the removed flow reads no more"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[test]
fn a_second_stop_signal_exits_at_once() {
    let s = Scratch::new();
    std::fs::write(
        s.logs().join("a.log"),
        "waiting for a server that is not there\n",
    )
    .expect("write");
    // Nothing listens on port 9: records cannot be confirmed, so the first
    // SIGTERM waits out its (long) grace period.
    let config = s.config(
        "http://127.0.0.1:9",
        "shutdown_grace_ms = 60000",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"s\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log_text().contains("PutRecords failed") {
        assert!(
            Instant::now() < deadline,
            "the daemon tried to send; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "the first SIGTERM waits for in-flight records"
    );
    daemon.signal("TERM");
    let started = Instant::now();
    let status = daemon.wait(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the second SIGTERM exits at once"
    );
    assert!(
        !status.success(),
        "an interrupted flush is not a clean exit: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_reload_is_served_at_once_and_loses_nothing() {
    let s = Scratch::new();
    let text = "before the reload 1\nbefore the reload 2\n";
    std::fs::write(s.logs().join("a.log"), text).expect("write");
    let flows = |extra: &str| {
        format!("[[flow]]\nname = \"a\"\npaths = [\"{{logs}}/*.log\"]\nstream = \"s\"\n{extra}")
    };
    // Nothing listens on port 9: the flow cannot drain, so a reload that
    // changes it leaves it draining for the whole (default, 10 s) grace.
    let config = s.config("http://127.0.0.1:9", "", &flows(""));
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    daemon
        .logged("PutRecords failed", Duration::from_secs(20))
        .await;
    // The reload changes the flow (any setting would do; this one is
    // harmless), so the running one must drain before the new one starts.
    s.config("http://127.0.0.1:9", "", &flows("linger_ms = 100\n"));
    daemon.signal("HUP");
    daemon
        .logged("reload begins", Duration::from_secs(10))
        .await;
    daemon.signal("TERM");
    let stopped = Instant::now();
    daemon
        .logged("shutting down", Duration::from_secs(30))
        .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "the stop is served at once, not after the reload's drain: {:?}",
        stopped.elapsed()
    );
    daemon.wait(Duration::from_secs(30));
    assert!(
        stopped.elapsed() < Duration::from_secs(16),
        "one grace period, not the reload's and then the stop's: {:?}",
        stopped.elapsed()
    );

    // Nothing was confirmed, so nothing was lost: the next start sends both
    // lines, once.
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "s", 1).await;
    let config = s.config(&server.endpoint(), "", &flows(""));
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    let got = wait_for_count(&client, "s", 2, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read_all(&client, "s").await.len(), got.len());
    assert_eq!(
        multiset(got.into_iter().map(|g| g.data)),
        multiset(complete_lines(text.as_bytes()))
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let out = kinetail()
        .args(["completions", "bash"])
        .output()
        .expect("completions");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("_kinetail") && text.contains("status"),
        "bash completion knows the subcommands"
    );
    let out = kinetail().arg("man").output().expect("man");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(".TH kinetail 1") && text.contains("check"),
        "a roff page naming the subcommands"
    );
}
