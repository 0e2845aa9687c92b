//! A node's container logs, made as kubelet and the runtimes make them: a
//! `pods/<namespace>_<pod>_<uid>/<container>/<n>.log` tree of CRI and
//! Docker files, long lines split into partial entries with the other
//! stream's entries between the pieces, kubelet's rename rotation with the
//! older copy gzipped, a pod removed, and a stop while a partial waits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(120);
/// Where containerd and Docker split a long line.
const RUNTIME_PIECE: usize = 16 * 1024;

/// A runtime's file: entries written as containerd (CRI) or Docker's
/// json-file driver write them.
struct RuntimeFile {
    path: PathBuf,
    docker: bool,
    /// The next entry's time, in ns past a fixed second.
    clock: u64,
}

/// One application line as a consumer should see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Want {
    message: String,
    stream: &'static str,
    timestamp: String,
}

impl RuntimeFile {
    fn new(path: PathBuf, docker: bool) -> RuntimeFile {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("pod dir");
        }
        RuntimeFile {
            path,
            docker,
            clock: 0,
        }
    }

    fn time(&mut self) -> (String, String) {
        self.clock += 1_234_567;
        let (s, ns) = (self.clock / 1_000_000_000, self.clock % 1_000_000_000);
        (
            format!("2026-12-04T10:00:{s:02}.{ns:09}Z"),
            format!("2026-12-04T10:00:{s:02}.{:03}Z", ns / 1_000_000),
        )
    }

    /// One entry's text.
    fn entry(&self, time: &str, stream: &str, partial: bool, msg: &str) -> String {
        if self.docker {
            let log = if partial {
                msg.to_string()
            } else {
                format!("{msg}\n")
            };
            let v = serde_json::json!({"log": log, "stream": stream, "time": time});
            format!("{v}\n")
        } else {
            let tag = if partial { "P" } else { "F" };
            format!("{time} {stream} {tag} {msg}\n")
        }
    }

    /// Writes `msg` as the runtime does (in pieces when long), with
    /// `between` written on the other stream after its first piece.
    fn line(&mut self, stream: &'static str, msg: &str, between: Option<&str>) -> Vec<Want> {
        let (time, ms) = self.time();
        let other = if stream == "stdout" {
            "stderr"
        } else {
            "stdout"
        };
        let mut text = String::new();
        let mut wants = vec![Want {
            message: msg.to_string(),
            stream,
            timestamp: ms,
        }];
        let pieces: Vec<&str> = msg
            .as_bytes()
            .chunks(RUNTIME_PIECE)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let (t, _) = if i == 0 {
                (time.clone(), String::new())
            } else {
                self.time()
            };
            text.push_str(&self.entry(&t, stream, !last, piece));
            if i == 0
                && let Some(b) = between
            {
                let (bt, bms) = self.time();
                text.push_str(&self.entry(&bt, other, false, b));
                wants.push(Want {
                    message: b.to_string(),
                    stream: other,
                    timestamp: bms,
                });
            }
        }
        append(&self.path, text.as_bytes());
        wants
    }

    /// Lines `from..to` of `tag`: every seventh long and split, with a
    /// stderr line between its pieces.
    fn lines(&mut self, tag: &str, from: usize, to: usize) -> Vec<Want> {
        let mut wants = Vec::new();
        for i in from..to {
            if i % 7 == 3 {
                let long = format!("{tag} long {i} {}", "L".repeat(40_000));
                let err = format!("{tag} between {i}");
                wants.extend(self.line("stdout", &long, Some(&err)));
            } else {
                wants.extend(self.line("stdout", &format!("{tag} line {i}"), None));
            }
        }
        wants
    }
}

struct Pod {
    namespace: &'static str,
    name: String,
    uid: String,
    dir: PathBuf,
}

impl Pod {
    fn new(root: &Path, namespace: &'static str, n: usize) -> Pod {
        let name = format!("web-{n}-7d4b9c");
        let uid = format!("0f1e2d3c-aaaa-bbbb-cccc-{n:012}");
        let dir = root.join(format!("{namespace}_{name}_{uid}"));
        Pod {
            namespace,
            name,
            uid,
            dir,
        }
    }

