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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Md5::digest(head);
        let mut md5 = String::with_capacity(32);
        for b in digest.iter() {
            md5.push(char::from(HEX[usize::from(b >> 4)]));
            md5.push(char::from(HEX[usize::from(b & 15)]));
        }
        Fingerprint {
            len: head.len() as u64,
            md5,
        }
    }
}

/// A file's first bytes, read once, against many fingerprints: each
/// length hashed once however many fingerprints have it. What a new file
/// is compared with every reading of its flow by (a copy of one of them?),
/// which read and hashed the file's head once per reading before.
pub struct Head {
    bytes: Vec<u8>,
    prints: Vec<Fingerprint>,
}

impl Head {
    /// The first [`Fingerprint::MAX_LEN`] bytes of `file` (fewer if it is
    /// shorter).
    pub fn of(file: &File) -> std::io::Result<Head> {
        Ok(Head {
            bytes: read_head(file, Fingerprint::MAX_LEN as usize)?,
            prints: Vec::new(),
        })
    }

    /// Whether the file's first `fp.len` bytes hash to `fp`, as
    /// [`head_matches`] says.
    pub fn matches(&mut self, fp: &Fingerprint) -> bool {
        let Some(head) = self.bytes.get(..fp.len as usize) else {
            return false;
        };
        if let Some(known) = self.prints.iter().find(|p| p.len == fp.len) {
            return known == fp;
        }
        let print = Fingerprint::of(head);
        let same = print == *fp;
        self.prints.push(print);
        same
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

/// Whether the first `fp.len` bytes of `file` still hash to `fp` (one
/// fingerprint; [`Head`] for many).
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A head read once says what reading it again for each
        /// fingerprint says, whatever the lengths and contents.
        #[test]
        fn a_head_read_once_matches_as_each_fingerprint_read_again(
            content in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            prints in proptest::collection::vec((0u64..300, proptest::collection::vec(0u8..3, 0..300)), 1..12),
        ) {
            let dir = tempfile::tempdir().map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let path = dir.path().join("f");
            std::fs::write(&path, &content).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let file = File::open(&path).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let mut head = Head::of(&file).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            for (len, other) in prints {
                let len = len.min(Fingerprint::MAX_LEN);
                // Half the fingerprints are of the file's own head, half of
                // something else of the same length.
                let of_file = Fingerprint::of(&content[..(len as usize).min(content.len())]);
                let of_other = Fingerprint::of(&other[..(len as usize).min(other.len())]);
                for fp in [of_file, of_other] {
                    proptest::prop_assert_eq!(head.matches(&fp), head_matches(&file, &fp));
                }
            }
        }
    }

    #[test]
    fn fingerprints_are_the_md5_of_the_head_in_lowercase_hex() {
        assert_eq!(
            Fingerprint::of(b"head").md5,
            "96e89a298e0a9f469b9ae458d6afae9f"
        );
        assert_eq!(Fingerprint::of(b"").md5, "d41d8cd98f00b204e9800998ecf8427e");
    }
}
