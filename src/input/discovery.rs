//! Discovery: which files a flow tails.
//!
//! When a notify event says a file appeared, vanished or was renamed, and
//! periodically (every `rescan_interval`, or every [`RESCAN_SAFETY`] where
//! such events are known to arrive), the flow's globs are expanded again. Files are known by identity
//! (device, inode), not by path: a file renamed within the globs keeps its
//! tailer (which is told the new path); a new identity at a known path is a
//! new file (rotation) and gets its own tailer, while the old one drains.
//!
//! Where a new tailer starts: at the saved checkpoint when the store has one
//! for this identity and the fingerprint of the file's head still matches;
//! otherwise at the start, or at the end for `start_at = "end"` during the
//! first scan only (files that appear later are always read from the start).
//!
//! A copy made by logrotate's `copytruncate` is recognised: a new file whose
//! head matches a file the flow follows is held for up to [`COPY_WINDOW`];
//! if that file is truncated meanwhile (or was, within the window), the copy
//! takes over its reading and is read on from the last complete line read
//! before the truncation, so nothing read is sent again and lines not read
//! before the truncation come from the copy. Otherwise it is a new file.
//!
//! Bad paths (unreadable, not a regular file, vanished between listing and
//! opening) are reported once per path and skipped; the others go on.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{FlowSettings, StartAt};
use crate::input::identity::{FileKey, Fingerprint, Head, file_key, fingerprint, head_matches};
use crate::input::tailer::{FlowRuntime, TailStart, Tailer};
use crate::records::batcher::FileId;
use crate::state::checkpoint::{COPY_WINDOW, CopyCandidate, SavedFile};

/// Wakers of a flow's open tailers by path, for notify events.
pub type WakeRegistry = Arc<Mutex<HashMap<PathBuf, Arc<Notify>>>>;

struct Active {
    wake: Arc<Notify>,
    join: JoinHandle<()>,
}

/// How often discovery looks again while it holds a possible copy.
const HOLD_RESCAN: Duration = Duration::from_millis(100);

/// The periodic rescan of a flow whose directories are known to announce
/// changes (an event has arrived from under each of its globs' bases):
/// files that appear, vanish or are renamed there make discovery scan at
/// once, so the periodic scan is only a safety net, at least this far
/// apart. Elsewhere (a network filesystem, a base that does not exist
/// yet) the flow is scanned every `rescan_interval`.
pub const RESCAN_SAFETY: Duration = Duration::from_secs(60);

/// The wait before the next periodic scan of `flow`.
fn next_rescan(flow: &FlowRuntime, rescan: Duration) -> Duration {
    let announced = flow.settings.paths.iter().all(|p| {
        flow.event_dirs
            .has_under(&crate::input::globs::glob_base(p))
    });
    if announced {
        rescan.max(RESCAN_SAFETY)
    } else {
        rescan
    }
}

/// What discovery keeps between scans.
#[derive(Default)]
struct Known {
    active: HashMap<FileKey, Active>,
    /// Possible copies of followed files, by identity, since when.
    held: HashMap<FileKey, Instant>,
    /// Where the checkpoint table says each followed file is, as of the
    /// start of this scan (one lookup per scan, not one per file).
    paths: HashMap<FileKey, PathBuf>,
    /// Files started in this scan: the first [`ANNOUNCED_PER_SCAN`] are
    /// logged at info, the rest at debug with one line that counts them.
    started: usize,
}

/// Files a scan announces one by one at info level.
const ANNOUNCED_PER_SCAN: usize = 20;

