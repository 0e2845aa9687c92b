//! Cloud metadata for the JSON envelope (`metadata = ["ec2", "ecs"]`),
//! fetched once at start and again every [`REFRESH`].
//!
//! - EC2: the instance identity document (instance id and type, region,
//!   availability zone, account id, private IP) and, with `metadata_tags`,
//!   the instance's tags, through the SDK's IMDS client: IMDSv2 session
//!   tokens, `AWS_EC2_METADATA_SERVICE_ENDPOINT` honoured.
//! - ECS: the task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`):
//!   cluster, task ARN, family and revision, availability zone, launch type,
//!   and this container's name, id and image.
//!
//! A source that cannot be reached (no IMDS, a hop limit of 1 seen from a
//! container, not on ECS) is reported once and left out; records go on
//! without it, and it is tried again at the next refresh.

use std::time::Duration;

use aws_config::imds;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::records::envelope::{METADATA_MAX_BYTES, SharedMetadata};

/// How often metadata is fetched again (tags and IPs can change).
pub const REFRESH: Duration = Duration::from_secs(300);
/// The longest a fetch may take; the start waits at most this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Which sources to fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub ec2: bool,
    pub tags: bool,
    pub ecs: bool,
}

/// The last outcome of each source, so each failure is said once.
#[derive(Debug, Default)]
struct Said {
    ec2: Option<String>,
    ecs: Option<String>,
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `"name":"value"` members for the fields of `doc` that are present.
fn members(doc: &Value, fields: &[(&str, &str)]) -> Vec<String> {
    fields
        .iter()
        .filter_map(|(name, from)| {
            let v = doc.get(*from)?;
            let s = match v {
                Value::String(s) => json_string(s),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(format!("{}:{s}", json_string(name)))
        })
        .collect()
}

async fn ec2(client: &imds::Client, tags: bool) -> Result<String, String> {
    let doc = client
        .get("/latest/dynamic/instance-identity/document")
        .await
        .map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(doc.as_ref())
        .map_err(|e| format!("instance identity document: {e}"))?;
    let mut out = vec![json_string("provider") + ":\"aws\""];
    out.extend(members(
        &doc,
        &[
            ("instance_id", "instanceId"),
            ("instance_type", "instanceType"),
            ("region", "region"),
            ("availability_zone", "availabilityZone"),
            ("account_id", "accountId"),
            ("private_ip", "privateIp"),
            ("image_id", "imageId"),
        ],
    ));
    if tags {
        // Tags are readable only where the instance allows it
        // (InstanceMetadataTags): without them the rest still goes.
        match ec2_tags(client).await {
            Ok(t) => out.push(format!("\"tags\":{{{t}}}")),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the instance's tags from the instance metadata service (is access to tags in instance metadata allowed?); shipping without them")
            }
        }
    }
    Ok(out.join(","))
}

async fn ec2_tags(client: &imds::Client) -> Result<String, String> {
    let list = client
        .get("/latest/meta-data/tags/instance")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for key in list
        .as_ref()
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        let value = client
            .get(format!("/latest/meta-data/tags/instance/{key}"))
            .await
            .map_err(|e| e.to_string())?;
        out.push(format!(
            "{}:{}",
            json_string(key),
            json_string(value.as_ref())
        ));
    }
    Ok(out.join(","))
}

/// A plain-HTTP GET (the ECS endpoint is a link-local HTTP address).
async fn http_get(url: &str) -> Result<Vec<u8>, String> {
    if !url.starts_with("http://") {
        return Err(format!("{url}: only http:// is supported"));
    }
    match crate::fetch::get(url, &[], None).await {
        Ok((200..=299, body)) => Ok(body),
        Ok((status, _)) => Err(format!("{url}: HTTP {status}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

async fn ecs() -> Result<String, String> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").map_err(|_| {
        "ECS_CONTAINER_METADATA_URI_V4 is not set (not running as an ECS task?)".to_string()
    })?;
    let parse = |b: Vec<u8>, what: &str| {
        serde_json::from_slice::<Value>(&b).map_err(|e| format!("{what}: {e}"))
    };
    let task = parse(http_get(&format!("{base}/task")).await?, "task metadata")?;
    let container = parse(http_get(&base).await?, "container metadata")?;
    let mut out = members(
        &task,
        &[
            ("cluster", "Cluster"),
            ("task_arn", "TaskARN"),
            ("family", "Family"),
            ("revision", "Revision"),
            ("availability_zone", "AvailabilityZone"),
            ("launch_type", "LaunchType"),
        ],
    );
    out.extend(members(
        &container,
        &[
            ("container_name", "Name"),
            ("container_id", "DockerId"),
            ("image", "Image"),
        ],
    ));
    Ok(format!("\"ecs\":{{{}}}", out.join(",")))
}

/// Fetches what is wanted and puts it in `shared`; says each failure once
/// (and when a source comes back).
async fn refresh(client: &imds::Client, wanted: Wanted, shared: &SharedMetadata, said: &mut Said) {
    let ec2 = if wanted.ec2 {
        let r = tokio::time::timeout(FETCH_TIMEOUT, ec2(client, wanted.tags)).await;
        let r = r.unwrap_or_else(|_| Err("no answer in time".into()));
        report("EC2 instance metadata (IMDSv2)", r, &mut said.ec2)
    } else {
        String::new()
    };
    let ecs = if wanted.ecs {
        let r = tokio::time::timeout(FETCH_TIMEOUT, ecs()).await;
        let r = r.unwrap_or_else(|_| Err("no answer in time".into()));
        report("ECS task metadata", r, &mut said.ecs)
    } else {
        String::new()
    };
    shared.set(&capped(ec2), &capped(ecs));
}

/// Metadata beyond [`METADATA_MAX_BYTES`] would not fit beside a line.
fn capped(members: String) -> String {
    if members.len() <= METADATA_MAX_BYTES {
        return members;
    }
    tracing::warn!(
        bytes = members.len(),
        max = METADATA_MAX_BYTES,
        "cloud metadata is too large to add to every record (too many tags?); shipping without it"
    );
    String::new()
}

fn report(what: &str, r: Result<String, String>, said: &mut Option<String>) -> String {
    match r {
        Ok(m) => {
            if said.take().is_some() {
                tracing::info!(
                    source = what,
                    "cloud metadata can be read again; records carry it from now on"
                );
            }
            m
        }
        Err(e) => {
            if said.as_deref() != Some(&e) {
                tracing::warn!(source = what, error = %e, "cannot read cloud metadata; shipping without it");
                *said = Some(e);
            }
            String::new()
        }
    }
}

/// The IMDS client: short timeouts and few attempts, so an instance without
/// IMDS (or a container past its hop limit) costs the start little.
fn imds_client() -> imds::Client {
    imds::Client::builder()
        .max_attempts(2)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(4))
        .build()
}

/// Fetches what `wanted` says now and then every [`REFRESH`], or at once
/// when it changes (a reload), until `stop`. `first` is told after the
/// first fetch, so flows can start with the metadata in place.
pub async fn run(
    shared: std::sync::Arc<SharedMetadata>,
    mut wanted: tokio::sync::watch::Receiver<Wanted>,
    first: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let client = imds_client();
    let mut said = Said::default();
    let mut first = Some(first);
    loop {
        let now = *wanted.borrow_and_update();
        if now != Wanted::default() {
            refresh(&client, now, &shared, &mut said).await;
        }
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            changed = wanted.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}
