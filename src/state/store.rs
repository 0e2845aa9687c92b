//! The checkpoint store on disk, in the state directory: a base,
//! `checkpoints.json`, and a journal, `checkpoints.journal`, of the entries
//! that changed since the base was written; and the generation before each,
//! `checkpoints.json.prev` and `checkpoints.journal.prev`.
//!
//! A save appends the entries that changed (one JSON line each) to the
//! journal and fsyncs it: with a thousand files and one line a second, that
//! is one line and one fsync, not the whole store. Now and then a save
//! compacts instead ([`Store::save`] says when): it writes the whole store
//! as a new base of the next generation and starts a new journal.
//!
//! A base is written as a temporary file (created exclusively, never
//! through a link, 0600) and fsynced; the current base is hard-linked as the
//! previous one (through a second temporary name and a rename); the new
//! base is renamed over the current one; the journal is renamed to the
//! previous journal; a new journal is written under a temporary name,
//! fsynced and renamed into place; the directory is fsynced. Each base and
//! each journal names its generation, and a journal is applied only to the
//! base of its generation, so a crash at any point leaves a readable store:
//! the old base with its journal, or the new base (alone, or with its new
//! journal).
//!
//! A load reads the current base and its journal; an entry of the journal
//! replaces the base's entry for the same file, later lines win, and a line
//! that cannot be read (the tail of a write cut by a crash) is skipped.
//! When the current base cannot be read, it falls back to the previous base
//! with its journal and the current journal (what the unreadable base held
//! beyond them is at most one checkpoint interval of lines, sent again);
//! the first save then writes the new base as the previous one too, not
//! keeping the unreadable one.
//! When neither base can be read, or a file holds a version newer than this
//! build knows (what a downgrade leaves), it refuses: starting again from
//! `start_at` would re-send every file, or skip what was written while
//! kinetail was down. `kinetail reset-state` moves the store aside for an
//! operator who chooses to start over.
//!
//! Format versions: 1 wrote paths as strings only; 2 writes a path that is
//! not UTF-8 as `{"bytes_base64": ...}`; 3 (this build) adds the generation
//! and the journal. All are read.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::input::identity::{FileKey, Fingerprint};

/// Name of the store's base inside `state_dir`.
pub const STORE_FILE: &str = "checkpoints.json";
/// The base of the generation before the current one.
pub const PREVIOUS_FILE: &str = "checkpoints.json.prev";
/// The entries changed since the base was written.
pub const JOURNAL_FILE: &str = "checkpoints.journal";
/// The journal of the generation before the current one.
pub const PREVIOUS_JOURNAL_FILE: &str = "checkpoints.journal.prev";
/// Every file of the store, for `reset-state` and for the globs that must
/// not reach it.
pub const FILES: [&str; 4] = [
    STORE_FILE,
    PREVIOUS_FILE,
    JOURNAL_FILE,
    PREVIOUS_JOURNAL_FILE,
];
const TMP_FILE: &str = "checkpoints.json.tmp";
const PREVIOUS_TMP_FILE: &str = "checkpoints.json.prev.tmp";
const JOURNAL_TMP_FILE: &str = "checkpoints.journal.tmp";
/// The store format this build writes; it reads this one and the ones
/// before it.
pub const STORE_VERSION: u32 = 3;
/// A journal is compacted into a new base once it is larger than the base
/// and this.
const JOURNAL_MIN_BYTES: u64 = 64 * 1024;
/// A base is written at least this often while saves happen, so that the
/// `updated_unix_ms` of files that did not change stays fresh (entries
/// expire after `checkpoint::EXPIRE_AFTER`).
const COMPACT_EVERY: Duration = Duration::from_secs(3600);

/// One entry of the store file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    pub flow: String,
    #[serde(flatten)]
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    #[serde(with = "stored_path")]
    pub path: PathBuf,
    pub offset: u64,
    pub updated_unix_ms: u64,
    /// The sequence number Kinesis gave the last confirmed record, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_confirmed_unix_ms: Option<u64>,
    /// The reading's id: minted when the file was first registered, kept by
    /// renames and a copy's take-over, new when the file is read again from
    /// its start as other content. Records' ids (`id_key`) start with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<u64>,
}

