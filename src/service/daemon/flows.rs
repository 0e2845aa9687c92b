//! A running flow: its lanes, its shard refresher and its discovery (which
//! owns its tailers), started from settings and stopped by its cut.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Clients;
use super::watch::Watched;
use crate::config::{Destination, FlowSettings};
use crate::input::discovery::{self, WakeRegistry};
use crate::input::tailer::{EventDirs, FlowRuntime, Slots};
use crate::kinesis::shards::{Router, ShardMap, list_shards};
use crate::kinesis::sink::{Dest, Lane, SinkShared};
use crate::kinesis::stream::StreamRef;
use crate::records::envelope::SharedMetadata;
use crate::records::metadata::Wanted;
use crate::records::packing::Packer;
use crate::records::route::LaneSet;
use crate::service::metrics::Metrics;
use crate::state::checkpoint::Checkpoints;

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

/// What every flow of a running daemon shares.
pub(super) struct Env {
    pub(super) client: Clients,
    /// The root of the daemon's cancellation tokens: each flow's token
    /// is a child of it.
    pub(super) root: CancellationToken,
    pub(super) shared: Arc<SinkShared>,
    pub(super) checkpoints: Arc<Checkpoints>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) slots: Arc<Slots>,
    pub(super) hostname: String,
    pub(super) rescan_interval: Duration,
    /// Cloud metadata for the JSON envelope, and what the flows ask of it.
    pub(super) metadata: Arc<SharedMetadata>,
    pub(super) wanted: tokio::sync::watch::Sender<Wanted>,
    /// Pod lookups for `metadata = ["kubernetes"]` flows.
    pub(super) pods: Arc<crate::records::pods::Pods>,
    /// Where file notifications arrive (the watcher notes, tailers ask).
    pub(super) event_dirs: Arc<EventDirs>,
    pub(super) state_dir: std::path::PathBuf,
}

/// A started flow: its discovery (which owns its tailers) and its lanes.
pub(super) struct RunningFlow {
    pub(super) settings: FlowSettings,
    pub(super) hint: Arc<Notify>,
    pub(super) wakes: WakeRegistry,
    pub(super) stop: CancellationToken,
    pub(super) discovery: JoinHandle<()>,
    pub(super) lanes: Arc<LaneSet>,
    pub(super) checkpoints: Arc<Checkpoints>,
}

impl RunningFlow {
    /// Stops reading: each file's cut is set (what is confirmed or in a
    /// call already started), records past it are withdrawn, and the
    /// tailers end at once. Idempotent.
    pub(super) fn stop(&self) {
        // The cut first: a lane that starts a call after this sees it.
        self.checkpoints.freeze(&self.settings.name);
        self.stop.cancel();
    }

    /// Stops, and waits until every record below the cuts was sent (and
    /// confirmed or dead-lettered), or `deadline`.
    pub(super) async fn drain(self, deadline: tokio::time::Instant) -> bool {
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

/// Whether a flow needs its stream's shard map. Paced flows send one lane
/// per shard (up to MAX_SHARD_LANES), so a hot shard holds back only its
/// own lane. Aggregation needs the map too: it packs records of one shard.
fn wants_map(flow: &FlowSettings) -> bool {
    matches!(flow.destination, Destination::Stream(_))
        && (flow.pace.is_some() || flow.aggregate_bytes > 0)
}

/// The shard map a flow starts with, if it wants one: at most
/// [`LIST_SHARDS_TIMEOUT`] of waiting. Without the map (stream missing, no
/// permission for ListShards, no answer) lanes are keyed by hash until a
/// refresh finds it.
pub(super) async fn first_map(client: Client, flow: FlowSettings) -> Option<ShardMap> {
    let Destination::Stream(stream) = &flow.destination else {
        return None;
    };
    if !wants_map(&flow) {
        return None;
    }
    match tokio::time::timeout(LIST_SHARDS_TIMEOUT, list_shards(&client, stream)).await {
        Ok(Ok(map)) => Some(map),
        Ok(Err(e)) => {
            tracing::warn!(flow = %flow.name, %stream, error = %e, "cannot list shards; sending by key hash until it works");
            None
        }
        Err(_) => {
            tracing::warn!(flow = %flow.name, %stream, "listing shards timed out; sending by key hash until it works");
            None
        }
    }
}

/// The shard maps of `flows`, asked for all at once (start-up waits for the
/// slowest, not for their sum).
pub(super) async fn first_maps(client: &Client, flows: &[FlowSettings]) -> Vec<Option<ShardMap>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in flows.iter().enumerate() {
        let (client, f) = (client.clone(), f.clone());
        set.spawn(async move { (i, first_map(client, f).await) });
    }
    let mut maps: Vec<Option<ShardMap>> = vec![None; flows.len()];
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
pub(super) fn start_flow(
    env: &Env,
    flow: &FlowSettings,
    map: Option<ShardMap>,
    watched: &Watched,
) -> RunningFlow {
    let stop = env.root.child_token();
    // A paced flow sends one lane per shard, and follows the shard count.
    let router = Arc::new(Router::new(
        map,
        flow.max_in_flight,
        flow.pace.is_some(),
        MAX_SHARD_LANES,
    ));
    if let (true, Destination::Stream(stream)) = (wants_map(flow), &flow.destination) {
        tokio::spawn(refresh_shards(
            env.client.kinesis.clone(),
            flow.name.clone(),
            stream.clone(),
            router.clone(),
            stop.clone(),
        ));
    }
    let start = lane_starter(env, flow, &router, &stop);
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
        pods: env.pods.clone(),
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

/// What starts a flow's lane `index` when routing first needs it.
fn lane_starter(
    env: &Env,
    flow: &FlowSettings,
    router: &Arc<Router>,
    stop: &CancellationToken,
) -> crate::records::route::LaneStarter {
    let dest = match &flow.destination {
        Destination::Stream(stream) => Dest::Stream {
            client: env.client.puts.clone(),
            stream: stream.clone(),
        },
        Destination::Firehose(name) => Dest::Firehose {
            client: env.client.firehose.clone(),
            name: name.clone(),
        },
    };
    let (flow, router, shared, stop) = (
        flow.clone(),
        router.clone(),
        env.shared.clone(),
        stop.clone(),
    );
    Box::new(move |index, rx| {
        let lane = Lane {
            flow: flow.name.clone(),
            index,
            dest: dest.clone(),
            linger: flow.linger,
            pace: flow.pace,
            aggregate_bytes: flow.aggregate_bytes,
            packer: match &flow.destination {
                Destination::Stream(_) => {
                    Packer::new(flow.aggregate_bytes, flow.record.compression)
                }
                Destination::Firehose(_) => {
                    Packer::lines(flow.aggregate_bytes, flow.record.compression)
                }
            },
            router: router.clone(),
            lead: Default::default(),
            rx,
            shared: shared.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(lane.run())
    })
}

/// Reads the stream's shards again every [`SHARD_REFRESH`] (sooner while
/// no map is known) and installs the map when it changed.
async fn refresh_shards(
    client: Client,
    flow: String,
    stream: StreamRef,
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
        match tokio::time::timeout(LIST_SHARDS_TIMEOUT, list_shards(&client, &stream)).await {
            Ok(Ok(map)) => {
                let n = map.len();
                if router.set_map(map) {
                    tracing::info!(%flow, %stream, shards = n, "shard map updated");
                }
            }
            Ok(Err(e)) => tracing::debug!(%flow, error = %e, "cannot list shards"),
            Err(_) => tracing::debug!(%flow, "listing shards timed out"),
        }
    }
}
