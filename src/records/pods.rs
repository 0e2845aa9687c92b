//! Pod lookups for `metadata = ["kubernetes"]`: what the API server knows of
//! a file's pod beyond its path (its node, labels and, if asked,
//! annotations), cached per pod and fetched once per new pod.
//!
//! The one place metadata may delay a line: the first hand-off of a pod not
//! yet known waits at most [`FIRST_WAIT`] for its lookup, then goes with the
//! path's fields only, and its lines are counted
//! (`kinetail_kubernetes_lines_without_lookup_total`). A lookup that fails
//! (the server down, slow, or refusing: 403 without RBAC) is counted, said
//! once per distinct error, and tried again after [`RETRY`]; meanwhile the
//! pod's lines go at once with the path's fields. A known pod is looked up
//! again after [`REFRESH`] in the background (labels change), its lines
//! going with what is known meanwhile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::records::batcher::json_string;
use crate::records::envelope::KUBERNETES_MAX_BYTES;
use crate::records::kubernetes::PodFile;
use crate::service::metrics::Metrics;

/// The longest a new pod's first lines wait for its lookup.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// A failed lookup is tried again after this long.
pub const RETRY: Duration = Duration::from_secs(30);
/// A known pod is looked up again after this long.
pub const REFRESH: Duration = Duration::from_secs(600);
/// The longest one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pods come and go on a node: once the cache holds this many, entries
/// not looked up or refreshed for [`FORGET_AFTER`] are dropped (a pod of
/// them that still writes is looked up again).
const PRUNE_AT: usize = 512;
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Where the API server is and what to ask of it.
#[derive(Debug, Clone)]
pub struct ApiServer {
    /// `http(s)://host:port`, without a trailing `/`.
    pub url: String,
    /// The bearer token's file, read at each lookup (tokens rotate); no
    /// token is sent when it cannot be read.
    pub token_file: PathBuf,
    /// The trust for `https://`.
    #[cfg(feature = "aws")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub labels: bool,
    pub annotations: bool,
}

#[derive(Debug)]
enum Slot {
    /// A lookup is under way since `since`; `done` turns true at its end.
    Fetching {
        since: Instant,
        done: watch::Receiver<bool>,
        /// What was known before (a refresh).
        known: Option<Arc<str>>,
    },
    Known {
        members: Arc<str>,
        at: Instant,
    },
    Failed {
        at: Instant,
    },
}

/// What the API server adds to one pod's members, and whether it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The members the API server gave (`"node":...,"labels":{...}`).
    Known(Arc<str>),
    /// Not known (yet, or the lookup failed): the path's fields only.
    Without,
    /// No lookups: outside a cluster and no `kubernetes.api_url`.
    Off,
}

#[derive(Debug, Default)]
pub struct Pods {
    api: Option<ApiServer>,
    cache: Mutex<HashMap<String, Slot>>,
    /// The last error said, so that each is said once.
    said: Mutex<Option<String>>,
}

