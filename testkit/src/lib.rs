//! What the integration tests (`tests/it`) and the benchmark (`bench/`)
//! share: a scratch directory, /proc figures of a process, the kinetail
//! binary with test credentials, and a stub HTTP server for stand-ins.

pub mod http;
pub mod procfs;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory with an empty `logs/`, removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A scratch directory; panics when none can be made (tests only).
    pub fn new() -> Scratch {
        match Scratch::try_new() {
            Ok(s) => s,
            Err(e) => panic!("cannot make a scratch directory: {e}"),
        }
    }

    pub fn try_new() -> std::io::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("kinetail-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        Ok(Scratch { dir })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn logs(&self) -> PathBuf {
        self.path("logs")
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// The `kinetail` binary beside the running test or bench binary (`cargo`
/// builds it there: `target/<profile>/`, whose `deps/` holds the tests).
pub fn kinetail_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    let dir = me.parent().unwrap_or(Path::new("."));
    let beside = dir.join("kinetail");
    if beside.exists() {
        return beside;
    }
    dir.parent().unwrap_or(dir).join("kinetail")
}

/// `kinetail`, with credentials a stand-in accepts, no instance metadata
/// lookups, and nothing of the caller's AWS profile or region.
pub fn kinetail() -> Command {
    let mut c = Command::new(kinetail_bin());
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION");
    c
}
