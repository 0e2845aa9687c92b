//! Shards: which shard a record goes to, and pacing each shard under its
//! write limit before Kinesis throttles.
//!
//! Kinesis hashes the partition key with MD5 to a 128-bit number (or takes
//! the record's `ExplicitHashKey`) and writes the record to the shard whose
//! hash-key range holds it. [`ShardMap`] holds the open shards' ranges (from
//! `ListShards`, refreshed periodically) so the tailers can route a record to
//! the lane that serves its shard. [`RateWindow`] is the pure pacing core: it
//! says how long to wait before a call so that no sliding second carries
//! more than a shard's records or bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// The 128-bit hash key Kinesis derives from a partition key.
pub fn hash_key(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// The open shards of a stream by hash-key range, sorted by range start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    starts: Vec<u128>,
    ids: Vec<String>,
    /// Each shard's tag (see [`Router`]): the same number for the same
    /// shard id in every map of a flow.
    tags: Vec<u32>,
}

impl ShardMap {
    /// From `(starting hash key, shard id)` of the open shards.
    pub fn new(mut shards: Vec<(u128, String)>) -> Option<ShardMap> {
        if shards.is_empty() {
            return None;
        }
        shards.sort();
        let (starts, ids): (Vec<u128>, Vec<String>) = shards.into_iter().unzip();
        let tags = (0..ids.len() as u32).collect();
        Some(ShardMap { starts, ids, tags })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn id(&self, index: usize) -> Option<&str> {
        self.ids.get(index).map(String::as_str)
    }

    /// Whether `id` is one of the map's shards.
    pub fn has_id(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }

    /// The index of the shard whose range holds `hash`.
    pub fn shard_of(&self, hash: u128) -> usize {
        match self.starts.binary_search(&hash) {
            Ok(i) => i,
            Err(0) => 0,
            Err(i) => i - 1,
        }
    }

    /// The hash-key range `[start, end]` of the shard at `index`.
    fn range(&self, index: usize) -> (u128, u128) {
        let end = self.starts.get(index + 1).map_or(u128::MAX, |s| s - 1);
        (self.starts[index], end)
    }

    /// The tags of this map's shards whose ranges overlap `range`.
    fn overlapping(&self, (start, end): (u128, u128)) -> impl Iterator<Item = u32> + '_ {
        (0..self.len())
            .filter(move |&i| {
                let (s, e) = self.range(i);
                s <= end && start <= e
            })
            .map(|i| self.tags[i])
    }

    /// Whether both hold the same shards (tags aside).
    fn same_shards(&self, other: &ShardMap) -> bool {
        self.starts == other.starts && self.ids == other.ids
    }
}

/// How a flow routes at one moment: its shard map (if known), which map
/// this is, and over how many lanes.
#[derive(Debug)]
pub struct Routing {
    pub map: Option<ShardMap>,
    /// Counts the maps installed: records keyed under an older one are
    /// sent before any keyed under this one (see [`Router::turn`]).
    pub epoch: u32,
    pub lanes: usize,
}

/// Routes records to lanes: by shard when the shard map is known (a lane
/// serves the shards whose index is its own modulo the lane count), by a
/// hash of the partition key otherwise. Either way equal keys share a lane.
///
/// When the map changes (a split, a merge, the first map found), a key may
/// move to another lane. So that it still arrives in order, records keyed
/// under the new map wait (in their tailer) until every record keyed under
/// an older one has left the lanes: a short pause at a reshard, never a
/// key's lines out of order. The lanes meanwhile pace what they hold by
/// the new map (see [`Router::retag`]).
#[derive(Debug)]
pub struct Router {
    routing: RwLock<Arc<Routing>>,
    /// The lane count while no map is known, and always unless `follow`.
    fixed_lanes: usize,
    /// Whether the lane count follows the map: one lane per shard, up to
    /// `max_lanes` (paced flows).
    follow: bool,
    max_lanes: usize,
    /// Asks the refresher to read the shards again now.
    refresh: tokio::sync::Notify,
    /// Shard id to tag, for every shard seen; tags are never reused, so a
    /// tag names one shard across maps.
    tags: Mutex<HashMap<String, u32>>,
    /// The sliding second of each shard, by tag, shared by the lanes.
    windows: Mutex<HashMap<u32, RateWindow>>,
    /// Records in the lanes per epoch they were keyed under.
    held: Mutex<Vec<(u32, usize)>>,
    /// Told whenever an epoch's records have all left the lanes.
    drained: tokio::sync::Notify,
}

