//! A copy of a truncated file (copytruncate) taking over the reading of the
//! original, with its acknowledgements.

use std::path::PathBuf;

use super::*;

/// How long the reading of a truncated file is kept for a copy of it to
/// take over (see [`Checkpoints::take_over`]).
pub const COPY_WINDOW: Duration = Duration::from_secs(5);

/// A reading that a new file could be a copy of (see
/// [`Checkpoints::copy_candidates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCandidate {
    pub id: FileId,
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    pub path: PathBuf,
    /// Its file was truncated and is read again under another id.
    pub truncated: bool,
    /// Its confirmed offset.
    pub confirmed: u64,
}

impl Checkpoints {
    /// Readings of `flow` a new file could be a copy of: files followed now
    /// and files truncated within [`COPY_WINDOW`], whose fingerprint the
    /// new file's head matches (`head`). Empty heads are left out: they
    /// match anything.
    pub fn copy_candidates(
        &self,
        flow: &str,
        except: FileKey,
        mut head: impl FnMut(&Fingerprint) -> bool,
    ) -> Vec<CopyCandidate> {
        let st = self.lock();
        st.live
            .iter()
            .filter(|(_, l)| l.flow == flow && l.key != except && l.fingerprint.len > 0)
            .filter(|(_, l)| l.detached_at.is_none_or(|t| t.elapsed() < COPY_WINDOW))
            .filter(|(_, l)| head(&l.fingerprint))
            .map(|(id, l)| CopyCandidate {
                id: *id,
                key: l.key,
                fingerprint: l.fingerprint.clone(),
                path: l.path.clone(),
                truncated: l.detached_at.is_some(),
                confirmed: l.watermark.offset(),
            })
            .collect()
    }

    /// Saved entries of `flow` (files not read since the start) that a new
    /// file could be a copy of: the file was copied and truncated while
    /// kinetail was stopped. Empty heads and entries of files read now are
    /// left out.
    pub fn saved_copy_candidates(&self, flow: &str, except: FileKey) -> Vec<SavedFile> {
        let st = self.lock();
        let read_now: HashSet<(FileKey, &Fingerprint)> = st
            .live
            .values()
            .filter(|l| l.flow == flow)
            .map(|l| (l.key, &l.fingerprint))
            .collect();
        st.saved
            .values()
            .filter(|s| s.flow == flow && s.key != except && s.fingerprint.len > 0)
            .filter(|s| !read_now.contains(&(s.key, &s.fingerprint)))
            .cloned()
            .collect()
    }

    /// A copy of a file truncated while kinetail was stopped takes over
    /// its saved entry: the copy is read on from the saved offset, and the
    /// file the entry was for is read from its start (its content is new).
    pub fn take_over_saved(
        &self,
        saved: &SavedFile,
        key: FileKey,
        fingerprint: Fingerprint,
        path: PathBuf,
    ) -> FileId {
        {
            let mut st = self.lock();
            if let Some(s) = st.saved.get_mut(&(saved.flow.clone(), saved.key)) {
                s.offset = 0;
                s.fingerprint = Fingerprint::of(b"");
            }
        }
        // The copy goes on with the original's reading, and its ids.
        self.register(
            &saved.flow,
            key,
            fingerprint,
            path,
            saved.offset,
            saved.reading,
        )
    }

    /// A copy of a truncated file (copytruncate) takes over the old
    /// content's reading: its watermark and what it has in flight, under the
    /// copy's identity. Returns the offset the copy is read on from (the
    /// end of the last complete line read before the truncation); `None`
    /// when the copy (of `copy_len` bytes) ends before it: everything in
    /// it was read.
    pub fn take_over(
        &self,
        id: FileId,
        key: FileKey,
        fingerprint: Fingerprint,
        path: PathBuf,
        copy_len: u64,
    ) -> Option<u64> {
        let mut st = self.lock();
        let old = st.live.get(&id)?;
        if old.closed_at.unwrap_or(old.watermark.offset()) > copy_len {
            return None;
        }
        let flow = old.flow.clone();
        st.live.retain(|other, l| {
            *other == id || l.detached_at.is_some() || !(l.flow == flow && l.key == key)
        });
        let l = st
            .live
            .get_mut(&id)
            .filter(|l| l.detached_at.is_some_and(|t| t.elapsed() < COPY_WINDOW))?;
        let from = l.closed_at.unwrap_or(l.watermark.offset());
        l.key = key;
        l.fingerprint = fingerprint;
        l.path = path;
        l.detached_at = None;
        l.closed_at = None;
        l.cut = None;
        st.dirty = true;
        st.whole = true;
        Some(from)
    }
}
