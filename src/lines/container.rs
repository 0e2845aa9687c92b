//! Container runtimes' log files (`container_format`): each framed line is
//! an entry a runtime wrapped around what the application wrote. The
//! [`Decoder`] strips the wrapper, so that a line is the application's
//! line, and merges a stream's partial entries into one line.
//!
//! - CRI (containerd, CRI-O): `<RFC 3339 time> <stdout|stderr> <P|F> <message>`;
//!   `P` is a partial entry, continued by the stream's next entry.
//! - Docker `json-file`: `{"log":"message\n","stream":"stdout","time":"..."}`;
//!   a `log` without its trailing `\n` is a partial entry.
//!
//! Pure: framed entries in, lines out, with no clock (the tailer decides
//! when a pending partial has waited too long and calls [`Decoder::cut`]).
//!
//! **Checkpoints across interleaved streams.** stdout and stderr entries
//! interleave in one file, so the pieces of a merged line can have the
//! other stream's lines between them. A line has one range, and the
//! watermark must never pass a piece whose line is not confirmed. So while
//! any stream has a partial pending, the decoder holds back every line
//! completed after the partial's first piece (a *group*, starting there).
//! When no partial is pending any more, the group comes out at once. A
//! group of one line keeps its own range; in a larger group every line
//! carries the group's whole range and is *tied* ([`Entry::tied`]): the
//! tailer hands the group off as one chunk, which the checkpoint table
//! confirms only when every line of it is confirmed, and acks nothing of
//! it by range (filtered and dead-lettered lines count in the chunk). A
//! tied line's own offset (`Entry::at`) is its first entry's. The tailer's
//! checkpoint when it stops is at most the group's start
//! ([`Decoder::pending_start`]), so a restart reads the group again whole.
//!
//! Bounds: a partial line pending more than `max_bytes`, or a group
//! holding more than [`MAX_HELD_BYTES`], is cut: every pending partial
//! comes out as a piece of its line (Head, then Middle), the group ends
//! there, and the line's next entries come out as its next pieces (the
//! oversize rule then applies to the pieces). A partial left at a file's
//! end, or pending past the timeout, is cut the same way and counted. An
//! entry that is neither format is shipped as it was written, counted.

use crate::lines::framing::{Entry, Line, Piece, Stream};
use crate::records::time::{TimeFormat, parse_time};

/// Bytes of complete lines a group may hold back while a partial is
/// pending, besides the partials themselves (at most a record's piece per
/// stream): with the framer's unfinished line, what a file's reading holds
/// outside the byte budget. The other stream writes a few lines while a
/// long line's entries are written; more than this cuts the partial.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// A partial line is sent unfinished after this long without a new entry
/// in its file. Runtimes write a long line's entries back to back, so a
/// partial waits this long only when its container stopped mid-line.
pub const PARTIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which runtime wrote the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerFormat {
    Cri,
    Docker,
    /// Each entry by its first byte: `{` is Docker's, else CRI's.
    Auto,
}

impl ContainerFormat {
    pub fn name(self) -> &'static str {
        match self {
            ContainerFormat::Cri => "cri",
            ContainerFormat::Docker => "docker",
            ContainerFormat::Auto => "auto",
        }
    }
}

/// One entry, unwrapped.
#[derive(Debug, PartialEq, Eq)]
struct Unwrapped {
    stream: Stream,
    /// The line continues in the stream's next entry.
    partial: bool,
    time_ms: Option<i64>,
    message: Message,
}

/// Where an entry's message is.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// The entry's bytes from this offset on (CRI): taken in place.
    From(usize),
    /// Unescaped from the entry (Docker's JSON).
    Owned(Vec<u8>),
}

/// A stream's line being merged from partial entries.
#[derive(Debug, Default)]
struct Partial {
    data: Vec<u8>,
    /// Range of the entries in `data` (`start` is meaningful only when
    /// `data` or `open` says something is pending).
    start: u64,
    end: u64,
    /// Whether an entry is pending (an empty partial entry still is).
    open: bool,
    time_ms: Option<i64>,
    /// Offset of the line's first entry.
    at: u64,
    /// Pieces of this line already emitted (it was cut).
    parts: u32,
}

/// What decoding found, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Entries in neither format, shipped as written.
    pub malformed: usize,
    /// Partial lines sent unfinished (at a file's end or after the
    /// timeout).
    pub unfinished: usize,
}

