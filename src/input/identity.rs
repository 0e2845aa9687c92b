//! File identity: what makes a file the same file across renames and
//! different from a new file on a reused inode. `(device, inode)` from the
//! kernel, plus a hash of the file's first bytes.
//!
//! Discovery, the tailer, the checkpoint table and `status` all need it;
//! it depends on nothing of theirs.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Serialize};

/// A file as the kernel knows it. Stable across renames; reused after a
/// delete, which is why a [`Fingerprint`] goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// A hash of the first `len` bytes of a file (at most
/// [`Fingerprint::MAX_LEN`]), so that a new file on a reused inode is not
/// taken for the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub md5: String,
}

impl Fingerprint {
    pub const MAX_LEN: u64 = 256;

    pub fn of(head: &[u8]) -> Fingerprint {
        use md5::{Digest, Md5};
        let digest = Md5::digest(head);
        Fingerprint {
            len: head.len() as u64,
            md5: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// The first `len` bytes of a file, or fewer if it is shorter.
pub fn read_head(file: &File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; len];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    Ok(head)
}

/// Reads the fingerprint of an open file: a hash of its first bytes.
pub fn fingerprint(file: &File) -> std::io::Result<Fingerprint> {
    Ok(Fingerprint::of(&read_head(
        file,
        Fingerprint::MAX_LEN as usize,
    )?))
}

/// Whether the first `fp.len` bytes of `file` still hash to `fp`.
pub fn head_matches(file: &File, fp: &Fingerprint) -> bool {
    match read_head(file, fp.len as usize) {
        Ok(head) => head.len() as u64 == fp.len && Fingerprint::of(&head) == *fp,
        Err(_) => false,
    }
}

/// Whether `file` still begins with exactly `head` (at most
/// [`Fingerprint::MAX_LEN`] bytes): the tailer's check after every read,
/// compared byte for byte without hashing or allocating.
pub fn head_is(file: &File, head: &[u8]) -> bool {
    let mut buf = [0u8; Fingerprint::MAX_LEN as usize];
    let Some(buf) = buf.get_mut(..head.len()) else {
        return false;
    };
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    buf == head
}

/// The identity of an open file.
pub fn file_key(meta: &std::fs::Metadata) -> FileKey {
    FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}
