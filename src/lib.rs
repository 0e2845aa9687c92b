//! kinetail: tails log files and ships every line to Amazon Kinesis Data
//! Streams with `PutRecords`, saving each file's offset only once Kinesis has
//! confirmed every record before it.
//!
//! One module per stage; ARCHITECTURE.md has the map and the invariants.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod api;
pub mod backoff;
pub mod batcher;
pub mod budget;
pub mod checkpoint;
pub mod classify;
pub mod clock;
pub mod compress;
pub mod config;
#[cfg(feature = "aws")]
pub mod daemon;
pub mod dead_letter;
pub mod discovery;
pub mod envelope;
pub mod framing;
pub mod globs;
pub mod identity;
pub mod keying;
#[cfg(feature = "aws")]
pub mod metadata;
pub mod metrics;
pub mod multiline;
pub mod packing;
pub mod re;
pub mod redact;
pub mod route;
pub mod shaping;
pub mod shards;
#[cfg(feature = "aws")]
pub mod sink;
pub mod status;
pub mod store;
pub mod stream;
pub mod tailer;
