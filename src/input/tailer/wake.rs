//! What wakes tailers and bounds them: the open-file slots shared by every
//! flow, and the directories where file notifications are seen to arrive.

use super::*;

/// Open-file slots (`max_open_files`), shared by every tailer. Tokio's
/// semaphore hands permits out first come, first served, so a file waiting
/// for a slot is never overtaken indefinitely.
#[derive(Debug)]
pub struct Slots {
    pub sem: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Slots {
    pub fn new(max_open_files: usize) -> Slots {
        Slots {
            sem: Arc::new(Semaphore::new(max_open_files)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a slot; `None` if the semaphore is closed.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = self.sem.clone().acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }

    /// Whether some tailer waits for a slot.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }
}

/// Directories where file notifications have been seen to arrive (a
/// network filesystem accepts a watch and then tells nothing of remote
/// writes): the watcher notes them, tailers ask.
#[derive(Debug, Default)]
pub struct EventDirs(Mutex<HashSet<PathBuf>>);

impl EventDirs {
    pub fn note(&self, dir: &std::path::Path) {
        let mut dirs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !dirs.contains(dir) {
            dirs.insert(dir.to_path_buf());
        }
    }

    pub fn has(&self, dir: &std::path::Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(dir)
    }

    /// Forgets `dir` and the directories under it (it was removed: a
    /// directory made again at its path is not watched).
    pub fn forget_under(&self, dir: &std::path::Path) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| !d.starts_with(dir));
    }

    /// Whether events have arrived from `base` or a directory under it.
    pub fn has_under(&self, base: &std::path::Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d.starts_with(base))
    }
}
