//! Batching: records, and packing them into `PutRecords` calls under the
//! API's limits.
//!
//! Pure: [`Batch::try_push`] decides whether a record fits; the lane in
//! `sink` decides when to send (full, or linger elapsed). The limits are the
//! API's constants, not settings: 500 records per call, 5 MiB per call and
//! 1 MiB per record, both counting data and partition key bytes.

use smallvec::{SmallVec, smallvec};

/// At most this many records in one `PutRecords` call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// At most this many bytes (data plus partition keys) in one call.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// At most this many bytes (data plus partition key) in one record.
pub const MAX_BYTES_PER_RECORD: usize = 1024 * 1024;
/// What a destination takes in one record: at most `bytes`, counting the
/// partition key when `key_counts`. Framing and shaping cut lines by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimit {
    pub bytes: usize,
    pub key_counts: bool,
}

/// Kinesis Data Streams: 1 MiB, data and partition key.
pub const KINESIS_RECORD: RecordLimit = RecordLimit {
    bytes: MAX_BYTES_PER_RECORD,
    key_counts: true,
};

/// What one destination takes, record and call: the limits half of a
/// lane's contract with its destination (ARCHITECTURE.md, "The destination
/// seam"). Framing and shaping cut by `record`; a batch packs under the
/// call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub record: RecordLimit,
    pub call_records: usize,
    /// Bytes of a call, counted as `record` counts them.
    pub call_bytes: usize,
}

/// Kinesis Data Streams' `PutRecords`: 500 records, 5 MiB a call.
pub const KINESIS: Limits = Limits {
    record: KINESIS_RECORD,
    call_records: MAX_RECORDS_PER_CALL,
    call_bytes: MAX_BYTES_PER_CALL,
};

/// Kinesis Data Firehose: 1,000 KiB of data a record, no key.
pub const FIREHOSE_RECORD: RecordLimit = RecordLimit {
    bytes: 1_024_000,
    key_counts: false,
};

/// Kinesis Data Firehose's `PutRecordBatch`: 500 records, 4 MiB a call.
pub const FIREHOSE: Limits = Limits {
    record: FIREHOSE_RECORD,
    call_records: 500,
    call_bytes: 4 * 1024 * 1024,
};

/// Firehose bills ingestion per record rounded up to the next 5 KB
/// (counted here as 5,000 bytes, to be safe).
pub const FIREHOSE_BILLING_UNIT: usize = 5_000;

/// Identifies one reading of one file for the lifetime of the process. A
/// truncated file gets a new id, so late acks for its old content are ignored.
pub type FileId = u64;

/// Identifies the records of one hand-off of one file (see
/// `state::checkpoint::Checkpoints::open_chunk`); [`NO_CHUNK`] for records acked one by one.
pub type ChunkId = u64;
pub const NO_CHUNK: ChunkId = 0;

/// One acknowledgement: records confirmed by Kinesis or durably
/// dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// A byte range of a file.
    Range { file: FileId, start: u64, end: u64 },
    /// `records` of the records of a chunk; the chunk's whole range is
    /// acked once all of them are.
    Chunk {
        file: FileId,
        chunk: ChunkId,
        records: usize,
    },
}

/// The most characters Kinesis accepts in a partition key.
pub const MAX_KEY_CHARS: usize = 256;
/// The longest partition key in bytes: its characters, of up to 4 bytes.
pub const MAX_KEY_BYTES: usize = MAX_KEY_CHARS * 4;
/// The longest line data framing emits (and the largest aggregate), so
/// that any key still fits.
pub const MAX_DATA_BYTES: usize = MAX_BYTES_PER_RECORD - MAX_KEY_BYTES;
/// Kinesis bills each record in PUT payload units of 25 KB (counted here as
/// 25,000 bytes, data and partition key, to be safe).
pub const PAYLOAD_UNIT: usize = 25_000;
/// What a record costs in memory beyond its data and key, for the
/// in-flight byte budget: the entry that holds it on its way (the largest
/// form it takes), and the allocator rounding up its data and key. Without
/// it, a budget of 100-byte lines would hold twice its size.
pub const RECORD_OVERHEAD: usize = std::mem::size_of::<Entry>() + 32;

