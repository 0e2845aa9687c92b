//! `kinetail status`: what the checkpoint store says of each file, next to
//! what the file looks like now.
//!
//! It only reads: the store (a base the daemon replaces atomically and a
//! journal of whole lines it appends, a line cut short being skipped, so a
//! read never sees half a save) and the files' metadata. It never opens the
//! files nor takes a lock, so it can run beside the daemon without
//! disturbing it. The figures are as of the daemon's last save, at most
//! `checkpoint_interval_ms` old.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::input::identity::file_key;
use crate::state::store::{SavedFile, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub flow: String,
    /// Where the flow sends (`stream NAME` or `firehose NAME`), when the
    /// configuration still has the flow.
    pub destination: Option<String>,
    #[serde(serialize_with = "crate::state::store::serialize_path")]
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// The file's size now, when its last path still names it.
    pub size: Option<u64>,
    /// Bytes confirmed by the destination (the saved checkpoint).
    pub confirmed_offset: u64,
    /// Bytes written but not yet confirmed, when the size is known.
    pub bytes_behind: Option<u64>,
    pub last_sequence: Option<String>,
    pub last_confirmed_unix_ms: Option<u64>,
    /// `"active"`, or why the size is unknown.
    pub state: &'static str,
}

/// Where a saved file stands now: its size when its path still names it,
/// or why not.
pub fn size_now(f: &SavedFile) -> (Option<u64>, &'static str) {
    match std::fs::metadata(&f.path) {
        Ok(m) if file_key(&m) == f.key => (Some(m.len()), "active"),
        Ok(_) => (None, "rotated: the path names another file now"),
        Err(_) => (None, "gone: the path names no file now"),
    }
}

/// A file's lag: bytes written but not yet confirmed, when its size is
/// known. `/metrics` and `kinetail status` both show it.
pub fn file_lag(f: &SavedFile, size: Option<u64>) -> Option<u64> {
    size.map(|s| s.saturating_sub(f.offset))
}

/// The status of every file in the store of `state_dir`.
pub fn collect(state_dir: &Path) -> Result<Vec<FileStatus>, StoreError> {
    let files = crate::state::store::load(state_dir)?;
    Ok(files
        .into_iter()
        .map(|f| {
            let (size, state) = size_now(&f);
            let bytes_behind = file_lag(&f, size);
            FileStatus {
                flow: f.flow,
                destination: None,
                path: f.path,
                dev: f.key.dev,
                ino: f.key.ino,
                size,
                confirmed_offset: f.offset,
                bytes_behind,
                last_sequence: f.last_sequence,
                last_confirmed_unix_ms: f.last_confirmed_unix_ms,
                state,
            }
        })
        .collect())
}

/// A human-readable table of `files`; `now_ms` is used for "ago" times.
pub fn render(files: &[FileStatus], now_ms: u64) -> String {
    let mut out = String::from(
        "FLOW\tDESTINATION\tPATH\tIDENTITY\tSIZE\tCONFIRMED\tBEHIND\tLAST SEQUENCE\tLAST CONFIRMED\n",
    );
    for f in files {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let ago = f
            .last_confirmed_unix_ms
            .map(|t| format!("{:.1}s ago", now_ms.saturating_sub(t) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{}\t{}\t{}\t{}:{}\t{}\t{}\t{}\t{}\t{}{}\n",
            f.flow,
            f.destination.as_deref().unwrap_or("-"),
            crate::redact::path(&f.path),
            f.dev,
            f.ino,
            opt(f.size),
            f.confirmed_offset,
            opt(f.bytes_behind),
            f.last_sequence.as_deref().unwrap_or("-"),
            ago,
            if f.state == "active" {
                String::new()
            } else {
                format!("\t({})", f.state)
            },
        ));
    }
    out
}
