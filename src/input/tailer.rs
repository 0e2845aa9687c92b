//! Tailers: one task per open file. A tailer reads from its offset, frames
//! lines, keys them into records and hands them to the flow's lanes.
//!
//! It owns the file descriptor, so a file renamed or deleted under it is
//! still read to its end. It notices three things on its own:
//! - truncation (the file is shorter than what was read): restart at 0 with
//!   a warning, under a new checkpoint id so late acks of the old content
//!   cannot move the new watermark;
//! - that its path now names another file or nothing (rotation, delete):
//!   keep draining, then close once the file has been quiet for the grace;
//! - growth of a short file's head: the fingerprint is extended up to
//!   [`Fingerprint::MAX_LEN`] bytes.
//!
//! Back-pressure: before a batch of records is handed over, the tailer takes
//! their size from the shared byte budget, and waits while it is exhausted.
//! So when Kinesis is slow, reading stops and the file is the buffer.
//!
//! Reads are plain blocking reads of at most [`READ_CHUNK`] bytes: for
//! local files they complete from the page cache in microseconds, which
//! costs the runtime less than a hop to a blocking thread per read.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{FlowSettings, MetadataSource};
use crate::input::identity::{FileKey, Fingerprint, file_key, head_is, head_matches, read_head};
use crate::kinesis::shards::Router;
use crate::lines::framing::{Framer, Line};
use crate::lines::shaping::{Dead, Shaper, max_line_piece};
use crate::records::batcher::FileId;
use crate::records::batcher::{Record, coalesce_acks};
use crate::records::envelope::SharedMetadata;
use crate::records::route::{Keyer, Source};
use crate::service::metrics::Metrics;
use crate::state::budget::Budget;
use crate::state::checkpoint::Checkpoints;
use crate::state::dead_letter::DeadLetter;

/// Bytes asked of the kernel per read, at most: a file being caught up on
/// grows its buffer to this.
pub const READ_CHUNK: usize = 64 * 1024;
/// Bytes asked of the kernel per read after a wait: most quiet files get a
/// few lines at a time, and a thousand of them should not hold a large
/// buffer each.
const READ_START: usize = 4 * 1024;
/// Records are handed to a lane in groups of at most this many budget bytes.
const HANDOFF_BYTES: usize = 512 * 1024;
/// First and last wait between polls of a file at its end. notify events
/// wake the tailer sooner; polling is the guarantee.
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(1000);
/// How often a file whose changes are announced by notifications is
/// checked anyway. inotify does not lose events but when its queue
/// overflows, and then every tailer is woken (see `daemon::watch`); a file
/// renamed out of the globs is woken by the rename's event (it names the
/// old path), notices it left its path and from then on polls it fast
/// until it is drained. This poll is the net under both. A thousand quiet
/// files cost a wake-up and two `stat`s each per period.
const POLL_SAFETY: Duration = Duration::from_secs(30);
/// A file whose path no longer names it is closed after this much quiet.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// A file holding a slot gives it up after this long when others wait.
const FAIR_SHARE: Duration = Duration::from_millis(500);

/// Open-file slots (`max_open_files`), shared by every tailer. Tokio's
/// semaphore hands permits out first come, first served, so a file waiting
/// for a slot is never overtaken indefinitely.
#[derive(Debug)]
pub struct Slots {
    pub sem: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Slots {
    pub fn new(max_open_files: usize) -> Slots {
        Slots {
            sem: Arc::new(Semaphore::new(max_open_files)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a slot; `None` if the semaphore is closed.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = self.sem.clone().acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }

    /// Whether some tailer waits for a slot.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }
}

/// What a look at an open file's size (and, when it grew, its bytes)
/// finds.
enum Check {
    /// Truncated, or replaced in place: its content is not what was read.
    Changed { len: u64 },
    /// The content read is still there; `len` is its size now.
    Same { len: u64 },
    /// No file, or its size cannot be read.
    Unknown,
}

/// Directories where file notifications have been seen to arrive (a
/// network filesystem accepts a watch and then tells nothing of remote
/// writes): the watcher notes them, tailers ask.
#[derive(Debug, Default)]
pub struct EventDirs(Mutex<HashSet<PathBuf>>);

impl EventDirs {
    pub fn note(&self, dir: &std::path::Path) {
        let mut dirs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !dirs.contains(dir) {
            dirs.insert(dir.to_path_buf());
        }
    }

    pub fn has(&self, dir: &std::path::Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(dir)
    }

    /// Forgets `dir` and the directories under it (it was removed: a
    /// directory made again at its path is not watched).
    pub fn forget_under(&self, dir: &std::path::Path) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| !d.starts_with(dir));
    }

    /// Whether events have arrived from `base` or a directory under it.
    pub fn has_under(&self, base: &std::path::Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d.starts_with(base))
    }
}