/// One line on its way to Kinesis, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub data: Vec<u8>,
    pub key: String,
    pub file: FileId,
    /// The file range this record covers (terminator included).
    pub start: u64,
    pub end: u64,
    /// The `ExplicitHashKey` (a decimal below 2^128), when the flow sets one.
    pub ehk: Option<String>,
    /// The tag of the shard it goes to (see `shards::Router`), or
    /// [`NO_SHARD`] when no map is known.
    pub shard: u32,
    /// The shard map it was keyed under (see `shards::Router::turn`).
    pub epoch: u32,
    /// The hand-off it belongs to, whose range is acked once all its
    /// records are; [`NO_CHUNK`] to be acked by its own range.
    pub chunk: ChunkId,
}

/// The shard of a record routed without a shard map.
pub const NO_SHARD: u32 = u32::MAX;
/// The shard tag of every record to a destination without shards
/// (Firehose): one window paces the whole delivery stream, and aggregates
/// pack any of its records.
pub const ONE_STREAM: u32 = 0;

impl Record {
    /// A record of `data` under `key`, from nowhere yet: file 0, the range
    /// of `data` and its terminator, no explicit hash key, no shard, no
    /// chunk. The setters below place it.
    pub fn new(data: Vec<u8>, key: impl Into<String>) -> Record {
        let end = data.len() as u64 + 1;
        Record {
            data,
            key: key.into(),
            file: 0,
            start: 0,
            end,
            ehk: None,
            shard: NO_SHARD,
            epoch: 0,
            chunk: NO_CHUNK,
        }
    }

    /// The file range it covers.
    pub fn ranged(mut self, file: FileId, start: u64, end: u64) -> Record {
        (self.file, self.start, self.end) = (file, start, end);
        self
    }

    /// The hand-off it belongs to.
    pub fn chunked(mut self, chunk: ChunkId) -> Record {
        self.chunk = chunk;
        self
    }

    /// Its explicit hash key.
    pub fn with_ehk(mut self, ehk: Option<String>) -> Record {
        self.ehk = ehk;
        self
    }

    /// The shard (tag) it goes to.
    pub fn on_shard(mut self, shard: u32) -> Record {
        self.shard = shard;
        self
    }

    /// The size Kinesis counts against its limits.
    pub fn api_size(&self) -> usize {
        self.data.len() + self.key.len()
    }

    /// What this record holds of the in-flight memory budget.
    pub fn budget_size(&self) -> usize {
        self.api_size() + RECORD_OVERHEAD
    }
}

/// One entry of a `PutRecords` call: a record, or an aggregate of several
/// (see `aggregate` and `packing`). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// One record inline (the common case: no allocation per line), or the
    /// records of an aggregate.
    pub records: SmallVec<[Record; 1]>,
    /// The data sent when it is not the one record's own: the encoded
    /// aggregate of `records`, or a record compressed by the lane.
    pub encoded: Option<Vec<u8>>,
}

impl Entry {
    pub fn single(r: Record) -> Entry {
        Entry {
            records: smallvec![r],
            encoded: None,
        }
    }

    fn first(&self) -> Option<&Record> {
        self.records.first()
    }

    /// The data Kinesis stores for this entry.
    pub fn data(&self) -> &[u8] {
        match &self.encoded {
            Some(d) => d,
            None => self.first().map(|r| r.data.as_slice()).unwrap_or_default(),
        }
    }

    /// An aggregate takes the key (and explicit hash key) of its first
    /// record, as the KPL does; all its records go to the same shard.
    pub fn key(&self) -> &str {
        self.first().map(|r| r.key.as_str()).unwrap_or_default()
    }

