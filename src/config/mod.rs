//! Configuration: the TOML file as written, and the validated [`Settings`]
//! that the rest of kinetail sees.
//!
//! Parsing and validation are two steps. The `Raw*` structs of [`raw`]
//! mirror the file (`deny_unknown_fields`, every value kept with its
//! position), and one `from_raw` per section turns them into typed values:
//! compiled regexes and globs, `Duration`s, checked sizes. Every error names
//! the file, the line and the column of the offending value, so
//! `kinetail check` can print `FILE:LINE:COL: message` and nothing
//! downstream needs to re-validate.
//!
//! `${VAR}` and `${VAR:-default}` in string values are replaced from the
//! environment here, after parsing, so an expanded value can never change the
//! TOML structure and an unset variable is reported at the value that used it.

mod aws;
mod check;
mod describe;
mod flow;
mod keys;
mod kubernetes;
mod multiline;
mod raw;
mod record;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use aws::{AwsSettings, DEFAULT_REQUEST_TIMEOUT_MS};
pub use check::expand_env;
pub use flow::{
    DEFAULT_AGGREGATE_MAX_BYTES, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_LINGER_MS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_SHARD_BYTES_PER_SEC, DEFAULT_SHARD_RECORDS_PER_SEC, Destination, FlowSettings,
    FollowSymlinks, Oversize, StartAt,
};
pub use kubernetes::KubernetesSettings;
pub use multiline::{DEFAULT_MULTILINE_MAX_LINES, DEFAULT_MULTILINE_TIMEOUT_MS};
pub use record::{MetadataSource, RecordSettings};

use check::Locator;
use raw::{RawApi, RawConfig};

/// Where the daemon looks for its configuration when `--config` is absent.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kinetail/kinetail.toml";

pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
pub const DEFAULT_RESCAN_INTERVAL_MS: u64 = 5_000;
/// Enough to keep every lane's call full while the tailers read ahead (the
/// file is the buffer beyond it); each budget byte is about a byte of memory
/// (see `RECORD_OVERHEAD`).
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 4 * 1024 * 1024;
/// The buffer must hold at least a few maximum-size records, or a single
/// large line could never be admitted.
const MIN_BUFFER_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_OPEN_FILES: u64 = 512;
/// Two threads run the tasks. One costs about 18% less CPU per line in a
/// backlog on two cores, but under CPU contention its reading lags further
/// behind a writer, and copytruncate loses the lines not read before the
/// truncation: more than twice as many in the suite's test (ARCHITECTURE.md,
/// "Threads").
pub const DEFAULT_WORKER_THREADS: u64 = 2;
/// The API answers on loopback addresses only unless asked.
pub const DEFAULT_ALLOW_REMOTE: bool = false;
const MAX_WORKER_THREADS: u64 = 64;

/// A configuration error, positioned in the file when the position is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column of the offending value.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                line,
                col,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file these settings came from (for messages).
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub aws: AwsSettings,
    /// The pod lookups of `metadata = ["kubernetes"]`.
    pub kubernetes: KubernetesSettings,
    /// Where the metrics and health API listens, if anywhere.
    pub api: Option<std::net::SocketAddr>,
    /// How often confirmed offsets are written to the checkpoint store.
    pub checkpoint_interval: Duration,
    /// How long shutdown waits for in-flight records to be confirmed.
    pub shutdown_grace: Duration,
    /// How often every flow's globs are expanded again (notify events only
    /// make discovery faster; this is the guarantee).
    pub rescan_interval: Duration,
    /// Upper bound on the bytes of records read but not yet confirmed.
    pub max_buffer_bytes: usize,
    /// Files held open at once, across all flows.
    pub max_open_files: usize,
    /// Threads that run kinetail's tasks (reading, batching, calls).
    pub worker_threads: usize,
    pub flows: Vec<FlowSettings>,
}

