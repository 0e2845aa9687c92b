//! The daemon: wires the stages together for validated settings and runs
//! them until the `shutdown` future resolves, in three steps:
//!
//! - **start**: the API first (so probes see the start-up), then the AWS
//!   client, every flow's first shard map and the cloud metadata at once; a
//!   stop during start-up is honoured at once (nothing was read yet).
//! - **serve**: reloads (SIGHUP) and the flows a reload stopped. Every step
//!   of the loop is short: a reload never waits for a flow to drain, so a
//!   stop is served at once, even during a reload.
//! - **shutdown**: two phases under one deadline (`shutdown_grace`): first
//!   reading stops (discovery and tailers end, which closes the lanes'
//!   queues), then the lanes send what they hold and await confirmations;
//!   flows a reload was draining are awaited under the same deadline. The
//!   checkpoint store is saved last; whatever was not confirmed by then is
//!   not in it and is read again on the next start.
//!
//! Cancellation is one tree: every task the daemon starts (API, metadata,
//! saver, watchdog, each flow) holds a child of one root token, so nothing
//! outlives the root's cancellation at the end of shutdown.

mod client;
mod flows;
mod reload;
mod systemd;
mod watch;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use client::{Clients, DaemonError, aws_clients};
use flows::{Env, RunningFlow, first_maps, start_flow};
use systemd::{notify_systemd, ping_watchdog};
use watch::{Watched, add_watches};

use crate::config::{FlowSettings, MetadataSource, Settings};
use crate::input::tailer::Slots;
use crate::kinesis::shards::ShardMap;
use crate::kinesis::sink::SinkShared;
use crate::records::envelope::SharedMetadata;
use crate::records::metadata::{self, Wanted};
use crate::records::pods::{ApiServer, Pods};
use crate::service::api::ApiState;
use crate::service::metrics::Metrics;
use crate::state::budget::Budget;
use crate::state::checkpoint::Checkpoints;
use crate::state::dead_letter::DeadLetter;

/// Runs kinetail until `shutdown` resolves, then stops as described above.
/// Each message on `reloads` re-reads the configuration file (SIGHUP).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::UnboundedReceiver<()>,
) -> Result<(), DaemonError> {
    tokio::pin!(shutdown);
    let Some(mut daemon) = Daemon::start(settings, shutdown.as_mut()).await? else {
        tracing::info!("stopped during start-up; nothing was read");
        return Ok(());
    };
    daemon.serve(shutdown, reloads).await;
    daemon.shutdown().await;
    Ok(())
}

/// A running daemon: its flows, what a reload left to finish, and the tasks
/// beside the flows.
struct Daemon {
    env: Env,
    current: Settings,
    flows: Vec<RunningFlow>,
    /// Flows a reload stopped, draining (each gives back its name).
    draining: JoinSet<String>,
    /// Flows waiting for their first shard map before they start.
    starting: JoinSet<(FlowSettings, Option<ShardMap>)>,
    /// The names in `draining` or `starting`: a flow of that name starts
    /// only once its old one drained, so no two read the same files.
    pending: HashSet<String>,
    watched: Watched,
    watcher: Option<notify::RecommendedWatcher>,
    api: Arc<ApiState>,
    saver: JoinHandle<()>,
    watchdog: CancellationToken,
}

