//! Checkpoints: which bytes of which file Kinesis has confirmed, and the
//! store that keeps that across restarts.
//!
//! [`Watermark`] (`watermark.rs`) is the pure core: it takes acknowledged byte ranges in any
//! order and reports the end of the longest contiguous confirmed prefix.
//! [`Checkpoints`] holds one watermark per open file, the entries loaded from
//! disk for files not (yet) open, and saves what changed to the store
//! (`store`: a base written atomically, and a journal of the entries that
//! changed since, each save fsynced). The table's methods are split by
//! what they serve: `files.rs` (readings registered, looked up, moved and
//! closed), `acks.rs` (chunks, calls, the stop's cut, acknowledgements),
//! `copies.rs` (a copy of a truncated file taking over its reading).
//!
//! Invariant: an offset reaches the store only after every record before it
//! was confirmed with a sequence number or durably dead-lettered, because the
//! only way a watermark moves is [`Checkpoints::ack`], which the sink calls
//! after exactly those two events.

mod acks;
mod copies;
mod files;
mod watermark;

pub use copies::{COPY_WINDOW, CopyCandidate};
pub use watermark::Watermark;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
pub use crate::input::identity::{FileKey, Fingerprint};
use crate::records::batcher::{Ack, ChunkId, FileId, NO_CHUNK};
pub use crate::state::store::{SavedFile, StoreError};

/// Entries for files not seen for this long are dropped from the store.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);

/// A chunk's range and how many of its records are not yet acked.
#[derive(Debug)]
struct Chunk {
    start: u64,
    end: u64,
    records: usize,
    remaining: usize,
}

#[derive(Debug)]
struct Live {
    flow: String,
    key: FileKey,
    fingerprint: Fingerprint,
    path: PathBuf,
    watermark: Watermark,
    /// Set when the tailer stopped reading, to where it had read.
    closed_at: Option<u64>,
    last_sequence: Option<String>,
    last_confirmed_unix_ms: Option<u64>,
    /// Chunks handed off and not yet wholly acked.
    chunks: HashMap<ChunkId, Chunk>,
    /// The end of the furthest record put into a `PutRecords` call.
    sent_hi: u64,
    /// Set when the flow stops: records past it are withdrawn, not sent.
    cut: Option<u64>,
    /// Set when the file was truncated and its reading started again under
    /// a new id: this reading only settles its in-flight records, and may
    /// be taken over by a copy of the file until [`COPY_WINDOW`] passes.
    detached_at: Option<Instant>,
    /// Records of finished chunks confirmed past the watermark, by the
    /// chunk's start: what a restart would send again.
    ahead: BTreeMap<u64, usize>,
    /// Its saved form changed since the last save.
    unsaved: bool,
    /// The reading's id (see `SavedFile::reading`), and whether the store
    /// holds it yet.
    reading: u64,
    reading_saved: bool,
}