impl Router {
    /// `lanes` is the lane count without a map; with `follow`, a map brings
    /// one lane per shard, up to `max_lanes`.
    pub fn new(map: Option<ShardMap>, lanes: usize, follow: bool, max_lanes: usize) -> Router {
        let router = Router {
            routing: RwLock::new(Arc::new(Routing {
                map: None,
                epoch: 0,
                lanes: lanes.max(1),
            })),
            fixed_lanes: lanes.max(1),
            follow,
            max_lanes: max_lanes.max(1),
            refresh: tokio::sync::Notify::new(),
            tags: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            held: Mutex::new(Vec::new()),
            drained: tokio::sync::Notify::new(),
        };
        if let Some(map) = map {
            router.install(map, 0);
        }
        router
    }

    /// Called when a lane sees signs of a changed stream (throttling
    /// despite pacing, a missing stream): the map is read again soon.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Whether every one of `shards` (ids from an answer) is in the map;
    /// `true` while no map is known (nothing to compare with).
    pub fn knows_shards(&self, shards: &[String]) -> bool {
        match &self.snapshot().map {
            Some(map) => shards.iter().all(|s| map.has_id(s)),
            None => true,
        }
    }

    /// Resolves when a refresh was requested.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }

    /// The current routing, to route a group of records with one lock.
    pub fn snapshot(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The epoch of the current routing.
    pub fn epoch(&self) -> u32 {
        self.snapshot().epoch
    }

    /// Installs a new map; returns whether it differs from the old one.
    pub fn set_map(&self, map: ShardMap) -> bool {
        let cur = self.snapshot();
        if cur.map.as_ref().is_some_and(|m| m.same_shards(&map)) {
            return false;
        }
        self.install(map, cur.epoch.wrapping_add(1));
        true
    }

    fn install(&self, mut map: ShardMap, epoch: u32) {
        {
            let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            for (tag, id) in map.tags.iter_mut().zip(&map.ids) {
                let next = tags.len() as u32;
                *tag = *tags.entry(id.clone()).or_insert(next);
            }
        }
        {
            // A new shard starts with what its parents took in the last
            // second (the calls in flight at the change were booked for
            // them, and land in it): for a split, each child as much as
            // its parent, for a merge, both parents'. Windows of shards
            // no longer open then go.
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.snapshot();
            if let Some(old) = &old.map {
                for i in 0..map.len() {
                    let tag = map.tags[i];
                    if old.tags.contains(&tag) {
                        continue;
                    }
                    let parents: Vec<u32> = old.overlapping(map.range(i)).collect();
                    let mut inherited: Option<RateWindow> = None;
                    for p in parents {
                        if let Some(w) = windows.get(&p) {
                            match &mut inherited {
                                Some(i) => i.absorb(w),
                                None => inherited = Some(w.clone()),
                            }
                        }
                    }
                    if let Some(w) = inherited {
                        windows.insert(tag, w);
                    }
                }
            }
            windows.retain(|t, _| map.tags.contains(t));
        }
        let lanes = if self.follow {
            map.len().clamp(1, self.max_lanes)
        } else {
            self.fixed_lanes
        };
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Routing {
            map: Some(map),
            epoch,
            lanes,
        });
    }