impl SavedFile {
    /// Whether two entries say the same, apart from when they were made.
    fn same_as(&self, other: &SavedFile) -> bool {
        self.offset == other.offset
            && self.key == other.key
            && self.flow == other.flow
            && self.path == other.path
            && self.fingerprint == other.fingerprint
            && self.last_sequence == other.last_sequence
            && self.last_confirmed_unix_ms == other.last_confirmed_unix_ms
            && self.reading == other.reading
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile<F = Vec<SavedFile>> {
    version: u32,
    /// 0 in the versions before 3, which had no journal.
    #[serde(default)]
    generation: u64,
    files: F,
}

/// Only the version (and a journal's generation), read first so that a
/// newer format is recognised as such rather than as a parse error.
#[derive(Serialize, Deserialize)]
struct Head {
    version: u32,
    #[serde(default)]
    generation: u64,
}

/// Why the store cannot be used; each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint store {}: {what}: {source}", crate::redact::path(path))]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "checkpoint store {}: cannot parse: {source}",
        crate::redact::path(path)
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "checkpoint store {} is version {version}, newer than this build of kinetail knows ({STORE_VERSION}): run the newer kinetail, or `kinetail reset-state` to start over",
        crate::redact::path(path)
    )]
    Newer { path: PathBuf, version: u32 },
    #[error(
        "checkpoint store {} cannot be read ({current}), nor the previous one ({previous}); kinetail will not start from scratch by itself (it would send every file again, or skip lines): fix the files, or run `kinetail reset-state --config FILE` to move them aside and start over",
        crate::redact::path(path)
    )]
    Unusable {
        path: PathBuf,
        current: Box<StoreError>,
        previous: Box<StoreError>,
    },
    #[error(
        "state directory {} {why}: another user could plant checkpoints there that make kinetail skip lines. Use a directory that kinetail's user owns and only it can write (a new path is created so, mode 0700; on a shared volume such as a Kubernetes emptyDir, a subdirectory of it)",
        crate::redact::path(path)
    )]
    Untrusted { path: PathBuf, why: String },
}

impl StoreError {
    /// An error that the daemon must not start over: restarting it cannot
    /// help; an operator must act (the unit's `RestartPreventExitStatus`).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            StoreError::Newer { .. } | StoreError::Unusable { .. } | StoreError::Untrusted { .. }
        )
    }

    fn not_found(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, what, source }
}

/// Creates the state directory (0700, whatever the umask lets through) if
/// it does not exist.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir, "cannot create the state directory"))?;
    check_trusted(dir)
}