/// What the tailers of one flow share.
#[derive(Debug)]
pub struct FlowRuntime {
    pub settings: FlowSettings,
    pub lanes: Arc<crate::records::route::LaneSet>,
    pub budget: Arc<Budget>,
    pub checkpoints: Arc<Checkpoints>,
    pub metrics: Arc<Metrics>,
    pub dead_letter: Arc<DeadLetter>,
    pub slots: Arc<Slots>,
    pub router: Arc<Router>,
    pub hostname: String,
    /// Cloud metadata for the JSON envelope (empty when none is asked for
    /// or none could be fetched).
    pub metadata: Arc<SharedMetadata>,
    /// Where notifications are known to arrive.
    pub event_dirs: Arc<EventDirs>,
    /// kinetail's own directory, whose files are never tailed.
    pub state_dir: PathBuf,
}

/// Everything a tailer starts with.
pub struct TailStart {
    pub id: FileId,
    pub file: File,
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    pub offset: u64,
    pub wake: Arc<Notify>,
}

pub struct Tailer {
    flow: Arc<FlowRuntime>,
    id: FileId,
    /// `None` while parked: closed, waiting for a change and an open-file
    /// slot.
    file: Option<File>,
    slot: Option<OwnedSemaphorePermit>,
    /// When the current slot was taken, for the fair share.
    held_since: Instant,
    /// When data was last read, for the idle timeout.
    last_data_at: Instant,
    key: FileKey,
    fingerprint: Fingerprint,
    wake: Arc<Notify>,
    framer: Framer,
    shaper: Shaper,
    /// When the last line went into a multi-line event, for its flush timeout.
    last_line_at: Instant,
    /// Offset of the next byte to read.
    read_offset: u64,
    /// The byte just before `read_offset`, as it was read: a file whose
    /// byte there changed is not the content being read any more.
    last_byte: Option<u8>,
    /// The file's first bytes, as far as the fingerprint covers them:
    /// after every read the file must still begin with them.
    head: Vec<u8>,
    /// Whether the tailer waited (for budget, a slot, a poll) since the
    /// content was last checked (see `content_changed`).
    waited: bool,
    /// Set once a file notification has woken this tailer (or one arrived
    /// for its directory): its changes are announced, so polling is only a
    /// slow safety net (see `next_poll`).
    notified: bool,
    /// Its path no longer leads to it (renamed out of the globs, deleted):
    /// events do not reach it any more, so it is polled.
    away: bool,
    shutdown: CancellationToken,
}

