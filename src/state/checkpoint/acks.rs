//! Chunks handed off, calls started, the stop's cut, and acknowledgements:
//! the only way a watermark moves.

use super::*;

impl Checkpoints {
    /// Opens a chunk: `records` records covering `[start, end)` of a file
    /// (with any lines between them already acked, such as dead letters),
    /// each to be acked with `Ack::Chunk`. The watermark then takes one
    /// range per chunk instead of one per record: a file's records are
    /// confirmed interleaved by several lanes, and keeping each out-of-order
    /// range in the watermark cost more than anything else kinetail does
    /// per record. [`NO_CHUNK`] when the file is no longer live.
    pub fn open_chunk(&self, file: FileId, start: u64, end: u64, records: usize) -> ChunkId {
        let mut st = self.lock();
        // Ids start at 1: 0 is NO_CHUNK.
        st.next_chunk += 1;
        let chunk = st.next_chunk;
        let Some(l) = st.live.get_mut(&file) else {
            return NO_CHUNK;
        };
        let end = l.cut.map_or(end, |c| c.min(end));
        l.chunks.insert(
            chunk,
            Chunk {
                start,
                end,
                records,
                remaining: records,
            },
        );
        chunk
    }

    /// A lane is about to put records into a call. `spans` holds, per file,
    /// the end of its furthest record in the call; each is replaced by how
    /// far that file's records may go: no limit while the flow runs (the
    /// span is booked as sent), the file's cut once it stops. Under one
    /// lock, so a cut never passes a record that was sent.
    pub fn start_call(&self, spans: &mut [(FileId, u64)]) {
        let mut st = self.lock();
        for (file, end) in spans.iter_mut() {
            *end = match st.live.get_mut(file) {
                Some(l) => match l.cut {
                    Some(c) => c,
                    None => {
                        l.sent_hi = l.sent_hi.max(*end);
                        u64::MAX
                    }
                },
                // A reading superseded after a restart: its acks are
                // ignored whatever happens, so nothing is held back.
                None => u64::MAX,
            };
        }
    }

    /// Stops the readings of `flow`: each file's cut is the furthest of what
    /// is confirmed and what is in a call already started. Records below
    /// the cut are still sent (they fill the holes); records past it are
    /// withdrawn ([`Checkpoints::withdraw`]) and read again next time, so a
    /// graceful stop sends nothing twice. Chunks end at the cut.
    pub fn freeze(&self, flow: &str) {
        let mut st = self.lock();
        for l in st.live.values_mut().filter(|l| l.flow == flow) {
            let cut = l.cut.unwrap_or(l.sent_hi.max(l.watermark.offset()));
            l.cut = Some(cut);
            for c in l.chunks.values_mut() {
                c.end = c.end.min(cut);
            }
            if let Some(r) = l.closed_at.as_mut() {
                *r = (*r).min(cut);
            }
        }
    }

    /// The cut of a stopped reading (see [`Checkpoints::freeze`]).
    pub fn cut(&self, id: FileId) -> Option<u64> {
        self.lock().live.get(&id).and_then(|l| l.cut)
    }

    /// Records taken back unsent at a stop: they count as done for their
    /// chunks (which end at the cut), but move no range.
    pub fn withdraw(&self, acks: &[Ack]) {
        let chunks: Vec<Ack> = acks
            .iter()
            .filter(|a| matches!(a, Ack::Chunk { .. }))
            .copied()
            .collect();
        self.ack(&chunks);
    }

    /// Confirmed records of stopped readings that are past their saved
    /// offset (behind a hole): what the next start sends again.
    pub fn confirmed_past_offset(&self) -> usize {
        let st = self.lock();
        st.live
            .values()
            .flat_map(|l| l.chunks.values())
            .map(|c| c.records - c.remaining)
            .sum::<usize>()
            + st.live
                .values()
                .flat_map(|l| l.ahead.values())
                .sum::<usize>()
    }

    /// Records acknowledgements; a file's saved offset moves to the end of
    /// its longest acked prefix.
    pub fn ack(&self, acks: &[Ack]) {
        let mut st = self.lock();
        let mut moved = false;
        let mut finished = Vec::new();
        for a in acks {
            let (file, range) = match *a {
                Ack::Range { file, start, end } => (file, Some((start, end, 0))),
                Ack::Chunk {
                    file,
                    chunk,
                    records,
                } => {
                    let done = st.live.get_mut(&file).and_then(|l| {
                        let c = l.chunks.get_mut(&chunk)?;
                        c.remaining = c.remaining.saturating_sub(records);
                        if c.remaining > 0 {
                            return None;
                        }
                        l.chunks.remove(&chunk).map(|c| (c.start, c.end, c.records))
                    });
                    (file, done)
                }
            };
            if let Some((start, end, records)) = range
                && let Some(l) = st.live.get_mut(&file)
            {
                if l.watermark.ack(start, end) {
                    moved = true;
                    l.unsaved = true;
                }
                note_ahead(l, start, end, records);
                if l.closed_at.is_some_and(|c| l.watermark.offset() >= c) {
                    finished.push(file);
                }
            }
        }
        for id in finished {
            retire(&mut st, id);
        }
        st.dirty |= moved;
    }

    /// Remembers the sequence number of a file's latest confirmed record.
    pub fn note_sequence(&self, id: FileId, sequence: String) {
        let mut st = self.lock();
        if let Some(l) = st.live.get_mut(&id) {
            l.last_sequence = Some(sequence);
            l.last_confirmed_unix_ms = Some(now_ms());
            l.unsaved = true;
            st.dirty = true;
        }
    }
}

/// Keeps count of confirmed records past the watermark.
fn note_ahead(l: &mut Live, start: u64, end: u64, records: usize) {
    let offset = l.watermark.offset();
    while let Some((&s, _)) = l.ahead.first_key_value() {
        if s >= offset {
            break;
        }
        l.ahead.pop_first();
    }
    if records > 0 && start > offset && end > start {
        *l.ahead.entry(start).or_insert(0) += records;
    }
}
