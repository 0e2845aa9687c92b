//! `[[flow]]`: which files go to which stream, and how.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::check::Locator;
use super::keys::{explicit_hash_key, key_spec};
use super::raw::{Num, RawFlow, Str};
use super::record::RecordSettings;
use crate::firehose::name::parse_delivery_stream;
use crate::kinesis::shards::ShardLimits;
use crate::kinesis::stream::{StreamRef, parse_stream};
use crate::lines::container::ContainerFormat;
use crate::lines::multiline::MultilineSettings;
use crate::records::batcher::{FIREHOSE, FIREHOSE_RECORD, KINESIS, Limits};
use crate::records::keying::{KeySource, KeySpec};

pub const DEFAULT_LINGER_MS: u64 = 200;
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 4;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// A shard's write limits (the service's).
pub const DEFAULT_SHARD_RECORDS_PER_SEC: u64 = 1_000;
pub const DEFAULT_SHARD_BYTES_PER_SEC: u64 = 1024 * 1024;
/// The KPL's default aggregate size.
pub const DEFAULT_AGGREGATE_MAX_BYTES: u64 = 51_200;
pub const DEFAULT_STRIP_CR: bool = true;
pub const DEFAULT_PACE: bool = true;
pub const DEFAULT_AGGREGATE: bool = false;
/// A Firehose flow joins whole lines into records by default.
pub const DEFAULT_FIREHOSE_AGGREGATE: bool = true;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

pub use crate::input::globs::FollowSymlinks;

/// What happens to a line too long for one Kinesis record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Sent as several records, in order.
    Split,
    /// Its first part is sent with a marker appended (shaping's
    /// `TRUNCATION_MARKER`); the rest goes to the dead-letter file.
    Truncate,
    /// Nothing is sent; all of it goes to the dead-letter file.
    Drop,
}

/// Where a flow's records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A Kinesis data stream (`stream`), by name or ARN.
    Stream(StreamRef),
    /// A Kinesis Data Firehose delivery stream (`firehose`), by name.
    Firehose(String),
}

