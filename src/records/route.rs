//! Keying, encoding and routing: the stage between shaping and the lanes.
//! Each line gets its partition key (and explicit hash key, if configured)
//! from its own bytes, then becomes the record's data (the line, or its JSON
//! envelope; compressed if asked, unless the lanes compress aggregates);
//! the shard map picks its shard, and the shard picks its lane.
//!
//! Called inline by the tailer for each hand-off, not a task of its own: a
//! hand-off between threads costs more than keying a batch. [`LaneSet`]
//! holds the lanes' queues, and starts a lane when routing first needs it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::FlowSettings;
use crate::kinesis::shards::{Router, Routing, to_hash_key};
use crate::lines::framing::Line;
use crate::records::batcher::{ChunkId, FileId};
use crate::records::batcher::{ONE_STREAM, Record};
use crate::records::envelope::LineContext;
use crate::records::keying::KeyContext;
use crate::records::kubernetes::PodFile;
use crate::records::parse::Fields;

/// Where the lines of one hand-off come from: they share a file, a path,
/// a read time and a chunk.
pub struct Source<'a> {
    pub path: &'a str,
    pub hostname: &'a str,
    /// When they were read, RFC 3339 UTC with milliseconds.
    pub timestamp: &'a str,
    /// Cloud metadata rendered for the envelope, or empty.
    pub metadata: &'a str,
    /// The file's pod rendered for the envelope, or empty.
    pub kubernetes: &'a str,
    /// The file's pod, for a key from it.
    pub pod: Option<&'a PodFile>,
    pub file: FileId,
    pub chunk: ChunkId,
    /// The id of the file's reading, for records' ids (`id_key`).
    pub reading: u64,
    /// When they were read, in ms since the epoch.
    pub read_ms: u64,
}

/// Keys, encodes and routes the lines of one hand-off.
pub struct Keyer<'a> {
    settings: &'a FlowSettings,
    router: &'a Router,
    routing: Arc<Routing>,
    source: Source<'a>,
    /// What encoding found so far, for the counters.
    parse_failures: usize,
    collisions: usize,
    time_failures: usize,
}

impl<'a> Keyer<'a> {
    pub fn new(settings: &'a FlowSettings, router: &'a Router, source: Source<'a>) -> Keyer<'a> {
        Keyer {
            settings,
            router,
            routing: router.snapshot(),
            source,
            parse_failures: 0,
            collisions: 0,
            time_failures: 0,
        }
    }

    /// How many lanes the records go to (lane numbers are below it).
    pub fn lanes(&self) -> usize {
        self.routing.lanes
    }

    /// Lines of a flow with `parse` that did not match, fields left out
    /// of merged lines, and lines whose own time did not read, so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.parse_failures, self.collisions, self.time_failures)
    }

    /// The fields the flow's parser finds in `line` (none without one, or
    /// for JSON lines, which the envelope places as written): parsed once,
    /// for the key and the record.
    fn fields(&self, line: &Line) -> Option<Fields> {
        self.settings.record.envelope.as_ref()?.fields_of(line)
    }

    /// The record for `line`, and the lane it goes to.
    pub fn record(&mut self, line: Line) -> (usize, Record) {
        if self.settings.destination.is_firehose() {
            return self.unkeyed(line);
        }
        // Parsed once: its fields serve the key and the record.
        let fields = self.fields(&line);
        let ctx = KeyContext {
            path: self.source.path,
            hostname: self.source.hostname,
            fields: fields.as_ref(),
            pod: self.source.pod,
        };
        let key = self
            .settings
            .partition_key
            .key(&line.data, ctx, rand::random());
        let ehk = self
            .settings
            .explicit_hash_key
            .as_ref()
            .map(|spec| to_hash_key(&spec.key(&line.data, ctx, rand::random())));
        let (lane, shard) = self.router.route(&self.routing, &key, ehk.as_deref());
        let (start, end) = (line.start, line.end);
        let record = Record {
            data: self.data(line, fields),
            key,
            file: self.source.file,
            start,
            end,
            ehk,
            shard,
            epoch: self.routing.epoch,
            chunk: self.source.chunk,
        };
        (lane, record)
    }

