//! kinetail's integration tests: one binary, one harness (`util`).

mod check;
mod fault;
mod lifecycle;
mod pipeline;
mod util;