impl Live {
    fn to_saved(&self, now: u64) -> SavedFile {
        SavedFile {
            flow: self.flow.clone(),
            key: self.key,
            fingerprint: self.fingerprint.clone(),
            path: self.path.clone(),
            offset: self.watermark.offset(),
            updated_unix_ms: now,
            last_sequence: self.last_sequence.clone(),
            last_confirmed_unix_ms: self.last_confirmed_unix_ms,
            reading: Some(self.reading),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    live: HashMap<FileId, Live>,
    saved: HashMap<(String, FileKey), SavedFile>,
    next_id: FileId,
    next_chunk: ChunkId,
    dirty: bool,
    /// An entry may have been added, moved or dropped since the last save,
    /// not only changed: the next save looks at every entry. Otherwise it
    /// writes only the live readings marked `unsaved`.
    whole: bool,
}

/// The checkpoints of every file of every flow.
#[derive(Debug)]
pub struct Checkpoints {
    state: Mutex<State>,
    /// Held for a whole save: saves are written in the order their
    /// snapshots were taken, one at a time.
    store: Mutex<crate::state::store::Store>,
}

impl Checkpoints {
    /// Loads the store in `dir` (creating `dir`, 0700, if needed); see
    /// `store::load` for what happens to a store that cannot be read.
    pub fn open(dir: &Path) -> Result<Checkpoints, StoreError> {
        crate::state::store::create_dir(dir)?;
        let mut state = State {
            whole: true,
            ..State::default()
        };
        let (store, files) = crate::state::store::Store::open(dir)?;
        for f in files {
            state.saved.insert((f.flow.clone(), f.key), f);
        }
        Ok(Checkpoints {
            state: Mutex::new(state),
            store: Mutex::new(store),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this module; the
        // state itself stays consistent (every method leaves it valid), so
        // go on with it rather than poison the whole daemon.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what changed since the last save to the store, if anything
    /// did.
    pub fn save(&self) -> Result<bool, StoreError> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let (files, whole, readings) = {
            let mut st = self.lock();
            if !st.dirty {
                return Ok(false);
            }
            st.dirty = false;
            // Readings whose id this save writes for the first time (a new
            // reading sets `whole`: every live entry is in the snapshot).
            let readings: Vec<FileId> = st
                .live
                .iter()
                .filter(|(_, l)| !l.reading_saved && l.detached_at.is_none())
                .map(|(id, _)| *id)
                .collect();
            if st.whole || store.wants_base() {
                st.whole = false;
                for l in st.live.values_mut() {
                    l.unsaved = false;
                }
                (snapshot(&mut st), true, readings)
            } else {
                (changed(&mut st), false, Vec::new())
            }
        };
        let result = if whole {
            store.save(&files)
        } else {
            store.update(&files)
        };
        let mut st = self.lock();
        if result.is_err() {
            // What was not written is no longer marked: the next save looks
            // at every entry.
            st.dirty = true;
            st.whole = true;
        } else {
            for id in readings {
                if let Some(l) = st.live.get_mut(&id) {
                    l.reading_saved = true;
                }
            }
        }
        result
    }
}

/// Adds a reading under a new id.
fn insert_live(st: &mut State, live: Live) -> FileId {
    let id = st.next_id;
    st.next_id += 1;
    st.live.insert(id, live);
    st.dirty = true;
    st.whole = true;
    id
}

/// A settled reading becomes a saved entry. A detached one (truncated) has
/// nothing to save: it stays until its copy window is over. A stopped one
/// stays too, so that its cut still holds back the records past it that
/// lanes have not withdrawn yet (the store takes it from the live table).
fn retire(st: &mut State, id: FileId) {
    if st
        .live
        .get(&id)
        .is_some_and(|l| l.detached_at.is_some() || l.cut.is_some())
    {
        return;
    }
    if let Some(l) = st.live.remove(&id) {
        st.saved
            .insert((l.flow.clone(), l.key), l.to_saved(now_ms()));
        st.dirty = true;
        st.whole = true;
    }
}

/// The saved form of the live readings marked `unsaved`, unmarked: what a
/// save writes when no entry was added, moved or dropped (a changed offset,
/// sequence number, fingerprint or path). One a second with 1,000 quiet
/// files and a line in one of them, so it does not build, hash or sort the
/// whole table as [`snapshot`] does.
fn changed(st: &mut State) -> Vec<SavedFile> {
    st.live
        .retain(|_, l| l.detached_at.is_none_or(|t| t.elapsed() < COPY_WINDOW));
    let now = now_ms();
    st.live
        .values_mut()
        .filter_map(|l| {
            (std::mem::take(&mut l.unsaved) && l.detached_at.is_none()).then(|| l.to_saved(now))
        })
        .collect()
}

fn snapshot(st: &mut State) -> Vec<SavedFile> {
    let now = now_ms();
    let expire = EXPIRE_AFTER.as_millis() as u64;
    st.saved
        .retain(|_, s| now.saturating_sub(s.updated_unix_ms) < expire);
    // Truncated readings past their copy window are dropped: their late
    // acks, if any, are of content that is gone.
    st.live
        .retain(|_, l| l.detached_at.is_none_or(|t| t.elapsed() < COPY_WINDOW));
    // One entry per file: a file read again has a saved entry and a live
    // one, and the live one is newer.
    let mut seen: HashSet<(&str, FileKey)> = HashSet::with_capacity(st.live.len());
    let mut files: Vec<SavedFile> = Vec::with_capacity(st.live.len() + st.saved.len());
    for l in st.live.values().filter(|l| l.detached_at.is_none()) {
        if seen.insert((l.flow.as_str(), l.key)) {
            files.push(l.to_saved(now));
        }
    }
    for ((flow, key), s) in &st.saved {
        if seen.insert((flow.as_str(), *key)) {
            files.push(s.clone());
        }
    }
    // Sorted for the reader of the file; by bytes, which is cheaper than
    // by path components.
    files.sort_unstable_by(|a, b| {
        (a.flow.as_str(), a.path.as_os_str().as_encoded_bytes())
            .cmp(&(b.flow.as_str(), b.path.as_os_str().as_encoded_bytes()))
    });
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn watermark_joins_out_of_order_ranges() {
        let mut w = Watermark::new(10);
        assert!(!w.ack(20, 30));
        assert_eq!(w.offset(), 10);
        assert!(w.ack(10, 20));
        assert_eq!(w.offset(), 30);
        assert!(!w.ack(10, 20), "a duplicate ack changes nothing");
        assert_eq!(w.gaps(), 0);
    }

    #[test]
    fn a_chunk_moves_the_offset_once_all_its_records_are_acked() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        let id = cp.register(
            "f",
            key,
            Fingerprint::of(b"h"),
            PathBuf::from("/x"),
            0,
            None,
        );
        let offset = || cp.confirmed(id);
        // Lines [0, 10) and [20, 30) handed off; [10, 20) was dead-lettered
        // in between, and acked by its range.
        let a = cp.open_chunk(id, 0, 30, 2);
        let b = cp.open_chunk(id, 30, 50, 3);
        assert!(a != NO_CHUNK && b != NO_CHUNK && a != b);
        cp.ack(&[Ack::Range {
            file: id,
            start: 10,
            end: 20,
        }]);
        let part = |chunk, records| Ack::Chunk {
            file: id,
            chunk,
            records,
        };
        cp.ack(&[part(b, 3)]);
        assert_eq!(offset(), Some(0), "chunk b is ahead of a gap");
        cp.ack(&[part(a, 1)]);
        assert_eq!(offset(), Some(0), "one record of a is still out");
        cp.ack(&[part(a, 1)]);
        assert_eq!(offset(), Some(50));
        cp.ack(&[part(a, 1)]);
        assert_eq!(offset(), Some(50), "a finished chunk ignores late acks");
        assert_eq!(cp.open_chunk(id + 1, 0, 1, 1), NO_CHUNK, "unknown file");
    }

    proptest! {
        /// Whatever order the acks of contiguous records arrive in, the
        /// watermark is the end of the longest confirmed prefix.
        #[test]
        fn watermark_is_longest_contiguous_prefix(
            lens in proptest::collection::vec(1u64..50, 1..60),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 1..60),
        ) {
            let mut ranges = Vec::new();
            let mut off = 5;
            for l in &lens { ranges.push((off, off + l)); off += l; }
            let mut confirmed = vec![false; ranges.len()];
            let mut w = Watermark::new(5);
            let mut remaining: Vec<usize> = (0..ranges.len()).collect();
            for idx in order {
                if remaining.is_empty() { break; }
                let i = remaining.remove(idx.index(remaining.len()));
                w.ack(ranges[i].0, ranges[i].1);
                confirmed[i] = true;
                // A range confirmed again (a dead letter after a lost
                // answer, say) changes nothing.
                let again = (i * 7) % ranges.len();
                if confirmed[again] {
                    w.ack(ranges[again].0, ranges[again].1);
                }
                let prefix = confirmed.iter().take_while(|c| **c).count();
                let expected = if prefix == 0 { 5 } else { ranges[prefix - 1].1 };
                prop_assert_eq!(w.offset(), expected);
            }
        }
    }

    #[test]
    fn store_round_trips_and_an_unreadable_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        let cp = Checkpoints::open(dir.path()).unwrap();
        let id = cp.register(
            "f",
            key,
            Fingerprint::of(b"head"),
            PathBuf::from("/x.log"),
            0,
            None,
        );
        cp.ack(&[Ack::Range {
            file: id,
            start: 0,
            end: 7,
        }]);
        assert!(cp.save().unwrap());
        assert!(!cp.save().unwrap(), "nothing changed, nothing written");
        let cp2 = Checkpoints::open(dir.path()).unwrap();
        let saved = cp2.lookup("f", key).unwrap();
        assert_eq!(saved.offset, 7);
        assert_eq!(saved.fingerprint, Fingerprint::of(b"head"));
        assert!(cp2.lookup("other", key).is_none());

        // One save so far: no previous generation to fall back to.
        std::fs::write(
            dir.path().join(crate::state::store::STORE_FILE),
            b"{not json",
        )
        .unwrap();
        let e = Checkpoints::open(dir.path()).unwrap_err();
        assert!(e.needs_operator(), "{e}");
    }

    #[test]
    fn a_save_after_a_change_writes_only_the_changed_readings_and_a_load_sees_all() {
        let dir = tempfile::tempdir().unwrap();
        let journal_lines = || {
            std::fs::read_to_string(dir.path().join(crate::state::store::JOURNAL_FILE))
                .unwrap()
                .lines()
                .count()
        };
        let cp = Checkpoints::open(dir.path()).unwrap();
        let ids: Vec<FileId> = (0..3u64)
            .map(|i| {
                let path = PathBuf::from(format!("/{i}.log"));
                cp.register(
                    "f",
                    FileKey {
                        dev: 1,
                        ino: 10 + i,
                    },
                    Fingerprint::of(b"h"),
                    path,
                    0,
                    None,
                )
            })
            .collect();
        let ack = |id: FileId, end: u64| {
            cp.ack(&[Ack::Range {
                file: id,
                start: 0,
                end,
            }])
        };
        for &id in &ids {
            ack(id, 5);
        }
        assert!(cp.save().unwrap());
        let head = journal_lines();
        assert_eq!(head, 1, "the first save writes a base and an empty journal");

        ack(ids[1], 9);
        assert!(cp.save().unwrap());
        assert_eq!(journal_lines(), head + 1, "one reading changed, one line");
        assert!(!cp.save().unwrap(), "nothing changed, nothing written");

        let moved = cp.set_path("f", FileKey { dev: 1, ino: 12 }, Path::new("/moved.log"));
        assert_eq!(moved, Some(PathBuf::from("/2.log")));
        cp.note_sequence(ids[0], "49".into());
        assert!(cp.save().unwrap());
        assert_eq!(journal_lines(), head + 3);

        // A reading that ends leaves the live table for the saved one: the
        // next save looks at every entry, and the file keeps its offset.
        cp.close(ids[1], 12);
        ack(ids[1], 12);
        assert!(cp.save().unwrap());

        let again = Checkpoints::open(dir.path()).unwrap();
        let at = |ino| again.lookup("f", FileKey { dev: 1, ino }).unwrap();
        assert_eq!(at(10).offset, 5);
        assert_eq!(at(10).last_sequence.as_deref(), Some("49"));
        assert_eq!(at(11).offset, 12);
        assert_eq!(
            (at(12).offset, at(12).path.clone()),
            (5, PathBuf::from("/moved.log"))
        );
    }

    #[test]
    fn superseded_reading_ignores_late_acks() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey { dev: 1, ino: 3 };
        let cp = Checkpoints::open(dir.path()).unwrap();
        let old = cp.register("f", key, Fingerprint::of(b""), PathBuf::from("/x"), 0, None);
        let new = cp.register("f", key, Fingerprint::of(b""), PathBuf::from("/x"), 0, None);
        cp.ack(&[Ack::Range {
            file: old,
            start: 0,
            end: 100,
        }]);
        assert_eq!(cp.confirmed(new), Some(0));
        assert_eq!(cp.confirmed(old), None);
    }

