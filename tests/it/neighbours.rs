//! What a second probe from outside found, as a careless or hostile
//! neighbour on the same host (or a lying endpoint) would do it: each test
//! runs the built binary on default settings.

use std::time::Duration;

use crate::fault;
use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(90);

/// An endpoint that answers every entry with a sequence number Kinesis
/// could not have given (empty, or not digits) and stores nothing: no
/// entry counts as confirmed, so no checkpoint moves, and once the
/// endpoint answers truly every line arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_kinesis_could_not_give_confirm_nothing() {
    let server = Kinesalite::start();
    let client = server.client();
    for (n, lie) in ["", "abc"].into_iter().enumerate() {
        let stream = format!("lie-{n}");
        create_stream(&client, &stream, 1).await;
        let proxy = fault::start(&server.endpoint(), fault::Faults::default()).await;
        proxy.set_lie(Some(lie));
        let s = Scratch::new();
        let file = s.logs().join("app.log");
        let lines = numbered_lines("lie", 0, 1_000);
        std::fs::write(&file, &lines).expect("write");
        let config = s.config(
            &proxy.endpoint(),
            "",
            &format!(
                "[[flow]]\nname = \"a\"\npaths = [\"{{logs}}/*.log\"]\nstream = \"{stream}\"\n"
            ),
        );
        let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
        // Several answers full of lies, and checkpoint saves after them.
        eventually(TIMEOUT, "three lying answers", async || {
            (proxy.stats.calls.load(std::sync::atomic::Ordering::Relaxed) >= 3).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = status_json(&config);
        let confirmed = status
            .as_array()
            .and_then(|a| a.iter().find(|f| f["path"] == file.display().to_string()))
            .map_or(0, |e| e["confirmed_offset"].as_u64().unwrap_or(0));
        assert_eq!(
            confirmed, 0,
            "{lie:?} as a sequence number confirms nothing: {status}"
        );
        proxy.set_lie(None);
        let want = complete_lines(&lines);
        let got = wait_for_lines(&client, &stream, &want, TIMEOUT).await;
        let d = Delivery::of(got.into_iter().map(|g| g.data), want);
        assert!(
            d.exactly_once(),
            "{lie:?}: every line once after the lies: {d}; log:\n{}",
            daemon.log_tail(20)
        );
        assert!(daemon.stop(Duration::from_secs(30)).success());
    }
}

/// A neighbour that binds the API port first does not stop shipping: the
/// API is tried again until the port is free, and meanwhile every line
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatted_api_port_stops_no_shipping_and_is_taken_once_free() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "squat", 1).await;
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().expect("addr").port();
    let s = Scratch::new();
    let lines = numbered_lines("squat", 0, 500);
    std::fs::write(s.logs().join("app.log"), &lines).expect("write");
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"squat\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    daemon.logged("cannot listen for the API", TIMEOUT).await;
    let want = complete_lines(&lines);
    let got = wait_for_lines(&client, "squat", &want, TIMEOUT).await;
    let d = Delivery::of(got.into_iter().map(|g| g.data), want);
    assert!(d.exactly_once(), "shipping went on: {d}");
    assert!(
        daemon.is_running(),
        "still running; log:\n{}",
        daemon.log_tail(20)
    );
    drop(squatter);
    let metrics = eventually(TIMEOUT, "the API on the freed port", async || {
        try_http_get(port, "/metrics")
            .filter(|(code, body)| *code == 200 && body.contains("kinetail_"))
    })
    .await;
    assert!(
        metrics.1.contains("kinetail_lines_read_total"),
        "{}",
        metrics.1
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// A state directory a neighbour could write is refused before anything is
/// read (exit 3, the code the unit does not restart on), naming the
/// directory and the fix: one another user owns (with a planted store
/// that would skip a file's lines), one everyone may write. A private
/// subdirectory of a shared, world-writable volume (a Kubernetes emptyDir)
/// is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_others_could_write_is_refused_and_a_private_one_inside_it_is_used() {
    use std::os::unix::fs::PermissionsExt;
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "trust", 1).await;
    let s = Scratch::new();
    let lines = numbered_lines("trust", 0, 100);
    std::fs::write(s.logs().join("app.log"), &lines).expect("write");
    let shared = s.path("volume");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let flow = "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"trust\"\n";
    let with_state = |dir: &std::path::Path| {
        let config = s.config(&server.endpoint(), "", flow);
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen(
            &format!("state_dir = {:?}", s.state().display().to_string()),
            &format!("state_dir = {:?}", dir.display().to_string()),
            1,
        );
        std::fs::write(&config, text).expect("config");
        config
    };
    // Everyone may write it.
    let config = with_state(&shared);
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let status = daemon.wait(TIMEOUT);
    assert_eq!(status.code(), Some(3), "log:\n{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(
        log.contains("may be written by everyone (mode 0777)"),
        "{log}"
    );
    assert!(log.contains(&shared.display().to_string()), "{log}");

    // Another user owns it (as root, the test hands it to nobody).
    let theirs = s.path("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::fs::write(
        theirs.join("checkpoints.json"),
        b"{\"version\":1,\"files\":[]}",
    )
    .expect("plant");
    let owned = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&theirs)
        .status()
        .is_ok_and(|s| s.success());
    if owned {
        let config = with_state(&theirs);
        let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
        let status = daemon.wait(TIMEOUT);
        assert_eq!(status.code(), Some(3), "log:\n{}", daemon.log_text());
        assert!(
            daemon.log_text().contains("belongs to user 65534"),
            "{}",
            daemon.log_text()
        );
    } else {
        skipped(
            "a_state_dir_others_could_write_is_refused_and_a_private_one_inside_it_is_used",
            "chown to another user needs root; the other-owner case was not run",
        );
    }
    assert!(
        read_all(&client, "trust").await.is_empty(),
        "nothing was shipped"
    );

    // A subdirectory of the shared volume: kinetail makes it 0700 and ships.
    let private = shared.join("state");
    let config = with_state(&private);
    let mut daemon = Daemon::start(&config, &s.path("daemon3.log"));
    let want = complete_lines(&lines);
    let got = wait_for_lines(&client, "trust", &want, TIMEOUT).await;
    assert_eq!(got.len(), want.len(), "log:\n{}", daemon.log_text());
    let mode = std::fs::metadata(&private)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// Signals whose default is to end a process (USR1, which logrotate