impl Settings {
    /// The settings outside `[[flow]]` that differ in `new` and take effect
    /// only at a restart, by their names in the file. A reload applies the
    /// flows and `shutdown_grace_ms`; everything else here is wired into
    /// running parts (the client, the API, the store, the budget, the
    /// saver, discovery). Every field is named below, so a new setting must
    /// be put on one side or the other.
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let Settings {
            source: _,
            state_dir,
            aws,
            kubernetes,
            api,
            checkpoint_interval,
            shutdown_grace: _,
            rescan_interval,
            max_buffer_bytes,
            max_open_files,
            worker_threads,
            flows: _,
        } = new;
        let AwsSettings {
            region,
            endpoint_url,
            firehose_endpoint_url,
            profile,
            request_timeout,
            role_arn,
            external_id,
            role_session_name,
        } = aws;
        let old = &self.aws;
        [
            ("state_dir", *state_dir != self.state_dir),
            ("kubernetes", *kubernetes != self.kubernetes),
            ("api.listen", *api != self.api),
            (
                "checkpoint_interval_ms",
                *checkpoint_interval != self.checkpoint_interval,
            ),
            (
                "rescan_interval_ms",
                *rescan_interval != self.rescan_interval,
            ),
            (
                "max_buffer_bytes",
                *max_buffer_bytes != self.max_buffer_bytes,
            ),
            ("max_open_files", *max_open_files != self.max_open_files),
            ("worker_threads", *worker_threads != self.worker_threads),
            ("aws.region", *region != old.region),
            ("aws.endpoint_url", *endpoint_url != old.endpoint_url),
            (
                "aws.firehose_endpoint_url",
                *firehose_endpoint_url != old.firehose_endpoint_url,
            ),
            ("aws.profile", *profile != old.profile),
            (
                "aws.request_timeout_ms",
                *request_timeout != old.request_timeout,
            ),
            ("aws.role_arn", *role_arn != old.role_arn),
            ("aws.external_id", *external_id != old.external_id),
            (
                "aws.role_session_name",
                *role_session_name != old.role_session_name,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

impl Settings {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read configuration: {e}"),
        })?;
        Settings::from_toml(path, &text)
    }

    /// Parses and validates `text`, naming `file` in errors.
    pub fn from_toml(file: &Path, text: &str) -> Result<Settings, ConfigError> {
        let loc = Locator { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => loc.at(span, message),
                None => loc.whole(message),
            }
        })?;
        let state_dir = PathBuf::from(loc.string(&raw.state_dir, "state_dir")?);
        if state_dir.as_os_str().is_empty() {
            return Err(loc.at(raw.state_dir.span(), "state_dir must not be empty"));
        }
        if raw.flow.is_empty() {
            return Err(loc.whole("no [[flow]] is configured: nothing to ship"));
        }
        let mut flows = Vec::new();
        let mut names = HashSet::new();
        for f in &raw.flow {
            let flow = FlowSettings::from_raw(&loc, f.get_ref(), &state_dir)?;
            if !names.insert(flow.name.clone()) {
                let name = &flow.name;
                return Err(loc.at(
                    f.get_ref().name.span(),
                    format!("flow name {name:?} is used twice"),
                ));
            }
            flows.push(flow);
        }
        Ok(Settings {
            source: file.to_path_buf(),
            aws: AwsSettings::from_raw(&loc, &raw.aws)?,
            kubernetes: KubernetesSettings::from_raw(&loc, raw.kubernetes.as_ref())?,
            api: raw
                .api
                .as_ref()
                .map(|a| api(&loc, a.get_ref()))
                .transpose()?,
            checkpoint_interval: loc.positive_ms(
                raw.checkpoint_interval_ms.as_ref(),
                DEFAULT_CHECKPOINT_INTERVAL_MS,
                "checkpoint_interval_ms",
            )?,
            shutdown_grace: Duration::from_millis(loc.ranged(
                raw.shutdown_grace_ms.as_ref(),
                DEFAULT_SHUTDOWN_GRACE_MS,
                0..=u64::MAX,
                "shutdown_grace_ms",
            )?),
            rescan_interval: loc.positive_ms(
                raw.rescan_interval_ms.as_ref(),
                DEFAULT_RESCAN_INTERVAL_MS,
                "rescan_interval_ms",
            )?,
            max_buffer_bytes: loc.size(
                raw.max_buffer_bytes.as_ref(),
                DEFAULT_MAX_BUFFER_BYTES,
                MIN_BUFFER_BYTES..=u64::MAX,
                "max_buffer_bytes",
            )?,
            max_open_files: loc.size(
                raw.max_open_files.as_ref(),
                DEFAULT_MAX_OPEN_FILES,
                1..=1_000_000,
                "max_open_files",
            )?,
            worker_threads: loc.size(
                raw.worker_threads.as_ref(),
                DEFAULT_WORKER_THREADS,
                1..=MAX_WORKER_THREADS,
                "worker_threads",
            )?,
            state_dir,
            flows,
        })
    }
}

