//! Configuration: the TOML file as written, and the validated [`Settings`]
//! that the rest of kinetail sees.
//!
//! Parsing and validation are two steps. The `Raw*` structs mirror the file
//! (`deny_unknown_fields`, every string kept with its position), and
//! [`Settings::from_toml`] turns them into typed values: compiled regexes and
//! globs, `Duration`s, checked sizes. Every error names the file, the line and
//! the column of the offending value, so `kinetail check` can print
//! `FILE:LINE:COL: message` and nothing downstream needs to re-validate.
//!
//! `${VAR}` and `${VAR:-default}` in string values are replaced from the
//! environment here, after parsing, so an expanded value can never change the
//! TOML structure and an unset variable is reported at the value that used it.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::batcher::MAX_DATA_BYTES;
use crate::keying::{KeySource, KeySpec};
use crate::multiline::{MultilineSettings, Rule};
use crate::shards::{ShardLimits, is_hash_key};
pub use crate::stream::{StreamRef, parse_stream};

/// Where the daemon looks for its configuration when `--config` is absent.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kinetail/kinetail.toml";

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
            Some((line, col)) => {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.file.display(),
                    line,
                    col,
                    self.message
                )
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

type Str = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Str,
    #[serde(default)]
    aws: RawAws,
    api: Option<Spanned<RawApi>>,
    checkpoint_interval_ms: Option<Spanned<u64>>,
    shutdown_grace_ms: Option<Spanned<u64>>,
    rescan_interval_ms: Option<Spanned<u64>>,
    max_buffer_bytes: Option<Spanned<u64>>,
    max_open_files: Option<Spanned<u64>>,
    #[serde(default)]
    flow: Vec<Spanned<RawFlow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Str,
    allow_remote: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<Str>,
    endpoint_url: Option<Str>,
    profile: Option<Str>,
    request_timeout_ms: Option<Spanned<u64>>,
    role_arn: Option<Str>,
    external_id: Option<Str>,
    role_session_name: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: Str,
    paths: Spanned<Vec<Str>>,
    #[serde(default)]
    exclude: Vec<Str>,
    stream: Str,
    start_at: Option<Str>,
    partition_key: Option<Spanned<RawKey>>,
    linger_ms: Option<Spanned<u64>>,
    max_in_flight: Option<Spanned<u64>>,
    strip_cr: Option<bool>,
    multiline: Option<Spanned<RawMultiline>>,
    oversize: Option<Str>,
    idle_timeout_ms: Option<Spanned<u64>>,
    ignore_older_secs: Option<Spanned<u64>>,
    explicit_hash_key: Option<Spanned<RawKey>>,
    pace: Option<bool>,
    aggregate: Option<bool>,
    aggregate_max_bytes: Option<Spanned<u64>>,
    shard_records_per_sec: Option<Spanned<u64>>,
    shard_bytes_per_sec: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMultiline {
    start_pattern: Option<Str>,
    continue_pattern: Option<Str>,
    max_lines: Option<Spanned<u64>>,
    max_bytes: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    from: Option<Str>,
    pattern: Option<Str>,
    field: Option<Str>,
    value: Option<Str>,
    fallback: Option<Str>,
    fallback_value: Option<Str>,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file these settings came from (for messages).
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub aws: AwsSettings,
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
            api,
            checkpoint_interval,
            shutdown_grace: _,
            rescan_interval,
            max_buffer_bytes,
            max_open_files,
            flows: _,
        } = new;
        let AwsSettings {
            region,
            endpoint_url,
            profile,
            request_timeout,
            role_arn,
            external_id,
            role_session_name,
        } = aws;
        let old = &self.aws;
        [
            ("state_dir", *state_dir != self.state_dir),
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
            ("aws.region", *region != old.region),
            ("aws.endpoint_url", *endpoint_url != old.endpoint_url),
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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub request_timeout: Duration,
    /// A role to assume (with STS) on top of the default credentials.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub role_session_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowSettings {
    pub name: String,
    /// The glob patterns as written (after `${VAR}` expansion).
    pub paths: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub stream: StreamRef,
    pub start_at: StartAt,
    pub partition_key: KeySpec,
    /// How long a batch may wait for more records before it is sent.
    pub linger: Duration,
    /// How many PutRecords calls this flow may have in flight at once.
    pub max_in_flight: usize,
    /// Strip the `\r` of a `\r\n` terminator (a bare `\r` inside a line stays).
    pub strip_cr: bool,
    pub multiline: Option<MultilineSettings>,
    pub oversize: Oversize,
    /// A file quiet this long at its end is closed until it changes.
    pub idle_timeout: Duration,
    /// Files not modified for this long are not picked up.
    pub ignore_older: Option<Duration>,
    /// Where each record's `ExplicitHashKey` comes from, if anywhere.
    pub explicit_hash_key: Option<KeySpec>,
    /// Per-shard write limits to pace under; `None` sends unpaced.
    pub pace: Option<ShardLimits>,
    /// Aggregate records of a shard up to this many bytes (0: off).
    pub aggregate_bytes: usize,
}

