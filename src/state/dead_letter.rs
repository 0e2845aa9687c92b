//! The dead-letter file (`STATE_DIR/dead-letter.jsonl`): records kinetail
//! will not ship (rejected by Kinesis, or cut off by the oversize policy),
//! written durably with where they came from and why, before they count as
//! done. The tailer and the lanes both write here; neither owns it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backoff::slow_backoff;
use crate::records::batcher::Record;

/// Name of the dead-letter file inside `state_dir`.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";

/// Appends records that cannot be shipped to a JSON-lines file, durably.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetter {
    pub fn new(state_dir: &Path) -> DeadLetter {
        DeadLetter {
            path: state_dir.join(DEAD_LETTER_FILE),
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record durably, retrying with backoff until it is written
    /// (a full disk, say, is logged and waited out): the caller may ack the
    /// record once this returns, and never before.
    pub async fn write_until_written(
        self: &Arc<Self>,
        flow: &str,
        source: &Path,
        r: &Record,
        reason: &str,
    ) {
        let mut wait = slow_backoff();
        loop {
            let (dl, f, src, rec, why) = (
                self.clone(),
                flow.to_string(),
                source.to_path_buf(),
                r.clone(),
                reason.to_string(),
            );
            match tokio::task::spawn_blocking(move || dl.write(&f, &src, &rec, &why)).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::error!(path = %crate::redact::path(&self.path), error = %e, "cannot write the dead-letter file; retrying")
                }
                Err(e) => tracing::error!(error = %e, "dead-letter writer failed; retrying"),
            }
            tokio::time::sleep(wait.next().unwrap_or(Duration::from_secs(30))).await;
        }
        tracing::warn!(flow, path = %crate::redact::path(source), offset = r.start, bytes = r.data.len(), reason, "record dead-lettered");
    }

    /// Writes one entry and fsyncs it. Only after this returns `Ok` may the
    /// record be acked.
    pub fn write(
        &self,
        flow: &str,
        source: &Path,
        r: &Record,
        reason: &str,
    ) -> std::io::Result<()> {
        let entry = serde_json::json!({
            "time_unix_ms": crate::clock::now_ms(),
            "flow": flow,
            "path": source.display().to_string(),
            "start_offset": r.start,
            "end_offset": r.end,
            "reason": reason,
            "partition_key": r.key,
        });
        // The data (up to 1 MiB) is encoded straight into the line, the one
        // large buffer this takes.
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.pop(); // the closing brace
        line.reserve(base64_simd::STANDARD.encoded_length(r.data.len()) + 24);
        line.extend_from_slice(b",\"data_base64\":\"");
        base64_simd::STANDARD.encode_append(&r.data, &mut line);
        line.extend_from_slice(b"\"}\n");
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            // Raw log data: readable by kinetail's user only, and never
            // written through a link planted at its name.
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.path)?,
            );
        }
        match guard.as_mut() {
            Some(f) => {
                f.write_all(&line)?;
                f.sync_data()
            }
            None => Err(std::io::Error::other("dead-letter file not open")),
        }
    }
}
