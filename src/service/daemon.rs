//! The daemon: wires the stages together for validated settings and runs
//! them until the `shutdown` future resolves.
//!
//! Shutdown has two phases under one deadline (`shutdown_grace`): first
//! reading stops (discovery and tailers end, which closes the lanes'
//! queues), then the lanes send what they hold and await confirmations. The
//! checkpoint store is saved last; whatever was not confirmed by then is not
//! in it and is read again on the next start.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::Region;
use aws_sdk_kinesis::config::SharedCredentialsProvider;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AwsSettings, FlowSettings, MetadataSource, Settings};
use crate::input::discovery::{self, WakeRegistry};
use crate::input::globs::glob_base;
use crate::input::tailer::{EventDirs, FlowRuntime, Slots};
use crate::kinesis::shards::{Router, list_shards};
use crate::kinesis::sink::{Lane, SinkShared};
use crate::records::envelope::SharedMetadata;
use crate::records::metadata::{self, Wanted};
use crate::records::packing::Packer;
use crate::records::route::LaneSet;
use crate::service::api::ApiState;
use crate::service::metrics::Metrics;
use crate::state::budget::Budget;
use crate::state::checkpoint::{Checkpoints, StoreError};
use crate::state::dead_letter::DeadLetter;

/// How many record groups may wait in a lane's queue. The byte budget is the
/// real bound on memory; this only keeps the queue short.
const LANE_QUEUE: usize = 64;
/// The most lanes (calls in flight) a paced flow uses, one per shard.
const MAX_SHARD_LANES: usize = 64;
const LIST_SHARDS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a paced flow reads its stream's shards again (resharding).
const SHARD_REFRESH: Duration = Duration::from_secs(60);
/// The least time between two `ListShards` calls of one flow.
const REFRESH_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "AWS configuration: no AWS region: set aws.region in the configuration, or AWS_REGION in the environment"
    )]
    NoRegion,
}

/// The Kinesis client for `aws`. The SDK's own retries are off: the sink
/// retries every failure itself, with the classification it documents.
pub async fn kinesis_client(aws: &AwsSettings) -> Result<Client, DaemonError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(aws.request_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(r) = &aws.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &aws.profile {
        loader = loader.profile_name(p);
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(DaemonError::NoRegion);
    }
    // endpoint_url is Kinesis's alone: STS (for role_arn) keeps its own
    // endpoint, or AWS_ENDPOINT_URL_STS.
    let mut kinesis = aws_sdk_kinesis::config::Builder::from(&conf);
    if let Some(u) = &aws.endpoint_url {
        // User information (a proxy's `user:password@`) is not sent by the
        // SDK, but its debug lines would show it: it stays with kinetail.
        kinesis = kinesis.endpoint_url(crate::redact::without_userinfo(u));
    }
    if let Some(role) = &aws.role_arn {
        let mut assume = AssumeRoleProvider::builder(role)
            .session_name(aws.role_session_name.clone())
            .configure(&conf);
        if let Some(id) = &aws.external_id {
            assume = assume.external_id(id);
        }
        kinesis =
            kinesis.credentials_provider(SharedCredentialsProvider::new(assume.build().await));
    }
    Ok(Client::from_conf(kinesis.build()))
}

/// What every flow of a running daemon shares.
struct Env {
    client: Client,
    shared: Arc<SinkShared>,
    checkpoints: Arc<Checkpoints>,
    metrics: Arc<Metrics>,
    slots: Arc<Slots>,
    hostname: String,
    rescan_interval: Duration,
    /// Cloud metadata for the JSON envelope, and what the flows ask of it.
    metadata: Arc<SharedMetadata>,
    wanted: tokio::sync::watch::Sender<Wanted>,
    /// Where file notifications arrive (the watcher notes, tailers ask).
    event_dirs: Arc<EventDirs>,
    state_dir: std::path::PathBuf,
}

/// A started flow: its discovery (which owns its tailers) and its lanes.
struct RunningFlow {
    settings: FlowSettings,
    hint: Arc<Notify>,
    wakes: WakeRegistry,
    stop: CancellationToken,
    discovery: JoinHandle<()>,
    lanes: Arc<LaneSet>,
    checkpoints: Arc<Checkpoints>,
}

impl RunningFlow {
    /// Stops reading: each file's cut is set (what is confirmed or in a
    /// call already started), records past it are withdrawn, and the
    /// tailers end at once. Idempotent.
    fn stop(&self) {
        // The cut first: a lane that starts a call after this sees it.
        self.checkpoints.freeze(&self.settings.name);
        self.stop.cancel();
    }

