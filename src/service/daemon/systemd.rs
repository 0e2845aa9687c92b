//! systemd: readiness, reloading and stopping states, and the watchdog.
//! Each is a no-op outside systemd.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::metrics::Metrics;

/// Tells systemd about a state change; a no-op outside systemd (no
/// `NOTIFY_SOCKET`). A failure to notify never stops the daemon.
pub(super) fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pings the systemd watchdog at half its period, with a one-line status.
/// The pings come from the runtime that runs the pipeline, so a stuck
/// runtime stops them and systemd restarts the service.
pub(super) async fn ping_watchdog(
    period: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let every = (period / 2).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let status = format!("running: {}", metrics.summary());
        notify_systemd(&[
            sd_notify::NotifyState::Watchdog,
            sd_notify::NotifyState::Status(&status),
        ]);
    }
}