    pub fn ehk(&self) -> Option<&str> {
        self.first().and_then(|r| r.ehk.as_deref())
    }

    pub fn shard(&self) -> u32 {
        self.first().map(|r| r.shard).unwrap_or(NO_SHARD)
    }

    /// The size Kinesis counts against its limits.
    pub fn api_size(&self) -> usize {
        self.data().len() + self.key().len()
    }
}

/// Entries bound for one `PutRecords` call.
#[derive(Debug)]
pub struct Batch {
    records: Vec<Entry>,
    bytes: usize,
    max_records: usize,
    max_bytes: usize,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::within(&KINESIS, usize::MAX, usize::MAX)
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// A batch for a destination's calls, held to at most `max_records`
    /// and `max_bytes` as well.
    pub fn within(limits: &Limits, max_records: usize, max_bytes: usize) -> Batch {
        Batch {
            records: Vec::new(),
            bytes: 0,
            max_records: max_records.clamp(1, limits.call_records),
            max_bytes: max_bytes.clamp(1, limits.call_bytes),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes counted against the call limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// No further record of any size fits.
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_records || self.bytes >= self.max_bytes
    }

    /// Adds `r` if the call stays within the limits; gives it back if not.
    /// A record over the per-record limit is never accepted (the caller
    /// dead-letters it); an empty batch accepts any record within it.
    /// The entry goes back by value: boxing it would cost an allocation per
    /// line, which is what its inline record saves.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&mut self, r: Entry) -> Result<(), Entry> {
        let size = r.api_size();
        // A record larger than a call's byte cap goes in a call of its own
        // (a paced cap can be below the record limit).
        if size > MAX_BYTES_PER_RECORD
            || self.records.len() >= self.max_records
            || (self.bytes + size > self.max_bytes && !self.records.is_empty())
        {
            return Err(r);
        }
        self.bytes += size;
        self.records.push(r);
        Ok(())
    }

    pub fn into_entries(self) -> Vec<Entry> {
        self.records
    }
}

/// The `PutRecordBatch` body for `entries` to the delivery stream `name`:
/// `{"DeliveryStreamName":...,"Records":[{"Data":"..."}]}`, written as
/// [`put_records_body`] writes Kinesis's.
pub fn put_record_batch_body(entries: &[Entry], name: &str) -> Vec<u8> {
    let estimate: usize = entries.iter().map(|e| e.data().len() / 3 * 4 + 16).sum();
    let mut b = Vec::with_capacity(estimate + 128);
    b.extend_from_slice(b"{\"DeliveryStreamName\":");
    json_string(&mut b, name);
    b.extend_from_slice(b",\"Records\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(e.data(), &mut b);
        b.extend_from_slice(b"\"}");
    }
    b.extend_from_slice(b"]}");
    b
}

/// The JSON body of a `PutRecords` call for `entries`, as the SDK would
/// write it: each entry's data base64-encoded straight into the body, keys
/// escaped by serde_json. Written here rather than by the SDK's serializer,
/// which copies every record into its own types first (see
/// ARCHITECTURE.md, "Where the CPU goes").
pub fn put_records_body(entries: &[Entry], stream_name: &str, stream_arn: Option<&str>) -> Vec<u8> {
    let estimate: usize = entries
        .iter()
        .map(|e| e.data().len() / 3 * 4 + e.key().len() + 64)
        .sum();
    let mut b = Vec::with_capacity(estimate + 256);
    b.extend_from_slice(b"{\"Records\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(e.data(), &mut b);
        b.extend_from_slice(b"\",\"PartitionKey\":");
        json_string(&mut b, e.key());
        if let Some(ehk) = e.ehk() {
            b.extend_from_slice(b",\"ExplicitHashKey\":");
            json_string(&mut b, ehk);
        }
        b.push(b'}');
    }
    b.extend_from_slice(b"],\"StreamName\":");
    json_string(&mut b, stream_name);
    if let Some(arn) = stream_arn {
        b.extend_from_slice(b",\"StreamARN\":");
        json_string(&mut b, arn);
    }
    b.push(b'}');
    b
}