    /// Stops, and waits until every record below the cuts was sent (and
    /// confirmed or dead-lettered), or `deadline`.
    async fn drain(self, deadline: tokio::time::Instant) -> bool {
        self.stop();
        tokio::time::timeout_at(deadline, async {
            let _ = self.discovery.await;
            // The tailers are gone: nothing sends any more.
            for l in self.lanes.close() {
                let _ = l.await;
            }
        })
        .await
        .is_ok()
    }
}

/// The notify hints and wake registries of the running flows, read by the
/// watcher's callback and replaced on reload.
type Watched = Arc<Mutex<Vec<(Arc<Notify>, WakeRegistry)>>>;

/// Whether a flow needs its stream's shard map. Paced flows send one lane
/// per shard (up to MAX_SHARD_LANES), so a hot shard holds back only its
/// own lane. Aggregation needs the map too: it packs records of one shard.
fn wants_map(flow: &FlowSettings) -> bool {
    flow.pace.is_some() || flow.aggregate_bytes > 0
}

/// The shard map a flow starts with, if it wants one: at most
/// [`LIST_SHARDS_TIMEOUT`] of waiting. Without the map (stream missing, no
/// permission for ListShards, no answer) lanes are keyed by hash until a
/// refresh finds it.
async fn first_map(client: Client, flow: FlowSettings) -> Option<crate::kinesis::shards::ShardMap> {
    if !wants_map(&flow) {
        return None;
    }
    match tokio::time::timeout(LIST_SHARDS_TIMEOUT, list_shards(&client, &flow.stream)).await {
        Ok(Ok(map)) => Some(map),
        Ok(Err(e)) => {
            tracing::warn!(flow = %flow.name, stream = %flow.stream, error = %e, "cannot list shards; sending by key hash until it works");
            None
        }
        Err(_) => {
            tracing::warn!(flow = %flow.name, stream = %flow.stream, "listing shards timed out; sending by key hash until it works");
            None
        }
    }
}

/// The shard maps of `flows`, asked for all at once (start-up waits for the
/// slowest, not for their sum).
async fn first_maps(
    client: &Client,
    flows: &[FlowSettings],
) -> Vec<Option<crate::kinesis::shards::ShardMap>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in flows.iter().enumerate() {
        let (client, f) = (client.clone(), f.clone());
        set.spawn(async move { (i, first_map(client, f).await) });
    }
    let mut maps: Vec<Option<crate::kinesis::shards::ShardMap>> = vec![None; flows.len()];
    while let Some(done) = set.join_next().await {
        if let Ok((i, map)) = done
            && let Some(slot) = maps.get_mut(i)
        {
            *slot = map;
        }
    }
    maps
}

