//! From framed lines to records in the lanes: shaping, dead letters,
//! keying, and the hand-off under the byte budget.

use super::*;

impl Tailer {
    /// Shapes framed lines (container entries, oversize policy,
    /// multi-line grouping): what is to be sent goes to `ready`, what is
    /// not waits in `self.dead` for the next hand-off, which dead-letters
    /// it in its chunk.
    pub(super) async fn shape(&mut self, framed: &mut Vec<Line>, ready: &mut Vec<Line>) {
        if self.shaper.shape(framed, ready, &mut self.dead) {
            self.last_line_at = Instant::now();
        }
    }

    /// Writes lines to the dead-letter file, retrying until it works, then
    /// acks them: in `chunk`, or by their ranges ([`NO_CHUNK`]).
    pub(super) async fn dead_letter(&self, dead: Vec<Dead>, chunk: ChunkId) {
        let path = self.path();
        let mut records = Vec::with_capacity(dead.len());
        for (l, why) in dead {
            let r = self.unsent(l, chunk);
            self.flow
                .dead_letter
                .write_until_written(&self.flow.settings.name, &path, &r, why)
                .await;
            records.push(r);
        }
        Metrics::add(&self.flow.metrics.dead_lettered, records.len() as u64);
        self.flow.checkpoints.ack(&coalesce_acks(&records));
    }

    /// A line that is done without being sent, as a record to ack (and to
    /// dead-letter, when it is one).
    pub(super) fn unsent(&self, l: Line, chunk: ChunkId) -> Record {
        Record::new(l.data, String::new())
            .ranged(self.id, l.start, l.end)
            .chunked(chunk)
    }

