//! kinetail's integration tests: one binary, one harness (`util`).

mod check;
mod delivery;
mod edges;
mod fault;
mod files;
mod lifecycle;
mod model;
mod pipeline;
mod util;