/// Starts a flow with its first shard map: lanes, shard refresher and
/// discovery (which starts the tailers).
fn start_flow(
    env: &Env,
    flow: &FlowSettings,
    map: Option<crate::kinesis::shards::ShardMap>,
    watched: &Watched,
) -> RunningFlow {
    let stop = CancellationToken::new();
    let wants_map = wants_map(flow);
    // A paced flow sends one lane per shard, and follows the shard count.
    let router = Arc::new(Router::new(
        map,
        flow.max_in_flight,
        flow.pace.is_some(),
        MAX_SHARD_LANES,
    ));
    if wants_map {
        tokio::spawn(refresh_shards(
            env.client.clone(),
            flow.clone(),
            router.clone(),
            stop.clone(),
        ));
    }
    let start: crate::records::route::LaneStarter = {
        let (client, flow, router, shared, stop) = (
            env.client.clone(),
            flow.clone(),
            router.clone(),
            env.shared.clone(),
            stop.clone(),
        );
        Box::new(move |index, rx| {
            let lane = Lane {
                flow: flow.name.clone(),
                index,
                client: client.clone(),
                stream: flow.stream.clone(),
                linger: flow.linger,
                pace: flow.pace,
                aggregate_bytes: flow.aggregate_bytes,
                packer: Packer::new(flow.aggregate_bytes, flow.record.compression),
                router: router.clone(),
                lead: Default::default(),
                rx,
                shared: shared.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(lane.run())
        })
    };
    let lanes = Arc::new(LaneSet::new(start, router.snapshot().lanes, LANE_QUEUE));
    let runtime = Arc::new(FlowRuntime {
        settings: flow.clone(),
        lanes: lanes.clone(),
        budget: env.shared.budget.clone(),
        checkpoints: env.checkpoints.clone(),
        metrics: env.metrics.clone(),
        dead_letter: env.shared.dead_letter.clone(),
        slots: env.slots.clone(),
        router,
        hostname: env.hostname.clone(),
        metadata: env.metadata.clone(),
        event_dirs: env.event_dirs.clone(),
        state_dir: env.state_dir.clone(),
    });
    let hint = Arc::new(Notify::new());
    let wakes = WakeRegistry::default();
    watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((hint.clone(), wakes.clone()));
    let discovery = tokio::spawn(discovery::run(
        runtime,
        env.rescan_interval,
        hint.clone(),
        wakes.clone(),
        stop.clone(),
    ));
    let (hint, wakes) = (hint.clone(), wakes.clone());
    RunningFlow {
        settings: flow.clone(),
        hint,
        wakes,
        stop,
        discovery,
        lanes,
        checkpoints: env.checkpoints.clone(),
    }
}

/// Runs kinetail until `shutdown` resolves, then stops as described above.
/// Each message on `reloads` re-reads the configuration file (SIGHUP).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::UnboundedReceiver<()>,
) -> Result<(), DaemonError> {
    let checkpoints = Arc::new(Checkpoints::open(&settings.state_dir)?);
    let metrics = Arc::new(Metrics::default());
    tokio::pin!(shutdown);

    // The API first, so that probes see the start-up (`/ready` is 503
    // until every flow has started).
    let stop_api = CancellationToken::new();
    let api_state = Arc::new(ApiState {
        metrics: metrics.clone(),
        checkpoints: checkpoints.clone(),
        ready: std::sync::atomic::AtomicBool::new(false),
    });
    if let Some(addr) = settings.api {
        tokio::spawn(crate::service::api::listen_and_serve(
            addr,
            api_state.clone(),
            stop_api.clone(),
        ));
    }

    // Start-up waits on the network (credentials, ListShards); a stop is
    // honoured at any moment of it. Nothing has been read yet, so there is
    // nothing to flush.
    let stop_metadata = CancellationToken::new();
    let started = async {
        let client = kinesis_client(&settings.aws).await?;
        let (maps, metadata) = tokio::join!(
            first_maps(&client, &settings.flows),
            start_metadata(&settings.flows, stop_metadata.clone())
        );
        Ok::<_, DaemonError>((client, maps, metadata))
    };
    let (client, maps, (metadata, wanted)) = tokio::select! {
        biased;
        _ = &mut shutdown => {
            stop_api.cancel();
            stop_metadata.cancel();
            tracing::info!("stopped during start-up; nothing was read");
            return Ok(());
        }
        r = started => r?,
    };
    let shared = Arc::new(SinkShared {
        checkpoints: checkpoints.clone(),
        budget: Arc::new(Budget::new(settings.max_buffer_bytes)),
        dead_letter: Arc::new(DeadLetter::new(&settings.state_dir)),
        metrics: metrics.clone(),
    });
    let env = Env {
        client,
        shared,
        checkpoints: checkpoints.clone(),
        metrics: metrics.clone(),
        slots: Arc::new(Slots::new(settings.max_open_files)),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        rescan_interval: settings.rescan_interval,
        metadata,
        wanted,
        event_dirs: Arc::default(),
        state_dir: settings.state_dir.clone(),
    };

    let watched: Watched = Arc::default();
    let mut flows: Vec<RunningFlow> = settings
        .flows
        .iter()
        .zip(maps)
        .map(|(flow, map)| start_flow(&env, flow, map, &watched))
        .collect();
    let mut watcher = watch(watched.clone(), env.event_dirs.clone());
    add_watches(watcher.as_mut(), &settings.flows);

    let stop_saving = CancellationToken::new();
    let saver = tokio::spawn(save_periodically(
        checkpoints.clone(),
        metrics.clone(),
        settings.checkpoint_interval,
        stop_saving.clone(),
    ));
    tracing::info!(flows = settings.flows.len(), state_dir = %crate::redact::path(&settings.state_dir), "kinetail running");
    // Configuration is valid, checkpoints are loaded and every flow is
    // started: only now is the service ready.
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    let stop_watchdog = CancellationToken::new();
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(ping_watchdog(
            period,
            metrics.clone(),
            stop_watchdog.clone(),
        ));
    }
    api_state
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);

    let mut current = settings;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = reloads.recv() => match r {
                Some(()) => reload(&env, &mut current, &mut flows, &watched, watcher.as_mut()).await,
                None => {
                    // No more reloads can come; wait for the stop alone.
                    (&mut shutdown).await;
                    break;
                }
            },
        }
    }

    api_state
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    stop_watchdog.cancel();
    notify_systemd(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: flushing in-flight records"),
    ]);
    tracing::info!(
        grace_ms = current.shutdown_grace.as_millis() as u64,
        "shutting down: reading stops, in-flight records are flushed"
    );
    let deadline = tokio::time::Instant::now() + current.shutdown_grace;
    for f in &flows {
        f.stop();
    }
    let mut drained = true;
    for f in flows {
        drained &= f.drain(deadline).await;
    }
    if !drained {
        tracing::warn!(
            confirmed_past_saved_offset = checkpoints.confirmed_past_offset(),
            "grace period over with records below the cut still unconfirmed; they are read again at the next start, and the confirmed records past them are sent again"
        );
    }
    drop(watcher);
    stop_metadata.cancel();
    stop_saving.cancel();
    stop_api.cancel();
    let _ = saver.await;
    let saved = tokio::task::spawn_blocking(move || checkpoints.save()).await;
    match saved {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final checkpoint save failed"),
        Err(e) => tracing::error!(error = %e, "final checkpoint save failed"),
    }
    tracing::info!(summary = %metrics.summary(), "kinetail stopped");
    Ok(())
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