    /// The record for `line` to a destination without keys or shards
    /// (Firehose): its lane is its file's, so that a file's lines keep their
    /// order, and its shard tag is the destination's one ([`ONE_STREAM`]).
    fn unkeyed(&mut self, line: Line) -> (usize, Record) {
        let lane = (self.source.file % self.routing.lanes.max(1) as u64) as usize;
        let (start, end) = (line.start, line.end);
        let fields = self.fields(&line);
        let record = Record {
            epoch: self.routing.epoch,
            ..Record::new(self.data(line, fields), String::new())
                .ranged(self.source.file, start, end)
                .chunked(self.source.chunk)
                .on_shard(ONE_STREAM)
        };
        (lane, record)
    }

    /// What the destination stores for `line`: for Firehose, which adds
    /// nothing between records, with its newline.
    /// `fields` are what the parser found in it ([`Keyer::fields`]).
    fn data(&mut self, line: Line, fields: Option<Fields>) -> Vec<u8> {
        let record = &self.settings.record;
        let mut data = match &record.envelope {
            None => line.data,
            Some(env) => {
                let mut out = Vec::with_capacity(line.data.len() + 256);
                let found = env.encode_parsed(
                    &line,
                    LineContext {
                        timestamp: self.source.timestamp,
                        host: self.source.hostname,
                        path: self.source.path,
                        flow: &self.settings.name,
                        metadata: self.source.metadata,
                        kubernetes: self.source.kubernetes,
                        reading: self.source.reading,
                        read_ms: self.source.read_ms,
                    },
                    fields,
                    &mut out,
                );
                self.parse_failures += usize::from(found.parse_failed);
                self.collisions += found.collisions;
                self.time_failures += usize::from(found.time_failed);
                out
            }
        };
        if self.settings.destination.is_firehose() {
            data.push(b'\n');
        }
        // Aggregates are compressed whole, by the lanes.
        if record.compression.is_on() && self.settings.aggregate_bytes == 0 {
            record.compression.apply(&data)
        } else {
            data
        }
    }
}

/// Starts the lane of a given number around its queue's receiving end.
pub type LaneStarter =
    Box<dyn Fn(usize, mpsc::Receiver<Vec<Record>>) -> JoinHandle<()> + Send + Sync>;

/// The lanes of a flow, each started when routing first needs it (a split
/// brings more lanes; after a merge the extra ones sit idle).
pub struct LaneSet {
    senders: Mutex<Vec<mpsc::Sender<Vec<Record>>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    start: LaneStarter,
    queue: usize,
    closed: AtomicBool,
}

impl std::fmt::Debug for LaneSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneSet")
            .field("lanes", &lock(&self.senders).len())
            .finish()
    }
}

impl LaneSet {
    /// Starts lanes `0..first`; each queue holds up to `queue` chunks.
    pub fn new(start: LaneStarter, first: usize, queue: usize) -> LaneSet {
        let set = LaneSet {
            senders: Mutex::new(Vec::new()),
            handles: Mutex::new(Vec::new()),
            start,
            queue,
            closed: AtomicBool::new(false),
        };
        if first > 0 {
            set.sender(first - 1);
        }
        set
    }

    /// The queue of lane `lane`, starting it (and those below it) if need
    /// be; `None` once the set is closed.
    pub fn sender(&self, lane: usize) -> Option<mpsc::Sender<Vec<Record>>> {
        let mut senders = lock(&self.senders);
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        while senders.len() <= lane {
            let (tx, rx) = mpsc::channel(self.queue);
            let lane = (self.start)(senders.len(), rx);
            lock(&self.handles).push(lane);
            senders.push(tx);
        }
        senders.get(lane).cloned()
    }

    /// Closes the queues (each lane ends once it has sent what it holds)
    /// and returns the lanes to await.
    pub fn close(&self) -> Vec<JoinHandle<()>> {
        let mut senders = lock(&self.senders);
        self.closed.store(true, Ordering::SeqCst);
        senders.clear();
        std::mem::take(&mut *lock(&self.handles))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