    #[test]
    fn a_stop_cuts_at_what_was_sent_and_withdrawn_records_let_the_chunk_end_there() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        let key = FileKey { dev: 1, ino: 5 };
        let id = cp.register(
            "f",
            key,
            Fingerprint::of(b"h"),
            PathBuf::from("/x"),
            0,
            None,
        );
        // Nine records in one chunk, spread over two lanes.
        let chunk = cp.open_chunk(id, 0, 100, 9);
        // Lane A starts a call with records ending at 10, 30, 50, 70.
        let mut spans = vec![(id, 70)];
        cp.start_call(&mut spans);
        assert_eq!(spans, vec![(id, u64::MAX)], "no limit while running");
        cp.freeze("f");
        assert_eq!(cp.cut(id), Some(70));
        // Lane B's records end at 20, 40, 60, 80, 100: after the stop it
        // may send those up to the cut only.
        let mut spans = vec![(id, 100)];
        cp.start_call(&mut spans);
        assert_eq!(spans, vec![(id, 70)]);
        let part = |records| Ack::Chunk {
            file: id,
            chunk,
            records,
        };
        cp.ack(&[part(4)]); // A's call confirmed
        cp.ack(&[part(3)]); // B's 20, 40, 60 confirmed
        assert_eq!(cp.confirmed(id), Some(0), "80 and 100 are still counted");
        cp.withdraw(&[part(2)]);
        assert_eq!(cp.confirmed(id), Some(70), "the chunk ends at the cut");
        cp.close(id, 100);
        assert_eq!(cp.resume_point("f", key).map(|s| s.offset), Some(70));
        // A lane that comes to its records past the cut only now still
        // withdraws them, though everything below the cut is confirmed.
        let mut spans = vec![(id, 100)];
        cp.start_call(&mut spans);
        assert_eq!(spans, vec![(id, 70)]);
        cp.save().unwrap();
        assert_eq!(crate::state::store::load(dir.path()).unwrap()[0].offset, 70);
    }

    #[test]
    fn a_new_reading_resumes_from_a_stopped_reading_in_memory_not_the_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        let key = FileKey { dev: 1, ino: 6 };
        let id = cp.register(
            "f",
            key,
            Fingerprint::of(b"h"),
            PathBuf::from("/x"),
            0,
            None,
        );
        cp.ack(&[Ack::Range {
            file: id,
            start: 0,
            end: 10,
        }]);
        cp.save().unwrap();
        cp.ack(&[Ack::Range {
            file: id,
            start: 10,
            end: 50,
        }]);
        // The tailer stopped with records past 50 still in flight.
        cp.close(id, 80);
        assert!(!cp.is_followed("f", key));
        let resume = cp.resume_point("f", key).map(|s| s.offset);
        assert_eq!(resume, Some(50), "the live progress, not the saved 10");
        let again = cp.register(
            "f",
            key,
            Fingerprint::of(b"h"),
            PathBuf::from("/x"),
            50,
            None,
        );
        assert!(cp.is_followed("f", key));
        cp.save().unwrap();
        let saved = crate::state::store::load(dir.path()).unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].offset, 50);
        assert_eq!(cp.confirmed(again), Some(50));
    }

    #[test]
    fn a_copy_takes_over_a_truncated_reading_with_its_acks() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        let orig = FileKey { dev: 1, ino: 7 };
        let copy = FileKey { dev: 1, ino: 8 };
        let id = cp.register(
            "f",
            orig,
            Fingerprint::of(b"head"),
            PathBuf::from("/a"),
            0,
            None,
        );
        let chunk = cp.open_chunk(id, 0, 40, 2);
        // Truncated after reading 45 bytes, the last complete line ending at 40.
        let fresh = cp.restart(id, Fingerprint::of(b""), 40).unwrap();
        assert_ne!(fresh, id);
        // Only the readings whose fingerprint the copy's head matches.
        assert!(cp.copy_candidates("f", copy, |_| false).is_empty());
        let cands = cp.copy_candidates("f", copy, |fp| *fp == Fingerprint::of(b"head"));
        assert_eq!(cands.len(), 1);
        assert_eq!(
            (cands[0].id, &cands[0].fingerprint, cands[0].truncated),
            (id, &Fingerprint::of(b"head"), true)
        );
        assert_eq!(
            cp.take_over(
                id,
                copy,
                Fingerprint::of(b"head"),
                PathBuf::from("/a.1"),
                30
            ),
            None,
            "a copy shorter than what was read adds nothing"
        );
        let from = cp.take_over(
            id,
            copy,
            Fingerprint::of(b"head"),
            PathBuf::from("/a.1"),
            60,
        );
        assert_eq!(from, Some(40));
        // The acks of what was in flight move the copy's reading.
        cp.ack(&[Ack::Chunk {
            file: id,
            chunk,
            records: 2,
        }]);
        assert_eq!(cp.confirmed(id), Some(40));
        cp.save().unwrap();
        let mut saved = crate::state::store::load(dir.path()).unwrap();
        saved.sort_by_key(|s| s.key.ino);
        assert_eq!(saved.len(), 2);
        assert_eq!((saved[0].key, saved[0].offset), (orig, 0));
        assert_eq!((saved[1].key, saved[1].offset), (copy, 40));
        assert_eq!(saved[1].path, PathBuf::from("/a.1"));
    }

    #[test]
    fn closed_file_is_retired_once_everything_read_is_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey { dev: 1, ino: 4 };
        let cp = Checkpoints::open(dir.path()).unwrap();
        let id = cp.register("f", key, Fingerprint::of(b""), PathBuf::from("/x"), 0, None);
        cp.close(id, 10);
        assert_eq!(cp.confirmed(id), Some(0), "still live until confirmed");
        cp.ack(&[Ack::Range {
            file: id,
            start: 0,
            end: 10,
        }]);
        assert_eq!(cp.confirmed(id), None);
        assert_eq!(cp.lookup("f", key).map(|s| s.offset), Some(10));
    }
}
