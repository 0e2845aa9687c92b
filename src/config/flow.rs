//! `[[flow]]`: which files go to which stream, and how.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::check::Locator;
use super::keys::{explicit_hash_key, key_spec};
use super::raw::{RawFlow, Str};
use super::record::RecordSettings;
use crate::kinesis::shards::ShardLimits;
use crate::kinesis::stream::{StreamRef, parse_stream};
use crate::lines::multiline::MultilineSettings;
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
    /// Which symbolic links under the globs are followed.
    pub follow_symlinks: FollowSymlinks,
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
        let stream_s = loc.string(&f.stream, "flow.stream")?;
        let stream = parse_stream(&stream_s)
            .map_err(|m| loc.at(f.stream.span(), format!("flow.stream: {m}")))?;
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
            stream,
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
            pace: pacing(loc, f)?,
            aggregate_bytes: aggregation(loc, f)?,
            record: RecordSettings::from_raw(loc, f)?,
        })
    }
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

/// The shard limits to pace under, unless `pace = false`.
fn pacing(loc: &Locator<'_>, f: &RawFlow) -> Result<Option<ShardLimits>, ConfigError> {
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

/// The aggregate size in bytes, 0 when aggregation is off.
fn aggregation(loc: &Locator<'_>, f: &RawFlow) -> Result<usize, ConfigError> {
    if !f.aggregate.unwrap_or(DEFAULT_AGGREGATE) {
        return Ok(0);
    }
    loc.size(
        f.aggregate_max_bytes.as_ref(),
        DEFAULT_AGGREGATE_MAX_BYTES,
        1024..=crate::records::batcher::MAX_DATA_BYTES as u64,
        "flow.aggregate_max_bytes",
    )
}