    /// The lane and shard tag of a record, under `routing`.
    pub fn route(&self, routing: &Routing, key: &str, ehk: Option<&str>) -> (usize, u32) {
        match &routing.map {
            Some(m) => {
                let index = m.shard_of(record_hash(key, ehk));
                (index % routing.lanes, m.tags[index])
            }
            None => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                key.hash(&mut h);
                (
                    (h.finish() % routing.lanes as u64) as usize,
                    crate::records::batcher::NO_SHARD,
                )
            }
        }
    }

    /// The shard tag of a record keyed under an older map, by the current
    /// one: the shard Kinesis will write it to (it routes by hash key, so
    /// a record bound for a closed parent lands in one of its children).
    pub fn retag(&self, routing: &Routing, key: &str, ehk: Option<&str>) -> u32 {
        match &routing.map {
            Some(m) => m.tags[m.shard_of(record_hash(key, ehk))],
            None => crate::records::batcher::NO_SHARD,
        }
    }

    /// Runs `f` on the sliding second of the shard tagged `tag` (opened
    /// with `limits` if it has none).
    pub fn window<T>(
        &self,
        tag: u32,
        limits: ShardLimits,
        f: impl FnOnce(&mut RateWindow) -> T,
    ) -> T {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        f(windows
            .entry(tag)
            .or_insert_with(|| RateWindow::new(limits)))
    }

    /// Runs `f` on all the windows at once (one call's shards booked
    /// together).
    pub fn windows<T>(&self, f: impl FnOnce(&mut HashMap<u32, RateWindow>) -> T) -> T {
        f(&mut self.windows.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Notes `n` records keyed under `epoch` entering the lanes.
    pub fn enter(&self, epoch: u32, n: usize) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.iter_mut().find(|(e, _)| *e == epoch) {
            Some(h) => h.1 += n,
            None => held.push((epoch, n)),
        }
    }

    /// Notes records leaving the lanes (confirmed, dead-lettered,
    /// withdrawn, or never handed over).
    pub fn leave<'r>(
        &self,
        records: impl IntoIterator<Item = &'r crate::records::batcher::Record>,
    ) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut emptied = false;
        for r in records {
            if let Some(i) = held.iter().position(|(e, _)| *e == r.epoch) {
                held[i].1 = held[i].1.saturating_sub(1);
                if held[i].1 == 0 {
                    held.swap_remove(i);
                    emptied = true;
                }
            }
        }
        if emptied {
            self.drained.notify_waiters();
        }
    }

    /// Waits until no record keyed under an epoch before `epoch` is in
    /// the lanes.
    pub async fn turn(&self, epoch: u32) {
        loop {
            let drained = self.drained.notified();
            let waiting = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(e, n)| *n > 0 && older(*e, epoch));
            if !waiting {
                return;
            }
            drained.await;
        }
    }
}

/// Whether epoch `a` came before `b` (epochs wrap).
fn older(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < u32::MAX / 2
}

/// The hash key Kinesis routes a record by: its explicit hash key, else
/// the MD5 of its partition key.
fn record_hash(key: &str, ehk: Option<&str>) -> u128 {
    ehk.and_then(|e| e.parse::<u128>().ok())
        .unwrap_or_else(|| hash_key(key))
}

/// An `ExplicitHashKey` from a source value: the value itself when it is a
/// valid decimal hash key, else the MD5 of it as Kinesis would hash it.
pub fn to_hash_key(value: &str) -> String {
    if is_hash_key(value) {
        value.to_string()
    } else {
        hash_key(value).to_string()
    }
}

/// Why a stream's shard map could not be read.
#[cfg(feature = "aws")]
#[derive(Debug, thiserror::Error)]
pub enum ListShardsError {
    #[error("ListShards failed: {}", crate::redact::error_text(&aws_sdk_kinesis::error::DisplayErrorContext(&**.0)))]
    Call(
        #[source]
        Box<
            aws_sdk_kinesis::error::SdkError<
                aws_sdk_kinesis::operation::list_shards::ListShardsError,
            >,
        >,
    ),
    #[error("the stream has no open shard")]
    NoOpenShard,
}

/// Reads the open shards of a stream with `ListShards`.
#[cfg(feature = "aws")]
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &crate::kinesis::stream::StreamRef,
) -> Result<ShardMap, ListShardsError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_shards();
        req = match &token {
            Some(t) => req.next_token(t),
            None => match stream {
                crate::kinesis::stream::StreamRef::Name(n) => req.stream_name(n),
                crate::kinesis::stream::StreamRef::Arn { arn, name } => {
                    req.stream_name(name).stream_arn(arn)
                }
            },
        };
        let out = req
            .send()
            .await
            .map_err(|e| ListShardsError::Call(Box::new(e)))?;
        for s in out.shards() {
            let open = s
                .sequence_number_range()
                .is_none_or(|r| r.ending_sequence_number().is_none());
            let start = s
                .hash_key_range()
                .and_then(|r| r.starting_hash_key().parse::<u128>().ok());
            if let (true, Some(start)) = (open, start) {
                shards.push((start, s.shard_id().to_string()));
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    ShardMap::new(shards).ok_or(ListShardsError::NoOpenShard)
}

/// What one shard may take per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLimits {
    pub records_per_sec: u64,
    pub bytes_per_sec: u64,
}

