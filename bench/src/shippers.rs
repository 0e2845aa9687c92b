//! What a scenario runs: generated logs, and the shipper on them (kinetail
//! on its defaults but what the scenario sets, or another shipper's
//! command).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The kind of lines a scenario ships.
#[derive(Clone, Copy, PartialEq)]
pub enum Lines {
    Text,
    Json,
    /// Text lines padded to 2,048 bytes (a shard's bytes bind before its
    /// records do).
    Long,
    /// Apache/Nginx combined access lines.
    Access,
    /// Syslog lines, the BSD form.
    Syslog,
    /// logfmt lines.
    Logfmt,
    /// The `Text` lines as containerd writes them (CRI entries), spread
    /// over [`PODS`] pods' files in kubelet's tree (`logs/pods/...`).
    Cri,
}

/// The pods of a [`Lines::Cri`] backlog.
pub const PODS: u64 = 100;

/// Writes `n` lines of `kind` to `path` (about 100 bytes, but `Long`;
/// `Cri` lines go to the pods' files beside it instead).
pub fn generate(path: &Path, n: u64, kind: Lines) -> std::io::Result<u64> {
    if kind == Lines::Cri {
        return generate_pods(path.parent().unwrap_or(path), n);
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0;
    for i in 0..n {
        let (m, s, ms) = ((i / 60_000) % 60, (i / 1000) % 60, i % 1000);
        let line = match kind {
            Lines::Long => {
                let mut l = format!("2026-11-25T10:{m:02}:{s:02}.{ms:03}Z request {i:010} ");
                l.extend(std::iter::repeat_n('x', 2_047 - l.len()));
                l.push('\n');
                l
            }
            Lines::Text => format!(
                "2026-11-25T10:{m:02}:{s:02}.{ms:03}Z host-{} app[{}]: request {i:010} served in {} ms status 200 path /api/v1/items\n",
                i % 7,
                1000 + i % 97,
                i % 250
            ),
            Lines::Access => format!(
                "10.0.{}.{} - - [25/Nov/2026:10:{m:02}:{s:02} +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"curl/8.5\"\n",
                i % 7,
                i % 250,
                i % 5000
            ),
            Lines::Syslog => format!(
                "Nov 25 10:{m:02}:{s:02} host-{} app[{}]: request {i:010} served in {} ms\n",
                i % 7,
                1000 + i % 97,
                i % 250
            ),
            Lines::Logfmt => format!(
                "ts=2026-11-25T10:{m:02}:{s:02}.{ms:03}Z level=info req={i} took={} path=/api/v1/items\n",
                i % 250
            ),
            Lines::Cri => String::new(),
            Lines::Json => format!(
                "{{\"ts\":\"2026-11-25T10:{m:02}:{s:02}.{ms:03}Z\",\"level\":\"info\",\"req\":{i},\"ms\":{},\"path\":\"/api/v1/items\"}}\n",
                i % 250
            ),
        };
        f.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    f.flush()?;
    Ok(bytes)
}

/// `n` text lines as CRI entries, round-robin over [`PODS`] pods'
/// `app/0.log` under `logs/pods/`, as kubelet lays them out.
fn generate_pods(logs: &Path, n: u64) -> std::io::Result<u64> {
    let mut files = Vec::new();
    for p in 0..PODS {
        let dir = logs.join(format!(
            "pods/shop_web-{p}-7d4b9c_0f1e2d3c-aaaa-bbbb-cccc-{p:012}/app"
        ));
        std::fs::create_dir_all(&dir)?;
        files.push(std::io::BufWriter::new(std::fs::File::create(
            dir.join("0.log"),
        )?));
    }
    let mut bytes = 0;
    for i in 0..n {
        let (m, s, ms) = ((i / 60_000) % 60, (i / 1000) % 60, i % 1000);
        let line = format!(
            "2026-11-25T10:{m:02}:{s:02}.{ms:03}456789Z stdout F host-{} app[{}]: request {i:010} served in {} ms status 200 path /api/v1/items\n",
            i % 7,
            1000 + i % 97,
            i % 250
        );
        files[(i % PODS) as usize].write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    for mut f in files {
        f.flush()?;
    }
    Ok(bytes)
}

/// Starts kinetail on `dir/logs/**/*.log`; `top` goes before the first table,
/// `flow_extra` into the flow.
pub fn start_kinetail(
    dir: &Path,
    port: u16,
    top: &str,
    flow_extra: &str,
) -> std::io::Result<Child> {
    start_kinetail_at(dir, &Target::plain(port), top, flow_extra)
}

/// Where kinetail sends: the endpoint's URL, and the CA to trust for it.
pub struct Target {
    pub url: String,
    pub ca: Option<std::path::PathBuf>,
}

impl Target {
    pub fn plain(port: u16) -> Target {
        Target {
            url: format!("http://127.0.0.1:{port}"),
            ca: None,
        }
    }
}

/// [`start_kinetail`] to `target` (over TLS, trusting its CA through
/// `SSL_CERT_FILE`, which the SDK's client reads).
pub fn start_kinetail_at(
    dir: &Path,
    target: &Target,
    top: &str,
    flow_extra: &str,
) -> std::io::Result<Child> {
    let config = dir.join("kinetail.toml");
    // The stream "bench", unless the scenario names a delivery stream.
    let destination = if flow_extra.contains("firehose =") {
        ""
    } else {
        "stream = \"bench\"\n"
    };
    let top = format!(
        "{top}\n{}",
        std::env::var("KINETAIL_BENCH_TOP").unwrap_or_default()
    );
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}/state\"\n{top}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\n\
             [[flow]]\nname = \"bench\"\npaths = [\"{}/logs/**/*.log\"]\n{destination}{flow_extra}\n",
            dir.display(),
            dir.display(),
            url = target.url,
        ),
    )?;
    let mut command = testkit::kinetail();
    if let Some(ca) = &target.ca {
        command.env("SSL_CERT_FILE", ca);
    }
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// What ships a backlog: kinetail with a flow's extra settings, or another
/// shipper's command (see `--against`).
pub enum Shipper<'a> {
    /// `top` goes before the first table, `flow_extra` into the flow.
    Kinetail {
        top: &'a str,
        flow_extra: &'a str,
    },
    Other {
        command: &'a str,
    },
}

/// Starts another shipper: `command` run by `sh -c "exec ..."` (so the
/// process measured is the shipper itself), with `{port}` replaced by the
/// endpoint's port and `{dir}` by the scratch directory, whose `logs/`
/// holds the log to ship; `{tls_port}` and `{ca}` by the endpoint's port
/// over TLS and its CA's PEM file (see `endpoint_tls`).
pub async fn start_other(
    dir: &Path,
    port: u16,
    counts: &std::sync::Arc<crate::endpoint::Counts>,
    command: &str,
) -> std::io::Result<Child> {
    let mut command = command
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.display().to_string());
    // An HTTPS-only shipper gets the endpoint over TLS too.
    if command.contains("{tls_port}") || command.contains("{ca}") {
        let tls_port = crate::endpoint::endpoint_tls(counts.clone()).await?;
        let ca = crate::endpoint::ca_file()?;
        command = command
            .replace("{tls_port}", &tls_port.to_string())
            .replace("{ca}", &ca.display().to_string());
    }
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}