    fn file(&self, container: &str, restarts: u32, docker: bool) -> RuntimeFile {
        RuntimeFile::new(
            self.dir.join(container).join(format!("{restarts}.log")),
            docker,
        )
    }
}

/// kubelet's rotation: `N.log` renamed to `N.log.<timestamp>`, a new `N.log`.
fn rotate(file: &mut RuntimeFile, stamp: &str) -> PathBuf {
    let rotated = PathBuf::from(format!("{}.{stamp}", file.path.display()));
    std::fs::rename(&file.path, &rotated).expect("rotate");
    rotated
}

/// kubelet's compression of an older copy: `.gz` beside it, then removed.
fn gzip(path: &Path) {
    use std::io::Write;
    let data = std::fs::read(path).expect("read copy");
    let out = std::fs::File::create(format!("{}.gz", path.display())).expect("gz");
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&data).expect("compress");
    gz.finish().expect("gz end");
    std::fs::remove_file(path).expect("remove copy");
}

/// What arrived, as (message, record) pairs.
fn records(got: &[Got]) -> Vec<(String, Value, String)> {
    got.iter()
        .map(|g| {
            let v: Value = serde_json::from_slice(&g.data)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&g.data)));
            let m = v["message"].as_str().unwrap_or_default().to_string();
            (m, v, g.key.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_container_line_arrives_once_with_its_pod_across_partials_rotation_and_a_stop() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "pods", 2).await;
    let s = Scratch::new();
    let root = s.logs().join("pods");
    // Three CRI pods and two Docker ones, of two namespaces.
    let pods: Vec<Pod> = (0..5)
        .map(|n| Pod::new(&root, if n % 2 == 0 { "shop" } else { "ops" }, n))
        .collect();
    let mut files: Vec<(usize, &'static str, u32, RuntimeFile)> = Vec::new();
    for (n, pod) in pods.iter().enumerate() {
        let docker = n >= 3;
        files.push((n, "app", 0, pod.file("app", 0, docker)));
        files.push((n, "sidecar", 2, pod.file("sidecar", 2, docker)));
    }
    let mut want: Vec<(usize, &'static str, u32, Want)> = Vec::new();
    for (n, c, r, f) in files.iter_mut() {
        let tag = format!("{}/{c}", pods[*n].name);
        for w in f.lines(&tag, 0, 30) {
            want.push((*n, c, *r, w));
        }
    }
    // The flow a DaemonSet runs (packaging/kubernetes): both runtimes'
    // files, kubelet's compressed copies left out, a pod's lines on one
    // shard. Defaults otherwise.
    let config = s.config(
        &server.endpoint(),
        "",
        r#"
[[flow]]
name = "pods"
paths = ["{logs}/pods/*/*/*.log*"]
exclude = ["{logs}/pods/*/*/*.gz"]
stream = "pods"
container_format = "auto"
format = "json"
metadata = ["kubernetes"]
partition_key = { from = "kubernetes", field = "pod_uid" }
"#,
    );
    let log = s.path("daemon.log");
    let mut daemon = Daemon::start(&config, &log);
    let count = |w: &[(usize, &str, u32, Want)]| w.len();
    let got = wait_for_count(&client, "pods", count(&want), TIMEOUT).await;
    assert_eq!(got.len(), count(&want), "log:\n{}", daemon.log_text());

    // kubelet rotates pod 0's app file twice; the older copy is gzipped
    // once its lines are in (kubelet compresses all but the newest copy).
    let (n0, c0, r0) = (0usize, "app", 0u32);
    let first = rotate(&mut files[0].3, "20261204-100000");
    for w in files[0].3.lines("after-rotation", 0, 5) {
        want.push((n0, c0, r0, w));
    }
    let got = wait_for_count(&client, "pods", count(&want), TIMEOUT).await;
    assert_eq!(got.len(), count(&want), "log:\n{}", daemon.log_text());
    let second = rotate(&mut files[0].3, "20261204-100500");
    gzip(&first);
    for w in files[0].3.lines("after-second-rotation", 0, 5) {
        want.push((n0, c0, r0, w));
    }
    // Pod 4 is deleted: its directory goes, after its lines were read.
    std::fs::remove_dir_all(&pods[4].dir).expect("remove pod");
    let got = wait_for_count(&client, "pods", count(&want), TIMEOUT).await;
    assert_eq!(got.len(), count(&want), "log:\n{}", daemon.log_text());
    assert!(second.exists());

    // A stop while a long line waits for its last piece, with a stderr
    // line after its first: after the restart it arrives whole, once.
    // Pod 2's app file (CRI).
    let f = &mut files[4].3;
    let (time, ms) = f.time();
    let head = "P".repeat(RUNTIME_PIECE);
    let first_piece = f.entry(&time, "stdout", true, &head);
    let (et, ems) = f.time();
    let err = f.entry(&et, "stderr", false, "pending stop between");
    append(&f.path, format!("{first_piece}{err}").as_bytes());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = daemon.stop(Duration::from_secs(15));
    assert!(status.success(), "log:\n{}", daemon.log_text());
    let (tt, _) = f.time();
    let tail = f.entry(&tt, "stdout", false, "end");
    append(&f.path, tail.as_bytes());
    want.push((
        2,
        "app",
        0,
        Want {
            message: format!("{head}end"),
            stream: "stdout",
            timestamp: ms,
        },
    ));
    want.push((
        2,
        "app",
        0,
        Want {
            message: "pending stop between".into(),
            stream: "stderr",
            timestamp: ems,
        },
    ));
    let mut daemon = Daemon::start(&config, &log);
    wait_for_count(&client, "pods", count(&want), TIMEOUT).await;
    // A duplicate would come now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = read_all(&client, "pods").await;
    daemon.stop(Duration::from_secs(15));

    let arrived = records(&got);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (m, _, _) in &arrived {
        *seen.entry(m.as_str()).or_default() += 1;
    }
    let mut problems = Vec::new();
    for (n, container, restarts, w) in &want {
        let pod = &pods[*n];
        let found: Vec<&(String, Value, String)> =
            arrived.iter().filter(|(m, _, _)| *m == w.message).collect();
        if found.len() != 1 {
            problems.push(format!("{} times: {:.60}", found.len(), w.message));
            continue;
        }
        let (_, v, key) = found[0];
        let k = &v["kubernetes"];
        let expect = [
            (&v["stream"], Value::from(w.stream)),
            (&v["timestamp"], Value::from(w.timestamp.as_str())),
            (&k["namespace"], Value::from(pod.namespace)),
            (&k["pod"], Value::from(pod.name.as_str())),
            (&k["pod_uid"], Value::from(pod.uid.as_str())),
            (&k["container"], Value::from(*container)),
            (&k["restart_count"], Value::from(*restarts)),
        ];
        for (got, want_v) in expect {
            if *got != want_v {
                problems.push(format!("{:.40}: {got} is not {want_v}", w.message));
            }
        }
        if *key != pod.uid {
            problems.push(format!("{:.40}: key {key}", w.message));
        }
    }
    assert!(
        problems.is_empty() && arrived.len() == want.len(),
        "{} records for {} lines; {} problems, first: {:?}\nlog:\n{}",
        arrived.len(),
        want.len(),
        problems.len(),
        &problems[..problems.len().min(8)],
        daemon.log_text()
    );
}

/// What the API server stand-in saw.
#[derive(Default)]
struct ApiSeen {
    /// Pod lookups by pod name.
    gets: HashMap<String, usize>,
    /// Lookups without the service account's token.
    unauthorized: usize,
}

const API_TOKEN: &str = "sa-token-1";

/// A stand-in for the Kubernetes API server's pod lookups, one behaviour
/// per pod: `web-0` answers at once, `web-1` after 3 s, `web-2` says 403,
/// `web-3` closes the connection unanswered.
async fn api_stand_in(pods: &[Pod]) -> (u16, Arc<Mutex<ApiSeen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(ApiSeen::default()));
    let log = seen.clone();
    let uids: HashMap<String, String> = pods
        .iter()
        .map(|p| (p.name.clone(), p.uid.clone()))
        .collect();
    tokio::spawn(testkit::http::serve(
        listener,
        move |req: hyper::Request<hyper::body::Incoming>| {
            let path = req.uri().path().to_string();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let log = log.clone();
            let uids = uids.clone();
            async move {
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                {
                    let mut seen = log.lock().unwrap_or_else(|e| e.into_inner());
                    *seen.gets.entry(name.clone()).or_default() += 1;
                    if auth.as_deref() != Some(&format!("Bearer {API_TOKEN}")) {
                        seen.unauthorized += 1;
                        return Some(testkit::http::response(401, "application/json", "{}"));
                    }
                }
                let body = serde_json::json!({
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "uid": uids.get(&name).cloned().unwrap_or_default(),
                        "labels": {"app": name.clone(), "team": "payments"},
                        "annotations": {"note": "looked up"},
                    },
                    "spec": {"nodeName": "node-a"},
                })
                .to_string();
                match name.split('-').nth(1) {
                    Some("0") => Some(testkit::http::response(200, "application/json", body)),
                    Some("1") => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        Some(testkit::http::response(200, "application/json", body))
                    }
                    Some("2") => Some(testkit::http::response(
                        403,
                        "application/json",
                        r#"{"reason":"Forbidden"}"#,
                    )),
                    _ => None,
                }
            }
        },
    ));
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_looked_up_once_and_lines_never_wait_long_for_a_slow_forbidden_or_down_api_server()
{
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "looked", 1).await;
    let s = Scratch::new();
    let root = s.logs().join("pods");
    let pods: Vec<Pod> = (0..4).map(|n| Pod::new(&root, "shop", n)).collect();
    let (api_port, seen) = api_stand_in(&pods).await;
    let token = s.path("token");
    std::fs::write(&token, format!("{API_TOKEN}\n")).expect("token");
    let mut files: Vec<RuntimeFile> = pods.iter().map(|p| p.file("app", 0, false)).collect();
    for (n, f) in files.iter_mut().enumerate() {
        f.lines(&format!("first-{n}"), 0, 5);
    }
    let metrics_port = free_port();
    // The API server over plain HTTP at the stand-in, with the token file;
    // annotations asked for (off by default). Defaults otherwise.
    let config = s.config(
        &server.endpoint(),
        &format!(
            "[api]\nlisten = \"127.0.0.1:{metrics_port}\"\n[kubernetes]\napi_url = \"http://127.0.0.1:{api_port}\"\ntoken_file = {:?}\nannotations = true\n",
            token.display().to_string()
        ),
        r#"
[[flow]]
name = "looked"
paths = ["{logs}/pods/*/*/*.log"]
stream = "looked"
container_format = "cri"
format = "json"
metadata = ["kubernetes"]
"#,
    );
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    let first = 4 * 5 + 4; // four pods' five lines, and a stderr line each
    let got = wait_for_count(&client, "looked", first, TIMEOUT).await;
    assert_eq!(got.len(), first, "log:\n{}", daemon.log_text());
    // Nobody waited for the slow lookup beyond about a second.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "first lines took {:?}",
        started.elapsed()
    );
    // Later lines of the slow pod carry what its lookup found.
    tokio::time::sleep(Duration::from_secs(4)).await;
    files[1].lines("later-1", 0, 3);
    files[0].lines("later-0", 0, 3);
    let all = first + 6;
    let got = wait_for_count(&client, "looked", all, TIMEOUT).await;
    assert_eq!(got.len(), all, "log:\n{}", daemon.log_text());
    let metrics = parse_prometheus(&http_get(metrics_port, "/metrics").1);
    daemon.stop(Duration::from_secs(15));

    let arrived = records(&got);
    let of = |prefix: &str| -> Vec<&Value> {
        arrived
            .iter()
            .filter(|(m, _, _)| m.starts_with(prefix))
            .map(|(_, v, _)| v)
            .collect()
    };
    for v in of("web-0")
        .iter()
        .chain(&of("first-0"))
        .chain(&of("later-0"))
        .chain(&of("later-1"))
    {
        let k = &v["kubernetes"];
        assert_eq!(k["node"], "node-a", "{v}");
        assert_eq!(k["labels"]["team"], "payments", "{v}");
        assert_eq!(k["annotations"]["note"], "looked up", "{v}");
        assert!(k["pod_uid"].as_str().is_some_and(|u| !u.is_empty()), "{v}");
    }
    // The slow pod's first lines, the forbidden and the unreachable pods'
    // lines: the path's fields only.
    for prefix in ["first-1", "first-2", "first-3"] {
        let lines = of(prefix);
        assert_eq!(lines.len(), 6, "{prefix}");
        for v in lines {
            let k = &v["kubernetes"];
            assert!(k.get("labels").is_none() && k.get("node").is_none(), "{v}");
            assert_eq!(k["namespace"], "shop", "{v}");
            assert_eq!(k["container"], "app", "{v}");
        }
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(seen.unauthorized, 0, "every lookup carried the token");
    // Once per pod while known (the failed ones are tried again after 30 s,
    // past this test).
    for p in &pods {
        assert_eq!(
            seen.gets.get(&p.name).copied(),
            Some(1),
            "{} looked up once: {:?}",
            p.name,
            seen.gets
        );
    }
    let m = |name: &str| metrics.get(name).copied().unwrap_or(-1.0);
    assert_eq!(m("kinetail_kubernetes_lookups_total"), 2.0);
    assert_eq!(m("kinetail_kubernetes_lookup_failures_total"), 2.0);
    assert_eq!(m("kinetail_kubernetes_lines_without_lookup_total"), 18.0);
    assert!(
        daemon.log_text().contains("HTTP 403"),
        "the refusal is said"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_left_partial_goes_after_the_timeout_and_files_rotated_while_parked_lose_nothing() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "parked", 1).await;
    let s = Scratch::new();
    let root = s.logs().join("pods");
    let pods: Vec<Pod> = (0..4).map(|n| Pod::new(&root, "ops", n)).collect();
    let mut files: Vec<RuntimeFile> = pods.iter().map(|p| p.file("app", 0, n_docker(p))).collect();
    let mut want: Vec<Want> = Vec::new();
    for (n, f) in files.iter_mut().enumerate() {
        want.extend(f.lines(&format!("before-{n}"), 0, 20));
    }
    let port = free_port();
    // Two open files for four pods (max_open_files, default 512): files
    // wait parked for a slot, and kubelet rotates them meanwhile.
    let config = s.config(
        &server.endpoint(),
        &format!("max_open_files = 2\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        r#"
[[flow]]
name = "parked"
paths = ["{logs}/pods/*/*/*.log*"]
stream = "parked"
container_format = "auto"
format = "json"
"#,
    );
    let mut daemon = Daemon::start(&config, &s.path("daemon.log"));
    // Rotated at once, before kinetail read much of them: parked files
    // among them.
    for (n, f) in files.iter_mut().enumerate() {
        rotate(f, "20261204-110000");
        want.extend(f.lines(&format!("after-{n}"), 0, 20));
    }
    let got = wait_for_count(&client, "parked", want.len(), TIMEOUT).await;
    assert_eq!(got.len(), want.len(), "log:\n{}", daemon.log_text());

    // A container stopped mid-line: its last entry is partial, and no
    // entry follows. After the partial timeout (5 s) it goes as it is, a
    // first piece, and is counted.
    let f = &mut files[0];
    let (t, _) = f.time();
    let half = f.entry(&t, "stdout", true, "stopped mid-line");
    append(&f.path, half.as_bytes());
    let got = wait_for_count(&client, "parked", want.len() + 1, TIMEOUT).await;
    let metrics = parse_prometheus(&http_get(port, "/metrics").1);
    daemon.stop(Duration::from_secs(15));
    let arrived = records(&got);
    let partial: Vec<&Value> = arrived
        .iter()
        .filter(|(m, _, _)| m == "stopped mid-line")
        .map(|(_, v, _)| v)
        .collect();
    assert_eq!(partial.len(), 1, "log:\n{}", daemon.log_text());
    assert_eq!(partial[0]["part_index"], 0);
    assert_eq!(partial[0]["part_last"], false);
    assert_eq!(
        metrics.get("kinetail_container_partials_unfinished_total"),
        Some(&1.0)
    );
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (m, _, _) in &arrived {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    let wrong: Vec<String> = want
        .iter()
        .filter(|w| counts.get(w.message.as_str()) != Some(&1))
        .map(|w| format!("{:.40}: {:?}", w.message, counts.get(w.message.as_str())))
        .collect();
    assert!(
        wrong.is_empty() && arrived.len() == want.len() + 1,
        "{} records; {wrong:?}",
        arrived.len()
    );
}

/// Every other pod writes Docker's format.
fn n_docker(p: &Pod) -> bool {
    p.name.starts_with("web-1") || p.name.starts_with("web-3")
}

/// A CA, and a certificate for 127.0.0.1 it signed: the PEM of the CA,
/// and the server's TLS configuration.
fn generated_ca() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes stand-in CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_lookups_go_over_tls_to_kubernetes_service_host_with_the_service_accounts_ca() {
    let server = Kinesalite::start();
    let client = server.client();
    create_stream(&client, "tls", 1).await;
    let s = Scratch::new();
    let pod = Pod::new(&s.logs().join("pods"), "shop", 0);
    let mut file = pod.file("app", 0, false);
    let want = file.lines("tls", 0, 3);
    let (ca_pem, tls) = generated_ca();
    let (ca, token) = (s.path("ca.crt"), s.path("token"));
    std::fs::write(&ca, &ca_pem).expect("ca");
    std::fs::write(&token, API_TOKEN).expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_port = listener.local_addr().expect("addr").port();
    let uid = pod.uid.clone();
    let handshakes = Arc::new(Mutex::new(0usize));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let Ok(stream) = acceptor.accept(tcp).await else {
                continue;
            };
            *counted.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let uid = uid.clone();
            tokio::spawn(testkit::http::serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes() == format!("Bearer {API_TOKEN}").as_bytes());
                    let body = serde_json::json!({
                        "metadata": {"uid": uid.clone(), "labels": {"app": "over-tls"}},
                        "spec": {"nodeName": "node-tls"},
                    })
                    .to_string();
                    async move {
                        Some(match ok {
                            true => testkit::http::response(200, "application/json", body),
                            false => testkit::http::response(401, "application/json", "{}"),
                        })
                    }
                },
            ));
        }
    });
    // No api_url: in-cluster, from the environment kubelet gives a pod.
    // The service account's files are where the test put them.
    let config = s.config(
        &server.endpoint(),
        &format!(
            "[kubernetes]\ntoken_file = {:?}\nca_file = {:?}\n",
            token.display().to_string(),
            ca.display().to_string()
        ),
        r#"
[[flow]]
name = "tls"
paths = ["{logs}/pods/*/*/*.log"]
stream = "tls"
container_format = "cri"
format = "json"
metadata = ["kubernetes"]
"#,
    );
    let port = api_port.to_string();
    let mut daemon = Daemon::start_with(
        &config,
        &s.path("daemon.log"),
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", port.as_str()),
        ],
    );
    let got = wait_for_count(&client, "tls", want.len(), TIMEOUT).await;
    daemon.stop(Duration::from_secs(15));
    let arrived = records(&got);
    assert_eq!(arrived.len(), want.len(), "log:\n{}", daemon.log_text());
    for (_, v, _) in &arrived {
        assert_eq!(
            v["kubernetes"]["labels"]["app"],
            "over-tls",
            "{v}\nlog:\n{}",
            daemon.log_text()
        );
        assert_eq!(v["kubernetes"]["node"], "node-tls", "{v}");
    }
    assert_eq!(*handshakes.lock().unwrap_or_else(|e| e.into_inner()), 1);
    assert!(
        daemon
            .log_text()
            .contains(&format!("https://127.0.0.1:{api_port}")),
        "the in-cluster address is said"
    );
}
