//! The JSON envelope (`format = "json"`): a record that says where its line
//! came from.
//!
//! Pure: [`Envelope::encode`] takes the line and what is known about it (read
//! time, host, path, flow, cloud metadata rendered once) and writes one JSON
//! object. No I/O, no clock: the tailer reads the clock once per hand-off.
//!
//! Rules:
//! - `message` is the line as a JSON string. A line that is not valid UTF-8
//!   is never altered silently: `message` holds it with U+FFFD for the
//!   invalid bytes, and `message_base64` (the message key plus `_base64`)
//!   holds its exact bytes.
//! - With `parse = "json"`, a line that is a JSON object goes into the record
//!   as the bytes it was written with (numbers such as `1e3` stay as they
//!   are): under `parsed_key`, or merged at the top when `parsed_key` is
//!   empty. Envelope keys win a collision, which is counted. A line that is
//!   not a JSON object stays a `message`, and the failure is counted. So
//!   does an object that strict readers refuse although its grammar is
//!   right (a number beyond a double's range such as `1e400`, a lone
//!   surrogate escape such as `"\ud800"`): one such value would make the
//!   whole record unreadable to them, so the line is kept as a string.
//! - A piece of a split line says which piece it is: `part_index` (from 0)
//!   and `part_last`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::lines::framing::{Line, Piece};
use crate::records::batcher::json_string as string;
use crate::records::parse::{Fields, Format, Kind, Value, parse};
use crate::records::time::{TimeFormat, parse_time, rfc3339_ms};

/// Where a parsed JSON line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Its members at the top of the record.
    Merge,
    /// The object under this key.
    Under(String),
}

/// The names of the envelope's fields; an empty name leaves the field out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldKeys {
    pub message: String,
    pub timestamp: String,
    pub host: String,
    pub path: String,
    pub offset: String,
    pub flow: String,
    pub fields: String,
    pub metadata: String,
    /// The record's id (`id_key`; off, "", by default): the same line gets
    /// the same id whenever it is sent, so consumers can drop duplicates.
    pub id: String,
    /// A container line's stream, stdout or stderr (`container_format`).
    pub stream: String,
    /// The file's pod (`metadata = ["kubernetes"]`).
    pub kubernetes: String,
}

impl Default for FieldKeys {
    fn default() -> FieldKeys {
        FieldKeys {
            message: "message".into(),
            timestamp: "timestamp".into(),
            host: "host".into(),
            path: "path".into(),
            offset: "offset".into(),
            flow: "flow".into(),
            fields: "fields".into(),
            metadata: "cloud".into(),
            id: String::new(),
            stream: "stream".into(),
            kubernetes: "kubernetes".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub keys: FieldKeys,
    /// Static fields (names and expanded values), sorted by name.
    pub fields: Vec<(String, String)>,
    /// `parse = "..."`: where a parsed line's fields go.
    pub parse: Option<Placement>,
    /// How lines are parsed (with `parse`).
    pub format: Format,
    /// Fields converted from strings (`types`).
    pub types: BTreeMap<String, Kind>,
    /// Where a parsed line's own time is and how it is written: the
    /// `timestamp` is then that time.
    pub time: Option<TimeRule>,
    /// A member with the read time (`read_time_key`; "" leaves it out).
    pub read_time_key: String,
}

/// The field holding a line's own time, and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRule {
    pub field: String,
    pub format: TimeFormat,
}

/// Cloud metadata as rendered for the envelope (the members of a JSON
/// object, one string per source: EC2, ECS), shared by every flow and
/// replaced when it is fetched again. Empty until fetched, or when a source
/// cannot be reached.
#[derive(Debug, Default)]
pub struct SharedMetadata(std::sync::RwLock<[std::sync::Arc<str>; 2]>);

impl SharedMetadata {
    /// The members a flow that asks for EC2 and/or ECS metadata puts in.
    pub fn members(&self, ec2: bool, ecs: bool) -> std::sync::Arc<str> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        match (ec2 && !m[0].is_empty(), ecs && !m[1].is_empty()) {
            (true, false) => m[0].clone(),
            (false, true) => m[1].clone(),
            (true, true) => format!("{},{}", m[0], m[1]).into(),
            (false, false) => std::sync::Arc::from(""),
        }
    }