/// Expands the flow's globs into the regular files they name (following
/// links by the flow's `follow_symlinks`), without the excluded ones and
/// without kinetail's own files in `state_dir` (a link into it would make
/// kinetail ship its checkpoints and dead letters, each save a new line).
/// Problems are returned beside the paths, one per path.
pub fn expand(flow: &FlowSettings, state_dir: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let opts = crate::input::globs::MATCH_OPTIONS;
    let own = std::fs::canonicalize(state_dir).ok();
    for pattern in &flow.paths {
        let found = crate::input::globs::walk(pattern, flow.follow_symlinks);
        problems.extend(found.problems);
        for path in found.files {
            if flow
                .exclude
                .iter()
                .any(|x| x.matches_path_with(&path, opts))
                || !seen.insert(path.clone())
            {
                continue;
            }
            let real = std::fs::canonicalize(&path).ok();
            if own.is_some() && real.as_ref().and_then(|r| r.parent()) == own.as_deref() {
                problems.push((path, "one of kinetail's own state files; not tailed".into()));
                continue;
            }
            files.push(path);
        }
    }
    (files, problems)
}

/// Runs discovery for one flow until shutdown, then waits for its tailers.
pub async fn run(
    flow: Arc<FlowRuntime>,
    rescan: std::time::Duration,
    hint: Arc<Notify>,
    wakes: WakeRegistry,
    shutdown: CancellationToken,
) {
    let mut known = Known::default();
    let mut reported: HashSet<(PathBuf, String)> = HashSet::new();
    let mut first = true;
    while !shutdown.is_cancelled() {
        known.active.retain(|_, a| !a.join.is_finished());
        known.paths = flow.checkpoints.paths(&flow.settings.name);
        let settings = flow.settings.clone();
        let state_dir = flow.state_dir.clone();
        let scan = tokio::task::spawn_blocking(move || expand(&settings, &state_dir)).await;
        let (paths, problems) = scan.unwrap_or_default();
        for problem in problems {
            if reported.insert(problem.clone()) {
                tracing::warn!(flow = %flow.settings.name, path = %crate::redact::path(&problem.0), error = %problem.1, "cannot tail path");
            }
        }
        let mut held = HashMap::new();
        known.started = 0;
        for path in paths {
            // Nothing starts once a stop has begun.
            if shutdown.is_cancelled() {
                break;
            }
            if let Err(e) = consider(
                &flow, &path, first, &mut known, &mut held, &wakes, &shutdown,
            ) && reported.insert((path.clone(), e.to_string()))
            {
                tracing::warn!(flow = %flow.settings.name, path = %crate::redact::path(&path), error = %e, "cannot tail file");
            }
        }
        // Copies no longer seen are forgotten.
        known.held = held;
        {
            let live: HashSet<*const Notify> = known
                .active
                .values()
                .map(|a| Arc::as_ptr(&a.wake))
                .collect();
            let mut w = wakes.lock().unwrap_or_else(|p| p.into_inner());
            w.retain(|_, n| live.contains(&Arc::as_ptr(n)));
        }
        if known.started > ANNOUNCED_PER_SCAN {
            tracing::info!(flow = %flow.settings.name, files = known.started - ANNOUNCED_PER_SCAN,
                "tailing more files (each listed at debug level)");
        }
        first = false;
        let wait = if known.held.is_empty() {
            next_rescan(&flow, rescan)
        } else {
            rescan.min(HOLD_RESCAN)
        };
        tokio::select! {
            // A stop wins over a pending hint: no scan starts after it.
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = hint.notified() => {
                // Let a burst of events settle into one scan.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for (_, a) in known.active {
        let _ = a.join.await;
    }
}

/// What a new file is with respect to the files the flow follows.
#[derive(Debug, PartialEq, Eq)]
enum Copy {
    /// Not a copy of any of them.
    No,
    /// A copy of a followed file not (yet) truncated, or not yet known
    /// to be one: wait and see.
    Hold,
    /// A copy of what a followed file holds, and every line of it is
    /// confirmed through that file: it is read on from its end.
    Sent,
    /// A copy of a file truncated within the window: it takes over that
    /// reading.
    TakeOver(crate::records::batcher::FileId),
    /// A copy of a file truncated while kinetail was stopped: it takes over
    /// that file's saved entry.
    TakeOverSaved(SavedFile),
}

/// Bytes compared at the end of a possible copy against the original at
/// the same offsets.
const COPY_TAIL: u64 = 4096;

/// What the file a followed reading is on says about a new file whose
/// head matches that reading's fingerprint.
#[derive(Debug, PartialEq, Eq)]
enum Original {
    /// It no longer begins with its head: truncated (and maybe refilled)
    /// under a tailer that has not read since. The new file is its copy;
    /// the tailer will restart the reading, and the copy then takes over.
    Truncated,
    /// It holds the new file's bytes at the same offsets, at the new
    /// file's end as at its head: the new file is a copy of it.
    Holds,
    /// Different bytes at the same offsets: not a copy of it.
    Differs,
    /// Shorter than the new file, or not found at its path.
    Unknown,
}

/// The last `n` bytes of `file` before `end`, if it has them.
fn bytes_before(file: &File, end: u64, n: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, end - n).ok()?;
    Some(buf)
}

/// Compares a new file of `copy_len` bytes with the file a candidate
/// reading is on (see [`Original`]).
fn original_of(c: &CopyCandidate, copy: &File, copy_len: u64) -> Original {
    let Ok(orig) = File::open(&c.path) else {
        return Original::Unknown;
    };
    let Ok(meta) = orig.metadata() else {
        return Original::Unknown;
    };
    if file_key(&meta) != c.key {
        return Original::Unknown;
    }
    if !head_matches(&orig, &c.fingerprint) {
        return Original::Truncated;
    }
    if meta.len() < copy_len {
        return Original::Unknown;
    }
    let n = copy_len.min(COPY_TAIL);
    match (
        bytes_before(copy, copy_len, n),
        bytes_before(&orig, copy_len, n),
    ) {
        (Some(a), Some(b)) if a == b => Original::Holds,
        (Some(_), Some(_)) => Original::Differs,
        _ => Original::Unknown,
    }
}

/// Whether `file` (a new identity of `len` bytes) is a copytruncate copy
/// of a file the flow follows. Its head must match that file's
/// fingerprint; then:
/// - the file was truncated (its reading restarted within the window):
///   the copy takes over that reading;
/// - the file was truncated under a tailer that has not seen it yet: hold
///   until it has;
/// - the file still holds the copy's bytes (compared at the copy's end):
///   hold while the file's confirmed offset is short of the copy's end
///   (a truncation may still come, and the copy then takes over), and
///   once it is past, the copy's lines are all sent: read on from its end;
/// - otherwise (not found, shorter than the copy) hold for
///   [`COPY_WINDOW`] from when the copy was first seen, then it is a new
///   file. A new file whose head merely matches (a common banner) differs
///   at its end, and is a new file at once.
fn copy_of(
    flow: &FlowRuntime,
    file: &File,
    len: u64,
    key: FileKey,
    since: Option<Instant>,
) -> Copy {
    let Ok(mut head) = Head::of(file) else {
        return Copy::No;
    };
    let candidates = flow
        .checkpoints
        .copy_candidates(&flow.settings.name, key, |fp| head.matches(fp));
    let mut wait = false;
    let mut hold = false;
    let mut sent = false;
    for c in candidates {
        if c.truncated {
            return Copy::TakeOver(c.id);
        }
        match original_of(&c, file, len) {
            Original::Truncated => wait = true,
            Original::Holds if c.confirmed < len => wait = true,
            Original::Holds => sent = true,
            Original::Differs => {}
            Original::Unknown => hold = true,
        }
    }
    if wait || (hold && since.is_none_or(|t| t.elapsed() < COPY_WINDOW)) {
        return Copy::Hold;
    }
    if sent {
        return Copy::Sent;
    }
    // Copied and truncated while kinetail was stopped: the saved entry's
    // file is still there, on the same identity, with another head.
    let saved = flow
        .checkpoints
        .saved_copy_candidates(&flow.settings.name, key);
    for s in saved {
        if s.offset > len || !head.matches(&s.fingerprint) {
            continue;
        }
        let truncated = File::open(&s.path).is_ok_and(|f| {
            f.metadata().is_ok_and(|m| file_key(&m) == s.key) && !head_matches(&f, &s.fingerprint)
        });
        if truncated {
            return Copy::TakeOverSaved(s);
        }
    }
    Copy::No
}

/// Why a path is not tailed (reported once per path and reason).
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a regular file; skipped")]
    NotRegular,
    #[error(
        "its size says 0 but it has content (a /proc or /sys pseudo-file): kinetail cannot tell new lines from old ones in it; not tailed"
    )]
    PseudoFile,
}