impl Daemon {
    /// Opens the checkpoints, starts the API, the client and every flow.
    /// `None` when `shutdown` resolved first.
    async fn start(
        settings: Settings,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<Daemon>, DaemonError> {
        let checkpoints = Arc::new(Checkpoints::open(&settings.state_dir)?);
        let metrics = Arc::new(Metrics::default());
        let root = CancellationToken::new();
        // The API first, so that probes see the start-up (`/ready` is 503
        // until every flow has started).
        let api = Arc::new(ApiState {
            metrics: metrics.clone(),
            checkpoints: checkpoints.clone(),
            ready: std::sync::atomic::AtomicBool::new(false),
        });
        if let Some(addr) = settings.api {
            tokio::spawn(crate::service::api::listen_and_serve(
                addr,
                api.clone(),
                root.child_token(),
            ));
        }
        // Start-up waits on the network (credentials, ListShards); a stop is
        // honoured at any moment of it.
        let started = async {
            let client = aws_clients(&settings.aws).await?;
            let (maps, metadata) = tokio::join!(
                first_maps(&client.kinesis, &settings.flows),
                start_metadata(&settings.flows, root.child_token())
            );
            Ok::<_, DaemonError>((client, maps, metadata))
        };
        let (client, maps, (metadata, wanted)) = tokio::select! {
            biased;
            _ = shutdown => {
                root.cancel();
                return Ok(None);
            }
            r = started => r?,
        };
        let env = Env {
            client,
            root,
            shared: Arc::new(SinkShared {
                checkpoints: checkpoints.clone(),
                budget: Arc::new(Budget::new(settings.max_buffer_bytes)),
                dead_letter: Arc::new(DeadLetter::new(&settings.state_dir)),
                metrics: metrics.clone(),
            }),
            checkpoints,
            metrics,
            slots: Arc::new(Slots::new(settings.max_open_files)),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            rescan_interval: settings.rescan_interval,
            metadata,
            wanted,
            pods: pod_lookups(&settings),
            event_dirs: Arc::default(),
            state_dir: settings.state_dir.clone(),
        };
        Ok(Some(Daemon::serve_flows(env, settings, maps, api)))
    }

    /// Starts every flow, the watcher, the saver and the watchdog, and says
    /// the service is ready.
    fn serve_flows(
        env: Env,
        settings: Settings,
        maps: Vec<Option<ShardMap>>,
        api: Arc<ApiState>,
    ) -> Daemon {
        let watched: Watched = Arc::default();
        let flows = settings
            .flows
            .iter()
            .zip(maps)
            .map(|(flow, map)| start_flow(&env, flow, map, &watched))
            .collect();
        let mut watcher = watch::watch(watched.clone(), env.event_dirs.clone());
        add_watches(watcher.as_mut(), &settings.flows);
        let saver = tokio::spawn(save_periodically(
            env.checkpoints.clone(),
            env.metrics.clone(),
            settings.checkpoint_interval,
            env.root.child_token(),
        ));
        tracing::info!(flows = settings.flows.len(), state_dir = %crate::redact::path(&settings.state_dir), "kinetail running");
        // Configuration is valid, checkpoints are loaded and every flow is
        // started: only now is the service ready.
        notify_systemd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("running"),
        ]);
        let watchdog = env.root.child_token();
        if let Some(period) = sd_notify::watchdog_enabled() {
            tokio::spawn(ping_watchdog(period, env.metrics.clone(), watchdog.clone()));
        }
        api.ready.store(true, Ordering::SeqCst);
        Daemon {
            env,
            current: settings,
            flows,
            draining: JoinSet::new(),
            starting: JoinSet::new(),
            pending: HashSet::new(),
            watched,
            watcher,
            api,
            saver,
            watchdog,
        }
    }

    /// Serves reloads, and restarts the flows they changed once drained,
    /// until `shutdown` resolves. Every branch returns at once.
    async fn serve(
        &mut self,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        mut reloads: mpsc::UnboundedReceiver<()>,
    ) {
        let mut reloads_open = true;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = reloads.recv(), if reloads_open => match r {
                    Some(()) => self.reload(),
                    // No more reloads can come; wait for the stop alone.
                    None => reloads_open = false,
                },
                Some(done) = self.draining.join_next(), if !self.draining.is_empty() => {
                    if let Ok(name) = done {
                        self.drained(name);
                    }
                }
                Some(done) = self.starting.join_next(), if !self.starting.is_empty() => {
                    if let Ok((flow, map)) = done {
                        self.map_ready(flow, map);
                    }
                }
            }
        }
    }

    /// Stops reading, drains every flow (and those a reload was draining)
    /// under `shutdown_grace`, saves the checkpoints and ends every task.
    async fn shutdown(mut self) {
        self.api.ready.store(false, Ordering::SeqCst);
        self.watchdog.cancel();
        notify_systemd(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: flushing in-flight records"),
        ]);
        tracing::info!(
            grace_ms = self.current.shutdown_grace.as_millis() as u64,
            "shutting down: reading stops, in-flight records are flushed"
        );
        let deadline = tokio::time::Instant::now() + self.current.shutdown_grace;
        for f in &self.flows {
            f.stop();
        }
        // Flows waiting for a shard map have read nothing yet.
        self.starting.abort_all();
        let mut drained = true;
        for f in self.flows.drain(..) {
            drained &= f.drain(deadline).await;
        }
        let draining = &mut self.draining;
        drained &= tokio::time::timeout_at(deadline, async {
            while draining.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        let checkpoints = self.env.checkpoints.clone();
        if !drained {
            tracing::warn!(
                confirmed_past_saved_offset = checkpoints.confirmed_past_offset(),
                "grace period over with records below the cut still unconfirmed; they are read again at the next start, and the confirmed records past them are sent again"
            );
        }
        drop(self.watcher.take());
        self.env.root.cancel();
        let _ = (&mut self.saver).await;
        let saved = tokio::task::spawn_blocking(move || checkpoints.save()).await;
        match saved {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final checkpoint save failed"),
            Err(e) => tracing::error!(error = %e, "final checkpoint save failed"),
        }
        tracing::info!(summary = %self.env.metrics.summary(), "kinetail stopped");
    }
}