/// The byte of `file` at `offset`, if there is one.
fn byte_at(file: &File, offset: u64) -> Option<u8> {
    let mut b = [0u8; 1];
    match file.read_at(&mut b, offset) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

impl Tailer {
    pub fn new(flow: Arc<FlowRuntime>, start: TailStart, shutdown: CancellationToken) -> Tailer {
        let offset = start.offset;
        // Without a free slot the tailer starts parked and waits its turn.
        let slot = flow.slots.sem.clone().try_acquire_owned().ok();
        let last_byte = offset.checked_sub(1).and_then(|o| byte_at(&start.file, o));
        let head = read_head(&start.file, start.fingerprint.len as usize).unwrap_or_default();
        let file = slot.as_ref().map(|_| start.file);
        let strip_cr = flow.settings.strip_cr;
        let piece = max_line_piece(&flow.settings);
        let shaper = Shaper::new(&flow.settings);
        let mut t = Tailer {
            flow,
            id: start.id,
            file,
            slot,
            held_since: Instant::now(),
            last_data_at: Instant::now(),
            key: start.key,
            fingerprint: start.fingerprint,
            wake: start.wake,
            framer: Framer::new(offset, piece, strip_cr),
            shaper,
            last_line_at: Instant::now(),
            read_offset: offset,
            last_byte,
            head,
            waited: false,
            notified: false,
            away: false,
            shutdown,
        };
        // Reads continue from `offset`; seeking is what positions them.
        if let Some(f) = t.file.as_mut()
            && let Err(e) = f.seek(SeekFrom::Start(offset))
        {
            tracing::warn!(path = %crate::redact::path(&t.path()), error = %e, "cannot seek to the checkpoint; closing the file");
            t.park();
        }
        t
    }

    /// The first poll interval after activity. A file whose changes wake
    /// this tailer is read when they happen, and polled only as a safety
    /// net for missed notifications; one without notifications (a network
    /// filesystem, a renamed file draining) is polled fast after activity,
    /// backing off while it stays quiet.
    fn next_poll(&self) -> Duration {
        if self.notified { POLL_SAFETY } else { POLL_MIN }
    }

    /// The poll interval after one that found nothing: doubled, up to the
    /// longest for this file. A file that has had no event of its own yet
    /// counts as announced once any file of its directory has had one:
    /// events arrive there, so a quiet file need not be polled each second.
    fn slower(&mut self, poll: Duration) -> Duration {
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
    fn park(&mut self) {
        self.file = None;
        self.slot = None;
    }

    /// While parked: waits until the file changes, takes a slot and opens
    /// it again. `false` when the file is gone from its path (or shutdown).
    /// A file truncated or refilled meanwhile is opened too: the check
    /// before the next read restarts it at 0.
    async fn unpark(&mut self, poll: &mut Duration, orphan_since: &mut Option<Instant>) -> bool {
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

    /// Where the file is now: the checkpoint table is the one owner of a
    /// file's path, and discovery tells it of renames.
    fn path(&self) -> PathBuf {
        self.flow.checkpoints.path_of(self.id).unwrap_or_default()
    }

    /// Whether the open file is no longer the content being read: shorter
    /// than what was read, a different head, or a different byte just
    /// before the read offset (a refill past the offset with the same
    /// head). `Some(size)` when it changed. A file of the same size as what
    /// was read is taken as unchanged, which keeps quiet files cheap.
    fn content_changed(&mut self) -> Option<u64> {
        match self.check_content() {
            Check::Changed { len } => Some(len),
            _ => None,
        }
    }

    /// What `content_changed` finds, with the size it saw.
    fn check_content(&mut self) -> Check {
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
    fn read_was_stale(&self) -> bool {
        let Some(file) = self.file.as_ref() else {
            return false;
        };
        !head_is(file, &self.head)
            || (self.read_offset > 0
                && self.last_byte.is_some()
                && byte_at(file, self.read_offset - 1) != self.last_byte)
    }

    /// Reads until shutdown, or until the file is gone from its path and
    /// quiet.
    pub async fn run(mut self) {
        // Empty while waiting; see `READ_START`.
        let mut buf: Vec<u8> = Vec::new();
        let mut framed: Vec<Line> = Vec::new();
        let mut lines: Vec<Line> = Vec::new();
        let mut poll = POLL_MIN;
        let mut orphan_since: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        while !self.shutdown.is_cancelled() {
            if self.file.is_none() {
                if self.unpark(&mut poll, &mut orphan_since).await {
                    continue;
                }
                break;
            }
            // After any wait, check that the file is still the content
            // being read before reading on (a shrunk file reads nothing, so
            // only this sees it at once).
            if self.waited
                && let Some(len) = self.content_changed()
            {
                self.truncated(len, &mut lines).await;
                continue;
            }
            if buf.is_empty() {
                buf = vec![0u8; READ_START];
            }
            let Some(file) = self.file.as_mut() else {
                continue;
            };
            match file.read(&mut buf) {
                Ok(0) => {
                    // Caught up: the buffer goes until there is more.
                    buf = Vec::new();
                    match self.at_end(&mut lines, &mut poll, &mut orphan_since).await {
                        EofAction::Wait => {}
                        EofAction::Truncated { len } => self.truncated(len, &mut lines).await,
                        EofAction::Close => break,
                    }
                }
                Ok(n) if self.read_was_stale() => {
                    // Truncated and refilled between the last check and
                    // this read: the bytes are the new content's, read at
                    // the old content's offset. They are dropped (not
                    // framed, so no pending partial line is joined to
                    // them); the new content is read from its start, and
                    // a copy of the old one (copytruncate) from where the
                    // old content was read to.
                    let len = self
                        .file
                        .as_ref()
                        .and_then(|f| f.metadata().ok())
                        .map_or(0, |m| m.len());
                    tracing::debug!(path = %crate::redact::path(&self.path()), bytes = n, "a read found another content; dropped");
                    self.truncated(len, &mut lines).await;
                }
                Ok(n) => {
                    poll = self.next_poll();
                    orphan_since = None;
                    last_error = None;
                    self.took(n, &mut buf, &mut framed, &mut lines).await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if !self.read_failed(e, &mut last_error).await {
                        break;
                    }
                }
            }
        }
        // What was read but not framed into a full line stays in the file:
        // the checkpoint never passes it, so it is read again next time.
        tracing::debug!(flow = %self.flow.settings.name, path = %crate::redact::path(&self.path()), offset = self.framer.consumed(), "tailer stopped");
        self.flow.checkpoints.close(self.id, self.framer.consumed());
    }

    /// Takes `n` bytes just read into `buf` through the stages: framing,
    /// shaping, keying and the hand-off to the lanes.
    async fn took(
        &mut self,
        n: usize,
        buf: &mut Vec<u8>,
        framed: &mut Vec<Line>,
        lines: &mut Vec<Line>,
    ) {
        self.last_data_at = Instant::now();
        self.grow_fingerprint(&buf[..n]);
        self.read_offset += n as u64;
        self.last_byte = Some(buf[n - 1]);
        Metrics::add(&self.flow.metrics.bytes_read, n as u64);
        self.framer.feed(&buf[..n], framed);
        if n == buf.len() && buf.len() < READ_CHUNK {
            // A full read: there is likely more; ask for more.
            *buf = vec![0u8; (buf.len() * 2).min(READ_CHUNK)];
        }
        self.shape(framed, lines).await;
        self.hand_off(lines).await;
        // A busy file gives its slot up after its fair share when others
        // wait; it queues again at once.
        if self.flow.slots.contended() && self.held_since.elapsed() >= FAIR_SHARE {
            self.park();
            self.waited = true;
        }
    }

    /// A read failed: says so once per distinct error and waits before the
    /// next try. `false` at shutdown.
    async fn read_failed(&mut self, e: std::io::Error, last_error: &mut Option<String>) -> bool {
        let msg = e.to_string();
        if last_error.as_deref() != Some(&msg) {
            tracing::warn!(flow = %self.flow.settings.name, path = %crate::redact::path(&self.path()), error = %msg, "cannot read file; will retry");
            *last_error = Some(msg);
        }
        self.waited = true;
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(POLL_MAX) => true,
        }
    }

    /// At the end of the file: parks it when others wait for a slot or it
    /// was idle too long; otherwise waits for a change, sends a multi-line
    /// event whose timeout passed, and says what the file looks like now.
    async fn at_end(
        &mut self,
        lines: &mut Vec<Line>,
        poll: &mut Duration,
        orphan_since: &mut Option<Instant>,
    ) -> EofAction {
        let contended = self.flow.slots.contended();
        if contended || self.last_data_at.elapsed() >= self.flow.settings.idle_timeout {
            // A pending multi-line event goes out first.
            self.shaper.flush(lines);
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
        let timed_out = self
            .shaper
            .pending_timeout()
            .is_some_and(|timeout| self.last_line_at.elapsed() >= timeout);
        let was_away = self.away;
        let action = self.at_eof(orphan_since);
        if self.away && !was_away {
            // Just left its path: drained quickly, then closed.
            *poll = POLL_MIN;
        }
        // A file about to be closed sends its pending event first (one
        // about to restart at 0 does so in `truncated`).
        if timed_out || action == EofAction::Close {
            self.shaper.flush(lines);
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
    fn grow_fingerprint(&mut self, read: &[u8]) {
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
    async fn truncated(&mut self, len: u64, lines: &mut Vec<Line>) {
        Metrics::add(&self.flow.metrics.truncations, 1);
        tracing::warn!(flow = %self.flow.settings.name, path = %crate::redact::path(&self.path()), size = len, offset = self.read_offset,
            "file was truncated (shorter than what was read, or its content changed); reading again from the start");
        self.shaper.flush(lines);
        self.hand_off(lines).await;
        let read_to = self.framer.consumed();
        let strip_cr = self.flow.settings.strip_cr;
        let old = std::mem::replace(
            &mut self.framer,
            Framer::new(0, max_line_piece(&self.flow.settings), strip_cr),
        );
        if let Some(partial) = old.into_pending() {
            self.dead_letter(vec![(
                partial,
                "partial line: the file was truncated before its newline",
            )])
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
            ),
        };
        self.fingerprint = fp;
        self.read_offset = 0;
        self.last_byte = None;
        if let Some(Err(e)) = self.file.as_mut().map(|f| f.seek(SeekFrom::Start(0))) {
            tracing::warn!(path = %crate::redact::path(&self.path()), error = %e, "cannot seek to the start of the file");
        }
    }

    /// Shapes framed lines (oversize policy, multi-line grouping): what
    /// is to be sent goes to `ready`, what is not goes to the dead-letter
    /// file (and is acked once written there).
    async fn shape(&mut self, framed: &mut Vec<Line>, ready: &mut Vec<Line>) {
        let mut dead: Vec<Dead> = Vec::new();
        if self.shaper.shape(framed, ready, &mut dead) {
            self.last_line_at = Instant::now();
        }
        if !dead.is_empty() {
            self.dead_letter(dead).await;
        }
    }

    /// Writes lines to the dead-letter file, retrying until it works, then
    /// acks their ranges.
    async fn dead_letter(&self, dead: Vec<Dead>) {
        let path = self.path();
        let mut records = Vec::with_capacity(dead.len());
        for (l, why) in dead {
            let r = self.unsent(l);
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
    fn unsent(&self, l: Line) -> Record {
        Record::new(l.data, String::new()).ranged(self.id, l.start, l.end)
    }

    /// After a wait at the end of the file: whether it was truncated, is
    /// to be closed (its path names another file or nothing, and it has
    /// been drained and quiet for the grace), or is to be waited on.
    fn at_eof(&mut self, orphan_since: &mut Option<Instant>) -> EofAction {
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

    /// Filters, keys and encodes the shaped lines and hands them to their
    /// lanes, waiting for budget first.
    async fn hand_off(&mut self, lines: &mut Vec<Line>) {
        if lines.is_empty() {
            return;
        }
        // What framing let through whole but does not fit its record once
        // encoded is cut again, by the oversize rule.
        let mut dead = Vec::new();
        self.shaper.fit(lines, &mut dead);
        if !dead.is_empty() {
            self.dead_letter(dead).await;
        }
        Metrics::add(&self.flow.metrics.lines_read, lines.len() as u64);
        let filtered = self.shaper.filter(lines);
        if !filtered.is_empty() {
            // Done without sending: acked now, so a read whose lines were
            // all filtered still moves the watermark.
            Metrics::add(&self.flow.metrics.lines_filtered, filtered.len() as u64);
            let records: Vec<Record> = filtered.into_iter().map(|l| self.unsent(l)).collect();
            self.flow.checkpoints.ack(&coalesce_acks(&records));
        }
        let (first, last) = match (lines.first(), lines.last()) {
            (Some(f), Some(l)) => (f.start, l.end),
            _ => return,
        };
        let path = self.path();
        let path = path.to_string_lossy();
        let flow = self.flow.clone();
        // One chunk for these lines: lines between them that are not here
        // were dead-lettered or filtered, and acked, before.
        let chunk = flow
            .checkpoints
            .open_chunk(self.id, first, last, lines.len());
        let (timestamp, metadata) = match &flow.settings.record.envelope {
            Some(_) => {
                let wants = &flow.settings.record.metadata;
                let members = flow.metadata.members(
                    wants.contains(&MetadataSource::Ec2),
                    wants.contains(&MetadataSource::Ecs),
                );
                let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                (now.to_string(), members)
            }
            None => (String::new(), Arc::from("")),
        };
        let source = Source {
            path: &path,
            hostname: &flow.hostname,
            timestamp: &timestamp,
            metadata: &metadata,
            file: self.id,
            chunk,
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
        let (parse_failures, collisions) = keyer.counts();
        Metrics::add(&flow.metrics.parse_failures, parse_failures as u64);
        Metrics::add(&flow.metrics.parse_collisions, collisions as u64);
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
    async fn send(&mut self, lane: usize, records: Vec<Record>) {
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
    async fn push(&self, lane: usize, records: Vec<Record>, bytes: usize) {
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

#[derive(Debug, PartialEq, Eq)]
enum EofAction {
    Wait,
    Truncated { len: u64 },
    Close,
}
