//! Parsers end to end: the real binary with `format = "json"` and a
//! `parse` format, over real samples (the loghub files) and lines of our
//! own; every record carries the line's fields, and a line that does not
//! match goes as a message and is counted.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn records(got: &[Got]) -> Vec<Value> {
    got.iter()
        .map(|g| serde_json::from_slice(&g.data).expect("record is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loghub_apache_errors_and_syslog_lines_become_fields() {
    let Some(src) = loghub_dir("loghub_apache_errors_and_syslog_lines_become_fields") else {
        return;
    };
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "parsed", 2).await;
    let s = Scratch::new();
    let mut expected = 0;
    for (dir, files) in [
        ("apache", &["Apache_2k.log"][..]),
        ("syslog", &["Linux_2k.log", "OpenSSH_2k.log"][..]),
    ] {
        std::fs::create_dir_all(s.logs().join(dir)).expect("dir");
        for f in files {
            let bytes = std::fs::read(src.join(f)).expect("loghub file");
            expected += complete_lines(&bytes).len();
            std::fs::write(s.logs().join(dir).join(f), bytes).expect("copy");
        }
    }
    // A line of neither format: sent as a message, counted.
    std::fs::write(s.logs().join("syslog/odd.log"), "not a syslog line\n").expect("odd");
    expected += 1;
    // Keyed by a parsed field: one host's lines on one shard.
    let flow = |name: &str, parse: &str| {
        format!(
            "[[flow]]\nname = \"{name}\"\npaths = [\"{{logs}}/{name}/*.log\"]\nstream = \"parsed\"\nformat = \"json\"\nparse = \"{parse}\"\nparsed_key = \"log\"\npartition_key = {{ from = \"field\", field = \"host\", fallback = \"static\", fallback_value = \"no-host\" }}\n"
        )
    };
    // The API (off by default) to read the failure count.
    let port = free_port();
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\""),
        &format!(
            "{}{}",
            flow("apache", "apache_error"),
            flow("syslog", "syslog")
        ),
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let all = wait_for_count(&client, "parsed", expected, Duration::from_secs(90)).await;
    let got = records(&all);
    // The syslog lines' host (`combo`, `LabSZ`) is their key; Apache's
    // error lines have no host field and take the fallback.
    for (g, r) in all.iter().zip(&got) {
        let want = r["log"]["host"].as_str().unwrap_or("no-host");
        assert_eq!(g.key, want, "{r}");
    }
    assert_eq!(got.len(), expected, "every line once");
    let mut unparsed = Vec::new();
    for r in &got {
        match r.get("log") {
            Some(log) if r["flow"] == "apache" => {
                assert!(log["time"].is_string() && log["level"].is_string(), "{r}");
                // The line's own time (`Sun Dec 04 04:47:44 2005`) is the
                // timestamp, not when it was read.
                assert!(
                    r["timestamp"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("2005-")),
                    "{r}"
                );
            }
            Some(log) => {
                assert!(
                    log["time"].is_string()
                        && log["host"].is_string()
                        && log["message"].is_string(),
                    "{r}"
                );
                // `Jun 14 15:16:01` without a year: the timestamp has its
                // day and clock.
                let time = log["time"].as_str().unwrap_or_default();
                let clock = &time[time.len().saturating_sub(8)..];
                let ts = r["timestamp"].as_str().unwrap_or_default();
                assert!(ts.contains(&format!("T{clock}.000Z")), "{r}");
            }
            None => unparsed.push(r["message"].as_str().unwrap_or_default().to_string()),
        }
    }
    assert_eq!(
        unparsed,
        ["not a syslog line"],
        "every real line parsed; the odd one went as a message"
    );
    let pids = got
        .iter()
        .filter(|r| r["log"]["ident"] == "sshd")
        .filter(|r| r["log"]["pid"].is_u64())
        .count();
    assert!(pids > 1_000, "sshd's pids are numbers: {pids}");
    let (_, metrics) = http_get(port, "/metrics");
    assert_eq!(
        parse_prometheus(&metrics).get("kinetail_parse_failures_total"),
        Some(&1.0),
        "the line that did not match is counted"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}