/// Which cloud metadata the flows ask for.
fn wanted(flows: &[FlowSettings]) -> Wanted {
    let mut w = Wanted::default();
    for f in flows {
        w.ec2 |= f.record.metadata.contains(&MetadataSource::Ec2);
        w.tags |= f.record.metadata_tags && f.record.metadata.contains(&MetadataSource::Ec2);
        w.ecs |= f.record.metadata.contains(&MetadataSource::Ecs);
    }
    w
}

/// The pod lookups of `metadata = ["kubernetes"]` flows: at the API server
/// of the settings or of the cluster kinetail runs in; none outside one,
/// or when no flow asks (said once, at start).
fn pod_lookups(settings: &Settings) -> Arc<Pods> {
    let asked = settings
        .flows
        .iter()
        .any(|f| f.record.metadata.contains(&MetadataSource::Kubernetes));
    let k = &settings.kubernetes;
    let url = match (asked, k.resolved_api_url()) {
        (false, _) => return Pods::new(None),
        (true, None) => {
            tracing::info!(
                "no Kubernetes API server (no kubernetes.api_url, and KUBERNETES_SERVICE_HOST is not set): records carry each pod's fields from its path only"
            );
            return Pods::new(None);
        }
        (true, Some(u)) => u,
    };
    let tls = if url.starts_with("https://") {
        let trust = std::fs::read(&k.ca_file)
            .map_err(|e| e.to_string())
            .and_then(|pem| crate::fetch::tls_trusting(&pem));
        match trust {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(ca_file = %crate::redact::path(&k.ca_file), error = %e, "cannot read the Kubernetes API server's CA: no pod lookups; records carry each pod's fields from its path only");
                return Pods::new(None);
            }
        }
    } else {
        None
    };
    tracing::info!(api_url = %crate::redact::url(&url), labels = k.labels, annotations = k.annotations, "pods are looked up on the Kubernetes API server");
    Pods::new(Some(ApiServer {
        url,
        token_file: k.token_file.clone(),
        tls,
        labels: k.labels,
        annotations: k.annotations,
    }))
}

/// Starts fetching cloud metadata (when a flow asks for it), and waits for
/// the first fetch, so that the first records carry it.
async fn start_metadata(
    flows: &[FlowSettings],
    stop: CancellationToken,
) -> (Arc<SharedMetadata>, tokio::sync::watch::Sender<Wanted>) {
    let shared = Arc::new(SharedMetadata::default());
    let want = wanted(flows);
    let (tx, rx) = tokio::sync::watch::channel(want);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(metadata::run(shared.clone(), rx, first_tx, stop));
    if want != Wanted::default() {
        let _ = tokio::time::timeout(metadata::FETCH_TIMEOUT * 2, first_rx).await;
    }
    (shared, tx)
}

async fn save_periodically(
    checkpoints: Arc<Checkpoints>,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let cp = checkpoints.clone();
        match tokio::task::spawn_blocking(move || cp.save()).await {
            Ok(Ok(_)) => {
                last_error = None;
                let now = crate::clock::now_ms();
                metrics
                    .last_checkpoint_unix_ms
                    .store(now, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_ref() != Some(&msg) {
                    tracing::error!(error = %msg, "cannot save checkpoints; will retry");
                    last_error = Some(msg);
                }
            }
            Err(e) => tracing::error!(error = %e, "checkpoint saver failed"),
        }
    }
}