#[derive(Debug)]
pub struct Decoder {
    format: ContainerFormat,
    max_bytes: usize,
    strip_cr: bool,
    streams: [Partial; 2],
    /// Lines completed while the group is open.
    held: Vec<Line>,
    held_bytes: usize,
    /// Where the open group starts.
    group_start: Option<u64>,
    counts: Counts,
}

fn index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Decoder {
    /// A decoder of `format` whose merged lines are cut into pieces of at
    /// most `max_bytes`.
    pub fn new(format: ContainerFormat, max_bytes: usize, strip_cr: bool) -> Decoder {
        Decoder {
            format,
            max_bytes: max_bytes.max(1),
            strip_cr,
            streams: Default::default(),
            held: Vec::new(),
            held_bytes: 0,
            group_start: None,
            counts: Counts::default(),
        }
    }

    /// The counts so far, reset.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Where the open group starts, if one is open: nothing from there on
    /// has been emitted.
    pub fn pending_start(&self) -> Option<u64> {
        self.group_start
    }

    /// Decodes framed entries (emptying `framed`) into `out`.
    pub fn feed(&mut self, framed: &mut Vec<Line>, out: &mut Vec<Line>) {
        for entry in framed.drain(..) {
            self.take(entry, out);
        }
    }

    fn take(&mut self, raw: Line, out: &mut Vec<Line>) {
        // A piece of an over-long framed line is no entry either runtime
        // writes: it goes as it was written.
        let unwrapped = match raw.piece {
            Piece::Whole => self.unwrap(&raw.data),
            _ => None,
        };
        let Some(u) = unwrapped else {
            if matches!(raw.piece, Piece::Whole | Piece::Head) {
                self.counts.malformed += 1;
            }
            return self.complete(raw, out);
        };
        let (start, end) = (raw.start, raw.end);
        let message = match u.message {
            Message::From(k) => {
                let mut data = raw.data;
                data.drain(..k);
                data
            }
            Message::Owned(m) => m,
        };
        let s = index(u.stream);
        if self.streams[s].open && self.streams[s].data.len() + message.len() > self.max_bytes {
            self.cut(out, false);
        }
        let p = &mut self.streams[s];
        if !p.open {
            p.open = true;
            p.start = start;
            if p.parts == 0 {
                p.at = start;
                p.time_ms = u.time_ms;
            }
        }
        if p.data.is_empty() {
            p.data = message;
        } else {
            p.data.extend_from_slice(&message);
        }
        p.end = end;
        if u.partial {
            if self.group_start.is_none() {
                self.group_start = Some(p.start);
            }
            return;
        }
        let line = self.finish(s, true);
        self.complete(line, out);
    }

    /// The stream's pending line as a line: whole, or the next piece of a
    /// line already cut (`last` says whether it ends the line).
    fn finish(&mut self, s: usize, last: bool) -> Line {
        let stream = if s == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let p = &mut self.streams[s];
        let piece = match (p.parts, last) {
            (0, true) => Piece::Whole,
            (0, false) => Piece::Head,
            (_, false) => Piece::Middle,
            (_, true) => Piece::Tail,
        };
        let line = Line {
            data: std::mem::take(&mut p.data),
            piece,
            part: p.parts,
            start: p.start,
            end: p.end,
            entry: Some(Box::new(Entry {
                stream,
                time_ms: p.time_ms,
                at: p.at,
                tied: false,
            })),
        };
        p.open = false;
        p.parts = if last { 0 } else { p.parts + 1 };
        line
    }

    /// A line is complete: out at once, or held while a group is open.
    fn complete(&mut self, line: Line, out: &mut Vec<Line>) {
        if self.group_start.is_none() {
            out.push(line);
            return;
        }
        self.held_bytes += line.data.len();
        self.held.push(line);
        if self.streams.iter().all(|p| !p.open) {
            self.close_group(out);
        } else if self.held_bytes > MAX_HELD_BYTES {
            self.cut(out, false);
        }
    }

    /// Emits the open group: one line keeps its range, more are tied and
    /// come out in the order they start.
    fn close_group(&mut self, out: &mut Vec<Line>) {
        let Some(start) = self.group_start.take() else {
            return;
        };
        self.held_bytes = 0;
        if self.held.len() == 1 {
            out.append(&mut self.held);
            return;
        }
        let end = self.held.iter().map(|l| l.end).max().unwrap_or(start);
        // In the order the lines start in the file (each stream's lines
        // stay in their order).
        self.held.sort_by_key(Line::at);
        for mut line in self.held.drain(..) {
            let at = line.at();
            let entry = line.entry.get_or_insert_with(|| {
                Box::new(Entry {
                    stream: Stream::Stdout,
                    time_ms: None,
                    at,
                    tied: false,
                })
            });
            entry.tied = true;
            line.start = start;
            line.end = end;
            out.push(line);
        }
    }

    /// Ends what is pending: every partial line comes out as a piece of
    /// its line (its next entries are its next pieces), and the group
    /// with them. `unfinished` counts them as sent unfinished (the file
    /// ended or the timeout passed).
    pub fn cut(&mut self, out: &mut Vec<Line>, unfinished: bool) {
        for s in 0..2 {
            if self.streams[s].open {
                if unfinished {
                    self.counts.unfinished += 1;
                }
                let piece = self.finish(s, false);
                self.held.push(piece);
            }
        }
        if self.group_start.is_none() {
            // Only a partial of one stream, cut for its size.
            out.append(&mut self.held);
            return;
        }
        self.close_group(out);
    }

    /// Whether a partial line is pending.
    pub fn has_pending(&self) -> bool {
        self.streams.iter().any(|p| p.open)
    }

    fn unwrap(&self, data: &[u8]) -> Option<Unwrapped> {
        let docker = match self.format {
            ContainerFormat::Cri => false,
            ContainerFormat::Docker => true,
            ContainerFormat::Auto => data.first() == Some(&b'{'),
        };
        if docker {
            docker_entry(data, self.strip_cr)
        } else {
            cri_entry(data)
        }
    }
}

