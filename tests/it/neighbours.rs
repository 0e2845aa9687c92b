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
