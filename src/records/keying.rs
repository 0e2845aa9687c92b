//! Keying: the partition key of each record.
//!
//! Pure: a [`KeySpec`] takes the line's bytes, where it came from and a
//! random number chosen by the caller, and returns a key. No I/O, no clock,
//! no global random state, so property tests can drive it directly.
//!
//! Kinesis accepts keys of 1 to 256 Unicode characters. Every key leaving
//! this module is in that range: empty results fall back, long ones are cut
//! on a character boundary ([`cap_key`]).

use md5::{Digest, Md5};

use crate::records::batcher::MAX_KEY_CHARS;
use crate::records::kubernetes::PodFile;
use crate::records::parse::{Fields, Value};

/// Where a key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A random 64-bit number in hex: spreads records over all shards.
    Random,
    /// The MD5 of the data in hex: equal lines go to the same shard.
    Deterministic,
    Static(String),
    /// A capture group of a regex over the line's bytes.
    Regex {
        re: crate::re::Re,
        group: usize,
    },
    /// A dotted field path into a JSON object line.
    Json(Vec<String>),
    /// The path of the file the line came from.
    Path,
    /// The host's name.
    Hostname,
    /// A field of the file's pod, from its path (`records::kubernetes`).
    Kubernetes(String),
}

impl KeySource {
    /// The most bytes a key from this source takes.
    pub fn max_bytes(&self) -> usize {
        match self {
            // 64 bits in hex.
            KeySource::Random => 16,
            // An MD5 in hex.
            KeySource::Deterministic => 32,
            KeySource::Static(v) => v.len(),
            _ => crate::records::batcher::MAX_KEY_BYTES,
        }
    }
}

impl KeySpec {
    /// The most bytes a partition key from this spec takes: what a record
    /// must leave room for beside its data.
    pub fn max_bytes(&self) -> usize {
        self.primary.max_bytes().max(self.fallback.max_bytes())
    }
}

/// A primary source, and the fallback used when the primary yields nothing
/// (regex without a match, JSON without the field, empty capture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub primary: KeySource,
    pub fallback: KeySource,
}

/// What a key may be derived from besides the line itself.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    pub path: &'a str,
    pub hostname: &'a str,
    /// The line's fields, when a parser other than JSON's found them: a
    /// field key reads them instead of the line.
    pub fields: Option<&'a Fields>,
    /// The file's pod, when its path is kubelet's.
    pub pod: Option<&'a PodFile>,
}

impl KeySpec {
    /// The partition key for `data`. `random` is used by the random source.
    pub fn key(&self, data: &[u8], ctx: KeyContext<'_>, random: u64) -> String {
        if let Some(k) = extract(&self.primary, data, ctx, random) {
            return k;
        }
        if let Some(k) = extract(&self.fallback, data, ctx, random) {
            return k;
        }
        // Both sources gave nothing (an empty hostname, say): a random key
        // is always valid and never makes the record unshippable.
        hex64(random)
    }

    /// The spec as an inline TOML table, for `kinetail check`.
    pub fn describe(&self) -> String {
        fn src(s: &KeySource) -> String {
            match s {
                KeySource::Random => "\"random\"".into(),
                KeySource::Deterministic => "\"deterministic\"".into(),
                KeySource::Static(v) => format!("\"static\" ({v:?})"),
                KeySource::Regex { re, group } => {
                    format!("\"regex\" ({:?}, group {group})", re.as_str())
                }
                KeySource::Json(f) => format!("\"json\" ({:?})", f.join(".")),
                KeySource::Path => "\"path\"".into(),
                KeySource::Hostname => "\"hostname\"".into(),
                KeySource::Kubernetes(f) => format!("\"kubernetes\" ({f:?})"),
            }
        }
        format!(
            "{{ from = {}, fallback = {} }}",
            src(&self.primary),
            src(&self.fallback)
        )
    }
}

fn hex64(v: u64) -> String {
    hex(&v.to_be_bytes())
}

/// Lower-case hex of `bytes`. A key is made per line, so this avoids the
/// formatting machinery.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn nonempty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(cap_key(s)) }
}

fn extract(src: &KeySource, data: &[u8], ctx: KeyContext<'_>, random: u64) -> Option<String> {
    match src {
        KeySource::Random => Some(hex64(random)),
        KeySource::Deterministic => Some(hex(&Md5::digest(data))),
        KeySource::Static(v) => nonempty(v.clone()),
        KeySource::Regex { re, group } => {
            let caps = re.captures(data)?;
            let m = caps.get(*group)?;
            nonempty(String::from_utf8_lossy(m.as_bytes()).into_owned())
        }
        KeySource::Json(path) if ctx.fields.is_some() => {
            let [name] = path.as_slice() else {
                return None;
            };
            let fields = ctx.fields?;
            match &fields.iter().find(|(n, _)| n == name)?.1 {
                Value::Str(s) => nonempty(s.clone()),
                Value::Int(i) => Some(i.to_string()),
                Value::Float(f) => Some(f.to_string()),
                Value::Bool(b) => Some(b.to_string()),
            }
        }
        KeySource::Json(path) => {
            let value: serde_json::Value = serde_json::from_slice(data).ok()?;
            let mut cur = &value;
            for part in path {
                cur = cur.as_object()?.get(part)?;
            }
            match cur {
                serde_json::Value::String(s) => nonempty(s.clone()),
                serde_json::Value::Number(n) => nonempty(n.to_string()),
                serde_json::Value::Bool(b) => nonempty(b.to_string()),
                _ => None,
            }
        }
        KeySource::Path => nonempty(ctx.path.to_string()),
        KeySource::Hostname => nonempty(ctx.hostname.to_string()),
        KeySource::Kubernetes(field) => ctx.pod?.field(field).and_then(nonempty),
    }
}