    pub fn set(&self, ec2: &str, ecs: &str) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = [ec2.into(), ecs.into()];
    }
}

/// What is known about a line besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct LineContext<'a> {
    /// When the line was read, RFC 3339 UTC with milliseconds.
    pub timestamp: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub flow: &'a str,
    /// Cloud metadata as the members of a JSON object (`"k":"v",...`), or
    /// empty.
    pub metadata: &'a str,
    /// The file's pod as the members of a JSON object, or empty.
    pub kubernetes: &'a str,
    /// The id of the file's reading (`Checkpoints::reading`), for `id_key`.
    pub reading: u64,
    /// When the line was read, in ms since the epoch (syslog's year).
    pub read_ms: u64,
}

/// What encoding found, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// `parse = "json"` and the line was not a JSON object.
    pub parse_failed: bool,
    /// Members of a merged line left out because an envelope key won.
    pub collisions: usize,
    /// The line has an event time rule and its time did not read: its
    /// `timestamp` is the read time.
    pub time_failed: bool,
}

/// The most bytes the envelope may add around a line's escaped bytes,
/// besides the static fields and metadata: key names, a host name, a path
/// of `PATH_MAX` escaped, the timestamp, the offset and the part fields.
pub const ENVELOPE_RESERVE: usize = 32 * 1024;

/// The most bytes of cloud metadata a record carries (its members as
/// rendered; a larger set of tags is cut, with a warning).
pub const METADATA_MAX_BYTES: usize = 64 * 1024;

/// The most a file's pod may take in an envelope (`metadata =
/// ["kubernetes"]`): the path's fields, and what the API server adds
/// (labels, annotations), which is left out past it.
pub const KUBERNETES_MAX_BYTES: usize = 32 * 1024;

/// The most a line's bytes can grow when encoded: a control byte escapes to
/// six (`\u0001`), an invalid one becomes a three-byte U+FFFD, and a line
/// with an invalid byte is also copied in base64 (4/3 of it): at most
/// 6 + 4/3 per byte.
pub const WORST_EXPANSION: usize = 8;

/// How many bytes `data` takes as a record's message, counted in one pass
/// (two for a line that is not UTF-8): the JSON string with its quotes,
/// and for a line that is not UTF-8 also its base64 copy (U+FFFD, three
/// bytes, counted for each byte of a non-ASCII sequence there). An upper
/// bound of what [`Envelope::encode`] writes for the line; the members
/// around it are in [`ENVELOPE_RESERVE`].
pub fn message_len(data: &[u8]) -> usize {
    let valid = std::str::from_utf8(data).is_ok();
    let mut n = 2;
    for &b in data {
        n += match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            0x80.. if !valid => 3,
            _ => 1,
        };
    }
    if !valid {
        n += data.len().div_ceil(3) * 4 + 2;
    }
    n
}

/// The top-level members of a JSON object, values as written.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'de>, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value, read as strict readers read it (numbers within a
/// double's range, strings without lone surrogate escapes) and kept
/// nowhere. `IgnoredAny` would check only the grammar.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Strict, S::Error> {
                while seq.next_element::<Strict>()?.is_some() {}
                Ok(Strict)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Strict, M::Error> {
                while map.next_entry::<Strict, Strict>()?.is_some() {}
                Ok(Strict)
            }
        }
        d.deserialize_any(V)
    }
}

/// A number, written without an intermediate `String`.
fn number(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// Writes the member `name` (unless the name is empty, which removes it)
/// and notes the name as the envelope's own.
fn put<'s>(
    out: &mut Vec<u8>,
    own: &mut Vec<&'s str>,
    name: &'s str,
    value: impl FnOnce(&mut Vec<u8>),
) {
    if !name.is_empty() {
        key(out, name);
        value(out);
        own.push(name);
    }
}

/// Writes `"key":` after a comma when something came before.
fn key(out: &mut Vec<u8>, k: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    string(out, k);
    out.push(b':');
}

/// A record's id: the reading's id, the line's offset and its piece, in
/// fixed-width hex (36 characters). Two lines never share one: within a
/// reading offsets differ (and pieces of a split line their index), and a
/// file read again from its start as other content gets a new reading.
fn record_id(out: &mut Vec<u8>, reading: u64, line: &Line) {
    use std::io::Write;
    let _ = write!(out, "\"{reading:016x}{:016x}{:04x}\"", line.at(), line.part);
}

