//! kinetail's integration tests: one binary, one harness (`util`).

mod check;
mod delivery;
mod edges;
mod fault;
mod files;
mod firehose;
mod hostile;
mod kubernetes;
mod lifecycle;
mod model;
mod neighbours;
mod parsers;
mod pipeline;
mod records;
mod shards;
mod util;