/// Whether an empty-looking file has content: pseudo-files under `/proc`
/// and `/sys` report size 0 and are generated on each read.
fn size_lies(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    // Asked again after the read: a regular file written meanwhile has a
    // size by then.
    matches!(file.read_at(&mut b, 0), Ok(1)) && file.metadata().is_ok_and(|m| m.len() == 0)
}

#[allow(clippy::too_many_arguments)]
fn consider(
    flow: &Arc<FlowRuntime>,
    path: &Path,
    first_scan: bool,
    known: &mut Known,
    held: &mut HashMap<FileKey, Instant>,
    wakes: &WakeRegistry,
    shutdown: &CancellationToken,
) -> Result<(), Skip> {
    let meta = std::fs::metadata(path)?;
    if follow_known(flow, path, file_key(&meta), known, wakes) || too_old(flow, &meta) {
        return Ok(());
    }
    let file = File::open(path)?;
    // Identity comes from the open descriptor: the path may have been
    // replaced between the listing and the open.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Skip::NotRegular);
    }
    let key = file_key(&meta);
    if known.active.contains_key(&key) || flow.checkpoints.is_followed(&flow.settings.name, key) {
        return Ok(());
    }
    if meta.len() == 0 && size_lies(&file) {
        return Err(Skip::PseudoFile);
    }
    let fp = fingerprint(&file)?;
    let found = Found {
        path,
        file: &file,
        len: meta.len(),
        key,
        fp: &fp,
    };
    let Some((id, offset)) = start_point(flow, &found, first_scan, known, held) else {
        return Ok(());
    };
    start_tailer(
        flow, path, file, key, fp, id, offset, known, wakes, shutdown,
    );
    Ok(())
}

