//! kinetail beside careless or hostile neighbours: a flood of API
//! connections, an endpoint that never answers during start-up, a broken
//! or newer checkpoint store, closed pipes, planted links, file names made
//! to forge log lines, pseudo-files and names that are not UTF-8.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_api_connections_stops_neither_probes_nor_delivery() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "flood", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, numbered_lines("before", 0, 100)).expect("write");
    let port = free_port();
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"flood\"\n",
    );
    // The soft and hard limits of most systems' users: kinetail cannot
    // raise them, so the connections must not be allowed to use them up.
    let mut daemon = Daemon::start_after(&config, &s.path("daemon.log"), "ulimit -n 1024");
    assert_eq!(
        wait_for_count(&client, "flood", 100, TIMEOUT).await.len(),
        100
    );
    // This process needs more than 1,100 descriptors of its own.
    rlimit::increase_nofile_limit(4096).expect("raise the test's own limit");
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let before = cpu_ticks(daemon.child.id());
    let asked = Instant::now();
    let health = try_http_get(port, "/health");
    assert_eq!(health.map(|h| h.0), Some(200), "/health answers");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "within a second: {:?}",
        asked.elapsed()
    );
    append(&file, &numbered_lines("during", 0, 1_000));
    let got = wait_for_count(&client, "flood", 1_100, TIMEOUT).await;
    assert_eq!(
        got.len(),
        1_100,
        "lines written meanwhile arrive; log:\n{}",
        daemon.log_tail(20)
    );
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(daemon.child.id()) - before;
    let secs = asked.elapsed().as_secs_f64();
    // 100 ticks a second on Linux.
    let cpu = ticks as f64 / 100.0 / secs;
    eprintln!(
        "kinetail CPU with 1,100 idle connections: {:.1}%",
        cpu * 100.0
    );
    assert!(cpu < 0.3, "kinetail does not spin: {:.0}% CPU", cpu * 100.0);
    drop(idle);
    // Methods other than GET and HEAD are refused.
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(c, "POST /health HTTP/1.0\r\nContent-Length: 0\r\n\r\n").expect("post");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    assert!(
        answer.starts_with("HTTP/1.0 405") || answer.starts_with("HTTP/1.1 405"),
        "{answer}"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_start_up_against_a_silent_endpoint_ends_at_once() {
    // An endpoint that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let s = Scratch::new();
    std::fs::write(s.logs().join("a.log"), "a line\n").expect("write");
    let port = free_port();
    let flows: String = ["one", "two", "three"]
        .iter()
        .map(|n| {
            format!("[[flow]]\nname = \"{n}\"\npaths = [\"{{logs}}/*.log\"]\nstream = \"{n}\"\n")
        })
        .collect();
    let config = s.config(
        &format!("http://127.0.0.1:{silent_port}"),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        &flows,
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // Start-up is observable: the API answers while ListShards waits.
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        if let Some(h) = try_http_get(port, "/health") {
            break h;
        }
        assert!(Instant::now() < deadline, "the API is up during start-up");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health.0, 200);
    assert_eq!(
        http_get(port, "/ready").0,
        503,
        "not ready while flows start"
    );
    let stopping = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(30));
    let took = stopping.elapsed();
    assert!(
        status.success(),
        "clean exit: {status}; log:\n{}",
        daemon.log_tail(10)
    );
    assert!(
        took < Duration::from_secs(1),
        "a stop in start-up ends at once: {took:?}"
    );
    assert!(
        !daemon.log_text().contains("kinetail running"),
        "it was still starting"
    );
}