/// Cuts `key` to at most [`MAX_KEY_CHARS`] characters, on a character
/// boundary.
pub fn cap_key(mut key: String) -> String {
    if let Some((idx, _)) = key.char_indices().nth(MAX_KEY_CHARS) {
        key.truncate(idx);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CTX: KeyContext<'static> = KeyContext {
        fields: None,
        path: "/var/log/app.log",
        hostname: "host-1",
        pod: None,
    };

    fn spec(primary: KeySource) -> KeySpec {
        KeySpec {
            primary,
            fallback: KeySource::Static("fb".into()),
        }
    }

    #[test]
    fn regex_takes_first_group_or_named_key() {
        let re = regex::bytes::Regex::new(r"^\S+ \S+ \S+ (\S+)").unwrap();
        let s = spec(KeySource::Regex {
            re: re.into(),
            group: 1,
        });
        assert_eq!(s.key(b"Jun 14 15:16:01 combo sshd[1]: x", CTX, 0), "combo");
        assert_eq!(s.key(b"short", CTX, 0), "fb");
        let re = regex::bytes::Regex::new(r"(\w+)=(?P<key>\w+)").unwrap();
        let s = spec(KeySource::Regex {
            re: re.into(),
            group: 2,
        });
        assert_eq!(s.key(b"user=alice", CTX, 0), "alice");
    }

    #[test]
    fn json_follows_dotted_fields() {
        let s = spec(KeySource::Json(vec!["user".into(), "id".into()]));
        assert_eq!(s.key(br#"{"user":{"id":"u7"}}"#, CTX, 0), "u7");
        assert_eq!(s.key(br#"{"user":{"id":42}}"#, CTX, 0), "42");
        assert_eq!(s.key(br#"{"user":{}}"#, CTX, 0), "fb");
        assert_eq!(s.key(br#"{"user":{"id":""}}"#, CTX, 0), "fb");
        assert_eq!(s.key(b"not json", CTX, 0), "fb");
    }

    #[test]
    fn other_sources() {
        assert_eq!(spec(KeySource::Path).key(b"x", CTX, 0), "/var/log/app.log");
        assert_eq!(spec(KeySource::Hostname).key(b"x", CTX, 0), "host-1");
        assert_eq!(
            spec(KeySource::Random).key(b"x", CTX, 255),
            "00000000000000ff"
        );
        let d = spec(KeySource::Deterministic);
        assert_eq!(d.key(b"abc", CTX, 1), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(d.key(b"abc", CTX, 1), d.key(b"abc", CTX, 2));
        let both_empty = KeySpec {
            primary: KeySource::Hostname,
            fallback: KeySource::Path,
        };
        let empty = KeyContext {
            fields: None,
            path: "",
            hostname: "",
            pod: None,
        };
        assert_eq!(both_empty.key(b"x", empty, 16), "0000000000000010");
    }

    proptest! {
        #[test]
        fn keys_are_always_1_to_256_chars(line in ".{0,400}", fallback_static in "\\PC{1,300}") {
            let re = regex::bytes::Regex::new(r"^(.*)$").unwrap();
            let s = KeySpec { primary: KeySource::Regex { re: re.into(), group: 1 }, fallback: KeySource::Static(fallback_static.clone()) };
            let k = s.key(line.as_bytes(), CTX, 7);
            let n = k.chars().count();
            prop_assert!((1..=MAX_KEY_CHARS).contains(&n));
            // The key is a prefix of what it was cut from.
            if !line.is_empty() {
                prop_assert!(line.starts_with(&k));
            } else {
                prop_assert!(fallback_static.starts_with(&k));
            }
        }

        #[test]
        fn cap_key_keeps_char_boundaries(s in "\\PC{0,600}") {
            let k = cap_key(s.clone());
            prop_assert!(k.chars().count() <= MAX_KEY_CHARS);
            prop_assert!(s.starts_with(&k));
            prop_assert_eq!(k.chars().count(), s.chars().count().min(MAX_KEY_CHARS));
        }
    }

    #[test]
    fn a_field_key_reads_a_parsers_fields() {
        let spec = KeySpec {
            primary: KeySource::Json(vec!["host".into()]),
            fallback: KeySource::Static("none".into()),
        };
        let fields: Fields = vec![
            ("host".into(), Value::Str("db-1".into())),
            ("code".into(), Value::Int(200)),
        ];
        let ctx = KeyContext {
            fields: Some(&fields),
            ..CTX
        };
        assert_eq!(spec.key(b"not json at all", ctx, 1), "db-1");
        let code = KeySpec {
            primary: KeySource::Json(vec!["code".into()]),
            fallback: KeySource::Static("none".into()),
        };
        assert_eq!(code.key(b"", ctx, 1), "200");
        // A dotted path has no meaning in flat fields: the fallback.
        let dotted = KeySpec {
            primary: KeySource::Json(vec!["a".into(), "b".into()]),
            fallback: KeySource::Static("none".into()),
        };
        assert_eq!(dotted.key(b"", ctx, 1), "none");
    }
}
