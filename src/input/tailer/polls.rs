//! How long a tailer waits before it looks again, and parking: an idle
//! file gives its descriptor back when others wait for a slot.

use super::*;

impl Tailer {
    /// The first poll interval after activity. A file whose changes wake
    /// this tailer is read when they happen, and polled only as a safety
    /// net for missed notifications; one without notifications (a network
    /// filesystem, a renamed file draining) is polled fast after activity,
    /// backing off while it stays quiet.
    pub(super) fn next_poll(&self) -> Duration {
        if self.notified { POLL_SAFETY } else { POLL_MIN }
    }

    /// The poll interval after one that found nothing: doubled, up to the
    /// longest for this file. A file that has had no event of its own yet
    /// counts as announced once any file of its directory has had one:
    /// events arrive there, so a quiet file need not be polled each second.
    pub(super) fn slower(&mut self, poll: Duration) -> Duration {
        if !self.notified
            && !self.away
            && self
                .path()
                .parent()
                .is_some_and(|dir| self.flow.event_dirs.has(dir))
        {
            self.notified = true;
        }
        (poll * 2).min(if self.notified { POLL_SAFETY } else { POLL_MAX })
    }

    /// Closes the file and gives its slot to whoever waits for one.
    pub(super) fn park(&mut self) {
        self.file = None;
        self.slot = None;
    }

    /// While parked: waits until the file changes, takes a slot and opens
    /// it again. `false` when the file is gone from its path (or shutdown).
    /// A file truncated or refilled meanwhile is opened too: the check
    /// before the next read restarts it at 0.
    pub(super) async fn unpark(
        &mut self,
        poll: &mut Duration,
        orphan_since: &mut Option<Instant>,
    ) -> bool {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                _ = self.wake.notified() => {
                    self.notified = true;
                    *poll = self.next_poll();
                }
                _ = tokio::time::sleep(*poll) => *poll = self.slower(*poll),
            }
            let path = self.path();
            match std::fs::metadata(&path) {
                Ok(m) if file_key(&m) == self.key => {
                    *orphan_since = None;
                    if m.len() == self.read_offset {
                        continue;
                    }
                }
                _ => {
                    // Renamed (discovery tells us the new path if it is
                    // still in the globs) or deleted: what was not read
                    // before parking cannot be read now.
                    let since = *orphan_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= ORPHAN_GRACE {
                        tracing::warn!(flow = %self.flow.settings.name, path = %crate::redact::path(&path),
                            "file left its path while closed for max_open_files or idleness; it is no longer read");
                        return false;
                    }
                    continue;
                }
            }
            let slot = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                s = self.flow.slots.acquire() => s,
            };
            let Some(slot) = slot else { return false };
            let reopened = File::open(&path).and_then(|mut f| {
                if file_key(&f.metadata()?) != self.key {
                    return Err(std::io::Error::other("another file is at the path now"));
                }
                f.seek(SeekFrom::Start(self.read_offset))?;
                Ok(f)
            });
            match reopened {
                Ok(f) => {
                    self.file = Some(f);
                    self.slot = Some(slot);
                    self.held_since = Instant::now();
                    self.last_data_at = Instant::now();
                    self.waited = true;
                    return true;
                }
                Err(e) => {
                    tracing::debug!(path = %crate::redact::path(&path), error = %e, "cannot reopen; waiting");
                    drop(slot);
                }
            }
        }
    }
}
