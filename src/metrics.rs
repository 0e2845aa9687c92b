//! Counters of what the pipeline did. Plain atomics, shared by every stage;
//! the stages only add, and the daemon reports them (in the log at shutdown
//! for now). Relaxed ordering is enough: nothing synchronises through them.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
