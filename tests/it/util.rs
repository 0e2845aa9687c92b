//! The test harness: a real Kinesis-compatible server (kinesalite, started
//! on a fresh loopback port per test), the kinetail binary run as an
//! operator runs it, and a reader of what the stream holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::ShardIteratorType;

pub const REGION: &str = "us-east-1";

/// The directory of the kinesalite launcher and its node_modules.
fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/server")
}

/// A kinesalite process on 127.0.0.1, stopped when dropped.
pub struct Kinesalite {
    child: Child,
    pub port: u16,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        Self::start_on(0)
    }

    /// Starts on `port` (0 for any free one).
    pub fn start_on(port: u16) -> Kinesalite {
        let dir = server_dir();
        assert!(
            dir.join("node_modules/kinesalite").is_dir(),
            "kinesalite is not installed: run `npm ci --prefix tests/server` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("kinesalite.js"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let stdout = child.stdout.take().expect("kinesalite stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read kinesalite's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("kinesalite did not start: {line:?}"));
        Kinesalite { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Client {
        client_for(&self.endpoint())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn client_for(endpoint: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

pub async fn create_stream(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("describe stream");
        let status = d
            .stream_description_summary()
            .map(|s| s.stream_status().as_str().to_string());
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert!(Instant::now() < deadline, "stream {name} not active");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One record as the stream holds it.
#[derive(Debug, Clone)]
pub struct Got {
    pub shard: String,
    pub key: String,
    pub data: Vec<u8>,
}

/// Every record in the stream, shard by shard, each shard in sequence order.
pub async fn read_all(client: &Client, stream: &str) -> Vec<Got> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let id = shard.shard_id().to_string();
        let it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator");
        let mut iter = it.shard_iterator().map(str::to_string);
        while let Some(i) = iter.take() {
            let page = client
                .get_records()
                .shard_iterator(&i)
                .limit(10_000)
                .send()
                .await
                .expect("get records");
            let recs = page.records();
            if recs.is_empty() {
                break;
            }
            for r in recs {
                out.push(Got {
                    shard: id.clone(),
                    key: r.partition_key().unwrap_or_default().to_string(),
                    data: r.data().as_ref().to_vec(),
                });
            }
            iter = page.next_shard_iterator().map(str::to_string);
        }
    }
    out
}

/// Polls the stream until it holds at least `n` records or `timeout` passes.
pub async fn wait_for_count(
    client: &Client,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Got> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = read_all(client, stream).await;
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads the stream until every one of `want` has arrived (or `timeout`
/// passes), then once more after a pause, so that duplicates still in
/// flight are counted too. A count, not a few quiet seconds: a loaded
/// machine can pause longer than any quiet spell.
pub async fn wait_for_lines(
    client: &Client,
    stream: &str,
    want: &[Vec<u8>],
    timeout: Duration,
) -> Vec<Got> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = read_all(client, stream).await;
        let seen: std::collections::HashSet<&[u8]> =
            got.iter().map(|g| g.data.as_slice()).collect();
        if want.iter().all(|w| seen.contains(w.as_slice())) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    read_all(client, stream).await
}

/// Lines of `bytes` as kinetail ships them: split on `\n`, `\r\n` stripped,
/// a trailing line without `\n` left out.
pub fn complete_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        let mut l = &rest[..i];
        if l.last() == Some(&b'\r') {
            l = &l[..l.len() - 1];
        }
        out.push(l.to_vec());
        rest = &rest[i + 1..];
    }
    out
}

/// Counts of each distinct value.
pub fn multiset<T: std::hash::Hash + Eq + Clone>(
    items: impl IntoIterator<Item = T>,
) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// Where tests that skip themselves say so: `scripts/test.sh` empties it
/// before the run and prints it after the summary, so a skip is seen
/// without `--nocapture`.
pub fn skipped_list() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt")
}

/// Reports that `test` did not check what it is for, and why.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    eprintln!("SKIPPED: {test}: {why}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped_list())
    {
        let _ = writeln!(f, "{test}: {why}");
    }
}

/// The loghub samples, or `None` (reported as a skip of `test`) when the
/// folder is absent.
pub fn loghub_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/loghub");
    if dir.is_dir() {
        Some(dir)
    } else {
        skipped(
            test,
            &format!("{} is absent; the loghub samples are needed", dir.display()),
        );
        None
    }
}