/// A sliding window of what was sent to one shard: a second, and a little
/// more (see [`WINDOW`]).
#[derive(Debug, Clone)]
pub struct RateWindow {
    limits: ShardLimits,
    /// (when, records, bytes, booking id), in booking order; a booking
    /// moved later (see [`RateWindow::settle`]) may leave it out of time
    /// order, which only keeps entries a little longer.
    sent: VecDeque<(Instant, u64, u64, u64)>,
    records: u64,
    bytes: u64,
    next_id: u64,
}

/// How long a call counts against its shard: Kinesis counts a second on
/// arrival, and calls arrive later than they leave, unevenly. A call that
/// left a second after another can arrive less than a second after it, and
/// with calls of hundreds of records the 10% kept free of the limits
/// does not cover that: an endpoint enforcing a strict sliding second
/// throttled 5% of a backlog paced over exactly one second. Counting each
/// call a little longer keeps two calls' arrivals a second apart through
/// that much jitter, for 2.5% of the budget.
pub const WINDOW: Duration = Duration::from_millis(1_025);

impl RateWindow {
    pub fn new(limits: ShardLimits) -> RateWindow {
        RateWindow {
            limits,
            sent: VecDeque::new(),
            records: 0,
            bytes: 0,
            next_id: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, r, b, _)) = self.sent.front() {
            if now.saturating_duration_since(t) < WINDOW {
                break;
            }
            self.sent.pop_front();
            self.records -= r;
            self.bytes -= b;
        }
    }

    /// How long to wait from `now` before `records` and `bytes` may be sent
    /// without any sliding second exceeding the limits. A call larger than
    /// the limits on its own waits for an empty window.
    pub fn delay(&mut self, now: Instant, records: u64, bytes: u64) -> Duration {
        self.expire(now);
        let fits = |r: u64, b: u64| {
            (r == 0 && b == 0)
                || (r + records <= self.limits.records_per_sec
                    && b + bytes <= self.limits.bytes_per_sec)
        };
        if fits(self.records, self.bytes) {
            return Duration::ZERO;
        }
        let (mut r, mut b) = (self.records, self.bytes);
        let mut latest = self.sent.front().map_or(now, |e| e.0);
        for &(t, rr, bb, _) in &self.sent {
            r -= rr;
            b -= bb;
            latest = latest.max(t);
            if fits(r, b) {
                return (latest + WINDOW).saturating_duration_since(now);
            }
        }
        WINDOW
    }

    /// What may still be sent at `now` without passing the limits in any
    /// sliding second, once the room is worth a call: when less than a
    /// tenth of either limit is free, the wait until it is (a backlog then
    /// goes in a few full calls a second, not in many slivers). Returns
    /// the wait and the room after it.
    pub fn room(&mut self, now: Instant) -> (Duration, u64, u64) {
        self.expire(now);
        let worth = |r: u64, b: u64| {
            self.limits.records_per_sec - r >= (self.limits.records_per_sec / 10).max(1)
                && self.limits.bytes_per_sec - b >= (self.limits.bytes_per_sec / 10).max(1)
        };
        let (mut r, mut b) = (self.records, self.bytes);
        let mut wait = Duration::ZERO;
        if !worth(
            r.min(self.limits.records_per_sec),
            b.min(self.limits.bytes_per_sec),
        ) {
            wait = WINDOW;
            let mut latest = self.sent.front().map_or(now, |e| e.0);
            for &(t, rr, bb, _) in &self.sent {
                r -= rr;
                b -= bb;
                latest = latest.max(t);
                if worth(r, b) {
                    wait = (latest + WINDOW).saturating_duration_since(now);
                    break;
                }
            }
            if wait == WINDOW {
                (r, b) = (0, 0);
            }
        }
        (
            wait,
            self.limits.records_per_sec.saturating_sub(r),
            self.limits.bytes_per_sec.saturating_sub(b),
        )
    }

    /// Notes that `records` and `bytes` were sent at `now`.
    pub fn record(&mut self, now: Instant, records: u64, bytes: u64) {
        self.book(now, records, bytes);
    }

    /// Books `records` and `bytes` to go at `at`; returns the booking's id
    /// for [`RateWindow::settle`].
    pub fn book(&mut self, at: Instant, records: u64, bytes: u64) -> u64 {
        self.expire(at);
        let id = self.next_id;
        self.next_id += 1;
        self.sent.push_back((at, records, bytes, id));
        self.records += records;
        self.bytes += bytes;
        id
    }

    /// Counts what `other` counts as well (a merged shard takes what both
    /// its parents took).
    pub fn absorb(&mut self, other: &RateWindow) {
        for &(t, r, b, _) in &other.sent {
            let id = self.next_id;
            self.next_id += 1;
            self.sent.push_back((t, r, b, id));
            self.records += r;
            self.bytes += b;
        }
        self.sent.make_contiguous().sort_by_key(|e| e.0);
    }

    /// Moves a booking to when it really went, if that is later.
    pub fn settle(&mut self, id: u64, at: Instant) {
        if let Some(e) = self.sent.iter_mut().find(|e| e.3 == id) {
            e.0 = e.0.max(at);
        }
    }
}

