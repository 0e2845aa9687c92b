//! Record shaping end to end: the JSON envelope, parsed JSON lines, static
//! fields from the environment, line filters with checkpoints, cloud
//! metadata from stand-ins of IMDSv2 and the ECS endpoint, and compressed
//! aggregates decoded by independent decoders.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(120);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn json_records(got: &[Got]) -> Vec<Value> {
    got.iter()
        .map(|g| {
            serde_json::from_slice(&g.data).unwrap_or_else(|e| {
                panic!(
                    "record is not JSON ({e}): {}",
                    String::from_utf8_lossy(&g.data)
                )
            })
        })
        .collect()
}

/// The exact bytes of a record's line: `message_base64` when it is there.
fn line_of(v: &Value) -> Vec<u8> {
    use base64::Engine;
    match v.get("message_base64").and_then(Value::as_str) {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("message_base64 is base64"),
        None => v["message"]
            .as_str()
            .expect("message is a string")
            .as_bytes()
            .to_vec(),
    }
}

/// Waits until the store holds `offset` for `file`.
async fn saved(s: &Scratch, file: &std::path::Path, offset: u64, daemon: &Daemon) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let files = kinetail::state::store::load(&s.state()).unwrap_or_default();
        if files.iter().any(|f| f.path == file && f.offset == offset) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint of {} reaches {offset}: {files:?}; log:\n{}",
            file.display(),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_envelopes_carry_every_field_for_two_files_a_renamed_one_and_the_environment() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "env", 2).await;
    let s = Scratch::new();
    let port = free_port();
    let a: &[u8] = b"plain line one\n{\"level\":\"warn\",\"n\":1e3,\"host\":\"inner\",\"deep\":{\"x\":[1,2.50]}}\ncaf\xe9 \xff bytes\n";
    let b: &[u8] = b"b first\n";
    std::fs::write(s.logs().join("a.log"), a).expect("write a");
    std::fs::write(s.logs().join("b.log"), b).expect("write b");
    // Defaults otherwise: the JSON envelope with its default key names.
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        r#"
[[flow]]
name = "env"
paths = ["{logs}/*.log"]
stream = "env"
format = "json"
parse = "json"
fields = { pod = "${TEST_POD_NAME}", env = "prod" }
"#,
    );
    let started = std::time::SystemTime::now();
    let mut daemon = Daemon::start_with(
        &config,
        &s.path("daemon.log"),
        &[("TEST_POD_NAME", "pod-7")],
    );
    let got = wait_for_count(&client, "env", 4, TIMEOUT).await;
    assert_eq!(got.len(), 4, "log:\n{}", daemon.log_text());

    // The renamed file's next line names its new path.
    std::fs::rename(s.logs().join("b.log"), s.logs().join("c.log")).expect("rename");
    let renamed = s.logs().join("c.log");
    eventually(TIMEOUT, "the store shows the new path", async || {
        let files = kinetail::state::store::load(&s.state()).unwrap_or_default();
        files.iter().any(|f| f.path == renamed).then_some(())
    })
    .await;
    append(&s.logs().join("c.log"), b"after rename\n");
    let got = wait_for_count(&client, "env", 5, TIMEOUT).await;
    assert_eq!(got.len(), 5, "log:\n{}", daemon.log_text());

    let records = json_records(&got);
    let by_line: HashMap<Vec<u8>, &Value> = records
        .iter()
        .map(|v| {
            let key = if v.get("level").is_some() {
                b"<json>".to_vec()
            } else {
                line_of(v)
            };
            (key, v)
        })
        .collect();
    let logs = s.logs().display().to_string();
    let host = hostname();
    let window = started..std::time::SystemTime::now();
    for (line, path, offset) in [
        (&b"plain line one"[..], "a.log", 0),
        (b"<json>", "a.log", 15),
        (b"caf\xe9 \xff bytes", "a.log", 15 + 62),
        (b"b first", "b.log", 0),
        (b"after rename", "c.log", 8),
    ] {
        let v = by_line.get(line).unwrap_or_else(|| {
            panic!(
                "a record of {:?}: {records:?}",
                String::from_utf8_lossy(line)
            )
        });
        assert_eq!(v["path"], format!("{logs}/{path}"), "{v}");
        assert_eq!(v["offset"], offset, "{v}");
        assert_eq!(v["flow"], "env");
        assert_eq!(v["host"], host.as_str(), "the envelope's host wins: {v}");
        assert_eq!(v["fields"]["pod"], "pod-7", "from the environment");
        assert_eq!(v["fields"]["env"], "prod");
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.ends_with('Z') && ts.len() == 24,
            "RFC 3339 UTC with ms: {ts}"
        );
        let t = humantime::parse_rfc3339(ts).expect("timestamp parses");
        assert!(
            t + Duration::from_millis(1) >= window.start && t <= window.end,
            "read during the test: {ts}"
        );
    }
    // The JSON line is merged as written; the invalid bytes kept exactly.
    let json = by_line[&b"<json>".to_vec()];
    assert!(json.get("message").is_none(), "{json}");
    assert_eq!(json["level"], "warn");
    let raw = got
        .iter()
        .map(|g| String::from_utf8_lossy(&g.data).into_owned())
        .find(|t| t.contains("\"level\""))
        .unwrap_or_default();
    assert!(
        raw.contains(r#""n":1e3"#) && raw.contains(r#""deep":{"x":[1,2.50]}"#),
        "numbers stay as written: {raw}"
    );
    let bad = by_line[&b"caf\xe9 \xff bytes".to_vec()];
    assert_eq!(bad["message"], "caf\u{fffd} \u{fffd} bytes");
    let m = parse_prometheus(&http_get(port, "/metrics").1);
    assert_eq!(
        m.get("kinetail_parse_failures_total"),
        Some(&4.0),
        "plain, invalid, b first, after rename"
    );
    assert_eq!(m.get("kinetail_parse_collisions_total"), Some(&1.0), "host");
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loghub_lines_in_json_envelopes_give_back_every_line_and_its_offset() {
    let Some(src) =
        loghub_dir("loghub_lines_in_json_envelopes_give_back_every_line_and_its_offset")
    else {
        return;
    };
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "lh", 4).await;
    let s = Scratch::new();
    let mut expected = 0;
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in std::fs::read_dir(&src).expect("loghub") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let bytes = std::fs::read(&path).expect("read");
            let to = s.logs().join(path.file_name().expect("name"));
            std::fs::write(&to, &bytes).expect("copy");
            expected += complete_lines(&bytes).len();
            files.insert(to.display().to_string(), bytes);
        }
    }
    // A line of invalid UTF-8 beside them.
    let odd = s.logs().join("odd.log");
    std::fs::write(&odd, b"ok\n\xc3\x28 broken \xa0\xa1\n").expect("write");
    files.insert(
        odd.display().to_string(),
        std::fs::read(&odd).expect("read"),
    );
    expected += 2;
    // 4 shards: pacing (the default) ships the backlog in a few seconds.
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"lh\"\npaths = [\"{logs}/*.log\"]\nstream = \"lh\"\nformat = \"json\"\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let got = wait_for_count(&client, "lh", expected, TIMEOUT).await;
    assert_eq!(got.len(), expected, "log:\n{}", daemon.log_text());
    for v in json_records(&got) {
        let path = v["path"].as_str().expect("path");
        let offset = v["offset"].as_u64().expect("offset") as usize;
        let bytes = &files[path];
        // The line at that offset, as kinetail ships it (CRLF stripped).
        let end = bytes[offset..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| offset + i)
            .expect("a complete line");
        let mut line = &bytes[offset..end];
        if line.ends_with(b"\r") {
            line = &line[..line.len() - 1];
        }
        assert_eq!(line_of(&v), line, "{path}@{offset}");
        assert_eq!(
            v.get("message_base64").is_some(),
            std::str::from_utf8(line).is_err(),
            "base64 exactly when the line is not UTF-8: {path}@{offset}"
        );
    }
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_lines_count_as_done_and_are_not_sent_again_after_a_restart() {
    let server = Kinesalite::start();
    let client = server.client();
    // (Not "filter": kinesalite keeps streams in an object keyed by name,
    // and that name is one of its methods.)
    create_stream(&client, "filtered", 1).await;
    let s = Scratch::new();
    let port = free_port();
    let file = s.logs().join("app.log");
    // The file ends with lines that are all filtered: the watermark must
    // still reach its end.
    let first: &[u8] = b"keep 1\ndrop 1\nkeep secret 1\nkeep 2\ndrop 2\ndrop 3\n";
    std::fs::write(&file, first).expect("write");
    let config = s.config(
        &server.endpoint(),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        r#"
[[flow]]
name = "filter"
paths = ["{logs}/*.log"]
stream = "filtered"
include_lines = ["^keep"]
exclude_lines = ["secret"]
"#,
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    saved(&s, &file, first.len() as u64, &daemon).await;
    let m = parse_prometheus(&http_get(port, "/metrics").1);
    assert_eq!(m.get("kinetail_lines_filtered_total"), Some(&4.0));
    assert!(daemon.stop(Duration::from_secs(30)).success());

    append(&file, b"drop 4\nkeep 3\n");
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let total = first.len() as u64 + 14;
    saved(&s, &file, total, &daemon).await;
    let got = read_all(&client, "filtered").await;
    assert_eq!(
        data_of(&got),
        vec![b"keep 1".to_vec(), b"keep 2".to_vec(), b"keep 3".to_vec()],
        "kept lines once each, filtered lines never; log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// What the metadata stand-in saw.
#[derive(Default, Debug)]
struct Seen {
    token_puts: usize,
    /// GETs of instance metadata without a valid token (answered 401).
    unauthorized: usize,
    gets: usize,
    ecs_gets: usize,
}

const TOKEN: &str = "stand-in-token";

/// A stand-in for the EC2 instance metadata service (IMDSv2: a session
/// token from `PUT /latest/api/token` with a TTL header, 401 without it) and
/// for the ECS task metadata endpoint v4 under `/v4/abc`. With `silent`,
/// it accepts connections and never answers (IMDS past a container's hop
/// limit looks like this).
async fn metadata_stand_in(silent: bool) -> (u16, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let gate = move || {
        if silent {
            testkit::http::Admit::Hold
        } else {
            testkit::http::Admit::Serve
        }
    };
    tokio::spawn(testkit::http::serve_gated(
        listener,
        gate,
        move |req: hyper::Request<hyper::body::Incoming>| {
            let answer = metadata_answer(&log, &req);
            async move { Some(answer) }
        },
    ));
    (port, seen)
}

/// What the metadata stand-in answers `req`, counted in `log`.
fn metadata_answer(
    log: &Mutex<Seen>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = header("x-aws-ec2-metadata-token");
    let ttl = header("x-aws-ec2-metadata-token-ttl-seconds");
    let mut seen = log.lock().expect("lock");
    let (status, body, ttl_back) = if path.starts_with("/v4/abc") {
        seen.ecs_gets += 1;
        match path.as_str() {
            "/v4/abc/task" => (200, r#"{"Cluster":"arn:aws:ecs:eu-west-1:111122223333:cluster/prod","TaskARN":"arn:aws:ecs:eu-west-1:111122223333:task/prod/0a1b","Family":"shop","Revision":"12","AvailabilityZone":"eu-west-1b","LaunchType":"FARGATE"}"#.to_string(), None),
            "/v4/abc" => (200, r#"{"DockerId":"c0ffee","Name":"app","Image":"shop:1.2"}"#.to_string(), None),
            _ => (404, String::new(), None),
        }
    } else if req.method() == hyper::Method::PUT && path == "/latest/api/token" {
        match ttl {
            Some(t) => {
                seen.token_puts += 1;
                (200, TOKEN.to_string(), Some(t))
            }
            None => (400, String::new(), None),
        }
    } else if token.as_deref() != Some(TOKEN) {
        seen.unauthorized += 1;
        (401, String::new(), None)
    } else {
        seen.gets += 1;
        match path.as_str() {
            "/latest/dynamic/instance-identity/document" => (200, r#"{"accountId":"111122223333","architecture":"x86_64","availabilityZone":"eu-west-1a","imageId":"ami-0123","instanceId":"i-0abc123","instanceType":"m7g.large","privateIp":"10.1.2.3","region":"eu-west-1"}"#.to_string(), None),
            "/latest/meta-data/tags/instance" => (200, "Name\nteam".to_string(), None),
            "/latest/meta-data/tags/instance/Name" => (200, "web-7".to_string(), None),
            "/latest/meta-data/tags/instance/team" => (200, "payments \"core\"".to_string(), None),
            _ => (404, String::new(), None),
        }
    };
    let mut resp = testkit::http::response(status, "text/plain", body);
    if let Some(t) = ttl_back.and_then(|t| hyper::header::HeaderValue::from_str(&t).ok()) {
        resp.headers_mut()
            .insert("x-aws-ec2-metadata-token-ttl-seconds", t);
    }
    resp
}

fn metadata_config(s: &Scratch, endpoint: &str) -> std::path::PathBuf {
    s.config(
        endpoint,
        "",
        r#"
[[flow]]
name = "meta"
paths = ["{logs}/*.log"]
stream = "meta"
format = "json"
metadata = ["ec2", "ecs"]
metadata_tags = true
"#,
    )
}

/// The daemon, with IMDS at `imds_port` and the ECS endpoint v4 at
/// `ecs_port` (both on loopback).
fn start_with_metadata(
    s: &Scratch,
    config: &std::path::Path,
    imds_port: u16,
    ecs_port: u16,
) -> Daemon {
    let imds = format!("http://127.0.0.1:{imds_port}");
    let ecs = format!("http://127.0.0.1:{ecs_port}/v4/abc");
    Daemon::start_with(
        config,
        &s.path("daemon.log"),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
            ("ECS_CONTAINER_METADATA_URI_V4", ecs.as_str()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_ec2_metadata_through_imdsv2_tokens_and_ecs_task_metadata() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "meta", 1).await;
    let (port, seen) = metadata_stand_in(false).await;
    let s = Scratch::new();
    std::fs::write(s.logs().join("a.log"), b"one\ntwo\n").expect("write");
    let config = metadata_config(&s, &server.endpoint());
    let mut daemon = start_with_metadata(&s, &config, port, port);
    let got = wait_for_count(&client, "meta", 2, TIMEOUT).await;
    assert_eq!(got.len(), 2, "log:\n{}", daemon.log_text());
    for v in json_records(&got) {
        let c = &v["cloud"];
        assert_eq!(c["provider"], "aws", "{v}");
        assert_eq!(c["instance_id"], "i-0abc123");
        assert_eq!(c["instance_type"], "m7g.large");
        assert_eq!(c["region"], "eu-west-1");
        assert_eq!(c["availability_zone"], "eu-west-1a");
        assert_eq!(c["account_id"], "111122223333");
        assert_eq!(c["private_ip"], "10.1.2.3");
        assert_eq!(c["tags"]["Name"], "web-7");
        assert_eq!(c["tags"]["team"], "payments \"core\"");
        assert_eq!(
            c["ecs"]["cluster"],
            "arn:aws:ecs:eu-west-1:111122223333:cluster/prod"
        );
        assert_eq!(
            c["ecs"]["task_arn"],
            "arn:aws:ecs:eu-west-1:111122223333:task/prod/0a1b"
        );
        assert_eq!(c["ecs"]["family"], "shop");
        assert_eq!(c["ecs"]["container_name"], "app");
        assert_eq!(c["ecs"]["launch_type"], "FARGATE");
    }
    {
        let seen = seen.lock().expect("lock");
        assert!(
            seen.token_puts >= 1,
            "a session token was asked for: {seen:?}"
        );
        assert_eq!(
            seen.unauthorized, 0,
            "every metadata GET carried the token: {seen:?}"
        );
        assert!(seen.gets >= 4 && seen.ecs_gets >= 2, "{seen:?}");
    }
    assert!(
        !daemon.log_text().contains("cannot read cloud metadata"),
        "log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_metadata_is_reported_once_and_records_ship_without_it() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "meta", 1).await;
    // IMDS that never answers (a hop limit of 1 seen from a container),
    // and an ECS endpoint where nothing listens.
    let (silent, _) = metadata_stand_in(true).await;
    let closed = free_port();
    let s = Scratch::new();
    std::fs::write(s.logs().join("a.log"), b"one\ntwo\n").expect("write");
    let config = metadata_config(&s, &server.endpoint());
    let mut daemon = start_with_metadata(&s, &config, silent, closed);
    let got = wait_for_count(&client, "meta", 2, TIMEOUT).await;
    assert_eq!(
        got.len(),
        2,
        "records ship anyway; log:\n{}",
        daemon.log_text()
    );
    for v in json_records(&got) {
        assert!(v.get("cloud").is_none(), "{v}");
        assert!(v["message"].is_string());
    }
    let log = daemon.log_text();
    assert_eq!(
        log.matches("cannot read cloud metadata").count(),
        2,
        "one warning per source; log:\n{log}"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_aggregates_decode_with_python_gzip_then_aws_kinesis_agg() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "gz", 4).await;
    let s = Scratch::new();
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    let mut text = Vec::new();
    for i in 0..20_000 {
        let line = format!(
            "{i:06} user-{} GET /api/items/{} 200 {} ms",
            i % 97,
            i * 31 % 5000,
            i % 400
        );
        expected.push((format!("user-{}", i % 97), line.clone().into_bytes()));
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    std::fs::write(s.logs().join("app.log"), &text).expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        r#"
[[flow]]
name = "gz"
paths = ["{logs}/*.log"]
stream = "gz"
aggregate = true
compression = "gzip"
partition_key = { from = "regex", pattern = '(user-\d+)', fallback = "random" }
"#,
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    saved(&s, &s.logs().join("app.log"), text.len() as u64, &daemon).await;
    let records = read_all(&client, "gz").await;
    assert!(
        records.iter().all(|r| r.data.starts_with(&[0x1f, 0x8b])),
        "every record is gzip"
    );
    let sent: usize = records.iter().map(|r| r.data.len()).sum();
    assert!(
        sent * 4 < text.len(),
        "{sent} bytes sent for {} read",
        text.len()
    );
    let users = crate::delivery::deaggregate_with(&records, &["--gunzip"]);
    assert_eq!(
        multiset(users),
        multiset(expected),
        "decompressed and de-aggregated, the records are the lines with their keys"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_records_decode_to_their_envelopes_keyed_by_the_line_and_split_lines_say_their_part() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "zs", 1).await;
    let s = Scratch::new();
    // 200 lines, then one of 2,500,000 bytes: its envelope would pass
    // 1 MiB, so it goes in pieces (each as long as a record holds of a
    // line that needs no escaping).
    let long = vec![b'x'; 2_500_000];
    let mut text = numbered_lines("z", 0, 200);
    text.extend_from_slice(&long);
    text.push(b'\n');
    std::fs::write(s.logs().join("a.log"), &text).expect("write");
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"zs\"\npaths = [\"{logs}/*.log\"]\nstream = \"zs\"\nformat = \"json\"\ncompression = \"zstd\"\n\
         partition_key = { from = \"deterministic\" }\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let pieces = 2_500_000usize.div_ceil(kinetail::lines::shaping::max_line_piece(
        &kinetail::config::Settings::from_toml(
            &config,
            &std::fs::read_to_string(&config).expect("config"),
        )
        .expect("settings")
        .flows[0],
    ));
    assert!(pieces >= 3, "{pieces} pieces");
    let got = wait_for_count(&client, "zs", 200 + pieces, TIMEOUT).await;
    assert_eq!(got.len(), 200 + pieces, "log:\n{}", daemon.log_text());
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut parts: Vec<(u64, bool, Vec<u8>)> = Vec::new();
    for g in &got {
        let plain = zstd::stream::decode_all(&g.data[..]).expect("zstd");
        let v: Value = serde_json::from_slice(&plain).expect("json");
        let line = line_of(&v);
        match v.get("part_index") {
            Some(i) => parts.push((i.as_u64().expect("index"), v["part_last"] == true, line)),
            None => {
                // The key is the MD5 of the line, not of its envelope.
                use md5::Digest;
                let md5: String = md5::Md5::digest(&line)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(g.key, md5, "{}", String::from_utf8_lossy(&line));
                messages.push(line);
            }
        }
    }
    messages.sort();
    let mut expected = complete_lines(&numbered_lines("z", 0, 200));
    expected.sort();
    assert_eq!(messages, expected);
    parts.sort();
    let indexes: Vec<u64> = parts.iter().map(|p| p.0).collect();
    assert_eq!(indexes, (0..pieces as u64).collect::<Vec<_>>());
    assert!(
        parts.iter().all(|p| p.1 == (p.0 + 1 == pieces as u64)),
        "only the last piece says it is"
    );
    assert_eq!(
        parts.into_iter().flat_map(|p| p.2).collect::<Vec<u8>>(),
        long
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregated_backlog_costs_whole_put_payload_units() {
    let Some(src) = loghub_dir("an_aggregated_backlog_costs_whole_put_payload_units") else {
        return;
    };
    let server = Kinesalite::start();
    let client = server.client();
    let shards = 4;
    create_stream(&client, "units", shards).await;
    let s = Scratch::new();
    let mut total = 0u64;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).expect("loghub") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let to = s.logs().join(path.file_name().expect("name"));
            std::fs::copy(&path, &to).expect("copy");
            files.push(to);
        }
    }
    let generated = s.logs().join("generated.log");
    let lines = numbered_lines(
        "a generated line of about a hundred bytes, padded out with text to look like a log",
        0,
        30_000,
    );
    std::fs::write(&generated, &lines).expect("write");
    files.push(generated);
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"units\"\npaths = [\"{logs}/*.log\"]\nstream = \"units\"\naggregate = true\n",
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        total += end as u64;
        saved(&s, f, end as u64, &daemon).await;
    }
    let records = read_all(&client, "units").await;
    let bytes: usize = records.iter().map(|r| r.data.len() + r.key.len()).sum();
    let units: usize = records
        .iter()
        .map(|r| (r.data.len() + r.key.len()).div_ceil(25_000))
        .sum();
    let floor = bytes as f64 / 25_000.0;
    println!(
        "{total} bytes read, {} Kinesis records, {bytes} bytes sent: {units} PUT payload units for {floor:.1} units of data",
        records.len()
    );
    // A partial aggregate per shard at the very end is allowed.
    assert!(
        units as f64 <= floor * 1.05 + shards as f64,
        "{units} units for {floor:.1} units of data"
    );
    assert!(daemon.stop(Duration::from_secs(30)).success());
}

/// `id_key`: the same line keeps its id across kill -9 and a rename, so a
/// consumer that drops records whose id it has seen gets every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_ids_make_a_kill_9_loop_exactly_once_for_a_consumer() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "ids", 2).await;
    let s = Scratch::new();
    let app = s.logs().join("app.log");
    std::fs::write(&app, numbered_lines("first", 0, 20_000)).expect("write");
    // Defaults but the envelope with ids (off by default).
    let config = s.config(
        &server.endpoint(),
        "",
        "[[flow]]\nname = \"app\"\npaths = [\"{logs}/app.log*\"]\nstream = \"ids\"\nformat = \"json\"\nid_key = \"id\"\n",
    );
    let mut written = complete_lines(&std::fs::read(&app).expect("read"));
    let mut daemon = Daemon::start(&config, &s.path("daemon0.log"));
    wait_for_count(&client, "ids", 3_000, Duration::from_secs(60)).await;
    daemon.kill9();
    // Rotated by a rename while kinetail was down; a new file takes its name.
    std::fs::rename(&app, s.logs().join("app.log.1")).expect("rename");
    let more = numbered_lines("second", 0, 10_000);
    std::fs::write(&app, &more).expect("write");
    written.extend(complete_lines(&more));
    let mut daemon = Daemon::start(&config, &s.path("daemon1.log"));
    let seen = read_all(&client, "ids").await.len();
    wait_for_count(&client, "ids", seen + 5_000, Duration::from_secs(60)).await;
    daemon.kill9();
    let mut daemon = Daemon::start(&config, &s.path("daemon2.log"));
    let want: HashSet<Vec<u8>> = written.iter().cloned().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let got = loop {
        let got = json_records(&read_all(&client, "ids").await);
        let have: HashSet<Vec<u8>> = got.iter().map(line_of).collect();
        if want.is_subset(&have) || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(daemon.stop(Duration::from_secs(30)).success());
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    let mut id_of: HashMap<Vec<u8>, String> = HashMap::new();
    for r in &got {
        let id = r["id"]
            .as_str()
            .expect("every record has an id")
            .to_string();
        assert_eq!(id.len(), 36, "fixed length: {id}");
        let line = line_of(r);
        if let Some(before) = by_id.insert(id.clone(), line.clone()) {
            assert_eq!(before, line, "an id is one line's");
        }
        if let Some(before) = id_of.insert(line.clone(), id.clone()) {
            assert_eq!(before, id, "a line sent twice has the same id");
        }
    }
    eprintln!("{} records for {} lines", got.len(), want.len());
    let deduplicated: Vec<Vec<u8>> = by_id.into_values().collect();
    assert_eq!(
        multiset(deduplicated),
        multiset(written),
        "dropping seen ids leaves every line once ({} records for {} lines)",
        got.len(),
        want.len()
    );
}