/// Refuses a state directory that another user owns or that others (its
/// group, everyone) may write: whoever can write there decides which lines
/// are never sent. A symbolic link is judged by the directory it leads to.
pub fn check_trusted(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(io(dir, "cannot read the state directory"))?;
    let me = rustix::process::geteuid().as_raw();
    let why = if meta.uid() != me {
        Some(format!(
            "belongs to user {} (kinetail runs as {me})",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "may be written by {} (mode {:04o})",
            if meta.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(StoreError::Untrusted {
            path: dir.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn parse_error(path: &Path) -> impl FnOnce(serde_json::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Parse { path, source }
}

fn check_version(path: &Path, head: &Head) -> Result<(), StoreError> {
    if head.version > STORE_VERSION {
        return Err(StoreError::Newer {
            path: path.to_path_buf(),
            version: head.version,
        });
    }
    Ok(())
}

/// Reads one base: its entries and its generation.
fn read_one(path: &Path) -> Result<(Vec<SavedFile>, u64), StoreError> {
    let bytes = fs::read(path).map_err(io(path, "cannot read"))?;
    let head: Head = serde_json::from_slice(&bytes).map_err(parse_error(path))?;
    check_version(path, &head)?;
    let store: StoreFile = serde_json::from_slice(&bytes).map_err(parse_error(path))?;
    Ok((store.files, store.generation))
}

/// A journal: its generation and its entries, in the order written.
struct Journal {
    generation: u64,
    entries: Vec<SavedFile>,
}

/// Reads one journal; `None` when there is none or its first line cannot
/// be read (then no base is of its generation as far as anyone can tell).
/// Lines that cannot be read are skipped, with a warning: each line is a
/// whole entry, so the lines around one cut by a crash still hold.
fn read_journal(path: &Path) -> Result<Option<Journal>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "cannot read")(e)),
    };
    let mut lines = bytes.split(|b| *b == b'\n');
    let Some(Ok(head)) = lines.next().map(serde_json::from_slice::<Head>) else {
        tracing::warn!(path = %crate::redact::path(path), "checkpoint journal without a readable first line; ignored");
        return Ok(None);
    };
    check_version(path, &head)?;
    let mut entries = Vec::new();
    let mut skipped = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<SavedFile>(line) {
            Ok(e) => entries.push(e),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(path = %crate::redact::path(path), skipped,
            "checkpoint journal lines that cannot be read (the end of a write cut short); skipped");
    }
    Ok(Some(Journal {
        generation: head.generation,
        entries,
    }))
}

/// A base with the journals of its generation and of the next one applied,
/// in that order: later entries replace earlier ones for the same file.
fn apply(base: Vec<SavedFile>, generation: u64, journals: &[Journal]) -> Vec<SavedFile> {
    let mut at: HashMap<(String, FileKey), usize> = HashMap::with_capacity(base.len());
    let mut files = base;
    for (i, f) in files.iter().enumerate() {
        at.insert((f.flow.clone(), f.key), i);
    }
    // Generation 0 (a store written before journals) has none.
    for g in [generation, generation + 1].into_iter().filter(|g| *g > 0) {
        for j in journals.iter().filter(|j| j.generation == g) {
            for e in &j.entries {
                match at.get(&(e.flow.clone(), e.key)) {
                    Some(&i) => files[i] = e.clone(),
                    None => {
                        at.insert((e.flow.clone(), e.key), files.len());
                        files.push(e.clone());
                    }
                }
            }
        }
    }
    files
}

/// Loads the store in `dir` (it changes nothing, so `status` uses it too):
/// the current base and its journal, else the previous base with its
/// journal and the current one (with a loud error), else nothing when no
/// base exists (a first start). A newer version anywhere, or neither base
/// readable, is an error.
pub fn load(dir: &Path) -> Result<Vec<SavedFile>, StoreError> {
    load_generation(dir).map(|l| l.files)
}

/// What [`load`] found.
#[derive(Default)]
struct Loaded {
    files: Vec<SavedFile>,
    /// The highest generation found: the next base is one more.
    generation: u64,
    /// Whether the current base was read, or there was none.
    current_readable: bool,
}

fn load_generation(dir: &Path) -> Result<Loaded, StoreError> {
    let current = dir.join(STORE_FILE);
    let previous = dir.join(PREVIOUS_FILE);
    let cur = read_one(&current);
    let prev = read_one(&previous);
    for r in [&cur, &prev] {
        if let Err(StoreError::Newer { path, version }) = r {
            return Err(StoreError::Newer {
                path: path.clone(),
                version: *version,
            });
        }
    }
    let journals: Vec<Journal> = [JOURNAL_FILE, PREVIOUS_JOURNAL_FILE]
        .iter()
        .filter_map(|name| read_journal(&dir.join(name)).transpose())
        .collect::<Result<_, _>>()?;
    let highest = [&cur, &prev]
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(_, g)| *g))
        .chain(journals.iter().map(|j| j.generation))
        .max()
        .unwrap_or(0);
    match (cur, prev) {
        (Ok((files, g)), _) => {
            // Only this generation's journal: the next one's belongs to a
            // base not written yet (a save stopped half-way cannot leave
            // one, but a store copied by hand could).
            let own: Vec<Journal> = journals.into_iter().filter(|j| j.generation == g).collect();
            Ok(Loaded {
                files: apply(files, g, &own),
                generation: highest,
                current_readable: true,
            })
        }
        (Err(c), _) if c.not_found() && !previous.exists() => Ok(Loaded {
            files: Vec::new(),
            generation: highest,
            current_readable: true,
        }),
        (Err(c), Ok((files, g))) => {
            tracing::error!(error = %c, previous = %crate::redact::path(&previous),
                "checkpoint store unreadable; using the previous generation (lines of one more checkpoint interval are sent again)");
            Ok(Loaded {
                files: apply(files, g, &journals),
                generation: highest,
                current_readable: false,
            })
        }
        (Err(c), Err(p)) => Err(StoreError::Unusable {
            path: current,
            current: Box::new(c),
            previous: Box::new(p),
        }),
    }
}

