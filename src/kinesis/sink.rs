//! The sink: lanes that send batches with `PutRecords` and turn the answers
//! into acks, retries or dead letters.
//!
//! A flow has `max_in_flight` lanes; the tailers route each record to the
//! lane chosen by a hash of its partition key. A lane has at most one call
//! in flight and finishes a batch (every record confirmed or dead-lettered)
//! before it sends the next, so records with the same key reach Kinesis in
//! the order they were read, even when entries fail and are retried.
//!
//! What the lane does with each outcome:
//! - entry with a `SequenceNumber`: ack (the checkpoint may move past it);
//! - entry with an `ErrorCode`: retry exactly that entry, with backoff;
//! - whole call throttled, 5xx, timeout, connection error: retry the call;
//! - whole call rejected as invalid: split the batch in halves until the
//!   record at fault stands alone, then dead-letter it;
//! - errors retrying alone cannot fix (missing stream, denied, bad
//!   credentials, KMS): keep the records, retry slowly, log once per
//!   interval.
//!
//! The lane never drops a record: it leaves the lane only as an ack.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::{backoff, slow_backoff};
use crate::kinesis::classify::{CallResult, Failure};
use crate::kinesis::direct::Direct;
use crate::kinesis::shards::{RateWindow, Router, ShardLimits};
use crate::kinesis::stream::StreamRef;
use crate::records::batcher::FileId;
use crate::records::batcher::{
    Batch, Entry, FIREHOSE, KINESIS, Limits, NO_SHARD, PAYLOAD_UNIT, Record, coalesce_acks,
    put_records_body,
};
use crate::records::packing::Packer;
use crate::service::metrics::Metrics;
use crate::state::budget::Budget;
use crate::state::checkpoint::Checkpoints;
use crate::state::dead_letter::DeadLetter;

/// Backoff between retries of failed entries and retryable calls.
const QUICK_MIN: Duration = Duration::from_millis(100);
const QUICK_MAX: Duration = Duration::from_secs(5);

/// How often a persistent error is logged again while it lasts.
const STUCK_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The records at the end of `carry` bound for one known shard, and their
/// bytes. The record before them is of another shard, so packing what
/// precedes them never takes from them.
fn tail_run(carry: &VecDeque<Record>) -> (usize, usize) {
    let Some(shard) = carry.back().map(|r| r.shard).filter(|s| *s != NO_SHARD) else {
        return (0, 0);
    };
    carry
        .iter()
        .rev()
        .take_while(|r| r.shard == shard)
        .fold((0, 0), |(n, b), r| (n + 1, b + r.api_size()))
}

/// What every lane of every flow shares.
#[derive(Debug)]
pub struct SinkShared {
    pub checkpoints: Arc<Checkpoints>,
    /// Bytes of records read and not yet acked; tailers take, lanes give back.
    pub budget: Arc<Budget>,
    pub dead_letter: Arc<DeadLetter>,
    pub metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a lane sends, with its client: the one part of a lane that is its
/// destination's own (ARCHITECTURE.md, "The destination seam").
#[derive(Debug, Clone)]
pub enum Dest {
    Stream {
        client: Arc<Direct>,
        stream: StreamRef,
    },
    Firehose {
        client: aws_sdk_firehose::Client,
        name: String,
    },
}

impl Dest {
    /// The API call, for what the lane logs.
    pub fn call(&self) -> &'static str {
        match self {
            Dest::Stream { .. } => "PutRecords",
            Dest::Firehose { .. } => "PutRecordBatch",
        }
    }

    pub fn limits(&self) -> &'static Limits {
        match self {
            Dest::Stream { .. } => &KINESIS,
            Dest::Firehose { .. } => &FIREHOSE,
        }
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Stream { stream, .. } => write!(f, "stream {stream}"),
            Dest::Firehose { name, .. } => write!(f, "delivery stream {name}"),
        }
    }
}

/// One lane of a flow: a queue of records and at most one call in flight.
pub struct Lane {
    pub flow: String,
    pub index: usize,
    pub dest: Dest,
    pub linger: Duration,
    /// The shard limits to pace under, if the flow paces.
    pub pace: Option<ShardLimits>,
    /// Pack records of one shard into aggregates of at most this many
    /// bytes (0: send each record as it is).
    pub aggregate_bytes: usize,
    /// Sizes aggregates to whole payload units and compresses them.
    pub packer: Packer,
    /// The flow's routing, told when the shard map may be stale.
    pub router: Arc<Router>,
    /// How long its calls take to go out once paced.
    pub lead: Arc<Lead>,
    pub rx: mpsc::Receiver<Vec<Record>>,
    pub shared: Arc<SinkShared>,
    /// The flow's stop: from then on the lane sends only what fills the
    /// holes below each file's cut (see `Checkpoints::freeze`).
    pub stop: CancellationToken,
}