pub use testkit::Scratch;
pub use testkit::kinetail;
pub use testkit::procfs::{cpu_ticks, peak_rss_kib};

/// A daemon's configuration in a scratch directory.
pub trait Configure {
    /// Writes a config with the given `[[flow]]` sections (use `{logs}` for
    /// the log directory) and extra top-level keys. Nothing else is set
    /// beyond the state directory and the endpoint: kinetail runs its
    /// defaults (the checkpoint interval, pacing, the buffer) unless a test
    /// sets (and says why) otherwise.
    fn config(&self, endpoint: &str, top: &str, flows: &str) -> PathBuf;
}

impl Configure for Scratch {
    fn config(&self, endpoint: &str, top: &str, flows: &str) -> PathBuf {
        let text = format!(
            "state_dir = {state:?}\n{top}\n[aws]\nregion = \"{REGION}\"\nendpoint_url = \"{endpoint}\"\n\n{flows}\n",
            state = self.state().display().to_string(),
            flows = flows.replace("{logs}", &self.logs().display().to_string()),
        );
        let path = self.path("kinetail.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }
}

/// The daemon's log file, opened for appending, and its length now.
fn open_log(log: &Path) -> (std::fs::File, u64) {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("daemon log");
    let from = out.metadata().map(|m| m.len()).unwrap_or(0);
    (out, from)
}

/// `kinetail ARGS --config CONFIG`, run to its end.
pub fn cli(args: &[&str], config: &Path) -> std::process::Output {
    kinetail()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run kinetail")
}

/// The kinetail binary, run as an operator would.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    /// The log's length when this daemon started (the file may hold the
    /// logs of earlier runs).
    pub log_from: u64,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        Self::start_with(config, log, &[])
    }

    pub fn start_with(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
        let (out, log_from) = open_log(log);
        let child = kinetail()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start kinetail");
        Daemon {
            child,
            log: log.to_path_buf(),
            log_from,
        }
    }

    /// Starts the daemon after `setup` in a shell (`ulimit -n 1024`,
    /// `umask 000`), which then execs kinetail: the child is kinetail.
    pub fn start_after(config: &Path, log: &Path, setup: &str) -> Daemon {
        let (out, log_from) = open_log(log);
        let bin = kinetail().get_program().to_owned();
        let cmd = kinetail();
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("{setup}; exec \"$0\" run --config \"$1\""))
            .arg(bin)
            .arg(config)
            .envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start kinetail in a shell");
        Daemon {
            child,
            log: log.to_path_buf(),
            log_from,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// SIGTERM, then the exit status (waits up to `timeout`).
    /// A graceful stop: SIGTERM once the daemon is running (a signal that
    /// comes before its handlers are installed ends it by the signal), then
    /// waits for it to exit.
    pub fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.wait_running(timeout);
        self.signal("TERM");
        self.wait(timeout)
    }

