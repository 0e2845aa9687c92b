//! The readings of the table: registered when a file is opened, looked up
//! by discovery, moved by renames, closed when a tailer ends.

use std::path::{Path, PathBuf};

use super::*;

impl Checkpoints {
    /// The saved entry for a file of a flow, if any.
    pub fn lookup(&self, flow: &str, key: FileKey) -> Option<SavedFile> {
        self.lock().saved.get(&(flow.to_string(), key)).cloned()
    }

    /// Where a new reading of a file should resume: a reading of it still
    /// in memory (its tailer stopped with records in flight) knows more
    /// than the store, so its confirmed offset wins over the saved one.
    pub fn resume_point(&self, flow: &str, key: FileKey) -> Option<SavedFile> {
        let st = self.lock();
        let now = now_ms();
        st.live
            .values()
            .find(|l| l.detached_at.is_none() && l.flow == flow && l.key == key)
            .map(|l| l.to_saved(now))
            .or_else(|| st.saved.get(&(flow.to_string(), key)).cloned())
    }

    /// Whether a tailer follows this file now (a reading that is neither
    /// closed nor detached).
    pub fn is_followed(&self, flow: &str, key: FileKey) -> bool {
        self.lock().live.values().any(|l| {
            l.detached_at.is_none() && l.closed_at.is_none() && l.flow == flow && l.key == key
        })
    }

    /// Starts tracking a file read from `offset`. A stopped reading of the
    /// same file in the same flow still in memory is superseded: its late
    /// acks are ignored (see [`Checkpoints::resume_point`] for where the
    /// new one should start).
    ///
    /// `reading` is the id of the reading it goes on with (its saved
    /// entry's, when it resumes from it); `None` mints a new one, saved
    /// before its first record is sent (see [`Checkpoints::reading`]).
    pub fn register(
        &self,
        flow: &str,
        key: FileKey,
        fingerprint: Fingerprint,
        path: PathBuf,
        offset: u64,
        reading: Option<u64>,
    ) -> FileId {
        let mut st = self.lock();
        // Going on with a reading the store already holds (its saved entry,
        // or a stopped one in memory that was saved).
        let saved = reading.is_some_and(|r| {
            st.saved
                .get(&(flow.to_string(), key))
                .is_some_and(|s| s.reading == Some(r))
                || st.live.values().any(|l| l.reading == r && l.reading_saved)
        });
        st.live
            .retain(|_, l| l.detached_at.is_some() || !(l.flow == flow && l.key == key));
        let (last_sequence, last_confirmed_unix_ms) = st
            .saved
            .get(&(flow.to_string(), key))
            .map(|s| (s.last_sequence.clone(), s.last_confirmed_unix_ms))
            .unwrap_or_default();
        insert_live(
            &mut st,
            Live {
                flow: flow.to_string(),
                key,
                fingerprint,
                path,
                watermark: Watermark::new(offset),
                closed_at: None,
                last_sequence,
                last_confirmed_unix_ms,
                chunks: HashMap::new(),
                sent_hi: offset,
                cut: None,
                detached_at: None,
                ahead: BTreeMap::new(),
                unsaved: true,
                reading: reading.unwrap_or_else(rand::random),
                reading_saved: saved,
            },
        )
    }

    /// Reading `id`'s id, once the store holds it; `None` before (a save
    /// first: a record's id must not change with a crash).
    pub fn reading(&self, id: FileId) -> Option<u64> {
        let st = self.lock();
        let l = st.live.get(&id)?;
        l.reading_saved.then_some(l.reading)
    }

    /// The file of reading `id` was truncated: the tailer reads it again
    /// from 0 under the id returned. The old reading stopped at `read_to`;
    /// it settles what it has in flight, and for [`COPY_WINDOW`] a copy of
    /// the old content may take it over.
    pub fn restart(&self, id: FileId, fingerprint: Fingerprint, read_to: u64) -> Option<FileId> {
        let mut st = self.lock();
        let old = st.live.get_mut(&id)?;
        old.detached_at = Some(Instant::now());
        old.closed_at = Some(old.cut.map_or(read_to, |c| c.min(read_to)));
        let fresh = Live {
            flow: old.flow.clone(),
            key: old.key,
            fingerprint,
            path: old.path.clone(),
            watermark: Watermark::new(0),
            closed_at: None,
            last_sequence: old.last_sequence.clone(),
            last_confirmed_unix_ms: old.last_confirmed_unix_ms,
            chunks: HashMap::new(),
            sent_hi: 0,
            cut: None,
            detached_at: None,
            ahead: BTreeMap::new(),
            unsaved: true,
            // Other content from offset 0: other lines, other ids.
            reading: rand::random(),
            reading_saved: false,
        };
        Some(insert_live(&mut st, fresh))
    }

    pub fn set_fingerprint(&self, id: FileId, fingerprint: Fingerprint) {
        let mut st = self.lock();
        if let Some(l) = st.live.get_mut(&id) {
            l.fingerprint = fingerprint;
            l.unsaved = true;
            st.dirty = true;
        }
    }

    /// A followed file may have been renamed: when `path` is not where its
    /// reading is, its readings, the store, `status`, `/metrics` and dead
    /// letters show `path` from now on, and the old path is returned.
    pub fn set_path(&self, flow: &str, key: FileKey, path: &Path) -> Option<PathBuf> {
        let mut st = self.lock();
        let mut old = None;
        for l in st
            .live
            .values_mut()
            .filter(|l| l.flow == flow && l.key == key && l.detached_at.is_none() && l.path != path)
        {
            old = Some(std::mem::replace(&mut l.path, path.to_path_buf()));
            l.unsaved = true;
        }
        if old.is_some() {
            st.dirty = true;
        }
        old
    }

    /// Where each file `flow` reads now is, by identity: what discovery
    /// compares a scan with, once per scan.
    pub fn paths(&self, flow: &str) -> HashMap<FileKey, PathBuf> {
        self.lock()
            .live
            .values()
            .filter(|l| l.flow == flow && l.detached_at.is_none())
            .map(|l| (l.key, l.path.clone()))
            .collect()
    }

    pub fn path_of(&self, id: FileId) -> Option<PathBuf> {
        self.lock().live.get(&id).map(|l| l.path.clone())
    }

    /// The tailer of `id` stopped after reading up to `read_to`. The entry
    /// becomes a saved one as soon as everything read was confirmed.
    pub fn close(&self, id: FileId, read_to: u64) {
        let mut st = self.lock();
        if let Some(l) = st.live.get_mut(&id) {
            // A stopped reading ends at its cut: what is past it was
            // withdrawn, and is read again next time.
            let end = l.cut.map_or(read_to, |c| c.min(read_to));
            l.closed_at = Some(end);
            if l.watermark.offset() >= end {
                retire(&mut st, id);
            }
        }
    }

    /// Every file being read now, with its confirmed offset.
    pub fn live_files(&self) -> Vec<SavedFile> {
        let st = self.lock();
        let now = now_ms();
        let mut v: Vec<SavedFile> = st
            .live
            .values()
            .filter(|l| l.detached_at.is_none())
            .map(|l| l.to_saved(now))
            .collect();
        v.sort_by(|a, b| (&a.flow, &a.path).cmp(&(&b.flow, &b.path)));
        v
    }

    /// The confirmed offset of a live file.
    pub fn confirmed(&self, id: FileId) -> Option<u64> {
        self.lock().live.get(&id).map(|l| l.watermark.offset())
    }
}