/// Paced lanes aim this far under a shard's limits: calls reach the service
/// later than they leave, unevenly, and the service counts on arrival.
const PACE_SHARE: f64 = 0.9;

fn paced(limits: ShardLimits) -> ShardLimits {
    ShardLimits {
        records_per_sec: ((limits.records_per_sec as f64 * PACE_SHARE) as u64).max(1),
        bytes_per_sec: ((limits.bytes_per_sec as f64 * PACE_SHARE) as u64).max(1),
    }
}

/// How long a lane's calls take from the end of their pacing wait to the
/// connection (building the body, signing): the least of the last few. A
/// paced wait ends this much before the window admits the call, so the
/// call goes out when it may rather than that much later (one call of
/// 0.9 MiB a window lost a tenth of the shard's bytes to it).
#[derive(Debug, Default)]
pub struct Lead(std::sync::Mutex<VecDeque<Duration>>);

impl Lead {
    const KEEP: usize = 4;

    pub fn get(&self) -> Duration {
        lock(&self.0).iter().min().copied().unwrap_or_default()
    }

    fn note(&self, took: Duration) {
        let mut last = lock(&self.0);
        if last.len() == Self::KEEP {
            last.pop_front();
        }
        last.push_back(took);
    }
}

/// Moves a paced call's bookings in its shards' windows to when it is
/// handed to the connection (after its body was built and signed; each
/// attempt again): the windows then count from close to when Kinesis
/// does, on arrival. Counted from when the wait ended, the time a large
/// body takes to build and sign (which varies) was jitter between two
/// calls' arrivals, and an endpoint counting a strict second throttled.
struct Booking {
    router: Arc<Router>,
    /// (shard tag, booking id) of the call's bookings.
    booked: Vec<(u32, u64)>,
    /// When its pacing wait ended, and the lane's lead to note.
    paced_at: Instant,
    lead: Arc<Lead>,
}

impl Booking {
    fn settle(&self) {
        let now = Instant::now();
        self.lead.note(now.saturating_duration_since(self.paced_at));
        self.router.windows(|windows| {
            for &(s, id) in &self.booked {
                if let Some(w) = windows.get_mut(&s) {
                    w.settle(id, now);
                }
            }
        });
    }
}

/// Each known shard of `entries` with the records and bytes bound for it.
fn per_shard(entries: &[Entry]) -> Vec<(u32, u64, u64)> {
    let mut out: Vec<(u32, u64, u64)> = Vec::new();
    for e in entries.iter().filter(|e| e.shard() != NO_SHARD) {
        match out.iter_mut().find(|(s, _, _)| *s == e.shard()) {
            Some(o) => {
                o.1 += 1;
                o.2 += e.api_size() as u64;
            }
            None => out.push((e.shard(), 1, e.api_size() as u64)),
        }
    }
    out
}