fn stream_of(name: &[u8]) -> Option<Stream> {
    match name {
        b"stdout" => Some(Stream::Stdout),
        b"stderr" => Some(Stream::Stderr),
        _ => None,
    }
}

fn time_of(text: &str) -> Option<i64> {
    parse_time(&TimeFormat::Rfc3339, text, 0)
}

/// `<time> <stream> <tag> <message>`; the tag is `P` or `F`, possibly
/// followed by `:`-separated flags.
fn cri_entry(data: &[u8]) -> Option<Unwrapped> {
    let mut parts = data.splitn(4, |&b| b == b' ');
    let time = parts.next()?;
    let stream = stream_of(parts.next()?)?;
    let tag = parts.next()?;
    let partial = match tag.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let time_ms = Some(time_of(std::str::from_utf8(time).ok()?)?);
    // The message starts after the tag's space (or is empty).
    let from = (time.len() + 1 + stream.name().len() + 1 + tag.len() + 1).min(data.len());
    Some(Unwrapped {
        stream,
        partial,
        time_ms,
        message: Message::From(from),
    })
}

#[derive(serde::Deserialize)]
struct DockerEntry<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    time: Option<std::borrow::Cow<'a, str>>,
}

/// `{"log":"...","stream":"...","time":"..."}`.
fn docker_entry(data: &[u8], strip_cr: bool) -> Option<Unwrapped> {
    let e: DockerEntry<'_> = serde_json::from_slice(data).ok()?;
    let stream = stream_of(e.stream.as_bytes())?;
    let log = e.log.as_bytes();
    let (partial, mut message) = match log.strip_suffix(b"\n") {
        Some(m) => (false, m),
        None => (true, log),
    };
    if !partial && strip_cr {
        message = message.strip_suffix(b"\r").unwrap_or(message);
    }
    Some(Unwrapped {
        stream,
        partial,
        time_ms: e.time.as_deref().and_then(time_of),
        message: Message::Owned(message.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::framing::Framer;

    fn decode(format: ContainerFormat, text: &[u8], max: usize) -> (Vec<Line>, Decoder) {
        let mut framed = Vec::new();
        Framer::new(0, 1 << 20, true).feed(text, &mut framed);
        let mut d = Decoder::new(format, max, true);
        let mut out = Vec::new();
        d.feed(&mut framed, &mut out);
        (out, d)
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.data).into_owned())
            .collect()
    }

    const T: &str = "2026-12-04T10:00:00.123456789Z";

    #[test]
    fn cri_entries_lose_their_wrapper_and_keep_stream_and_time() {
        let text = format!("{T} stdout F hello world\n{T} stderr F  two  spaces \n{T} stdout F\n");
        let (lines, d) = decode(ContainerFormat::Cri, text.as_bytes(), 1000);
        assert_eq!(texts(&lines), vec!["hello world", " two  spaces ", ""]);
        let e = lines[1].entry.as_ref().unwrap();
        assert_eq!(e.stream, Stream::Stderr);
        assert_eq!(e.time_ms, Some(1_796_378_400_123));
        assert!(!e.tied);
        assert_eq!(
            (lines[1].start, lines[1].end),
            (lines[0].end, lines[2].start)
        );
        assert!(!d.has_pending());
    }

    #[test]
    fn partial_entries_merge_and_interleaved_lines_tie_to_the_group() {
        let text = format!(
            "{T} stdout P aaa\n{T} stderr F err1\n{T} stdout P bbb\n{T} stdout F ccc\n{T} stderr F err2\n"
        );
        let (lines, d) = decode(ContainerFormat::Cri, text.as_bytes(), 1000);
        assert_eq!(texts(&lines), vec!["aaabbbccc", "err1", "err2"]);
        let entry_len = |i: usize| text.split_inclusive('\n').nth(i).unwrap().len() as u64;
        let group_end: u64 = (0..4).map(entry_len).sum();
        // The merged line and the stderr line between its pieces share the
        // group's range; each keeps its own offset.
        for l in &lines[..2] {
            assert_eq!((l.start, l.end), (0, group_end));
            assert!(l.tied());
        }
        assert_eq!(lines[0].at(), 0);
        assert_eq!(lines[1].at(), entry_len(0));
        assert!(!lines[2].tied());
        assert_eq!(lines[2].start, group_end);
        assert_eq!(d.pending_start(), None);
    }

    #[test]
    fn a_partial_at_the_end_is_held_until_cut_and_counted() {
        let text = format!("{T} stdout F one\n{T} stdout P half\n{T} stderr F e\n");
        let (lines, mut d) = decode(ContainerFormat::Cri, text.as_bytes(), 1000);
        assert_eq!(texts(&lines), vec!["one"]);
        assert_eq!(d.pending_start(), Some(lines[0].end));
        let mut out = Vec::new();
        d.cut(&mut out, true);
        assert_eq!(texts(&out), vec!["half", "e"]);
        assert_eq!(out[0].piece, Piece::Head);
        assert!(out.iter().all(|l| l.tied() && l.start == lines[0].end));
        assert_eq!(d.take_counts().unfinished, 1);
        // The line's rest, when it comes, is its tail.
        let mut framed = Vec::new();
        Framer::new(0, 1 << 20, true).feed(format!("{T} stdout F end\n").as_bytes(), &mut framed);
        let mut out = Vec::new();
        d.feed(&mut framed, &mut out);
        assert_eq!((out[0].piece, out[0].part), (Piece::Tail, 1));
    }

    #[test]
    fn a_long_merged_line_is_cut_into_pieces_of_the_bound() {
        let text = format!("{T} stdout P aaaa\n{T} stdout P bbbb\n{T} stdout F cc\n");
        let (lines, _) = decode(ContainerFormat::Cri, text.as_bytes(), 6);
        assert_eq!(texts(&lines), vec!["aaaa", "bbbbcc"]);
        assert_eq!(lines[0].piece, Piece::Head);
        assert_eq!(lines[1].piece, Piece::Tail);
        assert_eq!(
            lines[0].end, lines[1].start,
            "pieces keep their entries' ranges"
        );
    }

    #[test]
    fn docker_entries_and_auto_detection() {
        let text = format!(
            "{{\"log\":\"a \\\"q\\\"\\n\",\"stream\":\"stdout\",\"time\":\"{T}\"}}\n{{\"log\":\"par\",\"stream\":\"stderr\",\"time\":\"{T}\"}}\n{{\"log\":\"t\\r\\n\",\"stream\":\"stderr\",\"time\":\"{T}\"}}\n{T} stdout F cri too\n"
        );
        let (lines, d) = decode(ContainerFormat::Auto, text.as_bytes(), 1000);
        assert_eq!(texts(&lines), vec!["a \"q\"", "part", "cri too"]);
        assert_eq!(lines[1].entry.as_ref().unwrap().stream, Stream::Stderr);
        assert_eq!(d.counts, Counts::default());
        let (lines, _) = decode(ContainerFormat::Docker, text.as_bytes(), 1000);
        assert_eq!(lines.len(), 3, "a CRI line in a docker flow is malformed");
        assert!(lines[2].entry.is_none());
    }

    proptest::proptest! {
        /// The fast reading of runtimes' times agrees with the general
        /// parser, and refuses what is not that form.
        #[test]
        fn runtime_times_read_as_the_general_parser_reads_them(
            secs in 0i64..4_102_444_800, nanos in 0u32..1_000_000_000, digits in 0usize..10,
        ) {
            let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default();
            let mut text = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            if digits > 0 {
                let frac = format!("{nanos:09}");
                text.push('.');
                text.push_str(&frac[..digits.min(9)]);
            }
            text.push('Z');
            let general = chrono::DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(|t| t.timestamp_millis());
            proptest::prop_assert_eq!(crate::records::time::utc_ms(text.as_bytes()), general);
        }
    }

    #[test]
    fn other_time_forms_go_to_the_general_parser() {
        use crate::records::time::utc_ms;
        assert_eq!(utc_ms(b"2026-12-04T10:00:00+01:00"), None);
        assert_eq!(
            time_of("2026-12-04T10:00:00+01:00"),
            Some(1_796_374_800_000)
        );
        assert_eq!(utc_ms(b"2026-13-04T10:00:00Z"), None);
        assert_eq!(utc_ms(b"2026-12-04T10:00:00.Z"), None);
        assert_eq!(utc_ms(b"2026-12-04 10:00:00Z"), None);
    }

    #[test]
    fn malformed_entries_go_as_written_and_are_counted() {
        let text = format!(
            "not an entry\n{T} stdin F x\n{T} stdout X y\nbadtime stdout F z\n{T} stdout F ok\n"
        );
        let (lines, mut d) = decode(ContainerFormat::Cri, text.as_bytes(), 1000);
        assert_eq!(
            texts(&lines),
            vec![
                "not an entry".to_string(),
                format!("{T} stdin F x"),
                format!("{T} stdout X y"),
                "badtime stdout F z".to_string(),
                "ok".to_string()
            ]
        );
        assert_eq!(d.take_counts().malformed, 4);
    }

    proptest::proptest! {
        /// Whatever the interleaving of partial entries and however the
        /// file is read, each stream's lines come out whole and in order,
        /// and the hand-offs' ranges tile the file without overlap: a
        /// chunk never covers a piece of a line of another chunk.
        #[test]
        fn interleaved_partials_come_out_whole_in_chunks_that_tile_the_file(
            entries in proptest::collection::vec((0usize..2, proptest::bool::ANY, "[a-z]{0,5}"), 1..40),
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut text = String::new();
            let mut want: [Vec<String>; 2] = Default::default();
            let mut open = [String::new(), String::new()];
            let mut opened = [false, false];
            for (s, partial, msg) in &entries {
                opened[*s] = *partial;
                let name = ["stdout", "stderr"][*s];
                let tag = if *partial { "P" } else { "F" };
                text.push_str(&format!("{T} {name} {tag} {msg}\n"));
                open[*s].push_str(msg);
                if !*partial {
                    want[*s].push(std::mem::take(&mut open[*s]));
                }
            }
            let bytes = text.as_bytes();
            let mut framer = Framer::new(0, 1 << 20, true);
            let mut d = Decoder::new(ContainerFormat::Cri, 1 << 20, true);
            let (mut at, mut next) = (0usize, 0u64);
            let mut got: [Vec<String>; 2] = Default::default();
            let mut cuts = cuts.into_iter().cycle();
            // The file's end cuts what is still partial.
            for s in 0..2 {
                if opened[s] {
                    want[s].push(std::mem::take(&mut open[s]));
                }
            }
            let mut ended = false;
            while !ended {
                let mut out = Vec::new();
                if at < bytes.len() {
                    let n = cuts.next().unwrap_or(1).min(bytes.len() - at);
                    let mut framed = Vec::new();
                    framer.feed(&bytes[at..at + n], &mut framed);
                    at += n;
                    d.feed(&mut framed, &mut out);
                } else {
                    d.cut(&mut out, true);
                    ended = true;
                }
                if out.is_empty() {
                    continue;
                }
                let first = out.iter().map(|l| l.start).min().unwrap_or(0);
                let last = out.iter().map(|l| l.end).max().unwrap_or(0);
                proptest::prop_assert_eq!(first, next, "chunks tile the file");
                next = last;
                for l in &out {
                    proptest::prop_assert!(l.start <= l.at() && l.at() < l.end);
                    let untied_overlap = out.iter().any(|m| {
                        !(std::ptr::eq(l, m) || (l.tied() && m.tied()))
                            && m.start < l.end && l.start < m.end
                    });
                    proptest::prop_assert!(!untied_overlap, "only tied lines share a range");
                    let e = l.entry.as_ref().map(|e| e.stream);
                    let s = if e == Some(Stream::Stderr) { 1 } else { 0 };
                    got[s].push(String::from_utf8_lossy(&l.data).into_owned());
                }
            }
            proptest::prop_assert_eq!(d.pending_start().unwrap_or(framer.consumed()), next);
            for s in 0..2 {
                proptest::prop_assert_eq!(&got[s], &want[s]);
            }
        }
    }
}
