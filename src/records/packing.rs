//! Packing records into the entries of a lane's calls when aggregating
//! (`aggregate = true`), and compressing what is sent.
//!
//! An aggregate has a form per destination: for Kinesis the KPL's
//! (`records::aggregate`, which consumers de-aggregate), for Firehose whole
//! lines one after the other (each record's data ends with its newline), so
//! that the objects Firehose writes read exactly as with one line a record.
//! Firehose bills per record rounded up to 5 KB, so its aggregates are
//! sized to whole 5 KB steps as Kinesis's are to 25 KB payload units.
//!
//! Kinesis bills each record in PUT payload units of 25 KB, data and
//! partition key counted: an aggregate of 26 KB costs two. So aggregates
//! are sized to end just under a multiple of [`PAYLOAD_UNIT`] (the largest
//! multiple within `aggregate_max_bytes`) whenever more records are waiting;
//! with compression, it is the compressed aggregate that is sized, from the
//! ratio the last aggregates had, and packed again smaller in the rare case
//! the guess overshoots. Nothing waits for more records: an aggregate packs
//! what is queued.
//!
//! Pure, but for the compression ratio it remembers between aggregates.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

use crate::records::aggregate::Aggregator;
use crate::records::batcher::{
    Entry, FIREHOSE_BILLING_UNIT, FIREHOSE_RECORD, MAX_DATA_BYTES, MAX_KEY_BYTES, PAYLOAD_UNIT,
    Record,
};
use crate::records::compress::Compression;

/// What an aggregate is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The KPL's aggregated record (Kinesis).
    Kpl,
    /// The records' data one after the other (Firehose).
    Lines,
}

#[derive(Debug)]
pub struct Packer {
    form: Form,
    /// The most bytes an aggregate may send (`aggregate_max_bytes`).
    max_bytes: usize,
    /// The largest record the destination takes, data and key.
    record_max: usize,
    /// What the destination bills by: aggregates end just under a multiple.
    unit: usize,
    compression: Compression,
    /// Compressed size over uncompressed size, as last seen (an `f64`'s
    /// bits: a lane's future must be `Send`).
    ratio: AtomicU64,
}

/// How much smaller than the estimate an aggregate is packed, so that a
/// ratio slightly worse than the last one still fits its units.
const SAFETY: f64 = 0.97;

/// How many times an aggregate is packed at most, when the compression
/// ratio guessed for it was off.
const MAX_ATTEMPTS: u32 = 4;

impl Packer {
    /// KPL aggregates for Kinesis.
    pub fn new(max_bytes: usize, compression: Compression) -> Packer {
        Packer {
            form: Form::Kpl,
            max_bytes: max_bytes.min(MAX_DATA_BYTES),
            record_max: MAX_DATA_BYTES,
            unit: PAYLOAD_UNIT,
            compression,
            ratio: AtomicU64::new(0.25f64.to_bits()),
        }
    }

    /// Lines joined into Firehose records.
    pub fn lines(max_bytes: usize, compression: Compression) -> Packer {
        Packer {
            form: Form::Lines,
            max_bytes: max_bytes.min(FIREHOSE_RECORD.bytes),
            record_max: FIREHOSE_RECORD.bytes,
            unit: FIREHOSE_BILLING_UNIT,
            compression,
            ratio: AtomicU64::new(0.25f64.to_bits()),
        }
    }

    fn ratio(&self) -> f64 {
        f64::from_bits(self.ratio.load(Ordering::Relaxed))
    }

    /// The bytes (data and key) an aggregate aims to send: whole payload
    /// units when the limit allows at least one.
    fn target(&self) -> usize {
        if self.max_bytes >= self.unit {
            self.max_bytes / self.unit * self.unit
        } else {
            self.max_bytes
        }
    }

    /// Whether a run of records of one shard, `bytes` long as read, is too
    /// small to fill an aggregate's payload units (so, when more may come
    /// within the linger, it is worth waiting for).
    pub fn wants_more(&self, bytes: usize) -> bool {
        let fill = if self.compression.is_on() {
            (self.target() as f64 / self.ratio() * SAFETY) as usize
        } else {
            self.target()
        };
        bytes < fill
    }

    /// `r` as an entry of its own: compressed when compression is on.
    pub fn single(&self, r: Record) -> Entry {
        let encoded = self
            .compression
            .is_on()
            .then(|| self.compression.apply(&r.data));
        Entry {
            records: smallvec::smallvec![r],
            encoded,
        }
    }