impl Pods {
    /// Lookups at `api`, or none.
    pub fn new(api: Option<ApiServer>) -> Arc<Pods> {
        Arc::new(Pods {
            api,
            ..Pods::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the API server adds for `pod`: known at once, or after a wait
    /// of at most [`FIRST_WAIT`] for a pod not seen before.
    pub async fn lookup(self: &Arc<Self>, pod: &PodFile, metrics: &Arc<Metrics>) -> Lookup {
        if self.api.is_none() || pod.namespace.is_empty() || pod.pod.is_empty() {
            return Lookup::Off;
        }
        let key = format!("{}/{}/{}", pod.namespace, pod.pod, pod.pod_uid);
        let wait = {
            let mut cache = self.lock();
            match cache.get(&key) {
                Some(Slot::Known { members, at }) if at.elapsed() < REFRESH => {
                    return Lookup::Known(members.clone());
                }
                Some(Slot::Known { members, .. }) => {
                    let known = Some(members.clone());
                    self.start(&mut cache, key, pod, known.clone(), metrics);
                    return known.map_or(Lookup::Without, Lookup::Known);
                }
                Some(Slot::Failed { at }) if at.elapsed() < RETRY => return Lookup::Without,
                Some(Slot::Fetching { known: Some(k), .. }) => return Lookup::Known(k.clone()),
                Some(Slot::Fetching { since, done, .. }) => (*since, done.clone()),
                Some(Slot::Failed { .. }) | None => {
                    let done = self.start(&mut cache, key.clone(), pod, None, metrics);
                    (Instant::now(), done)
                }
            }
        };
        let (since, mut done) = wait;
        let left = FIRST_WAIT.saturating_sub(since.elapsed());
        let _ = tokio::time::timeout(left, done.wait_for(|d| *d)).await;
        match self.lock().get(&key) {
            Some(Slot::Known { members, .. }) => Lookup::Known(members.clone()),
            _ => Lookup::Without,
        }
    }

    /// Starts a lookup of `pod` under `key`; its end is announced on the
    /// receiver returned.
    fn start(
        self: &Arc<Self>,
        cache: &mut HashMap<String, Slot>,
        key: String,
        pod: &PodFile,
        known: Option<Arc<str>>,
        metrics: &Arc<Metrics>,
    ) -> watch::Receiver<bool> {
        if cache.len() >= PRUNE_AT {
            prune(cache);
        }
        let (tx, rx) = watch::channel(false);
        cache.insert(
            key.clone(),
            Slot::Fetching {
                since: Instant::now(),
                done: rx.clone(),
                known: known.clone(),
            },
        );
        let (pods, pod, metrics) = (self.clone(), pod.clone(), metrics.clone());
        tokio::spawn(async move {
            let result = match tokio::time::timeout(LOOKUP_TIMEOUT, pods.fetch(&pod)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs())),
            };
            let slot = match result {
                Ok(members) => {
                    Metrics::add(&metrics.kubernetes_lookups, 1);
                    Slot::Known {
                        members: Arc::from(members),
                        at: Instant::now(),
                    }
                }
                Err(e) => {
                    Metrics::add(&metrics.kubernetes_lookup_failures, 1);
                    pods.say(&pod, &e);
                    match known {
                        // A refresh that failed keeps what was known.
                        Some(members) => Slot::Known {
                            members,
                            at: Instant::now(),
                        },
                        None => Slot::Failed { at: Instant::now() },
                    }
                }
            };
            pods.lock().insert(key, slot);
            let _ = tx.send(true);
        });
        rx
    }

    /// Says a failed lookup, once per distinct error.
    fn say(&self, pod: &PodFile, error: &str) {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if said.as_deref() == Some(error) {
            return;
        }
        *said = Some(error.to_string());
        let hint = if error.contains("HTTP 403") {
            " (may the service account get pods? see packaging/kubernetes/daemonset.yaml's RBAC)"
        } else {
            ""
        };
        tracing::warn!(namespace = %pod.namespace, pod = %pod.pod, error = %crate::redact::error_text(&error),
            "cannot look the pod up on the Kubernetes API server{hint}; its records carry the pod's fields from the path only, and the lookup is tried again in {} s", RETRY.as_secs());
    }

    /// One lookup: the members the API server's answer gives.
    async fn fetch(&self, pod: &PodFile) -> Result<String, String> {
        let api = self.api.as_ref().ok_or("no API server")?;
        let url = format!(
            "{}/api/v1/namespaces/{}/pods/{}",
            api.url, pod.namespace, pod.pod
        );
        let mut headers = vec![("accept", "application/json".to_string())];
        if let Ok(token) = std::fs::read_to_string(&api.token_file) {
            headers.push(("authorization", format!("Bearer {}", token.trim())));
        }
        let (status, body) = get(api, &url, &headers).await?;
        if status != 200 {
            return Err(format!("{url}: HTTP {status}"));
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
        let uid = doc["metadata"]["uid"].as_str().unwrap_or_default();
        if !pod.pod_uid.is_empty() && uid != pod.pod_uid {
            return Err(format!(
                "{url}: the pod of that name is another one now (uid {uid})"
            ));
        }
        Ok(render(&doc, api.labels, api.annotations))
    }
}

#[cfg(feature = "aws")]
async fn get(
    api: &ApiServer,
    url: &str,
    headers: &[(&str, String)],
) -> Result<(u16, Vec<u8>), String> {
    crate::fetch::get(url, headers, api.tls.as_ref()).await
}

/// Without the network clients (the fuzz targets' build) nothing is
/// looked up.
#[cfg(not(feature = "aws"))]
async fn get(_: &ApiServer, _: &str, _: &[(&str, String)]) -> Result<(u16, Vec<u8>), String> {
    Err("built without network clients (the aws feature)".into())
}

/// Drops the entries of pods not looked up for [`FORGET_AFTER`]: a known
/// pod's entry is refreshed whenever its lines come after [`REFRESH`], so
/// only pods that stopped writing (most of them gone) are dropped.
fn prune(cache: &mut HashMap<String, Slot>) {
    cache.retain(|_, slot| match slot {
        Slot::Fetching { .. } => true,
        Slot::Known { at, .. } | Slot::Failed { at } => at.elapsed() < FORGET_AFTER,
    });
}

/// The node, the labels and the annotations asked for, as members; what
/// would pass [`KUBERNETES_MAX_BYTES`] is left out (annotations first).
fn render(doc: &Value, labels: bool, annotations: bool) -> String {
    let map = |v: &Value| -> String {
        let mut out = Vec::new();
        out.push(b'{');
        if let Some(m) = v.as_object() {
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(&mut out, k);
                out.push(b':');
                json_string(&mut out, v.as_str().unwrap_or_default());
            }
        }
        out.push(b'}');
        String::from_utf8(out).unwrap_or_default()
    };
    let mut parts = Vec::new();
    if let Some(node) = doc["spec"]["nodeName"].as_str() {
        let mut out = Vec::new();
        json_string(&mut out, node);
        parts.push(format!("\"node\":{}", String::from_utf8_lossy(&out)));
    }
    // Room for the path's fields besides.
    let room = KUBERNETES_MAX_BYTES - 2048;
    for (wanted, name, at) in [
        (labels, "labels", &doc["metadata"]["labels"]),
        (annotations, "annotations", &doc["metadata"]["annotations"]),
    ] {
        if !wanted {
            continue;
        }
        let member = format!("\"{name}\":{}", map(at));
        let used: usize = parts.iter().map(|p| p.len() + 1).sum();
        if used + member.len() <= room {
            parts.push(member);
        } else {
            tracing::warn!(
                member = name,
                bytes = member.len(),
                "a pod's {name} are too long for its records; left out"
            );
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_not_seen_for_an_hour_are_forgotten() {
        let mut cache = HashMap::new();
        let long_ago = Instant::now().checked_sub(FORGET_AFTER + Duration::from_secs(1));
        let Some(long_ago) = long_ago else {
            return; // a machine up for less than an hour: nothing to test
        };
        let (_tx, rx) = watch::channel(false);
        cache.insert("gone".to_string(), Slot::Failed { at: long_ago });
        cache.insert(
            "old".to_string(),
            Slot::Known {
                members: Arc::from(""),
                at: long_ago,
            },
        );
        cache.insert(
            "live".to_string(),
            Slot::Known {
                members: Arc::from(""),
                at: Instant::now(),
            },
        );
        cache.insert(
            "asking".to_string(),
            Slot::Fetching {
                since: long_ago,
                done: rx,
                known: None,
            },
        );
        prune(&mut cache);
        let mut left: Vec<&String> = cache.keys().collect();
        left.sort();
        assert_eq!(left, ["asking", "live"]);
    }

    #[test]
    fn render_gives_node_labels_and_annotations_as_asked() {
        let doc: Value = serde_json::from_str(
            r#"{"metadata":{"uid":"u","labels":{"app":"web","tier":"fr\"ont"},"annotations":{"a":"1"}},"spec":{"nodeName":"ip-10-0-0-1"}}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&format!("{{{}}}", render(&doc, true, false))).unwrap();
        assert_eq!(v["node"], "ip-10-0-0-1");
        assert_eq!(v["labels"]["tier"], "fr\"ont");
        assert!(v.get("annotations").is_none());
        let v: Value = serde_json::from_str(&format!("{{{}}}", render(&doc, false, true))).unwrap();
        assert_eq!(v["annotations"]["a"], "1");
        assert!(v.get("labels").is_none());
        // Annotations too long for a record are left out, labels kept.
        let big = "x".repeat(KUBERNETES_MAX_BYTES);
        let doc: Value =
            serde_json::json!({"metadata":{"labels":{"app":"web"},"annotations":{"big": big}}});
        let v: Value = serde_json::from_str(&format!("{{{}}}", render(&doc, true, true))).unwrap();
        assert_eq!(v["labels"]["app"], "web");
        assert!(v.get("annotations").is_none());
    }
}