impl Envelope {
    /// The envelope of `line`, appended to `out`.
    pub fn encode(&self, line: &Line, ctx: LineContext<'_>, out: &mut Vec<u8>) -> Encoded {
        self.encode_parsed(line, ctx, self.fields_of(line), out)
    }

    /// The fields a parser other than JSON's finds in `line` (a piece of a
    /// split line is never parsed).
    pub fn fields_of(&self, line: &Line) -> Option<Fields> {
        let parsing = self.parse.is_some() && line.piece == Piece::Whole;
        match parsing && self.format != Format::Json {
            true => parse(&self.format, &self.types, &line.data),
            false => None,
        }
    }

    /// [`Envelope::encode`] with the line's fields found already (by
    /// [`Envelope::fields_of`]: once a line, for its key and its record).
    pub fn encode_parsed(
        &self,
        line: &Line,
        ctx: LineContext<'_>,
        fields: Option<Fields>,
        out: &mut Vec<u8>,
    ) -> Encoded {
        let mut result = Encoded::default();
        let k = &self.keys;
        out.push(b'{');
        // Which of the envelope's own keys are present (a merged line's
        // members with these names are left out).
        let mut own: Vec<&str> = Vec::with_capacity(10);
        let own = &mut own;
        // Parsed first: the line's own time is the `timestamp`; else the
        // container runtime's, else the read time.
        let event_time = self
            .event_time(line, fields.as_ref(), ctx.read_ms, &mut result)
            .or_else(|| rfc3339_ms(line.entry.as_ref()?.time_ms?));
        let timestamp = event_time.as_deref().unwrap_or(ctx.timestamp);
        put(out, own, &k.timestamp, |o| string(o, timestamp));
        put(out, own, &self.read_time_key, |o| string(o, ctx.timestamp));
        put(out, own, &k.host, |o| string(o, ctx.host));
        put(out, own, &k.path, |o| string(o, ctx.path));
        put(out, own, &k.offset, |o| number(o, line.at()));
        put(out, own, &k.flow, |o| string(o, ctx.flow));
        if let Some(e) = line.entry.as_ref() {
            put(out, own, &k.stream, |o| string(o, e.stream.name()));
        }
        put(out, own, &k.id, |o| record_id(o, ctx.reading, line));
        if line.piece != Piece::Whole {
            put(out, own, "part_index", |o| number(o, line.part));
            let last: &[u8] = if line.piece == Piece::Tail {
                b"true"
            } else {
                b"false"
            };
            put(out, own, "part_last", |o| o.extend_from_slice(last));
        }
        if !self.fields.is_empty() {
            self.put_fields(out, own);
        }
        for (key, members) in [(&k.metadata, ctx.metadata), (&k.kubernetes, ctx.kubernetes)] {
            if !members.is_empty() {
                put(out, own, key, |o| {
                    o.push(b'{');
                    o.extend_from_slice(members.as_bytes());
                    o.push(b'}');
                });
            }
        }
        // A piece of a split line is never a whole JSON object.
        let parsed = match (&self.parse, line.piece) {
            (Some(p), Piece::Whole) if self.format == Format::Json => {
                self.put_parsed(p, &line.data, own, out, &mut result)
            }
            (Some(p), Piece::Whole) => match &fields {
                Some(fields) => {
                    put_fields(p, fields, own, out, &mut result);
                    true
                }
                None => {
                    result.parse_failed = true;
                    false
                }
            },
            (Some(_), _) => {
                result.parse_failed = true;
                false
            }
            (None, _) => false,
        };
        if !parsed && !k.message.is_empty() {
            self.put_message(&line.data, out);
        }
        out.push(b'}');
        result
    }