/// A file that is already followed: notes a rename (the checkpoint table
/// owns the path; the wake registry is only an index from the paths
/// notify reports). Whether it was followed.
fn follow_known(
    flow: &FlowRuntime,
    path: &Path,
    key: FileKey,
    known: &Known,
    wakes: &WakeRegistry,
) -> bool {
    let Some(a) = known.active.get(&key) else {
        return false;
    };
    let moved = known.paths.get(&key).is_none_or(|p| p != path);
    if moved && let Some(old) = flow.checkpoints.set_path(&flow.settings.name, key, path) {
        tracing::info!(flow = %flow.settings.name, from = %crate::redact::path(&old), to = %crate::redact::path(path), "file renamed; following it");
        let mut w = wakes.lock().unwrap_or_else(|e| e.into_inner());
        if w.get(&old).is_some_and(|n| Arc::ptr_eq(n, &a.wake)) {
            w.remove(&old);
        }
        w.insert(path.to_path_buf(), a.wake.clone());
    }
    true
}

/// Whether `ignore_older` leaves the file alone (a later scan picks it up
/// if it is written to again).
fn too_old(flow: &FlowRuntime, meta: &std::fs::Metadata) -> bool {
    flow.settings.ignore_older.is_some_and(|limit| {
        meta.modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > limit)
    })
}

/// A file discovery has opened and not followed yet.
struct Found<'a> {
    path: &'a Path,
    file: &'a File,
    len: u64,
    key: FileKey,
    fp: &'a Fingerprint,
}