impl Destination {
    /// The limits of its records and calls.
    pub fn limits(&self) -> &'static Limits {
        match self {
            Destination::Stream(_) => &KINESIS,
            Destination::Firehose(_) => &FIREHOSE,
        }
    }

    pub fn is_firehose(&self) -> bool {
        matches!(self, Destination::Firehose(_))
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stream(s) => write!(f, "stream {s}"),
            Destination::Firehose(n) => write!(f, "firehose {n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowSettings {
    pub name: String,
    /// The glob patterns as written (after `${VAR}` expansion).
    pub paths: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub destination: Destination,
    pub start_at: StartAt,
    pub partition_key: KeySpec,
    /// How long a batch may wait for more records before it is sent.
    pub linger: Duration,
    /// How many PutRecords calls this flow may have in flight at once.
    pub max_in_flight: usize,
    /// Strip the `\r` of a `\r\n` terminator (a bare `\r` inside a line stays).
    pub strip_cr: bool,
    /// The container runtime whose log files the flow reads, if any: its
    /// wrapper is stripped and partial entries merged (`lines::container`).
    pub container_format: Option<ContainerFormat>,
    pub multiline: Option<MultilineSettings>,
    pub oversize: Oversize,
    /// Which symbolic links under the globs are followed.
    pub follow_symlinks: FollowSymlinks,
    /// A file quiet this long at its end is closed until it changes.
    pub idle_timeout: Duration,
    /// Files not modified for this long are not picked up.
    pub ignore_older: Option<Duration>,
    /// Where each record's `ExplicitHashKey` comes from, if anywhere.
    pub explicit_hash_key: Option<KeySpec>,
    /// Per-shard write limits to pace under (for Firehose, the delivery
    /// stream's, when given); `None` sends unpaced.
    pub pace: Option<ShardLimits>,
    /// Aggregate records of a shard (for Firehose, whole lines) up to this
    /// many bytes (0: off).
    pub aggregate_bytes: usize,
    /// What each record is made of.
    pub record: RecordSettings,
}

impl FlowSettings {
    /// Validates one `[[flow]]`; `state_dir` is kinetail's own directory,
    /// which no glob may reach.
    pub(super) fn from_raw(
        loc: &Locator<'_>,
        f: &RawFlow,
        state_dir: &Path,
    ) -> Result<FlowSettings, ConfigError> {
        let name = loc.string(&f.name, "flow.name")?;
        if name.is_empty() {
            return Err(loc.at(f.name.span(), "flow.name must not be empty"));
        }
        let (paths, exclude) = globs(loc, f, state_dir)?;
        let destination = destination(loc, f)?;
        let (start_at, oversize, follow_symlinks) = choices(loc, f)?;
        let partition_key = match f.partition_key.as_ref() {
            None => KeySpec {
                primary: KeySource::Random,
                fallback: KeySource::Random,
            },
            Some(k) => key_spec(loc, k)?,
        };
        Ok(FlowSettings {
            name,
            paths,
            exclude,
            start_at,
            partition_key,
            linger: loc.positive_ms(f.linger_ms.as_ref(), DEFAULT_LINGER_MS, "flow.linger_ms")?,
            max_in_flight: loc.size(
                f.max_in_flight.as_ref(),
                DEFAULT_MAX_IN_FLIGHT,
                1..=64,
                "flow.max_in_flight",
            )?,
            strip_cr: f.strip_cr.unwrap_or(DEFAULT_STRIP_CR),
            container_format: container_format(loc, f)?,
            multiline: f
                .multiline
                .as_ref()
                .map(|m| MultilineSettings::from_raw(loc, m))
                .transpose()?,
            oversize,
            follow_symlinks,
            idle_timeout: loc.positive_ms(
                f.idle_timeout_ms.as_ref(),
                DEFAULT_IDLE_TIMEOUT_MS,
                "flow.idle_timeout_ms",
            )?,
            ignore_older: ignore_older(loc, f)?,
            explicit_hash_key: f
                .explicit_hash_key
                .as_ref()
                .map(|k| explicit_hash_key(loc, k))
                .transpose()?,
            pace: pacing(loc, f, &destination)?,
            aggregate_bytes: aggregation(loc, f, &destination)?,
            destination,
            record: RecordSettings::from_raw(loc, f)?,
        })
    }
}

/// `container_format`: off unless named.
fn container_format(
    loc: &Locator<'_>,
    f: &RawFlow,
) -> Result<Option<ContainerFormat>, ConfigError> {
    loc.choice(
        f.container_format.as_ref(),
        None,
        &[
            ("cri", Some(ContainerFormat::Cri)),
            ("docker", Some(ContainerFormat::Docker)),
            ("auto", Some(ContainerFormat::Auto)),
        ],
        "flow.container_format",
    )
}

/// The flow's settings that are one of a few words.
fn choices(
    loc: &Locator<'_>,
    f: &RawFlow,
) -> Result<(StartAt, Oversize, FollowSymlinks), ConfigError> {
    let start_at = loc.choice(
        f.start_at.as_ref(),
        StartAt::Beginning,
        &[("beginning", StartAt::Beginning), ("end", StartAt::End)],
        "flow.start_at",
    )?;
    let oversize = loc.choice(
        f.oversize.as_ref(),
        Oversize::Split,
        &[
            ("split", Oversize::Split),
            ("truncate", Oversize::Truncate),
            ("drop", Oversize::Drop),
        ],
        "flow.oversize",
    )?;
    let follow_symlinks = loc.choice(
        f.follow_symlinks.as_ref(),
        FollowSymlinks::Owned,
        &[
            ("owned", FollowSymlinks::Owned),
            ("always", FollowSymlinks::Always),
            ("never", FollowSymlinks::Never),
        ],
        "flow.follow_symlinks",
    )?;
    Ok((start_at, oversize, follow_symlinks))
}

/// The flow's globs, checked: absolute, valid, and not reaching kinetail's
/// own state.
fn globs(
    loc: &Locator<'_>,
    f: &RawFlow,
    state_dir: &Path,
) -> Result<(Vec<String>, Vec<glob::Pattern>), ConfigError> {
    if f.paths.get_ref().is_empty() {
        return Err(loc.at(f.paths.span(), "flow.paths must list at least one glob"));
    }
    let pattern = |p: &Str, what: &str| -> Result<(String, glob::Pattern), ConfigError> {
        let s = loc.string(p, what)?;
        let g = glob::Pattern::new(&s).map_err(|e| {
            loc.at(
                p.span(),
                format!("{what} entry {s:?} is not a valid glob: {e}"),
            )
        })?;
        Ok((s, g))
    };
    let mut exclude = Vec::new();
    for p in &f.exclude {
        exclude.push(pattern(p, "flow.exclude")?.1);
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
        let (s, g) = pattern(p, "flow.paths")?;
        // A glob that reaches kinetail's own files would ship its
        // checkpoints and its dead letters, and dead-letter those again.
        if let Some(own) = reaches_state_dir(&g, &exclude, state_dir) {
            return Err(loc.at(
                p.span(),
                format!(
                    "flow.paths entry {s:?} matches {}, kinetail's own state: narrow the glob, add the state directory to flow.exclude, or move state_dir",
                    own.display()
                ),
            ));
        }
        paths.push(s);
    }
    Ok((paths, exclude))
}

/// A file of kinetail's own in `state_dir` that `pattern` (less `exclude`)
/// would match, if any.
fn reaches_state_dir(
    pattern: &glob::Pattern,
    exclude: &[glob::Pattern],
    state_dir: &Path,
) -> Option<PathBuf> {
    let opts = crate::input::globs::MATCH_OPTIONS;
    // The directory as written with its separators tidied (`//`), and
    // where it really is (through links), when it exists.
    let tidy: PathBuf = state_dir.components().collect();
    let real = std::fs::canonicalize(state_dir).ok();
    let dirs: Vec<PathBuf> = std::iter::once(tidy).chain(real).collect();
    crate::state::store::FILES
        .iter()
        .chain(&[crate::state::dead_letter::DEAD_LETTER_FILE])
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|own| {
            pattern.matches_path_with(own, opts)
                && !exclude.iter().any(|x| x.matches_path_with(own, opts))
        })
}