    /// An entry starting with `first`, with the records of the same shard
    /// that follow it in `queue` as long as they fit.
    pub fn pack(&self, first: Record, queue: &mut VecDeque<Record>) -> Entry {
        let shard = first.shard;
        // The aggregate takes the key of its first record.
        let target = self
            .target()
            .saturating_sub(first.key.len().min(MAX_KEY_BYTES));
        let uncompressed_room = self.record_max - self.compression.margin(self.record_max);
        let mut limit = if self.compression.is_on() {
            ((target as f64 / self.ratio() * SAFETY) as usize).min(uncompressed_room)
        } else {
            target
        };
        let mut first = first;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut agg = Joining::new(self.form, limit);
            if let Err(r) = agg.try_add(first) {
                // Too large to aggregate with its key: sent alone.
                return self.single(r);
            }
            while queue.front().is_some_and(|n| n.shard == shard) {
                let Some(next) = queue.pop_front() else { break };
                if let Err(next) = agg.try_add(next) {
                    queue.push_front(next);
                    break;
                }
            }
            let (data, members) = agg.finish();
            let mut members: SmallVec<[Record; 1]> = members.into();
            if members.len() == 1 {
                // One record alone goes out plain, without the overhead.
                return match members.pop() {
                    Some(r) => self.single(r),
                    None => Entry {
                        records: members,
                        encoded: Some(data),
                    },
                };
            }
            if !self.compression.is_on() {
                return Entry {
                    records: members,
                    encoded: Some(data),
                };
            }
            let packed = self.compression.apply(&data);
            let ratio = packed.len() as f64 / data.len().max(1) as f64;
            self.ratio
                .store(ratio.clamp(0.001, 1.0).to_bits(), Ordering::Relaxed);
            let sent = packed.len() + first_key_len(&members);
            // The guess was off: over its units, or well under them while
            // more records of the shard wait. The records go back, and are
            // packed again with the ratio just seen (a few times at most).
            let over = sent > self.target();
            let under = sent < self.target() * 9 / 10
                && limit < uncompressed_room
                && queue.front().is_some_and(|n| n.shard == shard);
            if attempt >= MAX_ATTEMPTS || !(over || under) {
                return Entry {
                    records: members,
                    encoded: Some(packed),
                };
            }
            limit = ((limit as f64 * target as f64 / packed.len() as f64 * SAFETY) as usize)
                .min(uncompressed_room);
            let mut rest = members.into_iter();
            let Some(head) = rest.next() else {
                return Entry {
                    records: SmallVec::new(),
                    encoded: Some(packed),
                };
            };
            for r in rest.rev() {
                queue.push_front(r);
            }
            first = head;
        }
    }
}

/// An aggregate being packed, in its destination's form.
enum Joining {
    Kpl(Aggregator),
    Lines {
        limit: usize,
        data: Vec<u8>,
        members: Vec<Record>,
    },
}

impl Joining {
    fn new(form: Form, limit: usize) -> Joining {
        match form {
            Form::Kpl => Joining::Kpl(Aggregator::new(limit)),
            Form::Lines => Joining::Lines {
                limit,
                data: Vec::new(),
                members: Vec::new(),
            },
        }
    }

    /// Adds `r` if the aggregate stays within its limit.
    fn try_add(&mut self, r: Record) -> Result<(), Record> {
        match self {
            Joining::Kpl(a) => a.try_add(r),
            Joining::Lines {
                limit,
                data,
                members,
            } => {
                if data.len() + r.data.len() > *limit {
                    return Err(r);
                }
                data.extend_from_slice(&r.data);
                members.push(r);
                Ok(())
            }
        }
    }

    /// The aggregate's data and its records.
    fn finish(self) -> (Vec<u8>, Vec<Record>) {
        match self {
            Joining::Kpl(a) => a.finish(),
            Joining::Lines { data, members, .. } => (data, members),
        }
    }
}

fn first_key_len(records: &[Record]) -> usize {
    records.first().map_or(0, |r| r.key.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::batcher::NO_SHARD;

    fn rec(i: u64, data: Vec<u8>) -> Record {
        Record::new(data, format!("{i:016x}"))
            .ranged(1, i * 100, i * 100 + 100)
            .on_shard(0)
            .chunked(1)
    }

    fn units_of(entries: &[Entry]) -> (usize, usize) {
        let bytes: usize = entries.iter().map(Entry::api_size).sum();
        let units: usize = entries
            .iter()
            .map(|e| e.api_size().div_ceil(PAYLOAD_UNIT))
            .sum();
        (bytes, units)
    }

    fn pack_all(p: &Packer, records: Vec<Record>) -> Vec<Entry> {
        let mut q: VecDeque<Record> = records.into();
        let mut out = Vec::new();
        while let Some(first) = q.pop_front() {
            out.push(p.pack(first, &mut q));
        }
        out
    }

    fn lines(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| rec(i, format!("2026-11-26T13:44:{:02}.{:03}Z INFO request {i} served in {} ms from cache shard {}", i % 60, i % 1000, i * 7 % 900, i % 13).into_bytes()))
            .collect()
    }

    #[test]
    fn a_backlog_costs_at_most_five_percent_over_its_bytes_in_units() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let p = Packer::new(51_200, c);
            let entries = pack_all(&p, lines(30_000));
            let (bytes, units) = units_of(&entries);
            let floor = bytes as f64 / PAYLOAD_UNIT as f64;
            assert!(
                units as f64 <= floor * 1.05 + 1.0,
                "{c:?}: {units} units for {bytes} bytes: {:?}",
                entries.iter().map(Entry::api_size).collect::<Vec<_>>()
            );
            assert_eq!(
                entries.iter().map(|e| e.records.len()).sum::<usize>(),
                30_000,
                "{c:?}"
            );
            // Order kept: the records come out as they went in.
            let starts: Vec<u64> = entries
                .iter()
                .flat_map(|e| e.records.iter().map(|r| r.start))
                .collect();
            assert!(starts.windows(2).all(|w| w[0] < w[1]), "{c:?}");
            assert!(entries.iter().all(|e| e.api_size() <= 1024 * 1024));
        }
    }

    #[test]
    fn compressed_entries_decompress_to_the_aggregate_or_the_record() {
        let p = Packer::new(51_200, Compression::Gzip);
        let mut alone = rec(1, b"alone".to_vec());
        alone.shard = NO_SHARD;
        let e = p.single(alone);
        let mut back = Vec::new();
        use std::io::Read;
        let _ = flate2::read::GzDecoder::new(e.data()).read_to_end(&mut back);
        assert_eq!(back, b"alone");
        let entries = pack_all(&p, lines(2_000));
        let mut back = Vec::new();
        let _ = flate2::read::GzDecoder::new(entries[0].data()).read_to_end(&mut back);
        let inner = crate::records::aggregate::decode(&back).unwrap_or_default();
        assert_eq!(inner.len(), entries[0].records.len());
        assert_eq!(inner[0].2, entries[0].records[0].data);
    }
}