/// `s` as a JSON string literal.
pub fn json_string(b: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        // Nothing to escape (the usual key): copied as it is.
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, s);
    }
}

/// The acks for `records`: consecutive records of one chunk counted in one
/// ack, ranges of the same file that touch merged.
pub fn coalesce_acks<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<Ack> {
    let mut acks: Vec<Ack> = Vec::new();
    for r in records {
        match (acks.last_mut(), r.chunk) {
            (
                Some(Ack::Chunk {
                    file,
                    chunk,
                    records,
                }),
                c,
            ) if c != NO_CHUNK && *file == r.file && *chunk == c => *records += 1,
            (Some(Ack::Range { file, end, .. }), NO_CHUNK)
                if *file == r.file && *end == r.start =>
            {
                *end = r.end
            }
            (_, NO_CHUNK) => acks.push(Ack::Range {
                file: r.file,
                start: r.start,
                end: r.end,
            }),
            (_, chunk) => acks.push(Ack::Chunk {
                file: r.file,
                chunk,
                records: 1,
            }),
        }
    }
    acks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(data_len: usize, key: &str) -> Record {
        Record::new(vec![b'x'; data_len], key)
    }

    #[test]
    fn record_limit_counts_the_key_at_the_exact_boundary() {
        let mut b = Batch::new();
        // 1 MiB exactly, key included: fits.
        assert!(
            b.try_push(Entry::single(rec(MAX_BYTES_PER_RECORD - 3, "abc")))
                .is_ok()
        );
        // One byte over because of a multi-byte key: refused.
        let mut b = Batch::new();
        assert!(
            b.try_push(Entry::single(rec(MAX_BYTES_PER_RECORD - 3, "ab\u{e9}")))
                .is_err()
        );
    }

    #[test]
    fn call_limits_at_the_exact_boundary() {
        let mut b = Batch::new();
        for _ in 0..MAX_RECORDS_PER_CALL {
            assert!(b.try_push(Entry::single(rec(1, "k"))).is_ok());
        }
        assert!(b.is_full());
        assert!(b.try_push(Entry::single(rec(1, "k"))).is_err());

        let mut b = Batch::new();
        let per = MAX_BYTES_PER_RECORD - 1; // plus a one-byte key
        for _ in 0..5 {
            assert!(b.try_push(Entry::single(rec(per, "k"))).is_ok());
        }
        assert_eq!(b.bytes(), MAX_BYTES_PER_CALL);
        assert!(
            b.try_push(Entry::single(rec(0, "k"))).is_err(),
            "5 MiB with keys is the limit"
        );
    }

    #[test]
    fn acks_merge_touching_ranges_of_one_file() {
        let rs = [
            Record::new(vec![], "k").ranged(1, 0, 5),
            Record::new(vec![], "k").ranged(1, 5, 9),
            Record::new(vec![], "k").ranged(2, 0, 3),
            Record::new(vec![], "k").ranged(1, 12, 15),
        ];
        let acks = coalesce_acks(&rs);
        assert_eq!(
            acks,
            vec![
                Ack::Range {
                    file: 1,
                    start: 0,
                    end: 9
                },
                Ack::Range {
                    file: 2,
                    start: 0,
                    end: 3
                },
                Ack::Range {
                    file: 1,
                    start: 12,
                    end: 15
                }
            ]
        );
    }

    proptest! {
        /// The hand-written body is the JSON the API expects: the data of
        /// each entry base64-encoded, keys and names as strings, whatever
        /// characters they hold.
        #[test]
        fn put_records_body_is_the_api_json(
            records in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300), "\\PC{1,40}", proptest::option::of("[0-9]{1,39}")),
                1..20,
            ),
            name in "[a-zA-Z0-9_.-]{1,128}",
            arn in proptest::option::of("arn:aws:kinesis:[a-z0-9-]{1,20}:[0-9]{12}:stream/[a-z]{1,20}"),
        ) {
            use base64::Engine;
            let entries: Vec<Entry> = records
                .iter()
                .map(|(data, key, ehk)| {
                    Entry::single(Record {
                        data: data.clone(),
                        key: key.clone(),
                        ehk: ehk.clone(),
                        ..rec(0, "k")
                    })
                })
                .collect();
            let body = put_records_body(&entries, &name, arn.as_deref());
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(v["StreamName"].as_str(), Some(name.as_str()));
            prop_assert_eq!(v["StreamARN"].as_str(), arn.as_deref());
            let got = v["Records"].as_array().unwrap();
            prop_assert_eq!(got.len(), records.len());
            for (g, (data, key, ehk)) in got.iter().zip(&records) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(g["Data"].as_str().unwrap())
                    .unwrap();
                prop_assert_eq!(&decoded, data);
                prop_assert_eq!(g["PartitionKey"].as_str(), Some(key.as_str()));
                prop_assert_eq!(g["ExplicitHashKey"].as_str(), ehk.as_deref());
            }
        }
    }

    #[test]
    fn put_records_body_escapes_keys() {
        let keys = [
            "plain",
            "a\"quote",
            "back\\slash",
            "new\nline",
            "\u{1}ctl",
            "é ü 日本",
        ];
        let entries: Vec<Entry> = keys.iter().map(|k| Entry::single(rec(3, k))).collect();
        let body = put_records_body(&entries, "s", None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let got: Vec<&str> = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["PartitionKey"].as_str().unwrap())
            .collect();
        assert_eq!(got, keys);
        assert!(v.get("StreamARN").is_none());
    }

    #[test]
    fn acks_count_consecutive_records_of_one_chunk() {
        let r = |file, chunk, start, end| Record {
            file,
            chunk,
            start,
            end,
            ..rec(1, "k")
        };
        let rs = [
            r(1, 7, 0, 5),
            r(1, 7, 5, 9),
            r(1, NO_CHUNK, 9, 12),
            r(1, 7, 12, 15),
            r(2, 7, 0, 3),
        ];
        let acks = coalesce_acks(&rs);
        assert_eq!(
            acks,
            vec![
                Ack::Chunk {
                    file: 1,
                    chunk: 7,
                    records: 2
                },
                Ack::Range {
                    file: 1,
                    start: 9,
                    end: 12
                },
                Ack::Chunk {
                    file: 1,
                    chunk: 7,
                    records: 1
                },
                Ack::Chunk {
                    file: 2,
                    chunk: 7,
                    records: 1
                },
            ]
        );
    }

    proptest! {
        /// Whatever the sizes and keys, a batch never exceeds a limit, and a
        /// record is refused only when adding it would.
        #[test]
        fn batches_respect_limits(
            sizes in proptest::collection::vec(0usize..(MAX_BYTES_PER_RECORD + 10), 1..40),
            keys in proptest::collection::vec("\\PC{1,256}", 1..40),
        ) {
            let mut b = Batch::new();
            for (i, s) in sizes.iter().enumerate() {
                let r = Entry::single(rec(*s, &keys[i % keys.len()]));
                let size = r.api_size();
                let (len, bytes) = (b.len(), b.bytes());
                match b.try_push(r) {
                    Ok(()) => {
                        prop_assert!(size <= MAX_BYTES_PER_RECORD);
                        prop_assert!(b.bytes() <= MAX_BYTES_PER_CALL);
                        prop_assert!(b.len() <= MAX_RECORDS_PER_CALL);
                    }
                    Err(_) => prop_assert!(
                        size > MAX_BYTES_PER_RECORD || len + 1 > MAX_RECORDS_PER_CALL || bytes + size > MAX_BYTES_PER_CALL
                    ),
                }
            }
        }
    }
}
