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
//! The tailer's steps live beside its loop (`mod.rs`): `polls.rs` (how
//! long to wait, and parking an idle file to free its descriptor),
//! `ends.rs` (what the end of the file means: growth, truncation, a
//! replaced or deleted path), `handoff.rs` (shaping, keying and handing
//! records to the lanes under the byte budget); `wake.rs` holds what wakes
//! tailers and bounds them (the open-file slots, the directories where
//! notifications arrive).
//!
//! Reads are plain blocking reads of at most [`READ_CHUNK`] bytes: for
//! local files they complete from the page cache in microseconds, which
//! costs the runtime less than a hop to a blocking thread per read.

mod ends;
mod handoff;
mod polls;
mod wake;

pub use wake::{EventDirs, Slots};

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
use crate::records::batcher::{ChunkId, FileId, NO_CHUNK};
use crate::records::batcher::{Record, coalesce_acks};
use crate::records::envelope::SharedMetadata;
use crate::records::keying::KeySource;
use crate::records::kubernetes::PodFile;
use crate::records::pods::{Lookup, Pods};
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

/// A file's pod: from its path, and rendered for the envelope.
#[derive(Debug)]
struct Pod {
    file: PodFile,
    /// The members of the envelope's `kubernetes` object (empty when the
    /// flow only keys by the pod).
    members: String,
    /// What the API server added to them, when known.
    extra: Option<Arc<str>>,
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
    /// Pod lookups on the Kubernetes API server (`metadata = ["kubernetes"]`).
    pub pods: Arc<Pods>,
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
    /// The file's pod, for the path it had (see `pod`).
    pod: Option<(PathBuf, Option<Arc<Pod>>)>,
    /// Lines shaping decided not to send, to dead-letter with the next
    /// hand-off (in its chunk).
    dead: Vec<Dead>,
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
            dead: Vec::new(),
            pod: None,
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

    /// Where the file is now: the checkpoint table is the one owner of a
    /// file's path, and discovery tells it of renames.
    fn path(&self) -> PathBuf {
        self.flow.checkpoints.path_of(self.id).unwrap_or_default()
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
        tracing::debug!(flow = %self.flow.settings.name, path = %crate::redact::path(&self.path()), offset = self.consumed(), "tailer stopped");
        self.flow.checkpoints.close(self.id, self.consumed());
    }

    /// Offset up to which every byte was shaped into lines to send: what
    /// is pending (a partial container line's group, a multi-line event)
    /// is not.
    fn consumed(&self) -> u64 {
        let framed = self.framer.consumed();
        self.shaper
            .pending_start()
            .map_or(framed, |p| p.min(framed))
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
}

#[derive(Debug, PartialEq, Eq)]
enum EofAction {
    Wait,
    Truncated { len: u64 },
    Close,
}