/// Writes `files` as the base of `generation`, keeping the current base as
/// the previous one (see the module's documentation for the order); the
/// journals are the caller's. A current base that could not be read is not
/// kept: the new base becomes the previous one too.
///
/// `body` is scratch space, kept by the caller from one write to the next
/// (a store of a thousand files is a few hundred KiB).
fn write_base(
    dir: &Path,
    files: &[SavedFile],
    generation: u64,
    current_readable: bool,
    body: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let current = dir.join(STORE_FILE);
    let tmp = dir.join(TMP_FILE);
    body.clear();
    serde_json::to_writer_pretty(
        &mut *body,
        &StoreFile {
            version: STORE_VERSION,
            generation,
            files,
        },
    )
    .map_err(parse_error(&current))?;
    write_new(&tmp, body)?;
    let prev_tmp = dir.join(PREVIOUS_TMP_FILE);
    let previous_into_place = || {
        fs::rename(&prev_tmp, dir.join(PREVIOUS_FILE)).map_err(io(
            &prev_tmp,
            "cannot rename the previous generation into place",
        ))
    };
    if current_readable && current.exists() {
        remove_if_there(&prev_tmp)?;
        fs::hard_link(&current, &prev_tmp)
            .map_err(io(&prev_tmp, "cannot link the previous generation"))?;
        previous_into_place()?;
    } else if !current_readable {
        // A copy, not a link: the two must not share what breaks one.
        write_new(&prev_tmp, body)?;
        previous_into_place()?;
    }
    fs::rename(&tmp, &current).map_err(io(&current, "cannot rename into place"))
}

/// Writes `bytes` to a new private file at `path` and fsyncs it. A file
/// left there by a crash is removed first (unlinking a planted link
/// removes the link, not its target); the new one is created exclusively
/// and never through a link. Returns it, open for writing at its end.
fn write_new(path: &Path, bytes: &[u8]) -> Result<File, StoreError> {
    remove_if_there(path)?;
    let mut f = create_private(path).map_err(io(path, "cannot create"))?;
    f.write_all(bytes).map_err(io(path, "cannot write"))?;
    f.sync_all().map_err(io(path, "cannot fsync"))?;
    Ok(f)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot fsync the state directory"))
}

/// Writes `files` as the whole store, a new base with an empty journal
/// (what [`Store::save`] does when it compacts).
#[cfg(test)]
pub fn write(dir: &Path, files: &[SavedFile], body: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut store = Store::new(dir, &load_generation(dir).unwrap_or_default());
    store.body = std::mem::take(body);
    let r = store.compact(files);
    *body = store.body;
    r
}

/// The store of one state directory, for the one process that writes it:
/// what its base and journal hold, so that a save writes only what
/// changed.
/// The scratch space a store keeps after writing a base.
const JOURNAL_SCRATCH: usize = 64 * 1024;

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The generation of the current base (the highest found at start).
    generation: u64,
    /// False when the store was loaded from the previous generation: the
    /// unreadable current base is then not kept as the previous one.
    current_readable: bool,
    /// The journal of `generation`, open at its end; `None` until the first
    /// base of this process is written, and after a failed write (the next
    /// save compacts).
    journal: Option<File>,
    journal_bytes: u64,
    base_bytes: u64,
    compacted_at: Option<Instant>,
    /// What the base and journal hold now, by file.
    written: HashMap<FileKey, Vec<SavedFile>>,
    /// Scratch space kept from one save to the next.
    body: Vec<u8>,
}

impl Store {
    fn new(dir: &Path, loaded: &Loaded) -> Store {
        Store {
            dir: dir.to_path_buf(),
            generation: loaded.generation,
            current_readable: loaded.current_readable,
            journal: None,
            journal_bytes: 0,
            base_bytes: 0,
            compacted_at: None,
            written: HashMap::new(),
            body: Vec::new(),
        }
    }

