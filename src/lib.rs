//! kinetail: tails log files and ships every line to Amazon Kinesis Data
//! Streams with `PutRecords` (or to Kinesis Data Firehose with
//! `PutRecordBatch`), saving each file's offset only once the destination
//! has confirmed every record before it.
//!
//! One folder per stage of the pipeline (input, lines, records, kinesis and
//! firehose, state, service), the configuration, and a few utilities;
//! ARCHITECTURE.md has the map and the invariants.

#![forbid(unsafe_code)]

pub mod arn;
pub mod backoff;
pub mod clock;
pub mod config;
#[cfg(feature = "aws")]
pub mod fetch;
pub mod firehose;
pub mod input;
pub mod kinesis;
pub mod lines;
pub mod re;
pub mod records;
pub mod redact;
pub mod service;
pub mod state;
