//! KPL aggregation: records packed into an aggregate decode to the same
//! data and keys, in order; any bytes at all decode or are refused without
//! a panic.
#![no_main]

use kinetail::records::aggregate::{Aggregator, decode};
use kinetail::records::batcher::{NO_SHARD, Record};
use kinetail::records::batcher::NO_CHUNK;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let mut agg = Aggregator::new(64 * 1024);
    let mut added = Vec::new();
    let mut offset = 0u64;
    for (i, part) in data.split(|b| *b == 0xff).enumerate() {
        let key = format!("k{}", part.first().copied().unwrap_or(0) % 4);
        let r = Record {
            data: part.to_vec(),
            key: key.clone(),
            file: 1,
            start: offset,
            end: offset + part.len() as u64 + 1,
            ehk: (i % 3 == 0).then(|| "12345".to_string()),
            shard: NO_SHARD,
            epoch: 0,
            chunk: NO_CHUNK,
        };
        offset = r.end;
        if agg.try_add(r).is_ok() {
            added.push((key, part.to_vec()));
        }
    }
    if added.is_empty() {
        return;
    }
    let (bytes, records) = agg.finish();
    assert_eq!(records.len(), added.len());
    let inner = decode(&bytes).expect("an aggregate kinetail made decodes");
    let got: Vec<(String, Vec<u8>)> = inner.into_iter().map(|(k, _, d)| (k, d)).collect();
    assert_eq!(got, added);
});
