//! Kinesis: what is Kinesis Data Streams' own: stream references, shards
//! and pacing, the lanes' `PutRecords` calls, and what answers mean.

pub mod classify;
#[cfg(feature = "aws")]
pub mod direct;
pub mod shards;
#[cfg(feature = "aws")]
pub mod sink;
pub mod stream;