impl Lane {
    /// Runs until every sender is gone and every record it received is acked.
    pub async fn run(mut self) {
        let mut carry: VecDeque<Record> = VecDeque::new();
        let mut open = true;
        let mut epoch = self.router.epoch();
        loop {
            if self.router.epoch() != epoch {
                epoch = self.router.epoch();
                self.retag(carry.iter_mut());
            }
            let mut batch = match self.pace.map(paced) {
                Some(l) => self.paced_batch(l, &carry).await,
                None => Batch::within(self.dest.limits(), usize::MAX, usize::MAX),
            };
            let mut held = self.fill(&mut batch, &mut carry, false).await;
            if batch.is_empty() && !held {
                if !open {
                    break;
                }
                match self.rx.recv().await {
                    Some(chunk) => self.take_in(&mut carry, chunk),
                    None => open = false,
                }
                continue;
            }
            // Wait for more, up to the linger: to fill the call, or the
            // aggregate being held back to its payload units. A call of
            // aggregates does not wait while the budget is starved: nothing
            // more comes until what is here is acked (such a call, up to
            // 5 MiB, never fills from the default 4 MiB budget, and waited
            // the whole linger each time). It goes without the short run
            // held back, which stays for the next call.
            let deadline = tokio::time::Instant::now() + self.linger;
            let budget = self.shared.budget.clone();
            let aggregating = self.aggregate_bytes > 0;
            let starved = |batch: &Batch| aggregating && !batch.is_empty() && budget.starved();
            while open && (carry.is_empty() || held) && !batch.is_full() && !starved(&batch) {
                tokio::select! {
                    m = self.rx.recv() => match m {
                        Some(chunk) => {
                            self.take_in(&mut carry, chunk);
                            held = self.fill(&mut batch, &mut carry, false).await;
                        }
                        None => open = false,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = budget.until_starved(), if aggregating && !batch.is_empty() => break,
                }
            }
            if held && !starved(&batch) {
                self.fill(&mut batch, &mut carry, true).await;
            }
            if !batch.is_empty() {
                self.deliver(batch.into_entries()).await;
            }
        }
    }

    /// An empty batch sized to what the shard of the next record may still
    /// take in the sliding second (waiting first, while records wait,
    /// until that is worth a call): so a backlogged shard's calls fill its
    /// paced budget (two calls of 500 never fit a second paced at 900, and
    /// every call then waited a whole second for the one before).
    async fn paced_batch(&self, limits: ShardLimits, carry: &VecDeque<Record>) -> Batch {
        let Some(shard) = carry.front().map(|r| r.shard).filter(|s| *s != NO_SHARD) else {
            return Batch::within(
                self.dest.limits(),
                limits.records_per_sec as usize,
                limits.bytes_per_sec as usize,
            );
        };
        // The room as it will be when the call goes out.
        let room = || {
            let at = Instant::now() + self.lead.get();
            self.router.window(shard, limits, |w| w.room(at))
        };
        let (wait, mut records, mut bytes) = room();
        if !wait.is_zero() && !self.stop.is_cancelled() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => {}
            }
            (_, records, bytes) = room();
        }
        Batch::within(
            self.dest.limits(),
            records.max(1) as usize,
            bytes.max(1) as usize,
        )
    }

    /// Moves records from `carry` into `batch` while they fit: each as an
    /// entry of its own, or, when aggregating, runs of records bound for the
    /// same (known) shard packed into aggregates. Unless `last` (or the flow
    /// is stopping), a run at the end of `carry` too small to fill its
    /// aggregate's payload units is held back for more; returns whether
    /// something was.
    async fn fill(&self, batch: &mut Batch, carry: &mut VecDeque<Record>, last: bool) -> bool {
        // The run of one shard at the end of `carry`, and its bytes as it
        // is packed: once only it is left and it is short of an
        // aggregate's units, it waits for more.
        let hold = !last && self.aggregate_bytes > 0 && !self.stop.is_cancelled();
        let (tail_n, mut tail_bytes) = if hold { tail_run(carry) } else { (0, 0) };
        while !carry.is_empty() {
            let in_tail = carry.len() <= tail_n;
            if in_tail && self.packer.wants_more(tail_bytes) {
                return true;
            }
            let Some(r) = carry.pop_front() else { break };
            if r.api_size() > self.dest.limits().record.bytes {
                // Framing keeps data under the limit with room for the flow's longest key,
                // so this is a bug elsewhere; the record is kept, not lost.
                if in_tail {
                    tail_bytes -= r.api_size();
                }
                self.dead_letter(vec![r], "record larger than its destination takes")
                    .await;
                continue;
            }
            let entry = self.entry(r, carry);
            let used: usize = entry.records.iter().map(Record::api_size).sum();
            if let Err(entry) = batch.try_push(entry) {
                for r in entry.records.into_iter().rev() {
                    carry.push_front(r);
                }
                break;
            }
            if in_tail {
                tail_bytes = tail_bytes.saturating_sub(used);
            }
        }
        false
    }

    /// Sends `entries` until each is confirmed or dead-lettered.
    async fn deliver(&self, entries: Vec<Entry>) {
        let mut queue: VecDeque<Vec<Entry>> = VecDeque::from([entries]);
        let mut last_stuck_log: Option<Instant> = None;
        while let Some(pending) = queue.pop_front() {
            if let Some((first, second)) = self.settle_call(pending, &mut last_stuck_log).await {
                queue.push_front(second);
                queue.push_front(first);
            }
        }
    }

    /// Sends `pending` until each entry is confirmed or dead-lettered; or,
    /// when Kinesis finds the call invalid and it has more than one entry,
    /// returns its halves, to be sent one after the other (so the entry
    /// at fault ends up alone, and only it is dead-lettered).
    async fn settle_call(
        &self,
        mut pending: Vec<Entry>,
        last_stuck_log: &mut Option<Instant>,
    ) -> Option<(Vec<Entry>, Vec<Entry>)> {
        let mut quick = backoff(QUICK_MIN, QUICK_MAX);
        let mut slow = slow_backoff();
        loop {
            if self.stop.is_cancelled() {
                // Withdraw what is past the cut before pacing for it.
                self.admit(&mut pending);
            }
            let Some(booked) = self.pace(&pending).await else {
                // The stop came during the wait: admit again.
                continue;
            };
            let paced_at = Instant::now();
            self.admit(&mut pending);
            if pending.is_empty() {
                return None;
            }
            let delay = match self.put(&pending, booked, paced_at).await {
                CallResult::Entries(codes) => {
                    let (failed, progress) =
                        self.settle_entries(std::mem::take(&mut pending), &codes);
                    if failed.is_empty() {
                        return None;
                    }
                    pending = failed;
                    if progress {
                        // Part of the call went through: the stream is
                        // taking records, so the wait starts over short
                        // rather than growing while progress is made.
                        quick = backoff(QUICK_MIN, QUICK_MAX);
                    }
                    quick.next()
                }
                CallResult::Failed {
                    class,
                    message,
                    code,
                } => {
                    Metrics::add(&self.shared.metrics.call_failures, 1);
                    self.shared
                        .metrics
                        .retried(code.as_deref().unwrap_or("connection"), 1);
                    match class {
                        Failure::Retry => {
                            tracing::warn!(flow = %self.flow, lane = self.index, records = pending.len(), error = %message, "{} failed; retrying the call", self.dest.call());
                            quick.next()
                        }
                        Failure::Stuck => {
                            self.router.request_refresh();
                            if last_stuck_log.is_none_or(|t| t.elapsed() >= STUCK_LOG_INTERVAL) {
                                *last_stuck_log = Some(Instant::now());
                                tracing::error!(flow = %self.flow, destination = %self.dest, records = pending.len(), error = %message,
                                    "{} cannot succeed until this is fixed; records are kept and retried", self.dest.call());
                            }
                            slow.next()
                        }
                        Failure::Invalid if pending.len() > 1 => {
                            let second = pending.split_off(pending.len() / 2);
                            return Some((pending, second));
                        }
                        Failure::Invalid => {
                            let records = pending.into_iter().flat_map(|e| e.records).collect();
                            let why = format!("rejected by the {}: {message}", self.dest);
                            self.dead_letter(records, &why).await;
                            return None;
                        }
                    }
                }
            };
            tokio::time::sleep(delay.unwrap_or(Duration::from_secs(1))).await;
        }
    }

    /// Applies an answer with one code per entry: confirms the entries it
    /// confirmed (noting each file's last sequence number, for `kinetail
    /// status`) and counts the failed ones. Returns the failed entries, to
    /// send again, and whether any entry was confirmed.
    fn settle_entries(
        &self,
        pending: Vec<Entry>,
        codes: &[Result<String, String>],
    ) -> (Vec<Entry>, bool) {
        let mut confirmed = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        let mut first_code = None;
        // Where the answer for the last confirmed record of each file is.
        let mut last_seq: Vec<(FileId, usize)> = Vec::new();
        for (i, (r, answer)) in pending.into_iter().zip(codes).enumerate() {
            match answer {
                Ok(_) => {
                    for m in &r.records {
                        match last_seq.iter_mut().rev().find(|(f, _)| *f == m.file) {
                            Some(entry) => entry.1 = i,
                            None => last_seq.push((m.file, i)),
                        }
                    }
                    confirmed.push(r);
                }
                Err(c) => {
                    self.shared.metrics.retried(c, 1);
                    first_code.get_or_insert(c.as_str());
                    failed.push(r);
                }
            }
        }
        for (file, i) in last_seq {
            if let Some(Ok(seq)) = codes.get(i) {
                self.shared.checkpoints.note_sequence(file, seq.clone());
            }
        }
        let progress = !confirmed.is_empty();
        self.confirm(&confirmed);
        if !failed.is_empty() {
            Metrics::add(&self.shared.metrics.entries_retried, failed.len() as u64);
            if self.pace.is_some() && first_code == Some("ProvisionedThroughputExceededException") {
                // Throttled despite pacing: the shards may have changed (a
                // split or merge).
                self.router.request_refresh();
            }
            tracing::debug!(flow = %self.flow, lane = self.index, failed = failed.len(), code = ?first_code, "retrying failed entries");
        }
        (failed, progress)
    }

    /// Waits until every shard in `records` can take its share of them
    /// within its limits, and books them there (at when the call should
    /// go out; the call moves the booking to when it really does: see
    /// [`Booking`]). `None` when the flow's stop came during the wait
    /// (nothing is booked then): the records may be past their cut. A
    /// wait that starts after the stop is not cut short, so the records
    /// that fill holes are paced too.
    async fn pace(&self, records: &[Entry]) -> Option<Vec<(u32, u64)>> {
        let Some(limits) = self.pace.map(paced) else {
            return Some(Vec::new());
        };
        let shards = per_shard(records);
        loop {
            // Checked and booked under one lock: another lane sending to
            // the same shard (for a moment, around a reshard) sees it.
            let booked = self.router.windows(|windows| {
                // As it will be when the call goes out.
                let at = Instant::now() + self.lead.get();
                let mut wait = Duration::ZERO;
                for &(s, n, b) in &shards {
                    let w = windows.entry(s).or_insert_with(|| RateWindow::new(limits));
                    wait = wait.max(w.delay(at, n, b));
                }
                if !wait.is_zero() {
                    return Err(wait);
                }
                let mut booked = Vec::with_capacity(shards.len());
                for &(s, n, b) in &shards {
                    let w = windows.entry(s).or_insert_with(|| RateWindow::new(limits));
                    booked.push((s, w.book(at, n, b)));
                }
                Ok(booked)
            });
            let wait = match booked {
                Ok(booked) => return Some(booked),
                Err(wait) => wait,
            };
            if self.stop.is_cancelled() {
                tokio::time::sleep(wait).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.stop.cancelled() => return None,
                }
            }
        }
    }

    /// Books `pending` as sent, or, once the flow stops, withdraws the
    /// records past their file's cut: they are still in the file and are
    /// read again at the next start, and sending them now would confirm
    /// records above a hole, which the next start would send again.
    fn admit(&self, pending: &mut Vec<Entry>) {
        // The furthest end per file; a call holds few files.
        let mut spans: Vec<(FileId, u64)> = Vec::new();
        for r in pending.iter().flat_map(|e| &e.records) {
            match spans.iter_mut().find(|(f, _)| *f == r.file) {
                Some(s) => s.1 = s.1.max(r.end),
                None => spans.push((r.file, r.end)),
            }
        }
        self.shared.checkpoints.start_call(&mut spans);
        let limit = |r: &Record| {
            spans
                .iter()
                .find(|(f, _)| *f == r.file)
                .map_or(u64::MAX, |s| s.1)
        };
        if pending
            .iter()
            .flat_map(|e| &e.records)
            .all(|r| r.end <= limit(r))
        {
            return;
        }
        let mut withdrawn = Vec::new();
        let mut kept = Vec::with_capacity(pending.len());
        for e in pending.drain(..) {
            if e.records.iter().all(|r| r.end <= limit(r)) {
                kept.push(e);
                continue;
            }
            let (keep, away): (Vec<Record>, Vec<Record>) =
                e.records.into_iter().partition(|r| r.end <= limit(r));
            withdrawn.extend(away);
            kept.extend(self.repack(keep));
        }
        *pending = kept;
        tracing::debug!(flow = %self.flow, lane = self.index, records = withdrawn.len(),
            first = withdrawn.iter().map(|r| r.start).min(), cut = ?spans, "stopping: records past the cut withdrawn");
        self.release(&withdrawn);
        self.shared.checkpoints.withdraw(&coalesce_acks(&withdrawn));
    }

    /// The entry that starts with `r`: alone (compressed by the tailer,
    /// if at all), or, when aggregating, packed with the records of its
    /// (known) shard that follow it in `queue`, compressed here.
    fn entry(&self, r: Record, queue: &mut VecDeque<Record>) -> Entry {
        match (self.aggregate_bytes, r.shard) {
            (0, _) => Entry::single(r),
            (_, NO_SHARD) => self.packer.single(r),
            _ => self.packer.pack(r, queue),
        }
    }

    /// Entries for what is left of an entry after a withdrawal: packed
    /// again from the records that stay.
    fn repack(&self, records: Vec<Record>) -> Vec<Entry> {
        let mut queue: VecDeque<Record> = records.into();
        let mut out = Vec::new();
        while let Some(r) = queue.pop_front() {
            out.push(self.entry(r, &mut queue));
        }
        out
    }

    /// One call of `records` to the lane's destination.
    async fn put(
        &self,
        records: &[Entry],
        booked: Vec<(u32, u64)>,
        paced_at: Instant,
    ) -> CallResult {
        Metrics::add(&self.shared.metrics.calls, 1);
        let in_flight = &self.shared.metrics.in_flight;
        in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = match &self.dest {
            Dest::Stream { client, stream } => {
                self.put_records(client, stream, records, booked, paced_at)
                    .await
            }
            Dest::Firehose { client, name } => {
                // Its pacing (when asked) books the calls as they are paced.
                crate::firehose::put::put(client, name, records).await
            }
        };
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// One `PutRecords` call.
    async fn put_records(
        &self,
        client: &Direct,
        stream: &StreamRef,
        records: &[Entry],
        booked: Vec<(u32, u64)>,
        paced_at: Instant,
    ) -> CallResult {
        let arn = match stream {
            StreamRef::Arn { arn, .. } => Some(arn.as_str()),
            StreamRef::Name(_) => None,
        };
        // The API takes the name, the ARN, or both; both work with servers
        // that predate the ARN parameter.
        let body = bytes::Bytes::from(put_records_body(records, stream.name(), arn));
        let booking = self.pace.is_some().then(|| Booking {
            router: self.router.clone(),
            booked,
            paced_at,
            lead: self.lead.clone(),
        });
        let sent = client
            .put_records(body, arn, || {
                if let Some(b) = &booking {
                    b.settle();
                }
            })
            .await;
        match sent {
            Ok(answered) => self.answered(answered, records.len()),
            Err(f) => CallResult::Failed {
                class: f.class,
                message: f.message,
                code: f.code,
            },
        }
    }

    /// What a successful call's answer means for a call of `sent` records.
    fn answered(&self, answered: crate::kinesis::classify::Answered, sent: usize) -> CallResult {
        // A shard the map does not know took records: the stream was
        // resharded (a split, a merge, on-demand scaling).
        if !self.router.knows_shards(&answered.shards) {
            self.router.request_refresh();
        }
        let entries = answered.entries;
        if entries.len() != sent {
            return CallResult::Failed {
                class: Failure::Retry,
                code: None,
                message: format!("response has {} entries for {sent} records", entries.len()),
            };
        }
        CallResult::Entries(entries)
    }

    fn confirm(&self, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        let bytes: usize = entries.iter().map(Entry::api_size).sum();
        let records: Vec<&Record> = entries.iter().flat_map(|e| &e.records).collect();
        Metrics::add(&self.shared.metrics.records_sent, records.len() as u64);
        Metrics::add(
            &self.shared.metrics.kinesis_records_sent,
            entries.len() as u64,
        );
        Metrics::add(&self.shared.metrics.bytes_sent, bytes as u64);
        if let Dest::Stream { .. } = self.dest {
            // Kinesis's PUT payload units (Firehose bills otherwise).
            let units: usize = entries
                .iter()
                .map(|e| e.api_size().div_ceil(PAYLOAD_UNIT))
                .sum();
            Metrics::add(&self.shared.metrics.payload_units, units as u64);
        }
        let budget: usize = records.iter().map(|r| r.budget_size()).sum();
        self.shared.budget.give_back(budget);
        self.router.leave(records.iter().copied());
        self.shared.checkpoints.ack(&coalesce_acks(records));
    }

    /// Gives back what records held that leave the lane unconfirmed
    /// (withdrawn, or dead-lettered).
    fn release(&self, records: &[Record]) {
        let budget: usize = records.iter().map(Record::budget_size).sum();
        self.shared.budget.give_back(budget);
        self.router.leave(records);
    }

    /// Adds a received chunk to `carry`, tagged by the current map.
    fn take_in(&self, carry: &mut VecDeque<Record>, mut chunk: Vec<Record>) {
        let epoch = self.router.epoch();
        if chunk.iter().any(|r| r.epoch != epoch) {
            self.retag(chunk.iter_mut());
        }
        carry.extend(chunk);
    }

    /// Tags records keyed under an older map with the shard the current
    /// one sends them to, so that they are paced (and packed) for it.
    fn retag<'r>(&self, records: impl Iterator<Item = &'r mut Record>) {
        if self.pace.is_none() && self.aggregate_bytes == 0 {
            return;
        }
        let routing = self.router.snapshot();
        for r in records.filter(|r| r.epoch != routing.epoch) {
            r.shard = self.router.retag(&routing, &r.key, r.ehk.as_deref());
        }
    }

    /// Writes records to the dead-letter file, then acks them. If the file
    /// cannot be written, keeps trying: the records are never acked unwritten.
    async fn dead_letter(&self, records: Vec<Record>, reason: &str) {
        for r in &records {
            let path = self.shared.checkpoints.path_of(r.file).unwrap_or_default();
            self.shared
                .dead_letter
                .write_until_written(&self.flow, &path, r, reason)
                .await;
        }
        Metrics::add(&self.shared.metrics.dead_lettered, records.len() as u64);
        self.release(&records);
        self.shared.checkpoints.ack(&coalesce_acks(&records));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis::shards::WINDOW;

    proptest::proptest! {
        /// A backlogged shard, its records (up to 40 KB, a twentieth of
        /// the byte budget: larger ones leave gaps no packing can fill)
        /// packed into calls by the room its window has and each call sent
        /// as soon as the window lets it (with some latency): at least 95%
        /// of the paced budget in records or in bytes (whichever binds)
        /// over 20 seconds, and never more than the paced budget in any
        /// sliding second.
        #[test]
        fn a_backlogged_shard_gets_its_paced_budget_and_no_more(
            sizes in proptest::collection::vec(1u64..40_000, 1..40),
            small in proptest::bool::ANY,
            latency_ms in 0u64..40,
        ) {
            let limits = paced(ShardLimits { records_per_sec: 1000, bytes_per_sec: 1 << 20 });
            // Short lines, or a mix of sizes, repeated: an endless backlog.
            let sizes: Vec<u64> = if small { vec![100] } else { sizes };
            let mut next = sizes.iter().cycle();
            let mut w = RateWindow::new(limits);
            let start = std::time::Instant::now();
            let end = start + Duration::from_secs(20);
            let mut now = start;
            let mut log: Vec<(std::time::Instant, u64, u64)> = Vec::new();
            let mut pending: Option<u64> = None;
            while now < end {
                let (wait, room_r, room_b) = w.room(now);
                now += wait;
                let (cap_r, cap_b) = (room_r.clamp(1, 500), room_b.max(1));
                let (mut r, mut b) = (0u64, 0u64);
                loop {
                    let size = *pending.get_or_insert_with(|| *next.next().unwrap_or(&100));
                    if r >= cap_r || (b + size > cap_b && r > 0) {
                        break;
                    }
                    r += 1;
                    b += size;
                    pending = None;
                }
                now += w.delay(now, r, b);
                w.record(now, r, b);
                log.push((now, r, b));
                now += Duration::from_millis(latency_ms);
            }
            let in_run = |t: std::time::Instant| t < end;
            let (sent_r, sent_b) = log.iter().filter(|(t, _, _)| in_run(*t)).fold((0, 0), |(r, b), (_, rr, bb)| (r + rr, b + bb));
            let share_r = sent_r as f64 / (20.0 * limits.records_per_sec as f64);
            let share_b = sent_b as f64 / (20.0 * limits.bytes_per_sec as f64);
            proptest::prop_assert!(share_r.max(share_b) >= 0.95, "{share_r:.3} of the records, {share_b:.3} of the bytes");
            for (i, &(t, r0, b0)) in log.iter().enumerate() {
                let (r, b) = log[i..].iter().take_while(|(u, _, _)| *u < t + WINDOW).fold((0, 0), |(r, b), (_, rr, bb)| (r + rr, b + bb));
                let alone = r == r0 && b == b0 && r0 == 1;
                proptest::prop_assert!(r <= limits.records_per_sec, "{} records in a second", r);
                proptest::prop_assert!(b <= limits.bytes_per_sec || alone, "{} bytes in a second", b);
            }
        }
    }
}
