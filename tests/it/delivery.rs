//! Delivery when Kinesis misbehaves: a mix of faults, an outage, a stream
//! that does not exist yet.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::fault::{self, Faults};
use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(240);

fn lines(tag: &str, from: usize, to: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..to {
        writeln!(out, "{tag} {i:08} {}", "x".repeat(width)).expect("format");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_of_faults_loses_nothing_and_duplicates_only_unanswered_calls() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "mix", 2).await;
    let faults = Faults {
        entry_fail: 0.3,
        call_500: 0.1,
        call_throttle: 0.05,
        slow: 0.03,
        slow_delay: Duration::from_secs(5),
        close_after_forward: 0.05,
        shard_limit: None,
        error_padding: 0,
        first_calls_500: 0,
        ..Faults::default()
    };
    let proxy = fault::start(&server.endpoint(), faults).await;
    let s = Scratch::new();
    let content = lines("mix", 0, 15_000, 60);
    std::fs::write(s.logs().join("app.log"), &content).expect("write");
    let config = s.config(
        &proxy.endpoint(),
        "",
        "[[flow]]\nname = \"mix\"\npaths = [\"{logs}/*.log\"]\nstream = \"mix\"\nlinger_ms = 20\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let want: HashSet<Vec<u8>> = complete_lines(&content).into_iter().collect();
    let deadline = Instant::now() + TIMEOUT;
    let got = loop {
        let got = read_all(&client, "mix").await;
        let have: HashSet<&Vec<u8>> = got.iter().map(|g| &g.data).collect();
        if want.iter().all(|w| have.contains(w)) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let have: HashSet<Vec<u8>> = got.iter().map(|g| g.data.clone()).collect();
    let missing = want.difference(&have).count();
    assert_eq!(
        missing,
        0,
        "every line arrives; log tail:\n{}",
        daemon.log_tail(20)
    );
    let st = &proxy.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let duplicates = got.len() - want.len();
    eprintln!(
        "calls {} (failed {}, slow {}, closed {}), entries failed {}, unanswered {}, duplicates {duplicates}",
        load(&st.calls),
        load(&st.calls_failed),
        load(&st.calls_slow),
        load(&st.calls_closed),
        load(&st.entries_failed),
        load(&st.entries_unanswered)
    );
    assert!(
        load(&st.calls_failed) > 0 && load(&st.calls_closed) > 0 && load(&st.entries_failed) > 0,
        "faults were injected"
    );
    assert!(
        duplicates as u64 <= load(&st.entries_unanswered),
        "duplicates ({duplicates}) come only from calls closed after forwarding ({} entries)",
        load(&st.entries_unanswered)
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_200_mb_appended_loses_nothing_and_memory_stays_bounded() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "outage", 4).await;
    let proxy = fault::start(&server.endpoint(), Faults::default()).await;
    let s = Scratch::new();
    let file = s.logs().join("app.log");
    std::fs::write(&file, lines("before", 0, 1_000, 100)).expect("write");
    let budget = 8 * 1024 * 1024;
    let config = s.config(
        &proxy.endpoint(),
        &format!("max_buffer_bytes = {budget}"),
        "[[flow]]\nname = \"outage\"\npaths = [\"{logs}/*.log\"]\nstream = \"outage\"\nlinger_ms = 20\nmax_in_flight = 8\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    assert_eq!(
        wait_for_count(&client, "outage", 1_000, TIMEOUT)
            .await
            .len(),
        1_000
    );
    let base = peak_rss_kib(daemon.child.id());

    // The server goes away for 30 s while 200 MB of lines are appended.
    proxy.set_down(true);
    let down_at = Instant::now();
    let per_line = 1_000;
    let n = 200 * 1024 * 1024 / per_line;
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .expect("open");
        for chunk in 0..(n / 10_000) {
            f.write_all(&lines(
                "during",
                chunk * 10_000,
                (chunk + 1) * 10_000,
                per_line - 16,
            ))
            .expect("append");
        }
    }
    let remaining = Duration::from_secs(30).saturating_sub(down_at.elapsed());
    tokio::time::sleep(remaining).await;
    let during = peak_rss_kib(daemon.child.id());
    assert!(
        daemon.log_text().contains("PutRecords failed"),
        "the outage is visible in the log"
    );
    proxy.set_down(false);

    let total = 1_000 + n / 10_000 * 10_000;
    let got = wait_for_count(&client, "outage", total, TIMEOUT).await;
    let peak = peak_rss_kib(daemon.child.id());
    eprintln!(
        "RSS KiB: before the outage {base}, during {during}, peak {peak}; buffer bound {} KiB",
        budget / 1024
    );
    assert_eq!(got.len(), total, "every line arrives after the outage");
    let want: HashSet<Vec<u8>> = complete_lines(&std::fs::read(&file).expect("read"))
        .into_iter()
        .collect();
    let have: HashSet<Vec<u8>> = got.into_iter().map(|g| g.data).collect();
    assert_eq!(have, want, "exactly the lines written");
    // The buffer bound, plus what a batch costs in flight (a request body
    // per lane) and the process's own constant.
    let bound_kib = (budget / 1024) as u64 + 48 * 1024;
    assert!(
        peak < base.max(1) + bound_kib,
        "peak RSS {peak} KiB stays under base {base} KiB + {bound_kib} KiB"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_created_late_gets_every_line_and_the_error_shows_meanwhile() {
    let server = Kinesalite::start();
    let client = server.client();
    let s = Scratch::new();
    std::fs::write(s.logs().join("app.log"), lines("late", 0, 2_000, 40)).expect("write");
    let config = s.config(&server.endpoint(), "", "[[flow]]\nname = \"late\"\npaths = [\"{logs}/*.log\"]\nstream = \"late\"\nlinger_ms = 20\n");
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // The missing stream is reported, at error level (a warning about
    // ListShards may come first).
    eventually(
        Duration::from_secs(30),
        "ResourceNotFoundException logged at error level",
        async || {
            daemon
                .log_text()
                .lines()
                .any(|l| l.contains("ERROR") && l.contains("ResourceNotFoundException"))
                .then_some(())
        },
    )
    .await;
    create_stream(&client, "late", 1).await;
    let got = wait_for_count(&client, "late", 2_000, TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = read_all(&client, "late").await;
    assert_eq!(got_all.len(), got.len());
    assert_eq!(
        multiset(got_all.into_iter().map(|g| g.data)),
        multiset(complete_lines(&lines("late", 0, 2_000, 40))),
        "every line exactly once once the stream exists"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// Ships `n` lines through a proxy enforcing `limit` records per second per
/// shard on a 4-shard stream; returns the share of entries throttled.
async fn throttled_share(
    server: &Kinesalite,
    stream: &str,
    pace: bool,
    limit: u64,
    n: usize,
) -> f64 {
    let client = server.client();
    create_stream(&client, stream, 4).await;
    let faults = Faults {
        shard_limit: Some(fault::ShardLimit::records(limit)),
        ..Faults::default()
    };
    let proxy = fault::start(&server.endpoint(), faults).await;
    let s = Scratch::new();
    std::fs::write(s.logs().join("app.log"), lines(stream, 0, n, 60)).expect("write");
    let flow = if pace {
        format!("pace = true\nshard_records_per_sec = {limit}\n")
    } else {
        "pace = false\nmax_in_flight = 8\n".to_string()
    };
    let config = s.config(
        &proxy.endpoint(),
        "",
        &format!("[[flow]]\nname = \"p\"\npaths = [\"{{logs}}/*.log\"]\nstream = \"{stream}\"\nlinger_ms = 20\n{flow}"),
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // Not reading the stream back while it is measured: see
    // `accepted_at_least`.
    proxy.accepted_at_least(n, TIMEOUT).await;
    let got = wait_for_count(&client, stream, n, TIMEOUT).await;
    assert_eq!(
        got.len(),
        n,
        "every line arrives; log:\n{}",
        daemon.log_tail(20)
    );
    let shards: HashSet<&str> = got.iter().map(|g| g.shard.as_str()).collect();
    assert_eq!(shards.len(), 4, "records spread over the four shards");
    assert!(daemon.stop(Duration::from_secs(30)).success());
    let load =
        |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
    load(&proxy.stats.entries_throttled) / load(&proxy.stats.entries_seen).max(1.0)
}

#[ignore = "measures rates against a per-second limit: scripts/test.sh runs it alone, after the suite"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_keeps_throttling_under_one_percent_where_unpaced_sending_is_throttled() {
    let server = Kinesalite::start();
    // A low per-shard limit, so that the local server outruns it unpaced.
    let limit = 300;
    let unpaced = throttled_share(&server, "unpaced", false, limit, 6_000).await;
    let paced = throttled_share(&server, "paced", true, limit, 6_000).await;
    eprintln!(
        "throttled share of entries: unpaced {:.1}%, paced {:.2}%",
        unpaced * 100.0,
        paced * 100.0
    );
    assert!(
        paced < 0.01,
        "paced sending is throttled {:.2}% of the time",
        paced * 100.0
    );
    assert!(
        unpaced > 0.2,
        "unpaced sending is throttled far more ({:.1}%)",
        unpaced * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_hash_keys_pick_the_shard() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "ehk", 4).await;
    let s = Scratch::new();
    // Lines "lo ..." carry hash key 0 (first shard), "hi ..." the largest
    // (last shard), others are hashed from their third field.
    let text: String = (0..300)
        .map(|i| match i % 3 {
            0 => format!("lo {i} 0\n"),
            1 => format!("hi {i} 340282366920938463463374607431768211455\n"),
            _ => format!("mid {i} user-{i}\n"),
        })
        .collect();
    std::fs::write(s.logs().join("app.log"), &text).expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"e\"\npaths = [\"{logs}/*.log\"]\nstream = \"ehk\"\nlinger_ms = 20\npace = true\n\
         explicit_hash_key = { from = \"regex\", pattern = '^\\S+ \\S+ (\\S+)' }\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "ehk", 300, TIMEOUT).await;
    assert_eq!(got.len(), 300, "log:\n{}", daemon.log_text());
    for g in &got {
        if g.data.starts_with(b"lo ") {
            assert_eq!(g.shard, "shardId-000000000000");
        } else if g.data.starts_with(b"hi ") {
            assert_eq!(g.shard, "shardId-000000000003");
        }
    }
    let mid: HashSet<&str> = got
        .iter()
        .filter(|g| g.data.starts_with(b"mid "))
        .map(|g| g.shard.as_str())
        .collect();
    assert!(
        mid.len() > 1,
        "hashed hash keys spread over shards: {mid:?}"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// Runs the independent de-aggregator (the PyPI package aws-kinesis-agg)
/// over Kinesis records; returns the user records as (key, data).
fn deaggregate(records: &[Got]) -> Vec<(String, Vec<u8>)> {
    deaggregate_with(records, &[])
}

/// As [`deaggregate`], with options of `tests/agg/deaggregate.py`
/// (`--gunzip`: Python's gzip first).
pub fn deaggregate_with(records: &[Got], args: &[&str]) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agg");
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "aws-kinesis-agg is not installed: run scripts/test.sh"
    );
    let mut input = String::new();
    for r in records {
        input.push_str(&serde_json::json!({"key": r.key, "data": b64.encode(&r.data)}).to_string());
        input.push('\n');
    }
    let mut child = std::process::Command::new(python)
        .arg(dir.join("deaggregate.py"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run deaggregate.py");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("deaggregate output");
    writer
        .join()
        .expect("writer")
        .expect("write to deaggregate.py");
    assert!(out.status.success(), "deaggregate.py failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let data = b64
                .decode(v["data"].as_str().expect("data"))
                .expect("base64");
            (v["key"].as_str().expect("key").to_string(), data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_loghub_lines_deaggregate_with_aws_kinesis_agg_to_the_original_lines_and_keys() {
    let Some(src) = loghub_dir(
        "aggregated_loghub_lines_deaggregate_with_aws_kinesis_agg_to_the_original_lines_and_keys",
    ) else {
        return;
    };
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "agg", 4).await;
    let s = Scratch::new();
    let pattern = r"^\S+ \S+ \S+ (\S+)";
    let re = regex::bytes::Regex::new(pattern).expect("regex");
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(&src).expect("loghub") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let bytes = std::fs::read(&path).expect("read");
            std::fs::write(s.logs().join(path.file_name().expect("name")), &bytes).expect("copy");
            for line in complete_lines(&bytes) {
                let key = re
                    .captures(&line)
                    .and_then(|c| c.get(1))
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "nokey".to_string());
                let key: String = key.chars().take(256).collect();
                expected.push((key, line));
            }
        }
    }
    let config = s.config(
        &server.endpoint(),
        "",
        &format!(
            "[[flow]]\nname = \"agg\"\npaths = [\"{{logs}}/*.log\"]\nstream = \"agg\"\nlinger_ms = 50\npace = true\naggregate = true\n\
             partition_key = {{ from = \"regex\", pattern = '{pattern}', fallback = \"static\", fallback_value = \"nokey\" }}\n"
        ),
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // Wait until the checkpoints cover every complete line.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let files = kinetail::state::store::load(&s.state()).unwrap_or_default();
        let done = files.len() == 9
            && files.iter().all(|f| {
                let bytes = std::fs::read(&f.path).unwrap_or_default();
                let end = bytes
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                f.offset == end as u64
            });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints reach every file's last line; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kinesis_records = read_all(&client, "agg").await;
    assert!(
        kinesis_records.len() * 10 < expected.len(),
        "{} lines took {} Kinesis records",
        expected.len(),
        kinesis_records.len()
    );
    assert!(
        kinesis_records
            .iter()
            .all(|r| r.data.len() + r.key.len() <= 1024 * 1024)
    );
    let users = deaggregate(&kinesis_records);
    assert_eq!(
        multiset(users),
        multiset(expected),
        "the de-aggregated records are the lines with their keys"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// A stand-in for STS that answers AssumeRole with fixed credentials and
/// keeps the form bodies it received.
async fn fake_sts() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(testkit::http::serve(
        listener,
        move |req: hyper::Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move {
                // The first call's key is ASIAASSUMEDROLE, the next ones'
                // ASIAASSUMEDROLE2, 3, ...
                let n = log.lock().expect("lock").len() + 1;
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                log.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&body).into_owned());
                let key = match n {
                    1 => String::from("ASIAASSUMEDROLE"),
                    n => format!("ASIAASSUMEDROLE{n}"),
                };
                let xml = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>KEY</AccessKeyId>
      <SecretAccessKey>assumed-secret</SecretAccessKey>
      <SessionToken>assumed-token</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/shipper/kinetail-test</Arn>
      <AssumedRoleId>AROAEXAMPLE:kinetail-test</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>fake-sts</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
                    .replace("KEY", &key);
                Some(testkit::http::response(200, "text/xml", xml))
            }
        },
    ));
    (port, seen)
}

/// Starts kinetail on `flow` (a `[[flow]]` table) through `endpoint`, with
/// `role` added to its `[aws]` table and STS stood in by [`fake_sts`]:
/// the daemon and what STS was asked.
async fn start_with_role(
    s: &Scratch,
    endpoint: &str,
    flow: &str,
    role: &str,
) -> (Daemon, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (sts_port, seen) = fake_sts().await;
    let config = s.config(endpoint, "", flow);
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("[aws]\n", &format!("[aws]\n{role}"));
    std::fs::write(&config, text).expect("config");
    let sts = format!("http://127.0.0.1:{sts_port}");
    let daemon = Daemon::start_with(
        &config,
        &s.path("daemon.log"),
        &[("AWS_ENDPOINT_URL_STS", &sts)],
    );
    (daemon, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_assumes_the_role_with_external_id_and_signs_with_its_credentials() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "role", 1).await;
    let proxy = fault::start(&server.endpoint(), Faults::default()).await;
    let s = Scratch::new();
    std::fs::write(s.logs().join("app.log"), "assumed 1\nassumed 2\n").expect("write");
    let (mut daemon, seen) = start_with_role(
        &s,
        &proxy.endpoint(),
        "[[flow]]\nname = \"r\"\npaths = [\"{logs}/*.log\"]\nstream = \"role\"\nlinger_ms = 20\n",
        "role_arn = \"arn:aws:iam::123456789012:role/shipper\"\nexternal_id = \"ext-1234\"\nrole_session_name = \"kinetail-test\"\n",
    )
    .await;
    let got = wait_for_count(&client, "role", 2, TIMEOUT).await;
    assert_eq!(got.len(), 2, "log:\n{}", daemon.log_text());
    let calls = seen.lock().expect("lock").clone();
    let assume = calls
        .iter()
        .find(|b| b.contains("Action=AssumeRole"))
        .unwrap_or_else(|| panic!("AssumeRole was called: {calls:?}"));
    assert!(
        assume.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fshipper"),
        "{assume}"
    );
    assert!(assume.contains("ExternalId=ext-1234"), "{assume}");
    assert!(assume.contains("RoleSessionName=kinetail-test"), "{assume}");
    let akid = proxy.stats.last_access_key.lock().expect("lock").clone();
    assert_eq!(
        akid.as_deref(),
        Some("ASIAASSUMEDROLE"),
        "PutRecords is signed with the assumed role's credentials"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// The role's first credentials are refused as expired long before the
/// expiry STS gave them (revoked sessions look so): kinetail assumes the
/// role again at once instead of signing with them until they expire, and
/// every line arrives. Default settings but the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_as_expired_are_fetched_again_and_nothing_is_lost() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "expired", 1).await;
    let faults = Faults {
        expired_keys: vec!["ASIAASSUMEDROLE".into()],
        ..Faults::default()
    };
    let proxy = fault::start(&server.endpoint(), faults).await;
    let s = Scratch::new();
    let content = lines("expired", 0, 2_000, 60);
    std::fs::write(s.logs().join("app.log"), &content).expect("write");
    let (mut daemon, seen) = start_with_role(
        &s,
        &proxy.endpoint(),
        "[[flow]]\nname = \"e\"\npaths = [\"{logs}/*.log\"]\nstream = \"expired\"\n",
        "role_arn = \"arn:aws:iam::123456789012:role/shipper\"\n",
    )
    .await;
    let got = wait_for_count(&client, "expired", 2_000, TIMEOUT).await;
    assert_eq!(
        multiset(data_of(&got)),
        multiset(complete_lines(&content)),
        "every line once; log:\n{}",
        daemon.log_tail(30)
    );
    let expired = proxy.stats.calls_expired.load(Ordering::Relaxed);
    assert!(expired >= 1, "the first credentials were refused");
    let assumed = seen.lock().expect("lock").len();
    assert!(
        assumed >= 2,
        "the role was assumed again after the refusal ({assumed} AssumeRole calls)"
    );
    let akid = proxy.stats.last_access_key.lock().expect("lock").clone();
    assert!(
        akid.as_deref()
            .is_some_and(|k| k.starts_with("ASIAASSUMEDROLE") && k != "ASIAASSUMEDROLE"),
        "signed with the new credentials: {akid:?}"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// The endpoint's clock is 15 minutes ahead of the machine's: the first
/// calls are refused as Kinesis refuses them (a signature more than 5
/// minutes off), kinetail signs by the service's `Date` from then on, and
/// every line arrives once, every call signed right. Default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_15_minutes_off_is_corrected_by_the_services_date_and_nothing_is_lost() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "skew", 2).await;
    let faults = Faults {
        clock_ahead: Some(Duration::from_secs(15 * 60)),
        ..Faults::default()
    };
    let proxy = fault::start(&server.endpoint(), faults).await;
    let s = Scratch::new();
    let content = lines("skew", 0, 5_000, 60);
    std::fs::write(s.logs().join("app.log"), &content).expect("write");
    let config = s.config(
        &proxy.endpoint(),
        "",
        "[[flow]]\nname = \"k\"\npaths = [\"{logs}/*.log\"]\nstream = \"skew\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "skew", 5_000, TIMEOUT).await;
    assert_eq!(
        multiset(data_of(&got)),
        multiset(complete_lines(&content)),
        "every line once; log:\n{}",
        daemon.log_tail(30)
    );
    let skewed = proxy.stats.calls_skewed.load(Ordering::Relaxed);
    let calls = proxy.stats.calls.load(Ordering::Relaxed);
    // One refusal per lane at most before the clock is corrected (the
    // lanes' first calls may be in flight together).
    assert!(
        (1..=8).contains(&skewed) && calls > skewed,
        "{skewed} of {calls} calls refused for the clock"
    );
    let invalid = proxy.stats.signatures_invalid.load(Ordering::Relaxed);
    assert_eq!(invalid, 0, "every call signed right");
    assert!(daemon.stop(Duration::from_secs(30)).success());
}
