//! Aggregation: many small records packed into one Kinesis record in the
//! format of the Kinesis Producer Library, which consumers using the KCL (or
//! the `aws-kinesis-agg` de-aggregators) unpack into the original records.
//!
//! Format: the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`
//! (partition key table, explicit hash key table, records), then the MD5 of
//! the protobuf bytes. Pure: [`Aggregator`] tracks the encoded size as
//! records are added, so an aggregate never exceeds its limit, and the limit
//! is capped so the aggregate with its partition key fits one Kinesis record.

use std::collections::HashMap;

use md5::{Digest, Md5};
use prost::Message;
use prost::encoding::encoded_len_varint;

use crate::records::batcher::{MAX_DATA_BYTES, Record};

/// The first bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<InnerRecord>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InnerRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
}

/// Packs records bound for the same shard.
#[derive(Debug)]
pub struct Aggregator {
    max_bytes: usize,
    keys: HashMap<String, u64>,
    ehks: HashMap<String, u64>,
    msg: AggregatedRecord,
    /// The protobuf length of `msg`, tracked as records are added.
    proto_len: usize,
    members: Vec<Record>,
}

fn field_len(payload: usize) -> usize {
    1 + encoded_len_varint(payload as u64) + payload
}

impl Aggregator {
    /// An aggregator whose aggregates hold at most `max_bytes` of data
    /// (capped at [`MAX_DATA_BYTES`]).
    pub fn new(max_bytes: usize) -> Aggregator {
        Aggregator {
            max_bytes: max_bytes.min(MAX_DATA_BYTES),
            keys: HashMap::new(),
            ehks: HashMap::new(),
            msg: AggregatedRecord::default(),
            proto_len: 0,
            members: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The size the aggregate's data has now.
    pub fn data_len(&self) -> usize {
        MAGIC.len() + self.proto_len + DIGEST_LEN
    }

    /// Adds `r` if the aggregate stays within its limit; gives it back if
    /// not. An empty aggregator takes any record that fits a Kinesis record.
    pub fn try_add(&mut self, r: Record) -> Result<(), Record> {
        let new_key = !self.keys.contains_key(&r.key);
        let key_index = self
            .keys
            .get(&r.key)
            .copied()
            .unwrap_or(self.msg.partition_key_table.len() as u64);
        let (new_ehk, ehk_index) = match &r.ehk {
            None => (false, None),
            Some(e) => match self.ehks.get(e) {
                Some(i) => (false, Some(*i)),
                None => (true, Some(self.msg.explicit_hash_key_table.len() as u64)),
            },
        };
        let mut inner = 1 + encoded_len_varint(key_index) + field_len(r.data.len());
        if let Some(i) = ehk_index {
            inner += 1 + encoded_len_varint(i);
        }
        let mut added = field_len(inner);
        if new_key {
            added += field_len(r.key.len());
        }
        if let (true, Some(e)) = (new_ehk, &r.ehk) {
            added += field_len(e.len());
        }
        let limit = if self.members.is_empty() {
            MAX_DATA_BYTES
        } else {
            self.max_bytes
        };
        if self.data_len() + added > limit {
            return Err(r);
        }
        if new_key {
            self.keys.insert(r.key.clone(), key_index);
            self.msg.partition_key_table.push(r.key.clone());
        }
        if let (true, Some(e), Some(i)) = (new_ehk, &r.ehk, ehk_index) {
            self.ehks.insert(e.clone(), i);
            self.msg.explicit_hash_key_table.push(e.clone());
        }
        self.msg.records.push(InnerRecord {
            partition_key_index: key_index,
            explicit_hash_key_index: ehk_index,
            data: r.data.clone(),
        });
        self.proto_len += added;
        self.members.push(r);
        Ok(())
    }

    /// The encoded aggregate and the records in it.
    pub fn finish(self) -> (Vec<u8>, Vec<Record>) {
        let proto = self.msg.encode_to_vec();
        debug_assert_eq!(proto.len(), self.proto_len);
        let mut data = Vec::with_capacity(MAGIC.len() + proto.len() + DIGEST_LEN);
        data.extend_from_slice(&MAGIC);
        data.extend_from_slice(&proto);
        data.extend_from_slice(&Md5::digest(&proto));
        (data, self.members)
    }
}

/// One record of an aggregate: partition key, explicit hash key, data.
pub type Inner = (String, Option<String>, Vec<u8>);

/// Decodes an aggregate into its records; `None` if `data` is not a valid
/// aggregate.
pub fn decode(data: &[u8]) -> Option<Vec<Inner>> {
    let body = data.strip_prefix(&MAGIC)?;
    if body.len() < DIGEST_LEN {
        return None;
    }
    let (proto, digest) = body.split_at(body.len() - DIGEST_LEN);
    if Md5::digest(proto).as_slice() != digest {
        return None;
    }
    let msg = AggregatedRecord::decode(proto).ok()?;
    msg.records
        .into_iter()
        .map(|r| {
            let key = msg
                .partition_key_table
                .get(r.partition_key_index as usize)?
                .clone();
            let ehk = match r.explicit_hash_key_index {
                Some(i) => Some(msg.explicit_hash_key_table.get(i as usize)?.clone()),
                None => None,
            };
            Some((key, ehk, r.data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::batcher::MAX_BYTES_PER_RECORD;
    use proptest::prelude::*;

    fn rec(data: Vec<u8>, key: &str, ehk: Option<&str>) -> Record {
        Record::new(data, key)
            .ranged(0, 0, 1)
            .with_ehk(ehk.map(str::to_string))
    }

    #[test]
    fn round_trips_with_shared_key_tables() {
        let mut a = Aggregator::new(50 * 1024);
        for (d, k, e) in [
            ("one", "a", None),
            ("two", "b", Some("7")),
            ("three", "a", Some("7")),
        ] {
            assert!(a.try_add(rec(d.as_bytes().to_vec(), k, e)).is_ok());
        }
        let len = a.data_len();
        let (data, members) = a.finish();
        assert_eq!(data.len(), len, "the tracked size is the encoded size");
        assert_eq!(&data[..4], &MAGIC);
        assert_eq!(members.len(), 3);
        let decoded = decode(&data).unwrap();
        assert_eq!(decoded[0], ("a".into(), None, b"one".to_vec()));
        assert_eq!(decoded[1], ("b".into(), Some("7".into()), b"two".to_vec()));
        assert_eq!(
            decoded[2],
            ("a".into(), Some("7".into()), b"three".to_vec())
        );
        let mut corrupt = data.clone();
        corrupt[6] ^= 1;
        assert!(decode(&corrupt).is_none(), "the MD5 trailer is checked");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever records come, every aggregate fits one Kinesis record
        /// with its partition key, its tracked size is exact, and it decodes
        /// to exactly the records put in.
        #[test]
        fn aggregates_never_exceed_a_kinesis_record(
            sizes in proptest::collection::vec(0usize..400_000, 1..30),
            keys in proptest::collection::vec("\\PC{1,256}", 1..5),
            max in 1usize..(2 * MAX_BYTES_PER_RECORD),
        ) {
            let mut a = Aggregator::new(max);
            let mut done: Vec<(Vec<u8>, Vec<Record>)> = Vec::new();
            for (i, s) in sizes.iter().enumerate() {
                let r = rec(vec![(i % 251) as u8; *s], &keys[i % keys.len()], None);
                if let Err(r) = a.try_add(r) {
                    done.push(std::mem::replace(&mut a, Aggregator::new(max)).finish());
                    prop_assert!(a.try_add(r).is_ok(), "an empty aggregate takes any record under 1 MiB");
                }
            }
            done.push(a.finish());
            for (data, members) in done {
                let key_len = members[0].key.len();
                prop_assert!(data.len() + key_len <= MAX_BYTES_PER_RECORD);
                let decoded = decode(&data).unwrap();
                prop_assert_eq!(decoded.len(), members.len());
                for (d, m) in decoded.iter().zip(&members) {
                    prop_assert_eq!(&d.0, &m.key);
                    prop_assert_eq!(&d.2, &m.data);
                }
            }
        }
    }
}
