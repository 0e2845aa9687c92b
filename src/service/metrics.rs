//! Counters of what the pipeline did. Plain atomics, shared by every stage;
//! the stages only add. [`COUNTERS`] lists the plain counters that
//! `/metrics`, the watchdog's `STATUS=` line and the stop summary read; the
//! gauges and the labelled families (per error code, per file) are
//! rendered by `service::api`.
//! Relaxed ordering is enough: nothing synchronises through them.

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
    /// Lines (or multi-line events) left out by `include_lines` or
    /// `exclude_lines`; counted as done.
    pub lines_filtered: AtomicU64,
    /// `parse = "json"` lines that were not a JSON object (sent as a message).
    pub parse_failures: AtomicU64,
    /// Members of merged JSON lines left out because an envelope key won.
    pub parse_collisions: AtomicU64,
    /// Parsed lines whose own time did not read (they keep the read time).
    pub time_failures: AtomicU64,
    /// Entries of a `container_format` flow in neither runtime's format
    /// (sent as written).
    pub container_malformed: AtomicU64,
    /// Partial container lines sent unfinished (the file ended, or the
    /// partial timeout passed).
    pub container_unfinished: AtomicU64,
    /// Pod lookups on the Kubernetes API server that answered, and that
    /// failed.
    pub kubernetes_lookups: AtomicU64,
    pub kubernetes_lookup_failures: AtomicU64,
    /// Lines of `metadata = ["kubernetes"]` flows sent without what the
    /// API server adds (not known in time, or its lookup failed).
    pub kubernetes_without_lookup: AtomicU64,
    /// Kinesis PUT payload units (25 KB each, counting the partition key)
    /// of the records confirmed.
    pub payload_units: AtomicU64,
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

/// One counter as it is shown.
pub struct Counter {
    /// Its name in `/metrics`, after `kinetail_`.
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// How it reads in the one-line summary, when it is in it.
    pub summary: Option<&'static str>,
    pub get: fn(&Metrics) -> u64,
}

