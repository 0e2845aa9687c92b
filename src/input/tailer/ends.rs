//! What the end of a file means: it grew, it was truncated or replaced in
//! place, or its path names another file or nothing (then the tailer
//! drains it and closes).

use super::*;

impl Tailer {
    /// Whether the open file is no longer the content being read: shorter
    /// than what was read, a different head, or a different byte just
    /// before the read offset (a refill past the offset with the same
    /// head). `Some(size)` when it changed. A file of the same size as what
    /// was read is taken as unchanged, which keeps quiet files cheap.
    pub(super) fn content_changed(&mut self) -> Option<u64> {
        match self.check_content() {
            Check::Changed { len } => Some(len),
            _ => None,
        }
    }

    /// What `content_changed` finds, with the size it saw.
    pub(super) fn check_content(&mut self) -> Check {
        self.waited = false;
        let Some(file) = self.file.as_ref() else {
            return Check::Unknown;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return Check::Unknown;
        };
        if len < self.read_offset {
            return Check::Changed { len };
        }
        if len == self.read_offset {
            return Check::Same { len };
        }
        let moved = self.read_offset > 0
            && self.last_byte.is_some()
            && byte_at(file, self.read_offset - 1) != self.last_byte;
        if moved || !head_matches(file, &self.fingerprint) {
            Check::Changed { len }
        } else {
            Check::Same { len }
        }
    }

    /// Whether the read just made (the file position moved, `read_offset`
    /// not yet) may have read another content than the one being read:
    /// the file no longer begins with the head read before, or the byte
    /// before the read is not the one read there. The check runs after the
    /// read, so a truncation and refill between an earlier check and the
    /// read is seen; a refill with the same head and the same byte before
    /// the offset is the one change no check can see.
    pub(super) fn read_was_stale(&self) -> bool {
        let Some(file) = self.file.as_ref() else {
            return false;
        };
        !head_is(file, &self.head)
            || (self.read_offset > 0
                && self.last_byte.is_some()
                && byte_at(file, self.read_offset - 1) != self.last_byte)
    }