/// configurations often send to "the logging daemon", USR2 and the timer
/// signals) do not stop kinetail: it logs them, ships on, and still stops
/// cleanly on TERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_signals_do_not_stop_kinetail() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "sig", 1).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, numbered_lines("sig", 0, 10)).expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"sig\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    wait_for_count(&client, "sig", 10, TIMEOUT).await;
    for sig in ["USR1", "USR2", "ALRM", "VTALRM", "PROF"] {
        daemon.signal(sig);
    }
    daemon.logged("signal ignored", TIMEOUT).await;
    append(&file, &numbered_lines("sig", 10, 20));
    let want = complete_lines(&numbered_lines("sig", 0, 20));
    let got = wait_for_lines(&client, "sig", &want, TIMEOUT).await;
    assert_eq!(got.len(), 20, "still shipping; log:\n{}", daemon.log_text());
    assert!(daemon.is_running());
    let status = daemon.stop(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "a clean stop on TERM");
}

/// An endpoint whose error answers carry a 10 MB message: kinetail reads
/// at most 4 MiB of an answer (a Kinesis answer is under 100 KB), so the
/// memory does not grow with the body; the call is retried, each log line
/// about it stays short, and every line still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_error_bodies_are_not_read_past_4_mib_and_lose_nothing() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "huge", 1).await;
    let faults = fault::Faults {
        first_calls_500: 3,
        error_padding: 10 * 1024 * 1024,
        ..fault::Faults::default()
    };
    let proxy = fault::start(&server.endpoint(), faults).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, b"").expect("write");
    let config = s.config(
        &proxy.endpoint(),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"huge\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    append(&file, &numbered_lines("huge", 0, 200));
    let want = complete_lines(&numbered_lines("huge", 0, 200));
    let got = wait_for_lines(&client, "huge", &want, TIMEOUT).await;
    assert_eq!(
        Delivery::of(got.into_iter().map(|g| g.data), want).missing,
        0
    );
    assert!(
        proxy
            .stats
            .calls_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 3,
        "the first three calls were answered with a huge error"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("reading the answer (at most 4194304 bytes)"),
        "the answer was not read past the bound"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "the longest log line has {longest} bytes");
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// Links a neighbour plants in a watched directory, on default settings
/// (`follow_symlinks = "owned"`): a link of theirs to a root-only file is
/// not followed (the file is never shipped), a link loop under `**` ends
/// (the other files flow, the stop is prompt), and a link to kinetail's
/// own checkpoint journal is never tailed. A name that is not UTF-8 under
/// `**` is found like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_links_ship_no_secret_no_loop_and_not_kinetails_own_state() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "links", 1).await;
    let s = Scratch::new();
    let logs = s.logs();
    std::fs::create_dir_all(logs.join("sub")).expect("mkdir");
    let ok = numbered_lines("ok", 0, 50);
    std::fs::write(logs.join("sub/ok.log"), &ok).expect("write");
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.log");
    std::fs::write(
        logs.join("sub").join(odd),
        b"from a name that is not UTF-8\n",
    )
    .expect("write");
    let secret = s.path("secret");
    std::fs::write(&secret, b"root:secret-hash:19000:0:99999:7:::\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let theirs = logs.join("a.log");
    symlink(&secret, &theirs).expect("link");
    let theirs_loop = logs.join("loop");
    symlink(".", &theirs_loop).expect("link");
    // kinetail's own loop (owned by its user: followed, walked once).
    symlink("..", logs.join("sub/up")).expect("link");
    let chowned = std::process::Command::new("chown")
        .args(["-h", "65534:65534"])
        .arg(&theirs)
        .arg(&theirs_loop)
        .status()
        .is_ok_and(|st| st.success());
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/**/*.log\"]\nstream = \"links\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let mut want = complete_lines(&ok);
    want.push(b"from a name that is not UTF-8".to_vec());
    let got = wait_for_lines(&client, "links", &want, TIMEOUT).await;
    // A link to the store, once it exists (its event makes discovery look).
    let store = eventually(TIMEOUT, "a checkpoint save", async || {
        ["checkpoints.journal", "checkpoints.json"]
            .iter()
            .map(|f| s.state().join(f))
            .find(|p| p.exists())
    })
    .await;
    symlink(&store, logs.join("own.log")).expect("link");
    daemon
        .logged("one of kinetail's own state files", TIMEOUT)
        .await;
    // Saves go on meanwhile: a tailed store would add records.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_again = read_all(&client, "links").await;
    assert_eq!(got.len(), got_again.len(), "nothing more arrives");
    let d = Delivery::of(got_again.into_iter().map(|g| g.data), want);
    assert!(
        d.exactly_once(),
        "only the lines of the two files, once: {d}; log:\n{}",
        daemon.log_tail(30)
    );
    let log = daemon.log_text();
    if chowned {
        assert!(log.contains("owned by user 65534"), "{log}");
    } else {
        skipped(
            "planted_links_ship_no_secret_no_loop_and_not_kinetails_own_state",
            "chown -h needs root; links were the test's own, not a neighbour's",
        );
    }
    let started = std::time::Instant::now();
    assert!(daemon.stop(Duration::from_secs(30)).success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a prompt stop: {:?}",
        started.elapsed()
    );
}

/// Secrets in the endpoint URL never reach a log: a password in its user
/// information is not handed to the SDK (whose debug lines would show it),
/// and a query (where a token could sit) is refused by `check`, which does
/// not print it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_the_endpoint_url_reach_no_log() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "secret", 1).await;
    let s = Scratch::new();
    std::fs::write(s.logs().join("app.log"), "one line\n").expect("write");
    let endpoint = server.endpoint().replace("http://", "http://user:s3cr3t@");
    let config = s.config(
        &endpoint,
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"secret\"\n",
    );
    let mut daemon = Daemon::start_with(&config, &s.path("daemon.log"), &[("RUST_LOG", "debug")]);
    assert_eq!(wait_for_count(&client, "secret", 1, TIMEOUT).await.len(), 1);
    assert!(daemon.stop(Duration::from_secs(30)).success());
    let log = daemon.log_text();
    assert!(log.contains("DEBUG"), "the SDK's debug lines are there");
    assert!(!log.contains("s3cr3t"), "no password at the debug level");

    let query = s.config(
        &format!("{}/?token=t0k3n", server.endpoint()),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"secret\"\n",
    );
    let out = cli(&["check"], &query);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("no query or fragment"), "{text}");
    assert!(!text.contains("t0k3n"), "{text}");
}