    /// Loads the store in `dir` (see [`load`]), to go on writing it. The
    /// first save writes a new base.
    pub fn open(dir: &Path) -> Result<(Store, Vec<SavedFile>), StoreError> {
        let loaded = load_generation(dir)?;
        Ok((Store::new(dir, &loaded), loaded.files))
    }

    /// Whether the next save must write a new base, from every entry: at
    /// the first save of a process, after a failed write, when the journal
    /// outgrew the base, and at least every [`COMPACT_EVERY`].
    pub fn wants_base(&self) -> bool {
        self.journal.is_none()
            || self.journal_bytes > self.base_bytes.max(JOURNAL_MIN_BYTES)
            || self
                .compacted_at
                .is_none_or(|t| t.elapsed() >= COMPACT_EVERY)
    }

    /// Makes the store hold exactly `files` (one entry per file and flow):
    /// the entries that changed are appended to the journal and fsynced,
    /// or, when an entry is gone or [`Store::wants_base`], a new base is
    /// written. Returns whether anything was written.
    pub fn save(&mut self, files: &[SavedFile]) -> Result<bool, StoreError> {
        let mut known = 0usize;
        let mut changed: Vec<&SavedFile> = Vec::new();
        for f in files {
            match self.find(f) {
                Some(w) => {
                    known += 1;
                    if !w.same_as(f) {
                        changed.push(f);
                    }
                }
                None => changed.push(f),
            }
        }
        let written = self.written.values().map(Vec::len).sum::<usize>();
        if known < written || self.wants_base() {
            return self.compact(files).map(|()| true);
        }
        self.append(changed)
    }

    /// Writes the entries of `files` that changed, leaving every other
    /// entry as it is: what a save does when only these may have changed
    /// and none is gone. Never a new base (`files` need not be every
    /// entry): the caller asks [`Store::wants_base`] first, under the same
    /// hold of the store, and saves every entry when it says so.
    pub fn update(&mut self, files: &[SavedFile]) -> Result<bool, StoreError> {
        if self.journal.is_none() {
            // Only after a failed write, which the caller saw: it saves
            // every entry next.
            return Err(io(&self.dir.join(JOURNAL_FILE), "cannot append to")(
                std::io::Error::other("the journal is not open"),
            ));
        }
        let changed = files
            .iter()
            .filter(|f| self.find(f).is_none_or(|w| !w.same_as(f)))
            .collect();
        self.append(changed)
    }

    fn find(&self, f: &SavedFile) -> Option<&SavedFile> {
        self.written
            .get(&f.key)
            .and_then(|v| v.iter().find(|w| w.flow == f.flow))
    }

    /// Appends `changed` to the journal and fsyncs it.
    fn append(&mut self, changed: Vec<&SavedFile>) -> Result<bool, StoreError> {
        if changed.is_empty() {
            return Ok(false);
        }
        self.body.clear();
        for f in &changed {
            serde_json::to_writer(&mut self.body, f).map_err(parse_error(&self.dir))?;
            self.body.push(b'\n');
        }
        let path = self.dir.join(JOURNAL_FILE);
        let appended = match self.journal.as_mut() {
            Some(j) => j
                .write_all(&self.body)
                .and_then(|()| j.sync_data())
                .map_err(io(&path, "cannot append to")),
            None => Ok(()),
        };
        if let Err(e) = appended {
            // What was half written is skipped when read; the next save
            // writes a whole new base.
            self.journal = None;
            return Err(e);
        }
        self.journal_bytes += self.body.len() as u64;
        for f in changed {
            let v = self.written.entry(f.key).or_default();
            match v.iter_mut().find(|w| w.flow == f.flow) {
                Some(w) => *w = f.clone(),
                None => v.push(f.clone()),
            }
        }
        Ok(true)
    }