/// Every counter, in the order they are shown.
pub const COUNTERS: &[Counter] = &[
    Counter {
        name: "lines_read_total",
        help: "Lines (and line pieces) read from files.",
        summary: Some("lines read"),
        get: |m| Metrics::get(&m.lines_read),
    },
    Counter {
        name: "bytes_read_total",
        help: "Bytes read from files.",
        summary: None,
        get: |m| Metrics::get(&m.bytes_read),
    },
    Counter {
        name: "records_sent_total",
        help: "Lines confirmed by the destination (a Kinesis sequence number, a Firehose RecordId).",
        summary: Some("records sent"),
        get: |m| Metrics::get(&m.records_sent),
    },
    Counter {
        name: "kinesis_records_sent_total",
        help: "Records the destination confirmed, Kinesis or Firehose (fewer than lines when aggregating).",
        summary: None,
        get: |m| Metrics::get(&m.kinesis_records_sent),
    },
    Counter {
        name: "bytes_sent_total",
        help: "Bytes confirmed by the destination, partition keys included.",
        summary: None,
        get: |m| Metrics::get(&m.bytes_sent),
    },
    Counter {
        name: "calls_total",
        help: "PutRecords (or PutRecordBatch) calls made.",
        summary: None,
        get: |m| Metrics::get(&m.calls),
    },
    Counter {
        name: "call_failures_total",
        help: "PutRecords (or PutRecordBatch) calls that failed as a whole.",
        summary: Some("calls failed"),
        get: |m| Metrics::get(&m.call_failures),
    },
    Counter {
        name: "entries_retried_total",
        help: "Entries sent again after a per-entry failure.",
        summary: Some("entries retried"),
        get: |m| Metrics::get(&m.entries_retried),
    },
    Counter {
        name: "dead_lettered_total",
        help: "Records written to the dead-letter file.",
        summary: Some("dead-lettered"),
        get: |m| Metrics::get(&m.dead_lettered),
    },
    Counter {
        name: "truncations_total",
        help: "Files found truncated and read again from the start.",
        summary: Some("truncations"),
        get: |m| Metrics::get(&m.truncations),
    },
    Counter {
        name: "lines_filtered_total",
        help: "Lines (or multi-line events) left out by include_lines or exclude_lines, counted as done.",
        summary: Some("filtered"),
        get: |m| Metrics::get(&m.lines_filtered),
    },
    Counter {
        name: "parse_failures_total",
        help: "Lines of a flow with parse that did not match its format (sent as a message).",
        summary: None,
        get: |m| Metrics::get(&m.parse_failures),
    },
    Counter {
        name: "parse_collisions_total",
        help: "Fields of merged parsed lines left out because an envelope key had the name.",
        summary: None,
        get: |m| Metrics::get(&m.parse_collisions),
    },
    Counter {
        name: "time_parse_failures_total",
        help: "Parsed lines whose own time did not read as its format says (their timestamp is the read time).",
        summary: None,
        get: |m| Metrics::get(&m.time_failures),
    },
    Counter {
        name: "container_malformed_total",
        help: "Entries of a container_format flow in neither runtime's format (sent as written).",
        summary: None,
        get: |m| Metrics::get(&m.container_malformed),
    },
    Counter {
        name: "container_partials_unfinished_total",
        help: "Partial container lines sent unfinished: the file ended, or no entry came for the partial timeout.",
        summary: None,
        get: |m| Metrics::get(&m.container_unfinished),
    },
    Counter {
        name: "kubernetes_lookups_total",
        help: "Pod lookups the Kubernetes API server answered.",
        summary: None,
        get: |m| Metrics::get(&m.kubernetes_lookups),
    },
    Counter {
        name: "kubernetes_lookup_failures_total",
        help: "Pod lookups that failed (the API server down, slow, or refusing).",
        summary: None,
        get: |m| Metrics::get(&m.kubernetes_lookup_failures),
    },
    Counter {
        name: "kubernetes_lines_without_lookup_total",
        help: "Lines of metadata = [\"kubernetes\"] flows sent with the pod's fields from the path only (its lookup not in within a second, or failed).",
        summary: None,
        get: |m| Metrics::get(&m.kubernetes_without_lookup),
    },
    Counter {
        name: "payload_units_total",
        help: "PUT payload units (25 KB each, partition key counted) of the Kinesis records confirmed.",
        summary: None,
        get: |m| Metrics::get(&m.payload_units),
    },
];

/// A family of series `/metrics` writes beside [`COUNTERS`]: labelled, or
/// computed when asked.
pub struct Family {
    /// Its name in `/metrics`, after `kinetail_`.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
}

pub const RETRIES: Family = Family {
    name: "retries_total",
    kind: "counter",
    help: "Retries by error code (\"connection\" when there was no answer).",
};
pub const IN_FLIGHT_CALLS: Family = Family {
    name: "in_flight_calls",
    kind: "gauge",
    help: "PutRecords (or PutRecordBatch) calls waiting for an answer.",
};
pub const CHECKPOINT_AGE: Family = Family {
    name: "checkpoint_age_seconds",
    kind: "gauge",
    help: "Seconds since checkpoints were last saved (-1: never).",
};
/// How many files get series of their own; the rest are summed per flow.
pub const MAX_FILE_SERIES: usize = 200;
pub const FILE_LAG: Family = Family {
    name: "file_lag_bytes",
    kind: "gauge",
    help: "Bytes in a file not yet confirmed by its destination (past 200 files, the rest summed per flow under path=\"(other files)\").",
};
pub const FILE_LAST_CONFIRMED: Family = Family {
    name: "file_last_confirmed_timestamp_seconds",
    kind: "gauge",
    help: "When the destination last confirmed a record of the file.",
};

/// Every family beside the counters, in the order they are shown.
pub const FAMILIES: &[&Family] = &[
    &RETRIES,
    &IN_FLIGHT_CALLS,
    &CHECKPOINT_AGE,
    &FILE_LAG,
    &FILE_LAST_CONFIRMED,
];

impl Metrics {
    /// The counters of the summary, in one line: "12 lines read, 12
    /// records sent, ...".
    pub fn summary(&self) -> String {
        COUNTERS
            .iter()
            .filter_map(|c| c.summary.map(|s| format!("{} {s}", (c.get)(self))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