/// A configuration file others may write is flagged by `check` and `run`
/// (whoever can write it decides what kinetail reads and where it sends
/// it); a private one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_others_may_write_is_flagged() {
    use std::os::unix::fs::PermissionsExt;
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "conf", 1).await;
    let s = Scratch::new();
    std::fs::write(s.logs().join("app.log"), "one line\n").expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"conf\"\n",
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = cli(&["check"], &config);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = cli(&["check"], &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "still valid: {err}");
    assert!(
        err.contains("may be written by others (mode 0666)"),
        "{err}"
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    daemon
        .logged("may be written by others (mode 0666)", TIMEOUT)
        .await;
    assert_eq!(wait_for_count(&client, "conf", 1, TIMEOUT).await.len(), 1);
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// File names made to mislead a reader: a right-to-left override (U+202E)
/// is shown escaped in text logs, `status` and `/metrics`; with JSON logs a
/// newline in a name is escaped once, by JSON (the name reads back whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misleading_file_names_are_escaped_once_everywhere() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "names", 1).await;
    let s = Scratch::new();
    let bidi = s.logs().join("invoice\u{202e}gol.exe.log");
    let newline = s.logs().join("a\nb.log");
    std::fs::write(&bidi, "one\n").expect("write");
    std::fs::write(&newline, "two\n").expect("write");
    let port = free_port();
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"names\"\n",
    );
    // JSON logs.
    let log_path = s.path("json.log");
    let log_file = std::fs::File::create(&log_path).expect("log");
    let mut child = kinetail()
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(log_file)
        .spawn()
        .expect("start");
    assert_eq!(wait_for_count(&client, "names", 2, TIMEOUT).await.len(), 2);
    let metrics = eventually(TIMEOUT, "/metrics", async || {
        try_http_get(port, "/metrics").filter(|(c, b)| *c == 200 && b.contains("invoice"))
    })
    .await
    .1;
    assert!(metrics.contains("invoice\\\\u{202e}gol"), "{metrics}");
    assert!(!metrics.contains('\u{202e}'), "no raw override in /metrics");
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).expect("log");
    let mut names = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("each log line is JSON");
        if let Some(p) = v["fields"]["path"].as_str() {
            names.push(p.to_string());
        }
    }
    assert!(
        names.iter().any(|n| n.ends_with("/a\nb.log")),
        "the name reads back whole from JSON: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("invoice\\u{202e}gol")),
        "the override escaped: {names:?}"
    );
    // status, as text.
    let out = cli(&["status"], &config);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("invoice\\u{202e}gol"), "{shown}");
    assert!(!shown.contains('\u{202e}'), "{shown}");
}