/// `[api]`: a loopback address unless `allow_remote` says otherwise.
fn api(loc: &Locator<'_>, a: &RawApi) -> Result<std::net::SocketAddr, ConfigError> {
    let text = loc.string(&a.listen, "api.listen")?;
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        loc.at(
            a.listen.span(),
            format!("api.listen {text:?} is not an address like \"127.0.0.1:9810\""),
        )
    })?;
    if !addr.ip().is_loopback() && !a.allow_remote.unwrap_or(DEFAULT_ALLOW_REMOTE) {
        return Err(loc.at(
            a.listen.span(),
            format!("api.listen {addr} is not a loopback address; set api.allow_remote = true to serve it beyond this host"),
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::check::Locator;
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(
            expand_env("${HOME_DIR}/logs", env).as_deref(),
            Ok("/home/x/logs")
        );
        assert_eq!(expand_env("${NOPE:-/tmp}/x", env).as_deref(), Ok("/tmp/x"));
        assert_eq!(expand_env("a${EMPTY}b", env).as_deref(), Ok("ab"));
        assert_eq!(
            expand_env("cost $5 $${X}", env).as_deref(),
            Ok("cost $5 ${X}")
        );
        assert!(
            expand_env("${NOPE}", env)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(expand_env("${1X}", env).is_err());
        assert!(expand_env("${OPEN", env).is_err());
    }

    #[test]
    fn a_reload_names_every_global_setting_that_needs_a_restart() {
        let base = "state_dir = \"/s\"\n[aws]\nregion = \"r\"\n[[flow]]\nname = \"a\"\npaths = [\"/l/*.log\"]\nstream = \"s\"\n";
        let load = |text: &str| Settings::from_toml(Path::new("/k.toml"), text).unwrap();
        let old = load(base);
        assert!(old.needs_restart(&load(base)).is_empty());
        // Applied by a reload: the grace period and the flows.
        let applied = base
            .replace(
                "state_dir = \"/s\"\n",
                "state_dir = \"/s\"\nshutdown_grace_ms = 3000\n",
            )
            .replace("stream = \"s\"", "stream = \"t\"");
        assert!(old.needs_restart(&load(&applied)).is_empty());
        for (line, name) in [
            ("state_dir = \"/other\"", "state_dir"),
            ("checkpoint_interval_ms = 5000", "checkpoint_interval_ms"),
            ("rescan_interval_ms = 9000", "rescan_interval_ms"),
            ("max_buffer_bytes = 8388608", "max_buffer_bytes"),
            ("max_open_files = 10", "max_open_files"),
            ("worker_threads = 1", "worker_threads"),
            ("[api]\nlisten = \"127.0.0.1:9999\"", "api.listen"),
        ] {
            let state = "state_dir = \"/s\"\n";
            let text = if name == "state_dir" {
                base.replace(state, &format!("{line}\n"))
            } else {
                base.replace(state, &format!("{state}{line}\n"))
            };
            assert_eq!(old.needs_restart(&load(&text)), vec![name], "{text}");
        }
        for (line, name) in [
            ("region = \"other\"", "aws.region"),
            ("endpoint_url = \"http://127.0.0.1:1\"", "aws.endpoint_url"),
            ("profile = \"p\"", "aws.profile"),
            ("request_timeout_ms = 1000", "aws.request_timeout_ms"),
            ("role_arn = \"arn:aws:iam::1:role/x\"", "aws.role_arn"),
            ("role_session_name = \"other\"", "aws.role_session_name"),
        ] {
            let key = line.split(' ').next().unwrap_or_default();
            let text = if key == "region" {
                base.replace("region = \"r\"", line)
            } else {
                base.replace("region = \"r\"", &format!("region = \"r\"\n{line}"))
            };
            assert_eq!(old.needs_restart(&load(&text)), vec![name], "{text}");
        }
        let with_role = base.replace(
            "region = \"r\"",
            "region = \"r\"\nrole_arn = \"arn:aws:iam::1:role/x\"",
        );
        let with_id = base.replace(
            "region = \"r\"",
            "region = \"r\"\nrole_arn = \"arn:aws:iam::1:role/x\"\nexternal_id = \"ext-id\"",
        );
        assert_eq!(
            load(&with_role).needs_restart(&load(&with_id)),
            vec!["aws.external_id"]
        );
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        let loc = Locator {
            file: Path::new("f.toml"),
            text,
        };
        assert_eq!(loc.position(0), (1, 1));
        assert_eq!(loc.position(6), (2, 1));
        assert_eq!(loc.position(11), (2, 6));
    }
}