    /// At the end of the file: parks it when others wait for a slot or it
    /// was idle too long; otherwise waits for a change, sends a multi-line
    /// event whose timeout passed, and says what the file looks like now.
    pub(super) async fn at_end(
        &mut self,
        lines: &mut Vec<Line>,
        poll: &mut Duration,
        orphan_since: &mut Option<Instant>,
    ) -> EofAction {
        let contended = self.flow.slots.contended();
        if contended || self.last_data_at.elapsed() >= self.flow.settings.idle_timeout {
            // A pending multi-line event goes out first (a partial
            // container line waits: the file is read on later).
            self.shaper.flush_events(lines);
            self.hand_off(lines).await;
            let grew = self
                .file
                .as_ref()
                .is_some_and(|f| f.metadata().is_ok_and(|m| m.len() > self.read_offset));
            // It grew meanwhile: read on; else close it until it changes.
            if !grew {
                self.park();
            }
            return EofAction::Wait;
        }
        // A pending multi-line event is sent once it has waited its
        // timeout for another line.
        let mut wait = *poll;
        if let Some(timeout) = self.shaper.pending_timeout() {
            wait = wait.min(timeout.saturating_sub(self.last_line_at.elapsed()));
        }
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return EofAction::Wait,
            _ = self.wake.notified() => {
                self.notified = true;
                *poll = self.next_poll();
            }
            _ = tokio::time::sleep(wait) => *poll = self.slower(*poll),
        }
        let quiet = self.last_line_at.elapsed();
        let was_away = self.away;
        let action = self.at_eof(orphan_since);
        if self.away && !was_away {
            // Just left its path: drained quickly, then closed.
            *poll = POLL_MIN;
        }
        // A file about to be closed sends its pending event first (one
        // about to restart at 0 does so in `truncated`).
        if action == EofAction::Close {
            self.shaper.flush(lines, &mut self.dead);
            self.hand_off(lines).await;
        } else if self.shaper.flush_expired(quiet, lines, &mut self.dead) {
            self.hand_off(lines).await;
        }
        action
    }

    /// Grows the fingerprint of a short file's head with `read`, the bytes
    /// just read at `read_offset` (checked to be the content being read),
    /// never with bytes read from the file again: the file may have been
    /// truncated and refilled since, and a head taken from the new content
    /// would hide that from every later check (and from copy
    /// recognition). A reading resumed past its short head (a store entry
    /// of a file that was small then) reads the head from the file and
    /// keeps it only if it extends the one it has.
    pub(super) fn grow_fingerprint(&mut self, read: &[u8]) {
        let max = Fingerprint::MAX_LEN as usize;
        let have = self.head.len();
        if have >= max || self.read_offset + read.len() as u64 <= have as u64 {
            return;
        }
        let grown = if self.read_offset <= have as u64 {
            let skip = have - self.read_offset as usize;
            let take = (max - have).min(read.len() - skip);
            let mut head = std::mem::take(&mut self.head);
            head.extend_from_slice(&read[skip..skip + take]);
            head
        } else {
            match self.file.as_ref().map(|f| read_head(f, max)) {
                Some(Ok(head)) if head.len() > have && head.starts_with(&self.head) => head,
                _ => return,
            }
        };
        let fp = Fingerprint::of(&grown);
        self.head = grown;
        self.fingerprint = fp.clone();
        self.flow.checkpoints.set_fingerprint(self.id, fp);
    }

    /// The file is not the content being read any more (truncated, or
    /// truncated and refilled): what was read of the old content is sent
    /// (a pending multi-line event included), a partial last line is
    /// dead-lettered (it is never joined with the new content's bytes), and
    /// reading starts again at 0 under a new checkpoint id, so late acks of
    /// the old content cannot move the new watermark.
    pub(super) async fn truncated(&mut self, len: u64, lines: &mut Vec<Line>) {
        Metrics::add(&self.flow.metrics.truncations, 1);
        tracing::warn!(flow = %self.flow.settings.name, path = %crate::redact::path(&self.path()), size = len, offset = self.read_offset,
            "file was truncated (shorter than what was read, or its content changed); reading again from the start");
        self.shaper.flush(lines, &mut self.dead);
        self.hand_off(lines).await;
        let read_to = self.framer.consumed();
        let strip_cr = self.flow.settings.strip_cr;
        let old = std::mem::replace(
            &mut self.framer,
            Framer::new(0, max_line_piece(&self.flow.settings), strip_cr),
        );
        if let Some(partial) = old.into_pending() {
            self.dead_letter(
                vec![(
                    partial,
                    "partial line: the file was truncated before its newline",
                )],
                NO_CHUNK,
            )
            .await;
        }
        // The new reading's head comes from its own reads (see
        // `grow_fingerprint`), not from the file now: it may change again
        // before the first read.
        let fp = Fingerprint::of(b"");
        self.head = Vec::new();
        self.id = match self.flow.checkpoints.restart(self.id, fp.clone(), read_to) {
            Some(id) => id,
            None => self.flow.checkpoints.register(
                &self.flow.settings.name,
                self.key,
                fp.clone(),
                self.path(),
                0,
                None,
            ),
        };
        self.fingerprint = fp;
        self.read_offset = 0;
        self.last_byte = None;
        if let Some(Err(e)) = self.file.as_mut().map(|f| f.seek(SeekFrom::Start(0))) {
            tracing::warn!(path = %crate::redact::path(&self.path()), error = %e, "cannot seek to the start of the file");
        }
    }

    /// After a wait at the end of the file: whether it was truncated, is
    /// to be closed (its path names another file or nothing, and it has
    /// been drained and quiet for the grace), or is to be waited on.
    pub(super) fn at_eof(&mut self, orphan_since: &mut Option<Instant>) -> EofAction {
        if self.file.is_none() {
            return EofAction::Wait;
        }
        let len = match self.check_content() {
            Check::Changed { len } => return EofAction::Truncated { len },
            Check::Same { len } => Some(len),
            Check::Unknown => None,
        };
        if len.is_none_or(|len| len > self.read_offset) {
            // More to read: whether the path still leads here matters only
            // once the file is drained.
            return EofAction::Wait;
        }
        let path = self.path();
        let still_here = std::fs::metadata(&path)
            .map(|m| file_key(&m) == self.key)
            .unwrap_or(false);
        // Away from its path, the file's events carry another name (or
        // none): it is polled, not woken.
        self.away = !still_here;
        if still_here {
            *orphan_since = None;
            return EofAction::Wait;
        }
        self.notified = false;
        match orphan_since {
            None => {
                *orphan_since = Some(Instant::now());
                EofAction::Wait
            }
            Some(t) if t.elapsed() >= ORPHAN_GRACE => {
                tracing::info!(flow = %self.flow.settings.name, path = %crate::redact::path(&path), "file rotated or deleted and drained; closing it");
                EofAction::Close
            }
            Some(_) => EofAction::Wait,
        }
    }
}