/// A neighbour's 300 files make neither 300 log lines nor 300 series per
/// metric: 20 files are announced one by one and the rest counted in one
/// line; /metrics has 200 per-file series and the rest summed per flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_files_make_bounded_logs_and_metrics() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "many", 1).await;
    let s = Scratch::new();
    for i in 0..300 {
        std::fs::write(
            s.logs().join(format!("f{i:03}.log")),
            format!("line of {i}\n"),
        )
        .expect("write");
    }
    let port = free_port();
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        "[[flow]]\nname = \"a\"\npaths = [\"{logs}/*.log\"]\nstream = \"many\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    assert_eq!(
        wait_for_count(&client, "many", 300, TIMEOUT).await.len(),
        300
    );
    let log = daemon.log_text();
    let announced = log.lines().filter(|l| l.contains("tailing file")).count();
    assert_eq!(announced, 20, "{log}");
    assert!(log.contains("files=280"), "{log}");
    let metrics = eventually(TIMEOUT, "/metrics", async || {
        try_http_get(port, "/metrics")
            .filter(|(c, b)| *c == 200 && b.contains("kinetail_file_lag_bytes{"))
    })
    .await
    .1;
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("kinetail_file_lag_bytes{"))
        .count();
    assert_eq!(series, 201, "200 files and one sum: {metrics}");
    assert!(metrics.contains("path=\"(other files)\""));
    assert!(metrics.len() < 100_000, "{} bytes", metrics.len());
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// `check` sees through the spelling of `state_dir`: written with `//`, or
/// reached through a link into the globs, it is still kinetail's own and a
/// glob that would ship its files is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sees_the_state_dir_through_links_and_double_slashes() {
    let s = Scratch::new();
    let real = s.logs().join("state");
    std::fs::create_dir_all(&real).expect("mkdir");
    let link = s.path("state-link");
    std::os::unix::fs::symlink(&real, &link).expect("link");
    let doubled = format!("{}//state", s.logs().display());
    for state in [link.display().to_string(), doubled] {
        let config = s.config(
            "http://127.0.0.1:9",
            "",
            "[[flow]]\nname = \"app\"\npaths = [\"{logs}/*/*\"]\nstream = \"s\"\n",
        );
        let text = std::fs::read_to_string(&config).expect("config").replacen(
            &format!("state_dir = {:?}", s.state().display().to_string()),
            &format!("state_dir = {state:?}"),
            1,
        );
        std::fs::write(&config, text).expect("config");
        let out = cli(&["check"], &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{state}: {err}");
        assert!(err.contains("own state"), "{state}: {err}");
    }
}