/// Where reading a newly found file starts, registered in the checkpoint
/// table: its saved entry (if its head still matches), the reading of the
/// file it is a copy of, its end (a copy already sent, `start_at = "end"`
/// at the first scan), or its start. `None` while it is held as a possible
/// copy.
fn start_point(
    flow: &FlowRuntime,
    f: &Found<'_>,
    first_scan: bool,
    known: &Known,
    held: &mut HashMap<FileKey, Instant>,
) -> Option<(FileId, u64)> {
    let name = &flow.settings.name;
    let cp = &flow.checkpoints;
    // A reading of its own (a new id), or the saved one's.
    let register_as = |offset, reading| {
        (
            cp.register(
                name,
                f.key,
                f.fp.clone(),
                f.path.to_path_buf(),
                offset,
                reading,
            ),
            offset,
        )
    };
    let register = |offset| register_as(offset, None);
    let saved = cp.resume_point(name, f.key);
    // A file with an entry whose head changed was truncated (and maybe
    // refilled) while kinetail was stopped: read from its start whatever
    // `start_at` says, since its new lines were written after the entry.
    let known_file = saved.is_some();
    let resume = saved.filter(|saved| {
        saved.fingerprint.len <= f.fp.len && head_matches(f.file, &saved.fingerprint)
    });
    if let Some(saved) = resume {
        if f.len < saved.offset {
            tracing::warn!(flow = %name, path = %crate::redact::path(f.path), size = f.len, offset = saved.offset,
                "file is shorter than its checkpoint: truncated while stopped; reading from the start");
            return Some(register(0));
        }
        return Some(register_as(saved.offset, saved.reading));
    }
    match copy_of(flow, f.file, f.len, f.key, known.held.get(&f.key).copied()) {
        Copy::No => {}
        Copy::Sent => {
            tracing::info!(flow = %name, path = %crate::redact::path(f.path), "copy of a followed file whose lines were all sent through it: reading on from its end");
            return Some(register(f.len));
        }
        Copy::Hold => {
            held.insert(
                f.key,
                known.held.get(&f.key).copied().unwrap_or_else(Instant::now),
            );
            return None;
        }
        Copy::TakeOver(original) => {
            return Some(
                match cp.take_over(original, f.key, f.fp.clone(), f.path.to_path_buf(), f.len) {
                    Some(offset) => {
                        tracing::info!(flow = %name, path = %crate::redact::path(f.path), offset, "copy of a truncated file (copytruncate): reading on from where the original was read");
                        (original, offset)
                    }
                    // The original settled in the meantime, or the copy
                    // holds nothing that was not read: read it on from
                    // its end.
                    None => register(f.len),
                },
            );
        }
        Copy::TakeOverSaved(saved) => {
            let offset = saved.offset;
            tracing::info!(flow = %name, path = %crate::redact::path(f.path), offset, "copy of a file truncated while kinetail was stopped (copytruncate): reading on from that file's checkpoint");
            let id = cp.take_over_saved(&saved, f.key, f.fp.clone(), f.path.to_path_buf());
            return Some((id, offset));
        }
    }
    let at_end = first_scan && flow.settings.start_at == StartAt::End && !known_file;
    Some(register(if at_end { f.len } else { 0 }))
}

#[allow(clippy::too_many_arguments)]
fn start_tailer(
    flow: &Arc<FlowRuntime>,
    path: &Path,
    file: File,
    key: FileKey,
    fp: Fingerprint,
    id: crate::records::batcher::FileId,
    offset: u64,
    known: &mut Known,
    wakes: &WakeRegistry,
    shutdown: &CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    wakes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), wake.clone());
    known.started += 1;
    if known.started <= ANNOUNCED_PER_SCAN {
        tracing::info!(flow = %flow.settings.name, path = %crate::redact::path(path), offset, "tailing file");
    } else {
        tracing::debug!(flow = %flow.settings.name, path = %crate::redact::path(path), offset, "tailing file");
    }
    let start = TailStart {
        id,
        file,
        key,
        fingerprint: fp,
        offset,
        wake: wake.clone(),
    };
    let tailer = Tailer::new(flow.clone(), start, shutdown.clone());
    let join = tokio::spawn(tailer.run());
    known.active.insert(key, Active { wake, join });
}