    /// Writes `files` as the base of the next generation and starts its
    /// journal.
    fn compact(&mut self, files: &[SavedFile]) -> Result<(), StoreError> {
        self.journal = None;
        self.generation += 1;
        write_base(
            &self.dir,
            files,
            self.generation,
            self.current_readable,
            &mut self.body,
        )?;
        self.current_readable = true;
        self.base_bytes = self.body.len() as u64;
        let journal = self.dir.join(JOURNAL_FILE);
        match fs::rename(&journal, self.dir.join(PREVIOUS_JOURNAL_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(
                    &journal,
                    "cannot rename the journal to the previous one",
                )(e));
            }
            _ => {}
        }
        self.body.clear();
        serde_json::to_writer(
            &mut self.body,
            &Head {
                version: STORE_VERSION,
                generation: self.generation,
            },
        )
        .map_err(parse_error(&journal))?;
        self.body.push(b'\n');
        let tmp = self.dir.join(JOURNAL_TMP_FILE);
        let file = write_new(&tmp, &self.body)?;
        fs::rename(&tmp, &journal).map_err(io(&journal, "cannot rename into place"))?;
        sync_dir(&self.dir)?;
        self.journal_bytes = self.body.len() as u64;
        // The base's bytes (about 300 bytes a file) are not kept between
        // bases, hours apart: the journal's appends need far less.
        self.body.shrink_to(JOURNAL_SCRATCH);
        self.compacted_at = Some(Instant::now());
        self.written.clear();
        for f in files {
            self.written.entry(f.key).or_default().push(f.clone());
        }
        self.journal = Some(file);
        Ok(())
    }
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(path, "cannot remove a stale temporary file")(e))
        }
        _ => Ok(()),
    }
}

/// A new file only kinetail's user can read: created exclusively, never
/// through a symbolic link.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Moves the store and its previous generation aside (renamed with a
/// `.reset-<unix ms>` suffix, never deleted), so that the next start
/// begins every file from `start_at`. Returns what was moved.
pub fn reset(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, StoreError> {
    let stamp = crate::clock::now_ms();
    let mut moved = Vec::new();
    for name in FILES {
        let from = dir.join(name);
        if fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = dir.join(format!("{name}.reset-{stamp}"));
        fs::rename(&from, &to).map_err(io(&from, "cannot move aside"))?;
        moved.push((from, to));
    }
    Ok(moved)
}

/// Paths in the store: a JSON string when they are UTF-8, else
/// `{"bytes_base64": "..."}` with their exact bytes.
mod stored_path {
    use super::*;
    use base64::Engine;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes { bytes_base64: String },
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(t) => s.serialize_str(t),
            None => Repr::Bytes {
                bytes_base64: base64::engine::general_purpose::STANDARD
                    .encode(p.as_os_str().as_bytes()),
            }
            .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(PathBuf::from(t)),
            Repr::Bytes { bytes_base64 } => base64::engine::general_purpose::STANDARD
                .decode(bytes_base64)
                .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
                .map_err(serde::de::Error::custom),
        }
    }
}

