//! The checkpoint store on disk: `checkpoints.json` in the state directory,
//! and `checkpoints.json.prev`, the generation before it.
//!
//! A save writes a temporary file (created exclusively, never through a
//! link, 0600) and fsyncs it; hard-links the current file as the previous
//! one (through a second temporary name and a rename); renames the new file
//! over the current one; fsyncs the directory. A crash at any point leaves
//! a readable current file and a readable previous one: either the old
//! pair or the new one, or the old current as both.
//!
//! A load reads the current file, and falls back to the previous one (at
//! most one more checkpoint interval of lines is sent again) when the
//! current cannot be read. When neither can be read, or either holds a
//! version newer than this build knows (what a downgrade leaves), it
//! refuses: starting again from `start_at` would re-send every file, or
//! skip what was written while kinetail was down. `kinetail reset-state`
//! moves both aside for an operator who chooses to start over.
//!
//! Format versions: 1 wrote paths as strings only; 2 (this build) writes a
//! path that is not UTF-8 as `{"bytes_base64": ...}`. Both are read.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::{FileKey, Fingerprint};

/// Name of the store inside `state_dir`.
pub const STORE_FILE: &str = "checkpoints.json";
/// The generation before the current one.
pub const PREVIOUS_FILE: &str = "checkpoints.json.prev";
const TMP_FILE: &str = "checkpoints.json.tmp";
const PREVIOUS_TMP_FILE: &str = "checkpoints.json.prev.tmp";
/// The store format this build writes; it reads this one and the ones
/// before it.
pub const STORE_VERSION: u32 = 2;

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
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile<F = Vec<SavedFile>> {
    version: u32,
    files: F,
}

/// Only the version, read first so that a newer format is recognised as
/// such rather than as a parse error.
#[derive(Deserialize)]
struct Head {
    version: u32,
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
}

impl StoreError {
    /// An error that the daemon must not start over: restarting it cannot
    /// help; an operator must act (the unit's `RestartPreventExitStatus`).
    pub fn needs_operator(&self) -> bool {
        matches!(self, StoreError::Newer { .. } | StoreError::Unusable { .. })
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
        .map_err(io(dir, "cannot create the state directory"))
}

/// Reads one store file.
fn read_one(path: &Path) -> Result<Vec<SavedFile>, StoreError> {
    let bytes = fs::read(path).map_err(io(path, "cannot read"))?;
    let head: Head = serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if head.version > STORE_VERSION {
        return Err(StoreError::Newer {
            path: path.to_path_buf(),
            version: head.version,
        });
    }
    let store: StoreFile = serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(store.files)
}

/// Loads the store in `dir` (it changes nothing, so `status` uses it too): the current file, else the previous one
/// (with a loud error), else nothing when neither exists (a first start).
/// A newer version in either, or neither readable, is an error.
pub fn load(dir: &Path) -> Result<Vec<SavedFile>, StoreError> {
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
    match (cur, prev) {
        (Ok(files), _) => Ok(files),
        (Err(c), _) if c.not_found() && !previous.exists() => Ok(Vec::new()),
        (Err(c), Ok(files)) => {
            tracing::error!(error = %c, previous = %crate::redact::path(&previous),
                "checkpoint store unreadable; using the previous generation (lines of one more checkpoint interval are sent again)");
            Ok(files)
        }
        (Err(c), Err(p)) => Err(StoreError::Unusable {
            path: current,
            current: Box::new(c),
            previous: Box::new(p),
        }),
    }
}

/// Writes `files` as the new current store, keeping the current one as the
/// previous generation (see the module's documentation for the order).
///
/// `body` is scratch space, kept by the caller from one write to the next
/// (a store of a thousand files is a few hundred KiB).
pub fn write(dir: &Path, files: &[SavedFile], body: &mut Vec<u8>) -> Result<(), StoreError> {
    let current = dir.join(STORE_FILE);
    let tmp = dir.join(TMP_FILE);
    body.clear();
    serde_json::to_writer_pretty(
        &mut *body,
        &StoreFile {
            version: STORE_VERSION,
            files,
        },
    )
    .map_err(|source| StoreError::Parse {
        path: current.clone(),
        source,
    })?;
    // A temporary file left by a crash is removed (unlinking a planted
    // link removes the link, not its target), then created exclusively and
    // never through a link.
    remove_if_there(&tmp)?;
    let mut f = create_private(&tmp).map_err(io(&tmp, "cannot create"))?;
    f.write_all(body).map_err(io(&tmp, "cannot write"))?;
    f.sync_all().map_err(io(&tmp, "cannot fsync"))?;
    drop(f);
    if current.exists() {
        let prev_tmp = dir.join(PREVIOUS_TMP_FILE);
        remove_if_there(&prev_tmp)?;
        fs::hard_link(&current, &prev_tmp)
            .map_err(io(&prev_tmp, "cannot link the previous generation"))?;
        fs::rename(&prev_tmp, dir.join(PREVIOUS_FILE)).map_err(io(
            &prev_tmp,
            "cannot rename the previous generation into place",
        ))?;
    }
    fs::rename(&tmp, &current).map_err(io(&current, "cannot rename into place"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot fsync the state directory"))
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
    for name in [STORE_FILE, PREVIOUS_FILE] {
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
        assert_eq!(read_one(&state.join(STORE_FILE)).unwrap()[0].offset, 2);
        assert_eq!(read_one(&state.join(PREVIOUS_FILE)).unwrap()[0].offset, 1);
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
            b"{\"version\": 3, \"files\": [], \"more\": {}}",
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Newer { version: 3, .. }), "{e}");
        assert!(e.needs_operator());

        let moved = reset(dir.path()).unwrap();
        assert_eq!(moved.len(), 2);
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
