//! A container log file's pod, from its path (`metadata = ["kubernetes"]`).
//!
//! Pure. kubelet writes `/var/log/pods/<namespace>_<pod>_<pod-uid>/<container>/<restart-count>.log`
//! (rotated copies add `.<timestamp>`, older ones `.gz`); the links in
//! `/var/log/containers` are named `<pod>_<namespace>_<container>-<container-id>.log`.
//! Namespaces and pod names are DNS labels and subdomains, which have no
//! `_`, so the parts split on it.
//!
//! What the API server adds (labels, the node, annotations) comes from
//! `service::pods`, rendered here beside the path's fields.

use std::path::Path;

use crate::records::batcher::json_string;

/// A pod's container, as its log file's path names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFile {
    pub namespace: String,
    pub pod: String,
    /// Empty for a `/var/log/containers` link's name, which lacks it.
    pub pod_uid: String,
    pub container: String,
    /// The container's restarts when the file was written (`N.log`).
    pub restart_count: Option<u32>,
    /// From a `/var/log/containers` link's name.
    pub container_id: String,
}

/// The fields a partition key may read (`from = "kubernetes"`).
pub const KEY_FIELDS: &[&str] = &["namespace", "pod", "pod_uid", "container", "restart_count"];

impl PodFile {
    /// The pod of the file at `path`, if the path is kubelet's.
    pub fn from_path(path: &Path) -> Option<PodFile> {
        let mut parts = path.iter().rev().filter_map(|p| p.to_str());
        let file = parts.next()?;
        let container = parts.next()?;
        let dir = parts.next()?;
        from_pods(dir, container, file).or_else(|| from_containers(file))
    }

    /// A field by its name in [`KEY_FIELDS`]; `None` when it is empty.
    pub fn field(&self, name: &str) -> Option<String> {
        let v = match name {
            "namespace" => self.namespace.clone(),
            "pod" => self.pod.clone(),
            "pod_uid" => self.pod_uid.clone(),
            "container" => self.container.clone(),
            "restart_count" => self.restart_count?.to_string(),
            _ => return None,
        };
        (!v.is_empty()).then_some(v)
    }

    /// The members of the envelope's `kubernetes` object for this file:
    /// the path's fields, then `extra` (members rendered by the API
    /// lookup, or empty).
    pub fn members(&self, extra: &str) -> String {
        let mut out = Vec::with_capacity(160 + extra.len());
        let mut member = |name: &str, value: &str| {
            if value.is_empty() {
                return;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            json_string(&mut out, name);
            out.push(b':');
            json_string(&mut out, value);
        };
        member("namespace", &self.namespace);
        member("pod", &self.pod);
        member("pod_uid", &self.pod_uid);
        member("container", &self.container);
        member("container_id", &self.container_id);
        if let Some(n) = self.restart_count {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"restart_count\":{n}").as_bytes());
        }
        if !extra.is_empty() {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(extra.as_bytes());
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `<namespace>_<pod>_<uid>/<container>/<n>.log[.<timestamp>]`.
fn from_pods(dir: &str, container: &str, file: &str) -> Option<PodFile> {
    let mut ids = dir.splitn(3, '_');
    let (namespace, pod, uid) = (ids.next()?, ids.next()?, ids.next()?);
    let (n, rest) = file.split_once(".log")?;
    if rest.contains('/') || namespace.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some(PodFile {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        pod_uid: uid.to_string(),
        container: container.to_string(),
        restart_count: Some(n.parse().ok()?),
        container_id: String::new(),
    })
}

/// `<pod>_<namespace>_<container>-<64 hex>.log`.
fn from_containers(file: &str) -> Option<PodFile> {
    let stem = file.strip_suffix(".log")?;
    let mut ids = stem.splitn(3, '_');
    let (pod, namespace, rest) = (ids.next()?, ids.next()?, ids.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || container.is_empty() {
        return None;
    }
    Some(PodFile {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        pod_uid: String::new(),
        container: container.to_string(),
        restart_count: None,
        container_id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_paths_name_the_pod() {
        let p = PodFile::from_path(Path::new(
            "/var/log/pods/shop_web-7d4b9c-x2x8q_0f1e2d3c-aaaa-bbbb-cccc-123456789abc/nginx/3.log",
        ))
        .unwrap();
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.pod, "web-7d4b9c-x2x8q");
        assert_eq!(p.pod_uid, "0f1e2d3c-aaaa-bbbb-cccc-123456789abc");
        assert_eq!(p.container, "nginx");
        assert_eq!(p.restart_count, Some(3));
        assert_eq!(p.field("restart_count").as_deref(), Some("3"));
        // Rotated copies keep the pod.
        let r = PodFile::from_path(Path::new(
            "/var/log/pods/shop_web_uid-1/nginx/3.log.20261204-101500",
        ))
        .unwrap();
        assert_eq!((r.pod.as_str(), r.restart_count), ("web", Some(3)));
        let c = PodFile::from_path(Path::new(&format!(
            "/var/log/containers/web_shop_nginx-{}.log",
            "ab".repeat(32)
        )))
        .unwrap();
        assert_eq!(
            (c.pod.as_str(), c.namespace.as_str(), c.container.as_str()),
            ("web", "shop", "nginx")
        );
        assert_eq!(c.field("pod_uid"), None);
        assert_eq!(PodFile::from_path(Path::new("/var/log/syslog")), None);
        assert_eq!(PodFile::from_path(Path::new("/var/log/app/x/1.log")), None);
    }

    #[test]
    fn members_are_json() {
        let p = PodFile::from_path(Path::new("/var/log/pods/ns_p\"q_u/c/0.log")).unwrap();
        let text = format!("{{{}}}", p.members("\"node\":\"n1\""));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["pod"], "p\"q");
        assert_eq!(v["restart_count"], 0);
        assert_eq!(v["node"], "n1");
    }
}
