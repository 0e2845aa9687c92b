//! Counters of what the pipeline did. Plain atomics, shared by every stage;
//! the stages only add, and the API (`/metrics`) and the shutdown log read
//! them. Relaxed ordering is enough: nothing synchronises through them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Lines confirmed by Kinesis.
    pub records_sent: AtomicU64,
    /// Kinesis records they took (fewer when aggregating).
    pub kinesis_records_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub calls: AtomicU64,
    pub call_failures: AtomicU64,
    pub entries_retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub truncations: AtomicU64,
    /// `PutRecords` calls waiting for an answer now.
    pub in_flight: AtomicI64,
    /// Retried entries and failed calls by error code (or "connection").
    pub retries_by_reason: Mutex<BTreeMap<String, u64>>,
    /// Unix time (ms) of the last successful checkpoint save.
    pub last_checkpoint_unix_ms: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn retried(&self, reason: &str, n: u64) {
        let mut m = self
            .retries_by_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(reason.to_string()).or_insert(0) += n;
    }
}