/// How old a file may be to be picked up; `None` for any age.
fn ignore_older(loc: &Locator<'_>, f: &RawFlow) -> Result<Option<Duration>, ConfigError> {
    let secs = loc
        .in_range(
            f.ignore_older_secs.as_ref(),
            1..=u64::MAX,
            "flow.ignore_older_secs",
        )
        .map_err(|mut e| {
            e.message
                .push_str(" (leave it out to read files of any age)");
            e
        })?;
    Ok(secs.map(Duration::from_secs))
}

/// Where the flow sends: exactly one of `stream` and `firehose`. A
/// Firehose flow has no partition keys and no shards: settings about them
/// are an error there, as the Firehose limits are on a stream's flow.
fn destination(loc: &Locator<'_>, f: &RawFlow) -> Result<Destination, ConfigError> {
    let destination = match (&f.stream, &f.firehose) {
        (Some(s), None) => {
            let text = loc.string(s, "flow.stream")?;
            Destination::Stream(
                parse_stream(&text).map_err(|m| loc.at(s.span(), format!("flow.stream: {m}")))?,
            )
        }
        (None, Some(h)) => {
            let text = loc.string(h, "flow.firehose")?;
            Destination::Firehose(
                parse_delivery_stream(&text)
                    .map_err(|m| loc.at(h.span(), format!("flow.firehose: {m}")))?,
            )
        }
        (Some(_), Some(h)) => {
            return Err(loc.at(
                h.span(),
                "flow: set one of stream (a Kinesis data stream) and firehose (a delivery stream), not both",
            ));
        }
        (None, None) => {
            return Err(loc.at(
                f.name.span(),
                "flow: set stream (a Kinesis data stream) or firehose (a Firehose delivery stream)",
            ));
        }
    };
    let span = |v: Option<&Num>| v.map(|n| n.span());
    // Settings of the other kind of destination, with where they are.
    let (misplaced, why) = if destination.is_firehose() {
        (
            vec![
                ("partition_key", f.partition_key.as_ref().map(|k| k.span())),
                (
                    "explicit_hash_key",
                    f.explicit_hash_key.as_ref().map(|k| k.span()),
                ),
                ("pace", f.pace.map(|_| f.name.span())),
                (
                    "shard_records_per_sec",
                    span(f.shard_records_per_sec.as_ref()),
                ),
                ("shard_bytes_per_sec", span(f.shard_bytes_per_sec.as_ref())),
            ],
            "means nothing for a Firehose flow (no partition keys, no shards; firehose_records_per_sec and firehose_bytes_per_sec pace a delivery stream)",
        )
    } else {
        (
            vec![
                (
                    "firehose_records_per_sec",
                    span(f.firehose_records_per_sec.as_ref()),
                ),
                (
                    "firehose_bytes_per_sec",
                    span(f.firehose_bytes_per_sec.as_ref()),
                ),
            ],
            "is for a Firehose flow (firehose = \"...\"); a stream's flow paces its shards (pace, shard_records_per_sec, shard_bytes_per_sec)",
        )
    };
    if let Some((key, Some(at))) = misplaced.into_iter().find(|(_, at)| at.is_some()) {
        return Err(loc.at(at, format!("flow.{key} {why}")));
    }
    Ok(destination)
}

