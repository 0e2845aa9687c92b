//! Exponential backoff with jitter, for everything kinetail retries: the
//! lanes' calls and entries, the dead-letter file, errors that need an
//! operator.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Waits from `min`, doubling with jitter up to `max`, without end.
pub fn backoff(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build()
}

/// The slow backoff of what retrying alone will not fix soon (a missing
/// stream, denied access, a full disk): 1 s up to 30 s.
pub fn slow_backoff() -> impl Iterator<Item = Duration> {
    backoff(Duration::from_secs(1), Duration::from_secs(30))
}