/// Whether `s` is a valid `ExplicitHashKey`: a decimal from 0 to 2^128-1
/// without sign, spaces or leading zeros.
pub fn is_hash_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u128>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Four shards with equal hash-key ranges, as Kinesis creates them.
    fn four_shards() -> (u128, ShardMap) {
        let quarter = u128::MAX / 4 + 1;
        let map = ShardMap::new(
            (0..4)
                .map(|i| (i as u128 * quarter, format!("s{i}")))
                .collect(),
        )
        .unwrap();
        (quarter, map)
    }

    #[test]
    fn hash_key_is_md5_as_big_endian_u128() {
        // MD5("abc") = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(hash_key("abc"), 0x900150983cd24fb0d6963f7d28e17f72);
    }

    #[test]
    fn explicit_hash_keys_from_any_source() {
        assert_eq!(to_hash_key("42"), "42");
        assert_eq!(
            to_hash_key("abc"),
            0x900150983cd24fb0d6963f7d28e17f72u128.to_string()
        );
        assert_eq!(
            to_hash_key("007"),
            hash_key("007").to_string(),
            "not a canonical decimal: hashed"
        );
    }

    #[test]
    fn equal_keys_share_a_lane_with_or_without_a_map() {
        let (_, map) = four_shards();
        let r = Router::new(None, 3, false, 64);
        let none = r.snapshot();
        assert_eq!(
            r.route(&none, "user-1", None),
            r.route(&none, "user-1", None)
        );
        r.set_map(map);
        let mapped = r.snapshot();
        let (lane, shard) = r.route(&mapped, "abc", None);
        assert_eq!(shard, 2, "MD5(abc) = 0x9001.. is in the third quarter");
        assert_eq!(lane, 2);
        let (_, shard) = r.route(&mapped, "abc", Some("0"));
        assert_eq!(shard, 0, "the explicit hash key wins");
    }

    fn map_of(shards: &[(u128, &str)]) -> ShardMap {
        ShardMap::new(shards.iter().map(|(s, id)| (*s, id.to_string())).collect()).expect("shards")
    }

    #[test]
    fn a_shard_keeps_its_tag_across_maps_and_lanes_follow_the_shard_count() {
        let half = 1u128 << 127;
        let r = Router::new(Some(map_of(&[(0, "shard-0")])), 4, true, 64);
        let first = r.snapshot();
        assert_eq!((first.epoch, first.lanes), (0, 1));
        assert_eq!(r.route(&first, "abc", None), (0, 0));
        // A split: the parent closes, two children take its halves.
        assert!(r.set_map(map_of(&[(0, "shard-1"), (half, "shard-2")])));
        assert!(
            !r.set_map(map_of(&[(0, "shard-1"), (half, "shard-2")])),
            "the same map again is no change"
        );
        let split = r.snapshot();
        assert_eq!((split.epoch, split.lanes), (1, 2));
        assert_eq!(
            r.route(&split, "abc", None),
            (1, 2),
            "abc hashes into the upper half"
        );
        assert_eq!(r.retag(&split, "abc", None), 2);
        // A merge back: a new shard, a new tag; the parent's tag is not reused.
        assert!(r.set_map(map_of(&[(0, "shard-3")])));
        let merged = r.snapshot();
        assert_eq!((merged.epoch, merged.lanes), (2, 1));
        assert_eq!(r.route(&merged, "abc", None), (0, 3));
        // The same id seen again keeps its first tag.
        assert!(r.set_map(map_of(&[(0, "shard-1"), (half, "shard-2")])));
        assert_eq!(r.retag(&r.snapshot(), "abc", None), 2);
        // A flow that does not pace keeps its lane count.
        let limits = ShardLimits {
            records_per_sec: 1_000,
            bytes_per_sec: 1 << 20,
        };
        let now = Instant::now();
        let r = Router::new(Some(map_of(&[(0, "p")])), 1, true, 64);
        r.window(0, limits, |w| w.record(now, 600, 6_000));
        r.set_map(map_of(&[(0, "c1"), (half, "c2")]));
        for child in [1, 2] {
            let room = r.window(child, limits, |w| w.room(now).1);
            assert_eq!(room, 400, "a child starts with what its parent took");
        }
        r.window(1, limits, |w| w.record(now, 100, 1_000));
        r.set_map(map_of(&[(0, "m")]));
        let (wait, _, _) = r.window(3, limits, |w| w.room(now));
        assert!(
            wait > Duration::ZERO,
            "a merged shard starts with both parents' 1,300 records (one's 700 would leave room)"
        );
        let fixed = Router::new(Some(map_of(&[(0, "a"), (half, "b")])), 4, false, 64);
        assert_eq!(fixed.snapshot().lanes, 4);
    }

    #[tokio::test]
    async fn records_of_a_new_map_wait_until_the_older_ones_left_the_lanes() {
        let rec = |epoch| crate::records::batcher::Record {
            epoch,
            ..crate::records::batcher::Record::new(Vec::new(), "k")
                .ranged(1, 0, 1)
                .on_shard(0)
        };
        let r = Arc::new(Router::new(None, 1, true, 64));
        r.enter(0, 2);
        // Epoch 0 itself never waits for itself.
        tokio::time::timeout(Duration::from_millis(100), r.turn(0))
            .await
            .expect("no wait for its own epoch");
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.turn(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "two records of epoch 0 are still held"
        );
        r.leave(&[rec(0)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one is still held");
        r.leave(&[rec(0)]);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released once both left")
            .expect("task");
        assert!(older(u32::MAX, 0), "epochs wrap");
        assert!(!older(1, 0));
    }

    #[test]
    fn shard_of_finds_the_range() {
        let (quarter, map) = four_shards();
        assert_eq!(map.shard_of(0), 0);
        assert_eq!(map.shard_of(quarter - 1), 0);
        assert_eq!(map.shard_of(quarter), 1);
        assert_eq!(map.shard_of(u128::MAX), 3);
        assert_eq!(map.id(2), Some("s2"));
    }

    proptest! {
        /// Whatever calls are asked for, sending each after its delay never
        /// puts more than the limits into any sliding second.
        #[test]
        fn paced_calls_never_exceed_the_limits(calls in proptest::collection::vec((1u64..600, 1u64..300_000), 1..80)) {
            let limits = ShardLimits { records_per_sec: 1000, bytes_per_sec: 1 << 20 };
            let mut w = RateWindow::new(limits);
            let start = Instant::now();
            let mut now = start;
            let mut log: Vec<(Instant, u64, u64)> = Vec::new();
            for (r, b) in calls {
                now += w.delay(now, r, b);
                w.record(now, r, b);
                log.push((now, r, b));
                now += Duration::from_millis(3);
            }
            for (i, &(t, _, _)) in log.iter().enumerate() {
                let (r, b) = log[i..].iter().take_while(|(u, _, _)| *u < t + WINDOW).fold((0, 0), |(r, b), (_, rr, bb)| (r + rr, b + bb));
                prop_assert!(r <= limits.records_per_sec, "{} records in a second", r);
                prop_assert!(b <= limits.bytes_per_sec, "{} bytes in a second", b);
            }
        }
    }

    #[test]
    fn hash_keys_are_decimals_below_2_pow_128() {
        assert!(is_hash_key("0"));
        assert!(is_hash_key("340282366920938463463374607431768211455"));
        assert!(!is_hash_key("340282366920938463463374607431768211456"));
        assert!(!is_hash_key("-1"));
        assert!(!is_hash_key("+1"));
        assert!(!is_hash_key("01"));
        assert!(!is_hash_key(""));
        assert!(!is_hash_key("12a"));
    }
}