/// Runs one daemon over `file` until its lines are in `stream`, then stops it.
async fn ship_and_stop(
    s: &Scratch,
    config: &std::path::Path,
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    n: usize,
    log: &str,
) {
    let mut d = Daemon::start(config, &s.path(log));
    assert_eq!(
        wait_for_count(client, stream, n, TIMEOUT).await.len(),
        n,
        "{}",
        d.log_tail(10)
    );
    // Let a periodic save pass, so the store is up to date before the stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_store_falls_back_to_the_previous_generation_or_refuses_to_start() {
    use kinetail::state::store::{PREVIOUS_FILE, STORE_FILE};
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "store", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"store\"\nstart_at = \"end\"\n",
    );
    std::fs::write(&file, numbered_lines("one", 0, 100)).expect("write");
    // start_at = "end" with no checkpoint: the first 100 lines are skipped.
    let mut d = Daemon::start(&config, &s.path("d0.log"));
    d.wait_running(TIMEOUT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&file, &numbered_lines("two", 0, 100));
    assert_eq!(
        wait_for_count(&client, "store", 100, TIMEOUT).await.len(),
        100
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.stop(Duration::from_secs(30)).success());
    append(&file, &numbered_lines("three", 0, 100));
    ship_and_stop(&s, &config, &client, "store", 200, "d1.log").await;
    assert!(
        s.state().join(PREVIOUS_FILE).exists(),
        "a previous generation is kept"
    );

    // Each broken current store: the previous generation is used, so no
    // line is skipped (start_at = "end" would skip them) and only lines of
    // one more interval could come again.
    for (i, broken) in [
        &b"{\"version\": 2, \"files\": [{\"fl"[..],
        b"\x00\x01garbage",
        b"{\"version\": 2, \"files\": 7}",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(s.state().join(STORE_FILE), broken).expect("break the store");
        let tag = format!("four{i}");
        append(&file, &numbered_lines(&tag, 0, 50));
        let mut d = Daemon::start(&config, &s.path("d2.log"));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let got = read_all(&client, "store").await;
            if got
                .iter()
                .filter(|g| g.data.starts_with(tag.as_bytes()))
                .count()
                >= 50
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "new lines arrive; log:\n{}",
                d.log_tail(10)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            d.log_text().contains("previous generation"),
            "the fallback is logged"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(d.stop(Duration::from_secs(30)).success());
    }
    let got = read_all(&client, "store").await;
    let skipped = got.iter().filter(|g| g.data.starts_with(b"one")).count();
    assert_eq!(skipped, 0, "nothing before the first start was sent");

    // Neither readable: refuse, name the file and the way out, exit 3.
    std::fs::write(s.state().join(STORE_FILE), b"{").expect("break");
    std::fs::write(s.state().join(PREVIOUS_FILE), b"").expect("break");
    let mut d = Daemon::start(&config, &s.path("d3.log"));
    let status = d.wait(TIMEOUT);
    assert_eq!(
        status.code(),
        Some(3),
        "a distinct exit code; log:\n{}",
        d.log_text()
    );
    let text = d.log_text();
    assert!(
        text.contains("checkpoints.json") && text.contains("reset-state"),
        "{text}"
    );
    // A newer version: the same.
    std::fs::write(
        s.state().join(STORE_FILE),
        b"{\"version\": 99, \"files\": []}",
    )
    .expect("newer");
    let mut d = Daemon::start(&config, &s.path("d4.log"));
    assert_eq!(d.wait(TIMEOUT).code(), Some(3));
    assert!(d.log_text().contains("newer"), "{}", d.log_text());
    // The way out.
    let out = cli(&["reset-state"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s.state().join(STORE_FILE).exists() && !s.state().join(PREVIOUS_FILE).exists());
    let mut d = Daemon::start(&config, &s.path("d5.log"));
    d.wait_running(TIMEOUT);
    assert!(
        d.stop(Duration::from_secs(30)).success(),
        "starts over after a reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipes_never_make_kinetail_panic_or_lose_its_checkpoint() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "pipes", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, numbered_lines("pipe", 0, 500)).expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"pipes\"\n",
    );
    // Standard error is a pipe whose reader is gone from the start.
    let mut child = kinetail()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    drop(child.stderr.take());
    assert_eq!(
        wait_for_count(&client, "pipes", 500, TIMEOUT).await.len(),
        500
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "a clean stop: {status}");
    let saved = kinetail::state::store::load(&s.state()).expect("store");
    let size = std::fs::metadata(&file).expect("stat").len();
    assert_eq!(
        saved.iter().map(|f| f.offset).max(),
        Some(size),
        "the final save happened"
    );

    for args in [&["check"][..], &["status"], &["status", "--json"]] {
        let mut child = kinetail()
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "{args:?}: {} {err}",
            out.status
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_private_whatever_the_umask_and_links_are_not_followed() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "private", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    let mut content = numbered_lines("p", 0, 10);
    content.extend(vec![b'z'; 1_100_000]);
    content.push(b'\n');
    std::fs::write(&file, &content).expect("write");
    let victim = s.path("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    // `oversize = "drop"`: the long line goes to the dead-letter file.
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"private\"\noversize = \"drop\"\n",
    );
    let fresh = s.path("fresh-state");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &s.state().display().to_string(),
        &fresh.display().to_string(),
    );
    std::fs::write(&config, text).expect("config");
    let mut d = Daemon::start_after(&config, &s.path("daemon.log"), "umask 000");
    assert_eq!(
        wait_for_count(&client, "private", 10, TIMEOUT).await.len(),
        10
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode(&fresh), 0o700, "state directory");
    assert_eq!(mode(&fresh.join("checkpoints.json")), 0o600, "store");
    assert_eq!(
        mode(&fresh.join("dead-letter.jsonl")),
        0o600,
        "dead letters"
    );
    assert!(d.stop(Duration::from_secs(30)).success());

    // A link planted at the temporary name of an existing state directory.
    std::os::unix::fs::symlink(&victim, fresh.join("checkpoints.json.tmp")).expect("plant");
    append(&file, &numbered_lines("q", 0, 10));
    let mut d = Daemon::start(&config, &s.path("daemon2.log"));
    assert_eq!(
        wait_for_count(&client, "private", 20, TIMEOUT).await.len(),
        20
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(d.stop(Duration::from_secs(30)).success());
    assert_eq!(
        std::fs::read(&victim).expect("victim"),
        b"precious",
        "the link's target is untouched"
    );
    let saved = kinetail::state::store::load(&fresh).expect("store");
    assert_eq!(
        saved[0].offset,
        std::fs::metadata(&file).expect("stat").len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_masks_secrets_escapes_file_names_and_has_no_colour_in_a_file() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "output", 1).await;
    let s = Scratch::new();
    let evil = s
        .logs()
        .join("evil\nERROR forged by a file name\u{1b}[31m.log");
    std::fs::write(&evil, "from the evil file\n").expect("write");
    let proxy = crate::fault::start(&server.endpoint(), crate::fault::Faults::default()).await;
    // The endpoint carries a password, as a proxy URL can.
    let endpoint = proxy.endpoint().replace("http://", "http://user:s3cr3t@");
    let config = s.config(
        &endpoint,
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\nstream = \"output\"\n",
    );
    let out = cli(&["check"], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("http://***@127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t"),
        "check never prints the password: {text}"
    );
    // While the endpoint is down, errors name it.
    proxy.set_down(true);
    let mut d = Daemon::start(&config, &s.path("daemon.log"));
    d.logged("PutRecords failed", TIMEOUT).await;
    proxy.set_down(false);
    assert_eq!(wait_for_count(&client, "output", 1, TIMEOUT).await.len(), 1);
    assert!(d.stop(Duration::from_secs(30)).success());
    let log = d.log_text();
    assert!(!log.contains("s3cr3t"), "logs never show the password");
    assert!(
        !log.contains('\u{1b}'),
        "no escape sequences when stderr is a file"
    );
    assert!(
        log.lines().all(|l| !l.starts_with("ERROR forged")),
        "a file name cannot start a log line"
    );
    assert!(
        log.contains("evil\\nERROR forged"),
        "the name is shown escaped: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_that_reach_the_state_directory_are_rejected_by_check() {
    let s = Scratch::new();
    let config = s.config(
        "http://127.0.0.1:9",
        "",
        &format!(
            "[[flow]]\nname = \"app\"\npaths = [\"{}/*\"]\nstream = \"s\"\n",
            s.state().display()
        ),
    );
    let out = cli(&["check"], &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kinetail.toml:") && err.contains("own state"),
        "{err}"
    );
    // Excluding the state directory makes it acceptable.
    let config = s.config(
        "http://127.0.0.1:9",
        "",
        &format!("[[flow]]\nname = \"app\"\npaths = [\"{0}/*\"]\nexclude = [\"{0}/*\"]\nstream = \"s\"\n", s.state().display()),
    );
    let out = cli(&["check"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudo_files_are_refused_once_and_names_not_utf8_are_tailed() {
    use std::os::unix::ffi::OsStringExt;
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "odd", 1).await;
    let s = Scratch::new();
    let odd = s
        .logs()
        .join(std::ffi::OsString::from_vec(b"caf\xe9.log".to_vec()));
    std::fs::write(&odd, numbered_lines("odd", 0, 20)).expect("write");
    let config = s.config(
        &server.endpoint(),
        "rescan_interval_ms = 200",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*.log\", \"/proc/self/status\"]\nstream = \"odd\"\n",
    );
    let mut d = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "odd", 20, TIMEOUT).await;
    assert_eq!(
        got.len(),
        20,
        "the file with a name that is not UTF-8 is read; log:\n{}",
        d.log_tail(10)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = read_all(&client, "odd").await;
    assert_eq!(
        got.len(),
        20,
        "nothing of /proc/self/status, however often it is looked at"
    );
    let log = d.log_text();
    assert_eq!(
        log.matches("pseudo-file").count(),
        1,
        "refused once, with a reason: {log}"
    );
    assert!(
        log.contains("caf\\xe9.log"),
        "the odd name is shown escaped: {log}"
    );
    assert!(d.stop(Duration::from_secs(30)).success());
    let saved = kinetail::state::store::load(&s.state()).expect("store");
    assert!(
        saved.iter().any(|f| f.path == odd),
        "its checkpoint is stored exactly"
    );
}