pub use stored_path::serialize as serialize_path;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry(path: PathBuf, offset: u64) -> SavedFile {
        SavedFile {
            flow: "f".into(),
            key: FileKey { dev: 1, ino: 2 },
            fingerprint: Fingerprint::of(b"head"),
            path,
            offset,
            updated_unix_ms: 1,
            last_sequence: None,
            last_confirmed_unix_ms: None,
            reading: None,
        }
    }

    #[test]
    fn a_save_keeps_the_previous_generation_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        create_dir(&state).unwrap();
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        write(&state, &[entry("/a".into(), 1)], &mut Vec::new()).unwrap();
        write(&state, &[entry("/a".into(), 2)], &mut Vec::new()).unwrap();
        assert_eq!(read_one(&state.join(STORE_FILE)).unwrap().0[0].offset, 2);
        assert_eq!(read_one(&state.join(PREVIOUS_FILE)).unwrap().0[0].offset, 1);
        for f in [STORE_FILE, PREVIOUS_FILE] {
            let mode = fs::metadata(state.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    #[test]
    fn a_broken_current_store_falls_back_to_the_previous_one() {
        for broken in [
            &b"{\"version\": 2, \"files\": [{\"flow\""[..],
            b"\x00garbage",
            b"{\"version\": 2, \"files\": 3}",
            b"",
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &[entry("/a".into(), 7)], &mut Vec::new()).unwrap();
            write(dir.path(), &[entry("/a".into(), 9)], &mut Vec::new()).unwrap();
            fs::write(dir.path().join(STORE_FILE), broken).unwrap();
            assert_eq!(load(dir.path()).unwrap()[0].offset, 7, "{broken:?}");
        }
    }

    #[test]
    fn neither_readable_or_a_newer_version_refuses() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STORE_FILE), b"{not json").unwrap();
        fs::write(dir.path().join(PREVIOUS_FILE), b"").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(
            e.needs_operator() && e.to_string().contains("reset-state"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[entry("/a".into(), 7)], &mut Vec::new()).unwrap();
        write(dir.path(), &[entry("/a".into(), 8)], &mut Vec::new()).unwrap();
        fs::write(
            dir.path().join(STORE_FILE),
            b"{\"version\": 4, \"files\": [], \"more\": {}}",
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Newer { version: 4, .. }), "{e}");
        assert!(e.needs_operator());

        let moved = reset(dir.path()).unwrap();
        assert_eq!(moved.len(), 4, "both bases and both journals");
        assert!(
            load(dir.path()).unwrap().is_empty(),
            "a fresh start after a reset"
        );
    }

    #[test]
    fn a_stale_temporary_file_or_a_planted_link_does_not_block_or_redirect_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(TMP_FILE)).unwrap();
        write(dir.path(), &[entry("/a".into(), 3)], &mut Vec::new()).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(load(dir.path()).unwrap()[0].offset, 3);
        // A crash between writing the temporary file and renaming it.
        fs::write(dir.path().join(TMP_FILE), b"half").unwrap();
        write(dir.path(), &[entry("/a".into(), 4)], &mut Vec::new()).unwrap();
        assert_eq!(load(dir.path()).unwrap()[0].offset, 4);
    }

    fn journal_lines(dir: &Path) -> usize {
        fs::read_to_string(dir.join(JOURNAL_FILE))
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn a_save_appends_only_what_changed_and_a_load_applies_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, files) = Store::open(dir.path()).unwrap();
        assert!(files.is_empty());
        let mut files: Vec<SavedFile> = (0..50)
            .map(|i| {
                let mut e = entry(format!("/logs/{i}.log").into(), 0);
                e.key.ino = i;
                e
            })
            .collect();
        assert!(store.save(&files).unwrap(), "the first save writes a base");
        let base = fs::read(dir.path().join(STORE_FILE)).unwrap();
        assert_eq!(journal_lines(dir.path()), 1, "the journal's first line");

        files[7].offset = 70;
        files[7].updated_unix_ms = 2;
        files[9].updated_unix_ms = 5;
        assert!(store.save(&files).unwrap());
        assert_eq!(journal_lines(dir.path()), 2, "one entry changed");
        assert_eq!(fs::read(dir.path().join(STORE_FILE)).unwrap(), base);
        files[9].updated_unix_ms = 6;
        assert!(!store.save(&files).unwrap(), "only a time changed");
        files[7].offset = 71;
        files[8].last_sequence = Some("49".into());
        let mut new = entry("/logs/new.log".into(), 3);
        new.key.ino = 1000;
        files.push(new);
        assert!(store.save(&files).unwrap());
        assert_eq!(journal_lines(dir.path()), 5);
        assert_eq!(fs::read(dir.path().join(STORE_FILE)).unwrap(), base);

        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.len(), 51);
        let of = |ino: u64| loaded.iter().find(|f| f.key.ino == ino).unwrap();
        assert_eq!(of(7).offset, 71);
        assert_eq!(of(8).last_sequence.as_deref(), Some("49"));
        assert_eq!(of(1000).offset, 3);
        assert_eq!(of(3).offset, 0);

        // An entry gone (expired): the next save writes a new base.
        files.remove(0);
        assert!(store.save(&files).unwrap());
        assert_eq!(journal_lines(dir.path()), 1);
        assert_eq!(load(dir.path()).unwrap().len(), 50);
        assert_eq!(
            load(dir.path())
                .unwrap()
                .iter()
                .find(|f| f.key.ino == 7)
                .unwrap()
                .offset,
            71
        );
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_the_lines_around_it_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let mut files = vec![entry("/a".into(), 1)];
        store.save(&files).unwrap();
        files[0].offset = 2;
        store.save(&files).unwrap();
        let journal = dir.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(b"{\"flow\":\"f\",\"dev\":1,\"ino\":2,\"fingerpr")
            .unwrap();
        assert_eq!(load(dir.path()).unwrap()[0].offset, 2, "a torn end");
        // A save after a torn write (a store written by hand, say) still
        // reads.
        f.write_all(b"\n").unwrap();
        files[0].offset = 3;
        store.save(&files).unwrap();
        assert_eq!(load(dir.path()).unwrap()[0].offset, 3);
    }

    #[test]
    fn a_journal_is_applied_to_the_base_of_its_generation_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut store, _) = Store::open(d).unwrap();
        let mut files = vec![entry("/a".into(), 1)];
        store.save(&files).unwrap();
        files[0].offset = 5;
        store.save(&files).unwrap();
        // A crash half-way through the next compaction: the new base (of
        // offset 6) is in place, the journal of the old one (offset 5) not
        // yet moved. The journal is not applied over the newer base.
        let old_journal = fs::read(d.join(JOURNAL_FILE)).unwrap();
        files[0].offset = 6;
        store.compact(&files).unwrap();
        fs::write(d.join(JOURNAL_FILE), &old_journal).unwrap();
        fs::remove_file(d.join(PREVIOUS_JOURNAL_FILE)).unwrap();
        assert_eq!(load(d).unwrap()[0].offset, 6);
        // Loaded again, the next base is of a newer generation than any.
        let (mut again, files) = Store::open(d).unwrap();
        assert!(again.generation >= 2);
        again.save(&files).unwrap();
        assert_eq!(load(d).unwrap()[0].offset, 6);
    }

    #[test]
    fn an_unreadable_base_falls_back_to_the_previous_one_with_both_journals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut store, _) = Store::open(d).unwrap();
        let mut files = vec![entry("/a".into(), 1), entry("/b".into(), 1)];
        files[1].key.ino = 3;
        store.save(&files).unwrap();
        files[0].offset = 10;
        store.save(&files).unwrap();
        files[1].offset = 20;
        store.compact(&files).unwrap();
        files[1].offset = 30;
        store.save(&files).unwrap();
        fs::write(d.join(STORE_FILE), b"{\"version\": 3, \"gen").unwrap();
        let loaded = load(d).unwrap();
        let of = |ino: u64| loaded.iter().find(|f| f.key.ino == ino).unwrap().offset;
        // The previous base had 1 and 1; its journal moved /a to 10; the
        // current journal moved /b to 30. Only /b's 20, in the lost base
        // alone, is missed: it is older than 30 anyway.
        assert_eq!((of(2), of(3)), (10, 30));
        // Started on the previous generation, the first save does not keep
        // the unreadable base as the previous one: broken again, the store
        // still reads.
        let (mut store, mut files) = Store::open(d).unwrap();
        files.sort_by_key(|f| f.key.ino);
        files[0].offset = 11;
        store.save(&files).unwrap();
        fs::write(d.join(STORE_FILE), b"").unwrap();
        let loaded = load(d).unwrap();
        assert_eq!(loaded.iter().map(|f| f.offset).min(), Some(11));
    }

    #[test]
    fn paths_that_are_not_utf8_are_stored_exactly_and_version_1_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let odd = PathBuf::from(std::ffi::OsString::from_vec(b"/logs/caf\xe9.log".to_vec()));
        write(dir.path(), &[entry(odd.clone(), 5)], &mut Vec::new()).unwrap();
        assert_eq!(load(dir.path()).unwrap()[0].path, odd);
        let v1 = r#"{"version": 1, "files": [{"flow": "f", "dev": 1, "ino": 2,
            "fingerprint": {"len": 4, "md5": "x"}, "path": "/a.log", "offset": 11,
            "updated_unix_ms": 1}]}"#;
        fs::write(dir.path().join(STORE_FILE), v1).unwrap();
        assert_eq!(load(dir.path()).unwrap()[0].offset, 11);
    }
}