/// What happens to a line too long for one Kinesis record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Sent as several records, in order.
    Split,
    /// Its first part is sent with [`crate::shaping::TRUNCATION_MARKER`] appended; the rest
    /// goes to the dead-letter file.
    Truncate,
    /// Nothing is sent; all of it goes to the dead-letter file.
    Drop,
}

pub const DEFAULT_MULTILINE_MAX_LINES: u64 = 500;
pub const DEFAULT_MULTILINE_TIMEOUT_MS: u64 = 1_000;

pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
pub const DEFAULT_RESCAN_INTERVAL_MS: u64 = 5_000;
/// Enough to keep every lane's call full while the tailers read ahead (the
/// file is the buffer beyond it); each budget byte is about a byte of memory
/// (see `RECORD_OVERHEAD`).
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_LINGER_MS: u64 = 200;
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 4;
pub const DEFAULT_MAX_OPEN_FILES: u64 = 512;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// A shard's write limits (the service's).
pub const DEFAULT_SHARD_RECORDS_PER_SEC: u64 = 1_000;
pub const DEFAULT_SHARD_BYTES_PER_SEC: u64 = 1024 * 1024;
/// The KPL's default aggregate size.
pub const DEFAULT_AGGREGATE_MAX_BYTES: u64 = 51_200;
/// The buffer must hold at least a few maximum-size records, or a single
/// large line could never be admitted.
const MIN_BUFFER_BYTES: u64 = 4 * 1024 * 1024;

