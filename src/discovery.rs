//! Discovery: which files a flow tails.
//!
//! Every `rescan_interval`, and sooner when a notify event hints at a
//! change, the flow's globs are expanded again. Files are known by identity
//! (device, inode), not by path: a file renamed within the globs keeps its
//! tailer (which is told the new path); a new identity at a known path is a
//! new file (rotation) and gets its own tailer, while the old one drains.
//!
//! Where a new tailer starts: at the saved checkpoint when the store has one
//! for this identity and the fingerprint of the file's head still matches;
//! otherwise at the start, or at the end for `start_at = "end"` during the
//! first scan only (files that appear later are always read from the start).
//!
//! Bad paths (unreadable, not a regular file, vanished between listing and
//! opening) are reported once per path and skipped; the others go on.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::FileKey;
use crate::config::{FlowSettings, StartAt};
use crate::tailer::{FlowRuntime, TailStart, Tailer, file_key, fingerprint, head_matches};

/// Wakers of a flow's open tailers by path, for notify events.
pub type WakeRegistry = Arc<Mutex<HashMap<PathBuf, Arc<Notify>>>>;

struct Active {
    path: Arc<Mutex<PathBuf>>,
    wake: Arc<Notify>,
    join: JoinHandle<()>,
}

/// Expands the flow's globs into the regular files they name, without the
/// excluded ones. Problems are returned beside the paths, one per path.
pub fn expand(flow: &FlowSettings) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    for pattern in &flow.paths {
        let entries = match glob::glob_with(pattern, opts) {
            Ok(e) => e,
            Err(e) => {
                problems.push((PathBuf::from(pattern), e.to_string()));
                continue;
            }
        };
        for entry in entries {
            match entry {
                Ok(path) => {
                    if flow
                        .exclude
                        .iter()
                        .any(|x| x.matches_path_with(&path, opts))
                        || !seen.insert(path.clone())
                    {
                        continue;
                    }
                    match std::fs::metadata(&path) {
                        Ok(m) if m.is_file() => files.push(path),
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => problems.push((path, "not a regular file; skipped".into())),
                        Err(e) => problems.push((path, e.to_string())),
                    }
                }
                Err(e) => problems.push((e.path().to_path_buf(), e.error().to_string())),
            }
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
    let mut active: HashMap<FileKey, Active> = HashMap::new();
    let mut reported: HashSet<(PathBuf, String)> = HashSet::new();
    let mut first = true;
    loop {
        active.retain(|_, a| !a.join.is_finished());
        let settings = flow.settings.clone();
        let scan = tokio::task::spawn_blocking(move || expand(&settings)).await;
        let (paths, problems) = scan.unwrap_or_default();
        for problem in problems {
            if reported.insert(problem.clone()) {
                tracing::warn!(flow = %flow.settings.name, path = %problem.0.display(), error = %problem.1, "cannot tail path");
            }
        }
        for path in paths {
            if let Err(e) = consider(&flow, &path, first, &mut active, &wakes, &shutdown)
                && reported.insert((path.clone(), e.clone()))
            {
                tracing::warn!(flow = %flow.settings.name, path = %path.display(), error = %e, "cannot tail file");
            }
        }
        {
            let mut w = wakes.lock().unwrap_or_else(|p| p.into_inner());
            w.retain(|_, n| active.values().any(|a| Arc::ptr_eq(&a.wake, n)));
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(rescan) => {}
            _ = hint.notified() => {
                // Let a burst of events settle into one scan.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, a) in active {
        let _ = a.join.await;
    }
}

fn consider(
    flow: &Arc<FlowRuntime>,
    path: &Path,
    first_scan: bool,
    active: &mut HashMap<FileKey, Active>,
    wakes: &WakeRegistry,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let key = file_key(&meta);
    if let Some(a) = active.get(&key) {
        let mut p = a.path.lock().unwrap_or_else(|e| e.into_inner());
        if p.as_path() != path {
            tracing::info!(flow = %flow.settings.name, from = %p.display(), to = %path.display(), "file renamed; following it");
            *p = path.to_path_buf();
            wakes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), a.wake.clone());
        }
        return Ok(());
    }
    if let Some(limit) = flow.settings.ignore_older
        && meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > limit)
    {
        // Picked up by a later scan if it is written to again.
        return Ok(());
    }
    let file = File::open(path).map_err(|e| e.to_string())?;
    // Identity comes from the open descriptor: the path may have been
    // replaced between the listing and the open.
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file; skipped".into());
    }
    let key = file_key(&meta);
    if active.contains_key(&key) {
        return Ok(());
    }
    let fp = fingerprint(&file).map_err(|e| e.to_string())?;
    let name = &flow.settings.name;
    let offset = match flow.checkpoints.lookup(name, key) {
        Some(saved)
            if saved.fingerprint.len <= fp.len && head_matches(&file, &saved.fingerprint) =>
        {
            if meta.len() < saved.offset {
                tracing::warn!(flow = %name, path = %path.display(), size = meta.len(), offset = saved.offset,
                    "file is shorter than its checkpoint: truncated while stopped; reading from the start");
                0
            } else {
                saved.offset
            }
        }
        _ if first_scan && flow.settings.start_at == StartAt::End => meta.len(),
        _ => 0,
    };
    let id = flow
        .checkpoints
        .register(name, key, fp.clone(), path.to_path_buf(), offset);
    let shared_path = Arc::new(Mutex::new(path.to_path_buf()));
    let wake = Arc::new(Notify::new());
    wakes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), wake.clone());
    tracing::info!(flow = %name, path = %path.display(), offset, "tailing file");
    let start = TailStart {
        id,
        file,
        key,
        fingerprint: fp,
        offset,
        path: shared_path.clone(),
        wake: wake.clone(),
    };
    let tailer = Tailer::new(flow.clone(), start, shutdown.clone());
    let join = tokio::spawn(tailer.run());
    active.insert(
        key,
        Active {
            path: shared_path,
            wake,
            join,
        },
    );
    Ok(())
}