    /// Opens the chunk of one hand-off: the lines to send, to dead-letter
    /// and filtered out, all acked in it (never by their own ranges, which
    /// a tied line shares with its group). Its range runs from the first
    /// start to the last end: lines between that are not here were done
    /// before. `None` when there are no lines.
    fn open_chunk<'l>(&self, lines: impl Iterator<Item = &'l Line>) -> Option<ChunkId> {
        let (mut first, mut last, mut n) = (u64::MAX, 0, 0);
        for l in lines {
            first = first.min(l.start);
            last = last.max(l.end);
            n += 1;
        }
        (n > 0).then(|| self.flow.checkpoints.open_chunk(self.id, first, last, n))
    }

    /// The reading's id when the flow puts ids in its records, once the
    /// store holds it (saving first if need be); 0 when it has no ids.
    /// `None` when the flow stops before the store took it.
    async fn reading_for_ids(&self) -> Option<u64> {
        let cp = &self.flow.checkpoints;
        let wants = self.flow.settings.record.envelope.as_ref();
        if wants.is_none_or(|e| e.keys.id.is_empty()) {
            return Some(0);
        }
        let mut logged = false;
        loop {
            if let Some(r) = cp.reading(self.id) {
                return Some(r);
            }
            let saving = cp.clone();
            let saved = tokio::task::spawn_blocking(move || saving.save()).await;
            if !matches!(saved, Ok(Ok(_))) && !logged {
                logged = true;
                tracing::error!(path = %crate::redact::path(&self.path()), "cannot save the reading's id (id_key): its records wait until the store can be written");
            }
            if cp.reading(self.id).is_some() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// The file's pod, when the flow asks for it (`metadata =
    /// ["kubernetes"]`, or a key from it): from its path (parsed again only
    /// when the path changes) and what the API server adds, looked up for
    /// each hand-off of `lines` lines (a new pod's first may wait for it;
    /// see `records::pods`).
    async fn pod(&mut self, path: &std::path::Path, lines: usize) -> Option<Arc<Pod>> {
        let settings = &self.flow.settings;
        let wanted = settings
            .record
            .metadata
            .contains(&MetadataSource::Kubernetes);
        let keyed = [
            &settings.partition_key.primary,
            &settings.partition_key.fallback,
        ]
        .iter()
        .any(|k| matches!(k, KeySource::Kubernetes(_)));
        if !wanted && !keyed {
            return None;
        }
        let cached = match &self.pod {
            Some((p, pod)) if p == path => pod.clone(),
            _ => PodFile::from_path(path).map(|file| {
                Arc::new(Pod {
                    file,
                    members: String::new(),
                    extra: None,
                })
            }),
        };
        let Some(cached) = cached else {
            self.pod = Some((path.to_path_buf(), None));
            return None;
        };
        let extra = match wanted {
            false => None,
            true => match self
                .flow
                .pods
                .lookup(&cached.file, &self.flow.metrics)
                .await
            {
                Lookup::Known(m) => Some(m),
                Lookup::Without => {
                    Metrics::add(&self.flow.metrics.kubernetes_without_lookup, lines as u64);
                    None
                }
                Lookup::Off => None,
            },
        };
        let same = match (&extra, &cached.extra) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => !wanted || !cached.members.is_empty(),
            _ => false,
        };
        let pod = if same {
            cached
        } else {
            let members = cached.file.members(extra.as_deref().unwrap_or(""));
            Arc::new(Pod {
                file: cached.file.clone(),
                members,
                extra,
            })
        };
        self.pod = Some((path.to_path_buf(), Some(pod.clone())));
        Some(pod)
    }

    /// When the lines of a hand-off were read, and the cloud metadata, for
    /// an envelope flow (empty otherwise).
    fn envelope_context(&self) -> (String, Arc<str>) {
        let flow = &self.flow;
        if flow.settings.record.envelope.is_none() {
            return (String::new(), Arc::from(""));
        }
        let wants = &flow.settings.record.metadata;
        let members = flow.metadata.members(
            wants.contains(&MetadataSource::Ec2),
            wants.contains(&MetadataSource::Ecs),
        );
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        (now.to_string(), members)
    }

    /// Before a hand-off: cuts what does not fit its record, filters, and
    /// opens the hand-off's chunk, in which the dead-lettered and filtered
    /// lines are acked at once. `None` when there are no lines at all.
    async fn settle_unsent(&mut self, lines: &mut Vec<Line>) -> Option<ChunkId> {
        // What framing let through whole but does not fit its record once
        // encoded is cut again, by the oversize rule.
        let mut dead = std::mem::take(&mut self.dead);
        self.shaper.fit(lines, &mut dead);
        let counts = self.shaper.take_counts();
        Metrics::add(
            &self.flow.metrics.container_malformed,
            counts.malformed as u64,
        );
        Metrics::add(
            &self.flow.metrics.container_unfinished,
            counts.unfinished as u64,
        );
        let filtered = self.shaper.filter(lines);
        let all = lines
            .iter()
            .chain(&filtered)
            .chain(dead.iter().map(|(l, _)| l));
        let chunk = self.open_chunk(all)?;
        if !dead.is_empty() {
            self.dead_letter(dead, chunk).await;
        }
        Metrics::add(
            &self.flow.metrics.lines_read,
            (lines.len() + filtered.len()) as u64,
        );
        if !filtered.is_empty() {
            // Done without sending: acked now, so a read whose lines were
            // all filtered still moves the watermark.
            Metrics::add(&self.flow.metrics.lines_filtered, filtered.len() as u64);
            let records: Vec<Record> = filtered
                .into_iter()
                .map(|l| self.unsent(l, chunk))
                .collect();
            self.flow.checkpoints.ack(&coalesce_acks(&records));
        }
        Some(chunk)
    }

    /// Filters, keys and encodes the shaped lines and hands them to their
    /// lanes, waiting for budget first; dead-letters what shaping left out.
    pub(super) async fn hand_off(&mut self, lines: &mut Vec<Line>) {
        let Some(chunk) = self.settle_unsent(lines).await else {
            return;
        };
        if lines.is_empty() {
            return;
        }
        // Records with ids go only once the store holds the reading's id:
        // after a crash, the same lines must get the same ids.
        let reading = match self.reading_for_ids().await {
            Some(r) => r,
            // Stopping before the store took it: the lines are read again
            // at the next start (the chunk is never done).
            None => {
                lines.clear();
                return;
            }
        };
        let path_buf = self.path();
        let path = path_buf.to_string_lossy();
        let flow = self.flow.clone();
        let (timestamp, metadata) = self.envelope_context();
        let pod = self.pod(&path_buf, lines.len()).await;
        let source = Source {
            path: &path,
            hostname: &flow.hostname,
            timestamp: &timestamp,
            metadata: &metadata,
            kubernetes: pod.as_ref().map_or("", |p| p.members.as_str()),
            pod: pod.as_ref().map(|p| &p.file),
            file: self.id,
            chunk,
            reading,
            read_ms: crate::clock::now_ms(),
        };
        let mut keyer = Keyer::new(&flow.settings, &flow.router, source);
        let n_lanes = keyer.lanes();
        let mut buckets: Vec<(Vec<Record>, usize)> =
            (0..n_lanes).map(|_| (Vec::new(), 0)).collect();
        for line in lines.drain(..) {
            let (lane, rec) = keyer.record(line);
            let (bucket, bytes) = &mut buckets[lane];
            *bytes += rec.budget_size();
            bucket.push(rec);
            if *bytes >= HANDOFF_BYTES {
                let full = std::mem::take(bucket);
                *bytes = 0;
                self.send(lane, full).await;
            }
        }
        let (parse_failures, collisions, time_failures) = keyer.counts();
        Metrics::add(&flow.metrics.parse_failures, parse_failures as u64);
        Metrics::add(&flow.metrics.parse_collisions, collisions as u64);
        Metrics::add(&flow.metrics.time_failures, time_failures as u64);
        for (lane, (bucket, _)) in buckets.into_iter().enumerate() {
            if !bucket.is_empty() {
                self.send(lane, bucket).await;
            }
        }
    }

    /// Hands records to a lane once the budget has room for them. Once the
    /// flow stops (even while waiting for the budget) only the records
    /// below the file's cut go, at once: they fill holes under records
    /// already sent. The others are withdrawn; the file still has them.
    pub(super) async fn send(&mut self, lane: usize, records: Vec<Record>) {
        let bytes: usize = records.iter().map(Record::budget_size).sum();
        if !self.shutdown.is_cancelled() {
            if self.flow.budget.try_take(bytes) {
                return self.push(lane, records, bytes).await;
            }
            self.waited = true;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {}
                _ = self.flow.budget.take(bytes) => return self.push(lane, records, bytes).await,
            }
        }
        let cut = self.flow.checkpoints.cut(self.id).unwrap_or(u64::MAX);
        let (keep, away): (Vec<Record>, Vec<Record>) =
            records.into_iter().partition(|r| r.end <= cut);
        self.flow.checkpoints.withdraw(&coalesce_acks(&away));
        if !keep.is_empty() {
            let bytes = keep.iter().map(Record::budget_size).sum();
            self.flow.budget.force(bytes);
            self.push(lane, keep, bytes).await;
        }
    }

    /// Puts records (whose budget is taken) into a lane's queue, once the
    /// records keyed under older shard maps have left the lanes (a key
    /// may have moved to another lane: see `shards::Router`).
    pub(super) async fn push(&self, lane: usize, records: Vec<Record>, bytes: usize) {
        let Some(epoch) = records.first().map(|r| r.epoch) else {
            self.flow.budget.give_back(bytes);
            return;
        };
        let router = &self.flow.router;
        router.turn(epoch).await;
        router.enter(epoch, records.len());
        let sent = match self.flow.lanes.sender(lane) {
            Some(tx) => tx.send(records).await.map_err(|e| e.0),
            None => Err(records),
        };
        if let Err(records) = sent {
            // The lanes are gone (the flow is being torn down): the records
            // are not acked, so they are read again next time.
            router.leave(&records);
            self.flow.budget.give_back(bytes);
        }
    }
}
