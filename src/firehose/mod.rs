//! Firehose: what is Kinesis Data Firehose's own: delivery stream names,
//! the `PutRecordBatch` call and its answers. Failed calls are classified
//! by `kinesis::classify`, whose codes are the AWS JSON protocol's and mean
//! the same for Firehose. The lanes, the records and the checkpoint rules
//! are shared with Kinesis (ARCHITECTURE.md, "The destination seam").

pub mod name;
#[cfg(feature = "aws")]
pub mod put;