    /// Waits until this daemon has logged that it runs, or has exited.
    pub fn wait_running(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let text = std::fs::read(&self.log).unwrap_or_default();
            let mine = text.get(self.log_from as usize..).unwrap_or_default();
            if String::from_utf8_lossy(mine).contains("kinetail running")
                || matches!(self.child.try_wait(), Ok(Some(_)))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "kinetail did not exit in {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the daemon's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How what arrived compares with what was written, line by line.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Lines written that never arrived.
    pub missing: usize,
    /// Extra copies of lines that arrived more than once.
    pub duplicates: usize,
    /// Records that are not a line that was written (pieces, garbage).
    pub foreign: usize,
    /// A few examples of each, for failure messages.
    pub examples: Vec<String>,
}

impl Delivery {
    pub fn of(
        got: impl IntoIterator<Item = Vec<u8>>,
        want: impl IntoIterator<Item = Vec<u8>>,
    ) -> Delivery {
        let got = multiset(got);
        let want = multiset(want);
        let mut d = Delivery::default();
        let example = |what: &str, k: &[u8], examples: &mut Vec<String>| {
            if examples.len() < 9 {
                let text = String::from_utf8_lossy(&k[..k.len().min(60)]).into_owned();
                examples.push(format!("{what}: {text:?}"));
            }
        };
        for (k, n) in &want {
            let g = got.get(k).copied().unwrap_or(0);
            if g < *n {
                d.missing += n - g;
                example("missing", k, &mut d.examples);
            } else if g > *n {
                d.duplicates += g - n;
                example("twice", k, &mut d.examples);
            }
        }
        for (k, n) in &got {
            if !want.contains_key(k) {
                d.foreign += n;
                example("not written", k, &mut d.examples);
            }
        }
        d
    }

    pub fn exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.foreign == 0
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} missing, {} duplicates, {} not written; {:?}",
            self.missing, self.duplicates, self.foreign, self.examples
        )
    }
}

/// GETs `path` from the API with a plain HTTP/1.0 request.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).expect("the API answers")
}

/// The same, `None` while nothing listens (a daemon still starting).
pub fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Prometheus text: (name with labels) -> value.
pub fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line: {l:?}"));
            (
                name.to_string(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("a number: {l:?}")),
            )
        })
        .collect()
}

/// A loopback port free now (for the API of a daemon about to start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Numbered lines of about 100 bytes: `TAG line 00000012 xxx...`.
pub fn numbered_lines(tag: &str, from: usize, to: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..to {
        writeln!(out, "{tag} line {i:08} {}", "x".repeat(70)).expect("write to vec");
    }
    out
}

pub fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

pub fn data_of(got: &[Got]) -> Vec<Vec<u8>> {
    got.iter().map(|g| g.data.clone()).collect()
}

/// `kinetail status --json` for a configuration.
pub fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = kinetail()
        .arg("status")
        .arg("--json")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// The dead-letter entries of one file: (start, end, reason, bytes).
pub fn dead_letters(state: &Path, file: &Path) -> Vec<(u64, u64, String, Vec<u8>)> {
    use base64::Engine;
    let text = std::fs::read_to_string(state.join("dead-letter.jsonl")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("dead-letter lines are JSON");
        if v["path"] != file.display().to_string() {
            continue;
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data_base64"].as_str().expect("data"))
            .expect("base64");
        out.push((
            v["start_offset"].as_u64().expect("start"),
            v["end_offset"].as_u64().expect("end"),
            v["reason"].as_str().expect("reason").to_string(),
            data,
        ));
    }
    out.sort_by_key(|e| e.0);
    out
}

/// Polls `check` every 50 ms until it gives a value; after `timeout`,
/// fails the test saying `what` was awaited.
pub async fn eventually<T>(
    timeout: Duration,
    what: impl std::fmt::Display,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches what arrived every `every` until it holds every line of `want`,
/// or `timeout` passes; returns how many of `want` are missing then, and
/// what was fetched last.
pub async fn until_all_arrived(
    want: &std::collections::HashSet<Vec<u8>>,
    timeout: Duration,
    every: Duration,
    mut fetch: impl AsyncFnMut() -> Vec<Vec<u8>>,
) -> (usize, Vec<Vec<u8>>) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = fetch().await;
        let have: std::collections::HashSet<&Vec<u8>> = got.iter().collect();
        let missing = want.iter().filter(|l| !have.contains(l)).count();
        if missing == 0 || Instant::now() > deadline {
            return (missing, got);
        }
        tokio::time::sleep(every).await;
    }
}

impl Daemon {
    /// Waits until this daemon's log holds `text`; fails with the log after
    /// `timeout`.
    pub async fn logged(&self, text: &str, timeout: Duration) {
        let what = format!("{text:?} in the log");
        eventually(timeout, &what, async || {
            self.log_text().contains(text).then_some(())
        })
        .await;
    }
}