    /// The line's own time as RFC 3339 (ms, UTC), when the flow has a time
    /// rule and the line's time reads; counted when it does not.
    fn event_time(
        &self,
        line: &Line,
        fields: Option<&Fields>,
        read_ms: u64,
        result: &mut Encoded,
    ) -> Option<String> {
        let rule = self.time.as_ref()?;
        if self.parse.is_none() || line.piece != Piece::Whole {
            return None;
        }
        let text = match fields {
            Some(fields) => fields
                .iter()
                .find(|(n, _)| *n == rule.field)
                .map(|(_, v)| match v {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    Value::Bool(b) => b.to_string(),
                }),
            // A JSON line: its member, read once more (only with a rule).
            None if self.format == Format::Json => {
                let v: serde_json::Value = serde_json::from_slice(&line.data).ok()?;
                match v.get(&rule.field)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            }
            // Not parsed: no time of its own to read.
            None => return None,
        };
        let time = text
            .and_then(|t| parse_time(&rule.format, &t, read_ms))
            .and_then(rfc3339_ms);
        result.time_failed = time.is_none();
        time
    }

    /// The static fields: under their key, or at the top when it is empty.
    fn put_fields<'s>(&'s self, out: &mut Vec<u8>, own: &mut Vec<&'s str>) {
        let under = !self.keys.fields.is_empty();
        if under {
            key(out, &self.keys.fields);
            out.push(b'{');
            own.push(&self.keys.fields);
        }
        for (name, value) in &self.fields {
            key(out, name);
            string(out, value);
            if !under {
                own.push(name);
            }
        }
        if under {
            out.push(b'}');
        }
    }

    fn put_message(&self, data: &[u8], out: &mut Vec<u8>) {
        key(out, &self.keys.message);
        match std::str::from_utf8(data) {
            Ok(s) => string(out, s),
            Err(_) => {
                string(out, &String::from_utf8_lossy(data));
                key(out, &format!("{}_base64", self.keys.message));
                out.push(b'"');
                base64_simd::STANDARD.encode_append(data, out);
                out.push(b'"');
            }
        }
    }

    /// Places a JSON object line; `false` (and counted) when it is not one.
    fn put_parsed(
        &self,
        placement: &Placement,
        data: &[u8],
        own: &[&str],
        out: &mut Vec<u8>,
        result: &mut Encoded,
    ) -> bool {
        let trimmed = data.trim_ascii();
        if trimmed.first() != Some(&b'{') {
            result.parse_failed = true;
            return false;
        }
        match placement {
            Placement::Under(name) => {
                if serde_json::from_slice::<Strict>(trimmed).is_err() {
                    result.parse_failed = true;
                    return false;
                }
                key(out, name);
                out.extend_from_slice(trimmed);
            }
            Placement::Merge => {
                let Ok(Members(members)) = serde_json::from_slice::<Members<'_>>(trimmed) else {
                    result.parse_failed = true;
                    return false;
                };
                // The keys were read strictly (as Strings); the values as
                // written, so they are checked once more.
                if members
                    .iter()
                    .any(|(_, v)| serde_json::from_str::<Strict>(v.get()).is_err())
                {
                    result.parse_failed = true;
                    return false;
                }
                for (name, value) in members {
                    if own.contains(&name.as_str()) {
                        result.collisions += 1;
                        continue;
                    }
                    key(out, &name);
                    out.extend_from_slice(value.get().as_bytes());
                }
            }
        }
        true
    }
}