/// The shard limits to pace under, unless `pace = false`; for Firehose, the
/// delivery stream's limits when either is given.
fn pacing(
    loc: &Locator<'_>,
    f: &RawFlow,
    destination: &Destination,
) -> Result<Option<ShardLimits>, ConfigError> {
    if destination.is_firehose() {
        if f.firehose_records_per_sec.is_none() && f.firehose_bytes_per_sec.is_none() {
            return Ok(None);
        }
        return Ok(Some(ShardLimits {
            records_per_sec: loc.ranged(
                f.firehose_records_per_sec.as_ref(),
                u64::MAX,
                1..=u64::MAX,
                "flow.firehose_records_per_sec",
            )?,
            bytes_per_sec: loc.ranged(
                f.firehose_bytes_per_sec.as_ref(),
                u64::MAX,
                1..=u64::MAX,
                "flow.firehose_bytes_per_sec",
            )?,
        }));
    }
    if !f.pace.unwrap_or(DEFAULT_PACE) {
        return Ok(None);
    }
    Ok(Some(ShardLimits {
        records_per_sec: loc.ranged(
            f.shard_records_per_sec.as_ref(),
            DEFAULT_SHARD_RECORDS_PER_SEC,
            1..=u64::MAX,
            "flow.shard_records_per_sec",
        )?,
        bytes_per_sec: loc.ranged(
            f.shard_bytes_per_sec.as_ref(),
            DEFAULT_SHARD_BYTES_PER_SEC,
            1..=u64::MAX,
            "flow.shard_bytes_per_sec",
        )?,
    }))
}

/// The aggregate size in bytes, 0 when aggregation is off. On by default
/// for Firehose (whole lines joined up to the record limit: Firehose bills
/// per record rounded up to 5 KB), off for a stream (the KPL format needs a
/// consumer that de-aggregates).
fn aggregation(
    loc: &Locator<'_>,
    f: &RawFlow,
    destination: &Destination,
) -> Result<usize, ConfigError> {
    let (on, default, most) = match destination {
        Destination::Stream(_) => (
            DEFAULT_AGGREGATE,
            DEFAULT_AGGREGATE_MAX_BYTES,
            crate::records::batcher::MAX_DATA_BYTES,
        ),
        Destination::Firehose(_) => (
            DEFAULT_FIREHOSE_AGGREGATE,
            FIREHOSE_RECORD.bytes as u64,
            FIREHOSE_RECORD.bytes,
        ),
    };
    if !f.aggregate.unwrap_or(on) {
        return Ok(0);
    }
    loc.size(
        f.aggregate_max_bytes.as_ref(),
        default,
        1024..=most as u64,
        "flow.aggregate_max_bytes",
    )
}