/// Turns byte spans into messages with line and column.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            position: Some(self.position(span.start)),
            message: message.into(),
        }
    }

    /// Expands `${VAR}` in a string value; errors point at the value.
    fn string(&self, value: &Str, what: &str) -> Result<String, ConfigError> {
        expand_env(value.get_ref(), |name| std::env::var(name).ok())
            .map_err(|m| self.at(value.span(), format!("{what}: {m}")))
    }

    fn positive_ms(
        &self,
        value: Option<&Spanned<u64>>,
        default: u64,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(Duration::from_millis(default)),
            Some(v) if *v.get_ref() == 0 => {
                Err(self.at(v.span(), format!("{what} must be greater than 0")))
            }
            Some(v) => Ok(Duration::from_millis(*v.get_ref())),
        }
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` from `lookup`. `$${` stands for
/// a literal `${`. An unset variable without a default is an error.
pub fn expand_env(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body_start) = after.strip_prefix("${") {
            let end = body_start
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {input:?}"))?;
            let body = &body_start[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("`${{{body}}}` is not a valid variable reference"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    ));
                }
            }
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A file of kinetail's own in `state_dir` that the glob `pattern` (less
/// `exclude`) would match, if any.
fn reaches_state_dir(
    pattern: &str,
    exclude: &[glob::Pattern],
    state_dir: &std::path::Path,
) -> Option<PathBuf> {
    let pattern = glob::Pattern::new(pattern).ok()?;
    let opts = crate::globs::MATCH_OPTIONS;
    [
        crate::store::STORE_FILE,
        crate::store::PREVIOUS_FILE,
        crate::dead_letter::DEAD_LETTER_FILE,
    ]
    .iter()
    .map(|name| state_dir.join(name))
    .find(|own| {
        pattern.matches_path_with(own, opts)
            && !exclude.iter().any(|x| x.matches_path_with(own, opts))
    })
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => loc.at(span, e.message().trim_end().to_string()),
            None => ConfigError {
                file: file.to_path_buf(),
                position: None,
                message: e.message().trim_end().to_string(),
            },
        })?;

        let state_dir = PathBuf::from(loc.string(&raw.state_dir, "state_dir")?);
        if state_dir.as_os_str().is_empty() {
            return Err(loc.at(raw.state_dir.span(), "state_dir must not be empty"));
        }

        let aws = AwsSettings {
            region: raw
                .aws
                .region
                .as_ref()
                .map(|v| loc.string(v, "aws.region"))
                .transpose()?,
            endpoint_url: match raw.aws.endpoint_url.as_ref() {
                None => None,
                Some(v) => {
                    let url = loc.string(v, "aws.endpoint_url")?;
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(loc.at(
                            v.span(),
                            format!("aws.endpoint_url {url:?} must start with http:// or https://"),
                        ));
                    }
                    Some(url)
                }
            },
            profile: raw
                .aws
                .profile
                .as_ref()
                .map(|v| loc.string(v, "aws.profile"))
                .transpose()?,
            request_timeout: loc.positive_ms(
                raw.aws.request_timeout_ms.as_ref(),
                DEFAULT_REQUEST_TIMEOUT_MS,
                "aws.request_timeout_ms",
            )?,
            role_arn: match raw.aws.role_arn.as_ref() {
                None => None,
                Some(v) => {
                    let arn = loc.string(v, "aws.role_arn")?;
                    let ok = arn.starts_with("arn:aws")
                        && arn.split(':').nth(2) == Some("iam")
                        && arn.contains(":role/");
                    if !ok {
                        return Err(loc.at(v.span(), format!("aws.role_arn {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")));
                    }
                    Some(arn)
                }
            },
            external_id: match raw.aws.external_id.as_ref() {
                None => None,
                Some(v) => {
                    let id = loc.string(v, "aws.external_id")?;
                    if !(2..=1224).contains(&id.len()) {
                        return Err(
                            loc.at(v.span(), "aws.external_id must be 2 to 1224 characters")
                        );
                    }
                    Some(id)
                }
            },
            role_session_name: match raw.aws.role_session_name.as_ref() {
                None => "kinetail".to_string(),
                Some(v) => {
                    let n = loc.string(v, "aws.role_session_name")?;
                    let ok = (2..=64).contains(&n.len())
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
                    if !ok {
                        return Err(loc.at(v.span(), "aws.role_session_name must be 2 to 64 characters of a-z, A-Z, 0-9 and +=,.@_-"));
                    }
                    n
                }
            },
        };

        let max_buffer_bytes = match raw.max_buffer_bytes.as_ref() {
            None => DEFAULT_MAX_BUFFER_BYTES,
            Some(v) if *v.get_ref() < MIN_BUFFER_BYTES => {
                return Err(loc.at(
                    v.span(),
                    format!("max_buffer_bytes must be at least {MIN_BUFFER_BYTES}"),
                ));
            }
            Some(v) => *v.get_ref(),
        };

        let mut flows = Vec::new();
        let mut names = HashSet::new();
        if raw.flow.is_empty() {
            return Err(ConfigError {
                file: file.to_path_buf(),
                position: None,
                message: "no [[flow]] is configured: nothing to ship".into(),
            });
        }
        for flow in &raw.flow {
            let f = flow.get_ref();
            let name = loc.string(&f.name, "flow.name")?;
            if name.is_empty() {
                return Err(loc.at(f.name.span(), "flow.name must not be empty"));
            }
            if !names.insert(name.clone()) {
                return Err(loc.at(f.name.span(), format!("flow name {name:?} is used twice")));
            }
            if f.paths.get_ref().is_empty() {
                return Err(loc.at(f.paths.span(), "flow.paths must list at least one glob"));
            }
            let mut paths = Vec::new();
            for p in f.paths.get_ref() {
                let s = loc.string(p, "flow.paths")?;
                if !s.starts_with('/') {
                    return Err(loc.at(
                        p.span(),
                        format!("flow.paths entry {s:?} must be an absolute path"),
                    ));
                }
                glob::Pattern::new(&s).map_err(|e| {
                    loc.at(
                        p.span(),
                        format!("flow.paths entry {s:?} is not a valid glob: {e}"),
                    )
                })?;
                paths.push(s);
            }
            let mut exclude = Vec::new();
            for p in &f.exclude {
                let s = loc.string(p, "flow.exclude")?;
                exclude.push(glob::Pattern::new(&s).map_err(|e| {
                    loc.at(
                        p.span(),
                        format!("flow.exclude entry {s:?} is not a valid glob: {e}"),
                    )
                })?);
            }
            // A glob that reaches kinetail's own files would ship its
            // checkpoints and its dead letters, and dead-letter those again.
            for (p, s) in f.paths.get_ref().iter().zip(&paths) {
                if let Some(own) = reaches_state_dir(s, &exclude, &state_dir) {
                    return Err(loc.at(
                        p.span(),
                        format!(
                            "flow.paths entry {s:?} matches {}, kinetail's own state: narrow the glob, add the state directory to flow.exclude, or move state_dir",
                            own.display()
                        ),
                    ));
                }
            }
            let stream_s = loc.string(&f.stream, "flow.stream")?;
            let stream = parse_stream(&stream_s)
                .map_err(|m| loc.at(f.stream.span(), format!("flow.stream: {m}")))?;
            let start_at = match f.start_at.as_ref() {
                None => StartAt::Beginning,
                Some(v) => match loc.string(v, "flow.start_at")?.as_str() {
                    "beginning" => StartAt::Beginning,
                    "end" => StartAt::End,
                    other => {
                        return Err(loc.at(
                            v.span(),
                            format!(
                                "flow.start_at must be \"beginning\" or \"end\", not {other:?}"
                            ),
                        ));
                    }
                },
            };
            let partition_key = match f.partition_key.as_ref() {
                None => KeySpec {
                    primary: KeySource::Random,
                    fallback: KeySource::Random,
                },
                Some(k) => key_spec(&loc, k)?,
            };
            let max_in_flight = match f.max_in_flight.as_ref() {
                None => DEFAULT_MAX_IN_FLIGHT as usize,
                Some(v) if !(1..=64).contains(v.get_ref()) => {
                    return Err(loc.at(v.span(), "flow.max_in_flight must be between 1 and 64"));
                }
                Some(v) => *v.get_ref() as usize,
            };
            flows.push(FlowSettings {
                name,
                paths,
                exclude,
                stream,
                start_at,
                partition_key,
                linger: loc.positive_ms(
                    f.linger_ms.as_ref(),
                    DEFAULT_LINGER_MS,
                    "flow.linger_ms",
                )?,
                max_in_flight,
                strip_cr: f.strip_cr.unwrap_or(true),
                multiline: f.multiline.as_ref().map(|m| multiline(&loc, m)).transpose()?,
                explicit_hash_key: match f.explicit_hash_key.as_ref() {
                    None => None,
                    Some(k) => {
                        let spec = key_spec(&loc, k)?;
                        if let (KeySource::Static(v), Some(raw)) = (&spec.primary, k.get_ref().value.as_ref())
                            && !is_hash_key(v)
                        {
                            return Err(loc.at(raw.span(), format!("explicit_hash_key.value {v:?} must be a decimal from 0 to 2^128-1")));
                        }
                        Some(spec)
                    }
                },
                aggregate_bytes: match (f.aggregate.unwrap_or(false), f.aggregate_max_bytes.as_ref()) {
                    (false, _) => 0,
                    (true, None) => DEFAULT_AGGREGATE_MAX_BYTES as usize,
                    (true, Some(v)) if *v.get_ref() < 1024 || *v.get_ref() > crate::aggregate::MAX_AGGREGATE_BYTES as u64 => {
                        return Err(loc.at(
                            v.span(),
                            format!("flow.aggregate_max_bytes must be between 1024 and {}", crate::aggregate::MAX_AGGREGATE_BYTES),
                        ));
                    }
                    (true, Some(v)) => *v.get_ref() as usize,
                },
                pace: if f.pace.unwrap_or(true) {
                    let positive = |v: Option<&Spanned<u64>>, default: u64, what: &str| match v {
                        None => Ok(default),
                        Some(v) if *v.get_ref() == 0 => Err(loc.at(v.span(), format!("{what} must be greater than 0"))),
                        Some(v) => Ok(*v.get_ref()),
                    };
                    Some(ShardLimits {
                        records_per_sec: positive(f.shard_records_per_sec.as_ref(), DEFAULT_SHARD_RECORDS_PER_SEC, "flow.shard_records_per_sec")?,
                        bytes_per_sec: positive(f.shard_bytes_per_sec.as_ref(), DEFAULT_SHARD_BYTES_PER_SEC, "flow.shard_bytes_per_sec")?,
                    })
                } else {
                    None
                },
                idle_timeout: loc.positive_ms(f.idle_timeout_ms.as_ref(), DEFAULT_IDLE_TIMEOUT_MS, "flow.idle_timeout_ms")?,
                ignore_older: match f.ignore_older_secs.as_ref() {
                    None => None,
                    Some(v) if *v.get_ref() == 0 => {
                        return Err(loc.at(v.span(), "flow.ignore_older_secs must be greater than 0 (leave it out to read files of any age)"));
                    }
                    Some(v) => Some(Duration::from_secs(*v.get_ref())),
                },
                oversize: match f.oversize.as_ref() {
                    None => Oversize::Split,
                    Some(v) => match loc.string(v, "flow.oversize")?.as_str() {
                        "split" => Oversize::Split,
                        "truncate" => Oversize::Truncate,
                        "drop" => Oversize::Drop,
                        other => {
                            return Err(loc.at(
                                v.span(),
                                format!("flow.oversize must be \"split\", \"truncate\" or \"drop\", not {other:?}"),
                            ));
                        }
                    },
                },
            });
        }

        let api = match raw.api.as_ref() {
            None => None,
            Some(a) => {
                let l = &a.get_ref().listen;
                let text = loc.string(l, "api.listen")?;
                let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                    loc.at(
                        l.span(),
                        format!("api.listen {text:?} is not an address like \"127.0.0.1:9810\""),
                    )
                })?;
                if !addr.ip().is_loopback() && !a.get_ref().allow_remote.unwrap_or(false) {
                    return Err(loc.at(
                        l.span(),
                        format!("api.listen {addr} is not a loopback address; set api.allow_remote = true to serve it beyond this host"),
                    ));
                }
                Some(addr)
            }
        };
        Ok(Settings {
            source: file.to_path_buf(),
            state_dir,
            aws,
            api,
            checkpoint_interval: loc.positive_ms(
                raw.checkpoint_interval_ms.as_ref(),
                DEFAULT_CHECKPOINT_INTERVAL_MS,
                "checkpoint_interval_ms",
            )?,
            shutdown_grace: match raw.shutdown_grace_ms.as_ref() {
                None => Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
                Some(v) => Duration::from_millis(*v.get_ref()),
            },
            rescan_interval: loc.positive_ms(
                raw.rescan_interval_ms.as_ref(),
                DEFAULT_RESCAN_INTERVAL_MS,
                "rescan_interval_ms",
            )?,
            max_buffer_bytes: usize::try_from(max_buffer_bytes).unwrap_or(usize::MAX),
            max_open_files: match raw.max_open_files.as_ref() {
                None => DEFAULT_MAX_OPEN_FILES as usize,
                Some(v) if !(1..=1_000_000).contains(v.get_ref()) => {
                    return Err(loc.at(v.span(), "max_open_files must be between 1 and 1000000"));
                }
                Some(v) => *v.get_ref() as usize,
            },
            flows,
        })
    }

    /// The effective settings as TOML-like text, for `kinetail check`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let ms = |d: Duration| d.as_millis();
        s.push_str(&format!(
            "# effective settings from {}\n",
            self.source.display()
        ));
        s.push_str(&format!(
            "state_dir = {:?}\n",
            self.state_dir.display().to_string()
        ));
        s.push_str(&format!(
            "checkpoint_interval_ms = {}\n",
            ms(self.checkpoint_interval)
        ));
        s.push_str(&format!(
            "shutdown_grace_ms = {}\n",
            ms(self.shutdown_grace)
        ));
        s.push_str(&format!(
            "rescan_interval_ms = {}\n",
            ms(self.rescan_interval)
        ));
        s.push_str(&format!("max_buffer_bytes = {}\n", self.max_buffer_bytes));
        s.push_str(&format!("max_open_files = {}\n", self.max_open_files));
        match self.api {
            Some(a) => s.push_str(&format!("\n[api]\nlisten = \"{a}\"\n")),
            None => s.push_str("\n# [api]: off\n"),
        }
        s.push_str("\n[aws]\n");
        let opt = |o: &Option<String>| match o {
            Some(v) => format!("{v:?}"),
            None => "(SDK default chain)".to_string(),
        };
        s.push_str(&format!("region = {}\n", opt(&self.aws.region)));
        let endpoint = self.aws.endpoint_url.as_deref().map(crate::redact::url);
        s.push_str(&format!("endpoint_url = {}\n", opt(&endpoint)));
        s.push_str(&format!("profile = {}\n", opt(&self.aws.profile)));
        s.push_str(&format!(
            "request_timeout_ms = {}\n",
            ms(self.aws.request_timeout)
        ));
        match &self.aws.role_arn {
            Some(r) => s.push_str(&format!(
                "role_arn = {r:?}\nexternal_id = {}\nrole_session_name = {:?}\n",
                if self.aws.external_id.is_some() {
                    "(set)"
                } else {
                    "(none)"
                },
                self.aws.role_session_name
            )),
            None => s.push_str("# role_arn: none (the default credential chain as it is)\n"),
        }
        for f in &self.flows {
            s.push_str("\n[[flow]]\n");
            s.push_str(&format!("name = {:?}\n", f.name));
            s.push_str(&format!("paths = {:?}\n", f.paths));
            let ex: Vec<&str> = f.exclude.iter().map(|p| p.as_str()).collect();
            s.push_str(&format!("exclude = {ex:?}\n"));
            s.push_str(&format!("stream = {:?}\n", f.stream.to_string()));
            let start = match f.start_at {
                StartAt::Beginning => "beginning",
                StartAt::End => "end",
            };
            s.push_str(&format!("start_at = {start:?}\n"));
            s.push_str(&format!("partition_key = {}\n", f.partition_key.describe()));
            s.push_str(&format!("linger_ms = {}\n", ms(f.linger)));
            s.push_str(&format!("max_in_flight = {}\n", f.max_in_flight));
            s.push_str(&format!("strip_cr = {}\n", f.strip_cr));
            let oversize = match f.oversize {
                Oversize::Split => "split",
                Oversize::Truncate => "truncate",
                Oversize::Drop => "drop",
            };
            s.push_str(&format!("oversize = {oversize:?}\n"));
            s.push_str(&format!("idle_timeout_ms = {}\n", ms(f.idle_timeout)));
            match &f.explicit_hash_key {
                Some(k) => s.push_str(&format!("explicit_hash_key = {}\n", k.describe())),
                None => s.push_str("# explicit_hash_key: off (Kinesis hashes the partition key)\n"),
            }
            match f.aggregate_bytes {
                0 => s.push_str("aggregate = false\n"),
                n => s.push_str(&format!("aggregate = true\naggregate_max_bytes = {n}\n")),
            }
            match f.pace {
                Some(l) => s.push_str(&format!(
                    "pace = true\nshard_records_per_sec = {}\nshard_bytes_per_sec = {}\n",
                    l.records_per_sec, l.bytes_per_sec
                )),
                None => s.push_str("pace = false\n"),
            }
            match f.ignore_older {
                Some(d) => s.push_str(&format!("ignore_older_secs = {}\n", d.as_secs())),
                None => s.push_str("# ignore_older_secs: off\n"),
            }
            match &f.multiline {
                None => s.push_str("# multiline: off\n"),
                Some(m) => {
                    let (k, re) = match &m.rule {
                        Rule::Start(re) => ("start_pattern", re),
                        Rule::Continue(re) => ("continue_pattern", re),
                    };
                    s.push_str(&format!(
                        "multiline = {{ {k} = {:?}, max_lines = {}, max_bytes = {}, timeout_ms = {} }}\n",
                        re.as_str(),
                        m.max_lines,
                        m.max_bytes,
                        ms(m.timeout)
                    ));
                }
            }
        }
        s
    }
}

fn key_source(
    loc: &Locator<'_>,
    key: &RawKey,
    from: &str,
    span: Range<usize>,
    for_fallback: bool,
) -> Result<KeySource, ConfigError> {
    let what = if for_fallback {
        "partition_key.fallback"
    } else {
        "partition_key.from"
    };
    Ok(match from {
        "random" => KeySource::Random,
        "deterministic" => KeySource::Deterministic,
        "path" => KeySource::Path,
        "hostname" => KeySource::Hostname,
        "static" => {
            let (v, field) = if for_fallback {
                (key.fallback_value.as_ref(), "fallback_value")
            } else {
                (key.value.as_ref(), "value")
            };
            let v = v.ok_or_else(|| {
                loc.at(
                    span.clone(),
                    format!("{what} = \"static\" needs partition_key.{field}"),
                )
            })?;
            let s = loc.string(v, &format!("partition_key.{field}"))?;
            let n = s.chars().count();
            if !(1..=256).contains(&n) {
                return Err(loc.at(
                    v.span(),
                    format!("partition_key.{field} must be 1 to 256 characters, not {n}"),
                ));
            }
            KeySource::Static(s)
        }
        "regex" if !for_fallback => {
            let p = key.pattern.as_ref().ok_or_else(|| {
                loc.at(
                    span.clone(),
                    "partition_key.from = \"regex\" needs partition_key.pattern",
                )
            })?;
            let s = loc.string(p, "partition_key.pattern")?;
            let re = regex::bytes::Regex::new(&s).map_err(|e| {
                loc.at(
                    p.span(),
                    format!("partition_key.pattern is not a valid regex: {e}"),
                )
            })?;
            let group = match re.capture_names().position(|n| n == Some("key")) {
                Some(i) => i,
                None if re.captures_len() > 1 => 1,
                None => {
                    return Err(loc.at(p.span(), "partition_key.pattern needs a capture group (the first one, or one named `key`, is the key)"));
                }
            };
            KeySource::Regex {
                re: re.into(),
                group,
            }
        }
        "json" if !for_fallback => {
            let f = key.field.as_ref().ok_or_else(|| {
                loc.at(
                    span.clone(),
                    "partition_key.from = \"json\" needs partition_key.field",
                )
            })?;
            let s = loc.string(f, "partition_key.field")?;
            let parts: Vec<String> = s.split('.').map(str::to_string).collect();
            if parts.iter().any(String::is_empty) {
                return Err(loc.at(
                    f.span(),
                    format!("partition_key.field {s:?} must be a dotted path like \"user.id\""),
                ));
            }
            KeySource::Json(parts)
        }
        other => {
            let allowed = if for_fallback {
                "random, deterministic, static, path, hostname"
            } else {
                "random, deterministic, static, regex, json, path, hostname"
            };
            return Err(loc.at(
                span,
                format!("{what} must be one of {allowed}, not {other:?}"),
            ));
        }
    })
}

fn multiline(
    loc: &Locator<'_>,
    m: &Spanned<RawMultiline>,
) -> Result<MultilineSettings, ConfigError> {
    let raw = m.get_ref();
    let compile = |v: &Str, what: &str| -> Result<regex::bytes::Regex, ConfigError> {
        let s = loc.string(v, what)?;
        regex::bytes::Regex::new(&s)
            .map_err(|e| loc.at(v.span(), format!("{what} is not a valid regex: {e}")))
    };
    let rule = match (raw.start_pattern.as_ref(), raw.continue_pattern.as_ref()) {
        (Some(p), None) => Rule::Start(compile(p, "multiline.start_pattern")?.into()),
        (None, Some(p)) => Rule::Continue(compile(p, "multiline.continue_pattern")?.into()),
        _ => {
            return Err(loc.at(
                m.span(),
                "multiline needs exactly one of start_pattern and continue_pattern",
            ));
        }
    };
    let max_lines = match raw.max_lines.as_ref() {
        None => DEFAULT_MULTILINE_MAX_LINES as usize,
        Some(v) if *v.get_ref() == 0 => {
            return Err(loc.at(v.span(), "multiline.max_lines must be greater than 0"));
        }
        Some(v) => *v.get_ref() as usize,
    };
    let max_bytes = match raw.max_bytes.as_ref() {
        None => MAX_DATA_BYTES,
        Some(v) if *v.get_ref() == 0 || *v.get_ref() > MAX_DATA_BYTES as u64 => {
            return Err(loc.at(
                v.span(),
                format!("multiline.max_bytes must be between 1 and {MAX_DATA_BYTES}"),
            ));
        }
        Some(v) => *v.get_ref() as usize,
    };
    Ok(MultilineSettings {
        rule,
        max_lines,
        max_bytes,
        timeout: loc.positive_ms(
            raw.timeout_ms.as_ref(),
            DEFAULT_MULTILINE_TIMEOUT_MS,
            "multiline.timeout_ms",
        )?,
    })
}

fn key_spec(loc: &Locator<'_>, key: &Spanned<RawKey>) -> Result<KeySpec, ConfigError> {
    let k = key.get_ref();
    let (from, span) = match k.from.as_ref() {
        Some(v) => (loc.string(v, "partition_key.from")?, v.span()),
        None => ("random".to_string(), key.span()),
    };
    let primary = key_source(loc, k, &from, span, false)?;
    let fallback = match k.fallback.as_ref() {
        Some(v) => key_source(
            loc,
            k,
            &loc.string(v, "partition_key.fallback")?,
            v.span(),
            true,
        )?,
        None => KeySource::Random,
    };
    Ok(KeySpec { primary, fallback })
}

#[cfg(test)]
mod tests {
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