/// SIGHUP: reads the configuration again. Flows whose settings did not
/// change keep running untouched; removed flows stop reading and drain;
/// changed flows drain, then start again with the new settings (so the new
/// reading starts where the old one's confirmations ended, and nothing is
/// sent twice); new flows start. An invalid file changes nothing.
async fn reload(
    env: &Env,
    current: &mut Settings,
    flows: &mut Vec<RunningFlow>,
    watched: &Watched,
    watcher: Option<&mut notify::RecommendedWatcher>,
) {
    notify_systemd(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::Status("reloading the configuration"),
    ]);
    let new = match Settings::load(&current.source) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "configuration rejected; the running one stays");
            notify_systemd(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("running (reload rejected: invalid configuration)"),
            ]);
            return;
        }
    };
    let restart = current.needs_restart(&new);
    if !restart.is_empty() {
        tracing::warn!(
            settings = restart.join(", "),
            "these settings changed and take effect at the next restart; the rest of the reload is applied"
        );
    }
    // Metadata newly asked for is fetched at once (records read before it
    // arrives go without it).
    env.wanted.send_if_modified(|w| {
        let new = wanted(&new.flows);
        std::mem::replace(w, new) != new
    });
    let deadline = tokio::time::Instant::now() + current.shutdown_grace;
    let mut kept = Vec::new();
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    for running in flows.drain(..) {
        match new.flows.iter().find(|f| f.name == running.settings.name) {
            Some(f) if *f == running.settings => kept.push(running),
            Some(_) => {
                changed += 1;
                let name = running.settings.name.clone();
                if !running.drain(deadline).await {
                    tracing::warn!(flow = %name, "the changed flow did not drain in time; records not yet confirmed will be sent again");
                }
            }
            None => {
                removed += 1;
                let name = running.settings.name.clone();
                tokio::spawn(async move {
                    if !running.drain(deadline).await {
                        tracing::warn!(flow = %name, "the removed flow did not drain in time; its unconfirmed records stay unconfirmed");
                    }
                });
            }
        }
    }
    // The watcher's callback gets the hints of the flows that remain.
    *watched.lock().unwrap_or_else(|p| p.into_inner()) = kept
        .iter()
        .map(|f| (f.hint.clone(), f.wakes.clone()))
        .collect();
    for f in &new.flows {
        if !kept.iter().any(|k| k.settings.name == f.name) {
            if !current.flows.iter().any(|c| c.name == f.name) {
                added += 1;
            }
            let map = first_map(env.client.clone(), f.clone()).await;
            kept.push(start_flow(env, f, map, watched));
        }
    }
    add_watches(watcher, &new.flows);
    *flows = kept;
    let shutdown_grace = new.shutdown_grace;
    *current = Settings {
        flows: new.flows,
        shutdown_grace,
        ..current.clone()
    };
    tracing::info!(
        added,
        removed,
        changed,
        unchanged = flows.len() - added - changed,
        "configuration reloaded"
    );
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
}

