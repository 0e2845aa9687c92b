//! Keying and routing: the stage between shaping and the lanes. Each line
//! gets its partition key (and explicit hash key, if configured), the shard
//! map picks its shard, and the shard picks its lane.
//!
//! Called inline by the tailer for each hand-off, not a task of its own: a
//! hand-off between threads costs more than keying a batch.

use std::sync::Arc;

use crate::batcher::Record;
use crate::checkpoint::{ChunkId, FileId};
use crate::config::FlowSettings;
use crate::framing::Line;
use crate::keying::KeyContext;
use crate::shards::{Router, ShardMap, to_hash_key};

/// Keys and routes the lines of one hand-off: they share a file, a chunk,
/// a shard map and a key context.
pub struct Keyer<'a> {
    settings: &'a FlowSettings,
    router: &'a Router,
    map: Option<Arc<ShardMap>>,
    ctx: KeyContext<'a>,
    file: FileId,
    chunk: ChunkId,
    lanes: usize,
}

impl<'a> Keyer<'a> {
    pub fn new(
        settings: &'a FlowSettings,
        router: &'a Router,
        path: &'a str,
        hostname: &'a str,
        file: FileId,
        chunk: ChunkId,
        lanes: usize,
    ) -> Keyer<'a> {
        Keyer {
            settings,
            router,
            map: router.snapshot(),
            ctx: KeyContext { path, hostname },
            file,
            chunk,
            lanes: lanes.max(1),
        }
    }

    /// The record for `line`, and the lane it goes to.
    pub fn record(&self, line: Line) -> (usize, Record) {
        let key = self
            .settings
            .partition_key
            .key(&line.data, self.ctx, rand::random());
        let ehk = self
            .settings
            .explicit_hash_key
            .as_ref()
            .map(|spec| to_hash_key(&spec.key(&line.data, self.ctx, rand::random())));
        let (lane, shard) = self.router.route(self.map.as_deref(), &key, ehk.as_deref());
        let record = Record {
            data: line.data,
            key,
            file: self.file,
            start: line.start,
            end: line.end,
            ehk,
            shard,
            chunk: self.chunk,
        };
        (lane.min(self.lanes - 1), record)
    }
}