/// A parser's fields: under their key, or at the top (but those named as
/// the envelope's own members, which are left out and counted).
fn put_fields(
    placement: &Placement,
    fields: &Fields,
    own: &[&str],
    out: &mut Vec<u8>,
    result: &mut Encoded,
) {
    if let Placement::Under(name) = placement {
        key(out, name);
        out.push(b'{');
        for (name, value) in fields {
            key(out, name);
            value.write_json(out);
        }
        out.push(b'}');
        return;
    }
    for (name, value) in fields {
        if own.contains(&name.as_ref()) {
            result.collisions += 1;
            continue;
        }
        key(out, name);
        value.write_json(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(data: &[u8], start: u64) -> Line {
        Line {
            data: data.to_vec(),
            piece: Piece::Whole,
            part: 0,
            start,
            end: start + data.len() as u64 + 1,
            entry: None,
        }
    }

    const CTX: LineContext<'static> = LineContext {
        timestamp: "2026-11-26T13:44:12.345Z",
        host: "web-1",
        path: "/var/log/app.log",
        flow: "app",
        metadata: "",
        kubernetes: "",
        reading: 0xabc,
        read_ms: 1_767_571_200_000,
    };

    fn encode(env: &Envelope, l: &Line) -> (serde_json::Value, Encoded, Vec<u8>) {
        let mut out = Vec::new();
        let r = env.encode(l, CTX, &mut out);
        let v = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        (v, r, out)
    }

    fn plain() -> Envelope {
        Envelope {
            keys: FieldKeys::default(),
            fields: vec![],
            parse: None,
            format: Format::Json,
            types: BTreeMap::new(),
            time: None,
            read_time_key: String::new(),
        }
    }

    #[test]
    fn every_field_is_there_under_its_default_name() {
        let (v, r, _) = encode(&plain(), &line(b"hello \"x\"\t", 42));
        assert_eq!(r, Encoded::default());
        assert_eq!(v["message"], "hello \"x\"\t");
        assert_eq!(v["timestamp"], CTX.timestamp);
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["path"], "/var/log/app.log");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["flow"], "app");
        assert!(v.get("message_base64").is_none());
        assert!(v.get("part_index").is_none());
    }

    #[test]
    fn keys_are_renamed_or_removed() {
        let mut env = plain();
        env.keys.message = "log".into();
        env.keys.host = String::new();
        env.keys.offset = "@offset".into();
        env.fields = vec![("pod".into(), "p-1".into())];
        let (v, _, _) = encode(&env, &line(b"x", 0));
        assert_eq!(v["log"], "x");
        assert!(v.get("host").is_none() && v.get("message").is_none());
        assert_eq!(v["@offset"], 0);
        assert_eq!(v["fields"]["pod"], "p-1");
        env.keys.fields = String::new();
        let (v, _, _) = encode(&env, &line(b"x", 0));
        assert_eq!(v["pod"], "p-1");
    }

    #[test]
    fn invalid_utf8_keeps_its_exact_bytes_in_base64() {
        let bytes = b"caf\xe9 \xff end";
        let (v, _, _) = encode(&plain(), &line(bytes, 0));
        assert_eq!(v["message"], "caf\u{fffd} \u{fffd} end");
        let b64 = v["message_base64"].as_str().unwrap_or_default();
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .as_deref(),
            Some(&bytes[..])
        );
    }

    #[test]
    fn json_lines_keep_their_bytes_under_a_key_or_merged() {
        let text = br#"{"level":"info","n":1e3,"host":"inner","deep":{"a":[1,2.50]}}"#;
        let mut env = plain();
        env.parse = Some(Placement::Under("json".into()));
        let (_, r, out) = encode(&env, &line(text, 0));
        assert_eq!(r, Encoded::default());
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.contains(r#""json":{"level":"info","n":1e3,"host":"inner","deep":{"a":[1,2.50]}}"#),
            "{s}"
        );
        assert!(!s.contains("\"message\""), "{s}");

        env.parse = Some(Placement::Merge);
        let (v, r, out) = encode(&env, &line(text, 0));
        assert_eq!(r.collisions, 1, "host is the envelope's");
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["level"], "info");
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.contains(r#""n":1e3"#) && s.contains(r#""deep":{"a":[1,2.50]}"#),
            "{s}"
        );

        // Objects by the grammar that strict readers refuse (found by the
        // envelope fuzz target) stay messages too, under both placements.
        let refused = [
            &br#"{"a":1e333333,"b":[1.50]}"#[..],
            br#"{"a":{"b":[-1E+400]}}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"\udc00":1}"#,
        ];
        for placement in [Placement::Merge, Placement::Under("json".into())] {
            env.parse = Some(placement);
            let cases = [&b"plain text"[..], b"[1,2]", b"{\"open\":", b"{} trailing"];
            for not_object in cases.into_iter().chain(refused) {
                let (v, r, _) = encode(&env, &line(not_object, 0));
                assert!(r.parse_failed, "{not_object:?}");
                assert_eq!(v["message"], String::from_utf8_lossy(not_object).as_ref());
            }
            // Large integers and tiny numbers are read (as doubles) by them.
            let fine =
                br#"{"big":123456789012345678901234567890,"tiny":1e-400,"s":"\ud83d\ude00"}"#;
            let (_, r, out) = encode(&env, &line(fine, 0));
            assert!(!r.parse_failed, "{}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn pieces_say_which_they_are() {
        let mut l = line(b"abc", 0);
        l.piece = Piece::Middle;
        l.part = 3;
        let (v, _, _) = encode(&plain(), &l);
        assert_eq!(v["part_index"], 3);
        assert_eq!(v["part_last"], false);
        l.piece = Piece::Tail;
        let (v, _, _) = encode(&plain(), &l);
        assert_eq!(v["part_last"], true);
    }

    #[test]
    fn metadata_is_an_object_under_its_key() {
        let ctx = LineContext {
            metadata: r#""instance_id":"i-1","region":"eu-west-1""#,
            ..CTX
        };
        let mut out = Vec::new();
        plain().encode(&line(b"x", 0), ctx, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["cloud"]["instance_id"], "i-1");
    }

    proptest::proptest! {
        /// Any bytes make one valid JSON object whose message (or its base64
        /// copy) gives the bytes back, within the worst-case growth.
        #[test]
        fn any_line_encodes_to_json_that_gives_it_back(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut out = Vec::new();
            plain().encode(&line(&data, 7), CTX, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let back = match v.get("message_base64") {
                Some(b) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(b.as_str().unwrap_or_default()).unwrap_or_default()
                }
                None => v["message"].as_str().unwrap_or_default().as_bytes().to_vec(),
            };
            proptest::prop_assert_eq!(back, data.clone());
            proptest::prop_assert!(out.len() <= data.len() * WORST_EXPANSION + 300);
        }
    }

    #[test]
    fn parsed_fields_go_under_their_key_or_merge_without_taking_own_names() {
        let mut env = plain();
        env.format = Format::Logfmt;
        env.types = [("took".to_string(), Kind::Int)].into();
        env.parse = Some(Placement::Under("log".into()));
        let l = line(br#"level=warn took=12 host=db-1 msg="a \"b\"""#, 0);
        let (v, r, _) = encode(&env, &l);
        assert_eq!(v["log"]["level"], "warn");
        assert_eq!(v["log"]["took"], 12);
        assert_eq!(v["log"]["host"], "db-1");
        assert_eq!(v["log"]["msg"], "a \"b\"");
        assert_eq!(v["host"], "web-1", "the envelope's own host stays");
        assert!(v.get("message").is_none(), "a parsed line is its fields");
        assert_eq!(r, Encoded::default());
        env.parse = Some(Placement::Merge);
        let (v, r, _) = encode(&env, &l);
        assert_eq!(v["level"], "warn");
        assert_eq!(v["took"], 12);
        assert_eq!(
            v["host"], "web-1",
            "a field never takes an own member's name"
        );
        assert_eq!(r.collisions, 1);
        // A line that does not match is a message, and counted.
        let (v, r, _) = encode(&env, &line(b"plain words", 0));
        assert_eq!(v["message"], "plain words");
        assert!(r.parse_failed);
    }

    #[test]
    fn the_lines_own_time_is_the_timestamp_and_the_read_time_can_stay() {
        let mut env = plain();
        env.format = Format::Syslog;
        env.parse = Some(Placement::Under("log".into()));
        env.time = Some(TimeRule {
            field: "time".into(),
            format: TimeFormat::Syslog,
        });
        env.read_time_key = "read_at".into();
        let l = line(b"Dec 31 23:59:59 db-1 cron[7]: done", 0);
        let (v, r, _) = encode(&env, &l);
        // Read on 2026-01-05: last year's December.
        assert_eq!(v["timestamp"], "2025-12-31T23:59:59.000Z");
        assert_eq!(v["read_at"], CTX.timestamp);
        assert!(!r.time_failed);
        // A time that does not read: the read time, counted.
        env.format = Format::Logfmt;
        env.time = Some(TimeRule {
            field: "ts".into(),
            format: TimeFormat::Rfc3339,
        });
        let (v, r, _) = encode(&env, &line(b"ts=yesterday level=info", 0));
        assert_eq!(v["timestamp"], CTX.timestamp);
        assert!(r.time_failed);
        // JSON lines: the member named by time_field.
        env.format = Format::Json;
        env.time = Some(TimeRule {
            field: "at".into(),
            format: TimeFormat::UnixMs,
        });
        let (v, r, _) = encode(&env, &line(br#"{"at":1767571200123,"x":1}"#, 0));
        assert_eq!(v["timestamp"], "2026-01-05T00:00:00.123Z");
        assert!(!r.time_failed);
    }
}