/// Tells systemd about a state change; a no-op outside systemd (no
/// `NOTIFY_SOCKET`). A failure to notify never stops the daemon.
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pings the systemd watchdog at half its period, with a one-line status.
/// The pings come from the runtime that runs the pipeline, so a stuck
/// runtime stops them and systemd restarts the service.
async fn ping_watchdog(period: Duration, metrics: Arc<Metrics>, stop: CancellationToken) {
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

/// Reads the stream's shards again every [`SHARD_REFRESH`] (sooner while
/// no map is known) and installs the map when it changed.
async fn refresh_shards(
    client: Client,
    flow: crate::config::FlowSettings,
    router: Arc<Router>,
    stop: CancellationToken,
) {
    let mut last = tokio::time::Instant::now();
    loop {
        let every = if router.snapshot().map.is_some() {
            SHARD_REFRESH
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = router.refresh_requested() => {
                // At once, but at most one ListShards every
                // REFRESH_SPACING however many answers ask (requests
                // meanwhile fold into one, as Notify keeps one).
                tokio::time::sleep_until(last + REFRESH_SPACING).await;
            }
            _ = stop.cancelled() => return,
        }
        last = tokio::time::Instant::now();
        match tokio::time::timeout(LIST_SHARDS_TIMEOUT, list_shards(&client, &flow.stream)).await {
            Ok(Ok(map)) => {
                let n = map.len();
                if router.set_map(map) {
                    tracing::info!(flow = %flow.name, stream = %flow.stream, shards = n, "shard map updated");
                }
            }
            Ok(Err(e)) => tracing::debug!(flow = %flow.name, error = %e, "cannot list shards"),
            Err(_) => tracing::debug!(flow = %flow.name, "listing shards timed out"),
        }
    }
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
                    .store(now, std::sync::atomic::Ordering::Relaxed);
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

/// Starts a notify watcher. Its events are hints only: they wake the
/// tailer of a changed file, and make discovery rescan at once when files
/// appear, vanish or are renamed. If watching fails, polling and the
/// periodic rescan still find everything.
fn watch(watched: Watched, event_dirs: Arc<EventDirs>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Opens, closes and reads (our own among them) say nothing new:
        // waking a tailer for them would only cost a read and a stat.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for dir in event.paths.iter().filter_map(|p| p.parent()) {
            event_dirs.note(dir);
        }
        if matches!(event.kind, EventKind::Remove(_)) {
            // A removed directory takes its watch with it: files in one
            // made again at its path are polled and rescanned for.
            for p in &event.paths {
                event_dirs.forget_under(p);
            }
        }
        let flows = watched.lock().unwrap_or_else(|p| p.into_inner());
        if event.need_rescan() {
            // The kernel dropped events (its queue overflowed): every file
            // may have changed unseen, so every tailer and every flow looks.
            for (hint, reg) in flows.iter() {
                for n in reg.lock().unwrap_or_else(|p| p.into_inner()).values() {
                    n.notify_one();
                }
                hint.notify_one();
            }
            return;
        }
        let structural = matches!(
            event.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
        );
        for (hint, reg) in flows.iter() {
            let reg = reg.lock().unwrap_or_else(|p| p.into_inner());
            for p in &event.paths {
                if let Some(n) = reg.get(p) {
                    n.notify_one();
                }
            }
            if structural {
                hint.notify_one();
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start file notifications; relying on polling");
            None
        }
    }
}

/// Watches the static part of every glob of `flows`.
fn add_watches(watcher: Option<&mut notify::RecommendedWatcher>, flows: &[FlowSettings]) {
    let Some(watcher) = watcher else { return };
    let mut done = std::collections::HashSet::new();
    for flow in flows {
        for pattern in &flow.paths {
            let base = glob_base(pattern);
            let rest = pattern
                .strip_prefix(base.to_string_lossy().as_ref())
                .unwrap_or(pattern)
                .trim_start_matches('/');
            let recursive = rest.contains('/');
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if !done.insert((base.clone(), recursive)) {
                continue;
            }
            if let Err(e) = watcher.watch(&base, mode) {
                tracing::warn!(flow = %flow.name, path = %crate::redact::path(&base), error = %e, "cannot watch directory; relying on rescans");
            }
        }
    }
}
