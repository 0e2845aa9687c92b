//! Service: running kinetail: wiring the flows and their lifecycle
//! (daemon), the HTTP API, the metrics, `kinetail status`.

pub mod api;
#[cfg(feature = "aws")]
pub mod daemon;
pub mod metrics;
pub mod status;
