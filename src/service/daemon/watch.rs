//! File notifications: one watcher for every flow, whose events wake
//! tailers and discovery (hints only; polling and rescans find everything
//! without them).

use std::sync::{Arc, Mutex};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::config::FlowSettings;
use crate::input::discovery::WakeRegistry;
use crate::input::globs::glob_base;
use crate::input::tailer::EventDirs;

/// The notify hints and wake registries of the running flows, read by the
/// watcher's callback and replaced on reload.
pub(super) type Watched = Arc<Mutex<Vec<(Arc<Notify>, WakeRegistry)>>>;

/// Starts a notify watcher. Its events are hints only: they wake the
/// tailer of a changed file, and make discovery rescan at once when files
/// appear, vanish or are renamed. If watching fails, polling and the
/// periodic rescan still find everything.
pub(super) fn watch(
    watched: Watched,
    event_dirs: Arc<EventDirs>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Opens, closes and reads (our own among them) say nothing new:
        // waking a tailer for them would only cost a read and a stat.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for dir in event.paths.iter().filter_map(|p| p.parent()) {
            event_dirs.note(dir);
        }
        if matches!(event.kind, EventKind::Remove(_)) {
            // A removed directory takes its watch with it: files in one
            // made again at its path are polled and rescanned for.
            for p in &event.paths {
                event_dirs.forget_under(p);
            }
        }
        let flows = watched.lock().unwrap_or_else(|p| p.into_inner());
        if event.need_rescan() {
            // The kernel dropped events (its queue overflowed): every file
            // may have changed unseen, so every tailer and every flow looks.
            for (hint, reg) in flows.iter() {
                for n in reg.lock().unwrap_or_else(|p| p.into_inner()).values() {
                    n.notify_one();
                }
                hint.notify_one();
            }
            return;
        }
        let structural = matches!(
            event.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
        );
        for (hint, reg) in flows.iter() {
            let reg = reg.lock().unwrap_or_else(|p| p.into_inner());
            for p in &event.paths {
                if let Some(n) = reg.get(p) {
                    n.notify_one();
                }
            }
            if structural {
                hint.notify_one();
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start file notifications; relying on polling");
            None
        }
    }
}

/// Watches the static part of every glob of `flows`.
pub(super) fn add_watches(
    watcher: Option<&mut notify::RecommendedWatcher>,
    flows: &[FlowSettings],
) {
    let Some(watcher) = watcher else { return };
    let mut done = std::collections::HashSet::new();
    for flow in flows {
        for pattern in &flow.paths {
            let base = glob_base(pattern);
            let rest = pattern
                .strip_prefix(base.to_string_lossy().as_ref())
                .unwrap_or(pattern)
                .trim_start_matches('/');
            let recursive = rest.contains('/');
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if !done.insert((base.clone(), recursive)) {
                continue;
            }
            if let Err(e) = watcher.watch(&base, mode) {
                tracing::warn!(flow = %flow.name, path = %crate::redact::path(&base), error = %e, "cannot watch directory; relying on rescans");
            }
        }
    }
}
