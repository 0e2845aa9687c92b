//! `[kubernetes]`: where the pod lookups of `metadata = ["kubernetes"]`
//! reach the API server, and what they add.

use std::path::PathBuf;

use super::ConfigError;
use super::check::Locator;
use super::raw::RawKubernetes;

/// The service account's files in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const DEFAULT_LABELS: bool = true;
pub const DEFAULT_ANNOTATIONS: bool = false;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The API server; `None`: in-cluster (`KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`), and no lookups outside a cluster.
    pub api_url: Option<String>,
    /// The bearer token, read again at each lookup (projected tokens
    /// rotate).
    pub token_file: PathBuf,
    /// The CA the API server's certificate is checked against (https).
    pub ca_file: PathBuf,
    pub labels: bool,
    pub annotations: bool,
}

impl Default for KubernetesSettings {
    fn default() -> KubernetesSettings {
        KubernetesSettings {
            api_url: None,
            token_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("token"),
            ca_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt"),
            labels: DEFAULT_LABELS,
            annotations: DEFAULT_ANNOTATIONS,
        }
    }
}

impl KubernetesSettings {
    pub(super) fn from_raw(
        loc: &Locator<'_>,
        raw: Option<&RawKubernetes>,
    ) -> Result<KubernetesSettings, ConfigError> {
        let d = KubernetesSettings::default();
        let Some(raw) = raw else { return Ok(d) };
        let api_url = match raw.api_url.as_ref() {
            None => None,
            Some(v) => {
                let s = loc.string(v, "kubernetes.api_url")?;
                let ok = (s.starts_with("http://") || s.starts_with("https://"))
                    && s.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some());
                if !ok {
                    return Err(loc.at(
                        v.span(),
                        format!("kubernetes.api_url {s:?} must be an http:// or https:// URL"),
                    ));
                }
                Some(s.trim_end_matches('/').to_string())
            }
        };
        let path = |v: Option<&super::raw::Str>, default: PathBuf, what: &str| {
            Ok::<_, ConfigError>(match v {
                Some(v) => PathBuf::from(loc.string(v, what)?),
                None => default,
            })
        };
        Ok(KubernetesSettings {
            api_url,
            token_file: path(
                raw.token_file.as_ref(),
                d.token_file,
                "kubernetes.token_file",
            )?,
            ca_file: path(raw.ca_file.as_ref(), d.ca_file, "kubernetes.ca_file")?,
            labels: raw.labels.unwrap_or(d.labels),
            annotations: raw.annotations.unwrap_or(d.annotations),
        })
    }

    /// The API server to ask, from the settings or the pod's environment.
    pub fn resolved_api_url(&self) -> Option<String> {
        if let Some(u) = &self.api_url {
            return Some(u.clone());
        }
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!("https://{host}:{port}"))
    }
}
