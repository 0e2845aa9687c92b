//! Shaping: what framed lines become before they are keyed. The oversize
//! policy decides what happens to the pieces of a line too long for one
//! record, multi-line grouping joins lines into events, and the line
//! filters (`include_lines`, `exclude_lines`) leave lines out.
//!
//! Pure: the [`Shaper`] takes framed lines and returns the lines to send and
//! the lines to dead-letter (with the reason); the tailer writes those and
//! owns the clock that decides when a pending event has waited long enough.

use std::time::Duration;

use crate::config::{FlowSettings, Oversize};
use crate::lines::container::{Counts, Decoder, PARTIAL_TIMEOUT};
use crate::lines::framing::{Line, Piece};
use crate::lines::multiline::Grouper;
use crate::re::Re;
#[cfg(test)]
use crate::records::batcher::MAX_BYTES_PER_RECORD;
use crate::records::batcher::RecordLimit;
use crate::records::envelope::{
    ENVELOPE_RESERVE, KUBERNETES_MAX_BYTES, METADATA_MAX_BYTES, WORST_EXPANSION, message_len,
};

/// Appended to the part of a truncated line that is sent.
pub const TRUNCATION_MARKER: &[u8] = b" [truncated by kinetail]";

/// How much of a record a flow's line may take, and how a line is counted
/// in it: a line is cut only when its record would pass the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// What the line's bytes may count, as encoded: the record's limit
    /// less the longest partition key of the flow, compression's margin
    /// and, in an envelope, the members around the message.
    room: usize,
    envelope: bool,
}

impl Fit {
    /// The fit of a flow's lines in its destination's records.
    pub fn new(settings: &FlowSettings) -> Fit {
        Fit::for_limit(settings, settings.destination.limits().record)
    }

    /// The fit of a flow's lines in a destination's records.
    pub fn for_limit(settings: &FlowSettings, limit: RecordLimit) -> Fit {
        let record = &settings.record;
        let key = if limit.key_counts {
            settings.partition_key.max_bytes()
        } else {
            0
        };
        // Firehose's records end with the newline the flow adds.
        let newline = usize::from(settings.destination.is_firehose());
        let limit = limit.bytes - key - newline;
        let room = limit - record.compression.margin(limit);
        match &record.envelope {
            None => Fit {
                room,
                envelope: false,
            },
            Some(env) => {
                let fields: usize = env
                    .fields
                    .iter()
                    .map(|(k, v)| message_len(k.as_bytes()) + message_len(v.as_bytes()) + 2)
                    .sum();
                let pods = settings
                    .record
                    .metadata
                    .contains(&crate::config::MetadataSource::Kubernetes);
                let reserve = ENVELOPE_RESERVE
                    + fields
                    + METADATA_MAX_BYTES
                    + if pods { KUBERNETES_MAX_BYTES } else { 0 };
                Fit {
                    room: room.saturating_sub(reserve),
                    envelope: true,
                }
            }
        }
    }

    /// What `data` counts against the room.
    pub fn cost(&self, data: &[u8]) -> usize {
        if self.envelope {
            message_len(data)
        } else {
            data.len()
        }
    }

    /// Whether `data` fits without counting it byte by byte.
    fn surely_fits(&self, data: &[u8]) -> bool {
        let grow = if self.envelope { WORST_EXPANSION } else { 1 };
        data.len() * grow + 2 <= self.room
    }

    pub fn fits(&self, data: &[u8]) -> bool {
        self.surely_fits(data) || self.cost(data) <= self.room
    }

    /// The longest prefix of `data` that fits with `extra` bytes after it
    /// (on a character boundary when `data` is UTF-8); at least one byte.
    fn prefix(&self, data: &[u8], extra: &[u8]) -> usize {
        let text = std::str::from_utf8(data).ok();
        // Text is cut between characters, so that each piece stays text
        // (and the count grows with the prefix).
        let boundary = |mut k: usize| {
            if let Some(t) = text {
                while k > 1 && !t.is_char_boundary(k) {
                    k -= 1;
                }
            }
            k
        };
        let fits = |k: usize| {
            let mut d = data[..boundary(k)].to_vec();
            d.extend_from_slice(extra);
            self.fits(&d)
        };
        let (mut lo, mut hi) = (1, data.len());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) { lo = mid } else { hi = mid - 1 }
        }
        boundary(lo)
    }
}

/// The longest piece framing cuts an over-long line into, for a flow: a
/// line of that length fits one record when its bytes need no escaping.
/// A line that fits framing but not its record once encoded (or once the
/// truncation marker is added) is cut again by [`Shaper::fit`], which
/// counts it exactly.
pub fn max_line_piece(settings: &FlowSettings) -> usize {
    let fit = Fit::new(settings);
    let quotes = if fit.envelope { 2 } else { 0 };
    fit.room - quotes
}

/// A line that is not sent, and why.
pub type Dead = (Line, &'static str);

#[derive(Debug)]
pub struct Shaper {
    fit: Fit,
    /// Pieces [`Shaper::fit`] added to the line being cut, so that the
    /// framer's later pieces of it are numbered after them.
    extra_parts: u32,
    oversize: Oversize,
    /// A container runtime's entries into lines, first (`container_format`).
    decoder: Option<Decoder>,
    grouper: Option<Grouper>,
    include: Vec<Re>,
    exclude: Vec<Re>,
}

impl Shaper {
    pub fn new(settings: &FlowSettings) -> Shaper {
        // An event is bounded like a line, so it too fits once shaped.
        let grouper = settings.multiline.clone().map(|mut m| {
            m.max_bytes = m.max_bytes.min(max_line_piece(settings));
            Grouper::new(m)
        });
        let decoder = settings
            .container_format
            .map(|c| Decoder::new(c, max_line_piece(settings), settings.strip_cr));
        Shaper {
            fit: Fit::new(settings),
            extra_parts: 0,
            oversize: settings.oversize,
            decoder,
            grouper,
            include: settings.record.include_lines.clone(),
            exclude: settings.record.exclude_lines.clone(),
        }
    }

    /// Leaves out of `lines` what the line filters reject (a multi-line
    /// event is matched as a whole; a piece of a split line by itself) and
    /// returns it. The caller counts it as done.
    pub fn filter(&self, lines: &mut Vec<Line>) -> Vec<Line> {
        if self.include.is_empty() && self.exclude.is_empty() {
            return Vec::new();
        }
        let keep = |l: &Line| {
            (self.include.is_empty() || self.include.iter().any(|re| re.is_match(&l.data)))
                && !self.exclude.iter().any(|re| re.is_match(&l.data))
        };
        let (kept, out): (Vec<Line>, Vec<Line>) = lines.drain(..).partition(keep);
        *lines = kept;
        out
    }

    /// Shapes `framed` (emptying it): lines to send go to `ready`, lines not
    /// to send go to `dead`. Returns whether a line went into something
    /// pending (a multi-line event, a partial container line): its flush
    /// timeout starts again.
    pub fn shape(
        &mut self,
        framed: &mut Vec<Line>,
        ready: &mut Vec<Line>,
        dead: &mut Vec<Dead>,
    ) -> bool {
        match self.decoder.as_mut() {
            Some(d) => {
                // Any entry restarts a pending partial's timeout.
                let entries = !framed.is_empty();
                let mut decoded = Vec::with_capacity(framed.len());
                d.feed(framed, &mut decoded);
                self.shape_lines(&mut decoded, ready, dead) || entries
            }
            None => self.shape_lines(framed, ready, dead),
        }
    }

    /// [`Shaper::shape`] after the container decoder.
    fn shape_lines(
        &mut self,
        framed: &mut Vec<Line>,
        ready: &mut Vec<Line>,
        dead: &mut Vec<Dead>,
    ) -> bool {
        let mut grouped = false;
        for mut line in framed.drain(..) {
            // A tied line never joins a multi-line event: its group is
            // handed off whole (`lines::container`).
            if line.piece == Piece::Whole && line.tied() {
                self.flush_events(ready);
                ready.push(line);
                continue;
            }
            if line.piece == Piece::Whole {
                match self.grouper.as_mut() {
                    Some(g) => {
                        g.push(line, ready);
                        grouped = true;
                    }
                    None => ready.push(line),
                }
                continue;
            }
            // Pieces of an over-long line are never joined to an event.
            self.flush_events(ready);
            match (self.oversize, line.piece) {
                (Oversize::Split, _) => ready.push(line),
                (Oversize::Truncate, Piece::Head) => {
                    line.data.extend_from_slice(TRUNCATION_MARKER);
                    ready.push(line);
                }
                (Oversize::Truncate, _) => dead.push((
                    line,
                    "line longer than a Kinesis record: truncated, this part was not sent",
                )),
                (Oversize::Drop, _) => {
                    dead.push((line, "line longer than a Kinesis record: dropped"))
                }
            }
        }
        grouped
    }

    /// Cuts again what framing let through whole but does not fit its
    /// record once encoded (a line of escaped bytes in an envelope, a
    /// multi-line event), by the flow's oversize rule, counting each line
    /// exactly: into pieces that fit (`split`), to the part that fits with
    /// the marker and the rest dead-lettered (`truncate`), or all of it
    /// dead-lettered (`drop`). Lines that fit are left as they are; only
    /// those that might not are counted byte by byte.
    pub fn fit(&mut self, lines: &mut Vec<Line>, dead: &mut Vec<Dead>) {
        if self.extra_parts == 0 && lines.iter().all(|l| self.fit.surely_fits(&l.data)) {
            return;
        }
        let mut out = Vec::with_capacity(lines.len());
        for mut line in lines.drain(..) {
            if line.piece != Piece::Whole {
                line.part += self.extra_parts;
            }
            let last_of_line = matches!(line.piece, Piece::Whole | Piece::Tail);
            if self.fit.fits(&line.data) {
                out.push(line);
            } else {
                self.cut(line, &mut out, dead);
            }
            if last_of_line {
                self.extra_parts = 0;
            }
        }
        *lines = out;
    }

    /// Cuts a line that does not fit (see [`Shaper::fit`]).
    fn cut(&mut self, mut line: Line, out: &mut Vec<Line>, dead: &mut Vec<Dead>) {
        match self.oversize {
            Oversize::Drop => dead.push((line, "line longer than a Kinesis record: dropped")),
            Oversize::Truncate => {
                // A head piece already carries the marker.
                if line.piece == Piece::Head && line.data.ends_with(TRUNCATION_MARKER) {
                    line.data
                        .truncate(line.data.len() - TRUNCATION_MARKER.len());
                }
                let k = self.fit.prefix(&line.data, TRUNCATION_MARKER);
                let (kept, rest) = split_line(line, k);
                let mut kept = kept;
                kept.data.extend_from_slice(TRUNCATION_MARKER);
                out.push(kept);
                dead.push((
                    rest,
                    "line longer than a Kinesis record: truncated, this part was not sent",
                ));
            }
            Oversize::Split => {
                let mut rest = line;
                while !self.fit.fits(&rest.data) {
                    let k = self.fit.prefix(&rest.data, b"");
                    let (piece, tail) = split_line(rest, k);
                    out.push(piece);
                    rest = tail;
                    self.extra_parts += 1;
                }
                out.push(rest);
            }
        }
    }

    /// Sends the pending multi-line event, if any.
    pub fn flush_events(&mut self, ready: &mut Vec<Line>) {
        if let Some(g) = self.grouper.as_mut() {
            g.flush(ready);
        }
    }

    /// Sends everything pending: partial container lines unfinished (and
    /// counted), then the multi-line event. For a file that ends (closed,
    /// truncated) or waited past a timeout.
    pub fn flush(&mut self, ready: &mut Vec<Line>, dead: &mut Vec<Dead>) {
        if let Some(d) = self.decoder.as_mut()
            && d.pending_start().is_some()
        {
            let mut cut = Vec::new();
            d.cut(&mut cut, true);
            self.shape_lines(&mut cut, ready, dead);
        }
        self.flush_events(ready);
    }

    /// Sends what has waited its timeout after `quiet` without a new line:
    /// partial container lines (unfinished, counted) after
    /// `PARTIAL_TIMEOUT`, a multi-line event after its own timeout. Whether
    /// anything went.
    pub fn flush_expired(
        &mut self,
        quiet: Duration,
        ready: &mut Vec<Line>,
        dead: &mut Vec<Dead>,
    ) -> bool {
        let before = ready.len() + dead.len();
        if let Some(d) = self.decoder.as_mut()
            && d.pending_start().is_some()
            && quiet >= PARTIAL_TIMEOUT
        {
            let mut cut = Vec::new();
            d.cut(&mut cut, true);
            self.shape_lines(&mut cut, ready, dead);
        }
        if self
            .grouper
            .as_ref()
            .is_some_and(|g| g.has_pending() && quiet >= g.timeout())
        {
            self.flush_events(ready);
        }
        ready.len() + dead.len() > before
    }

    /// How long what is pending waits for another line, if anything is
    /// pending: the shorter of a partial container line's timeout and a
    /// multi-line event's.
    pub fn pending_timeout(&self) -> Option<Duration> {
        let partial = self
            .decoder
            .as_ref()
            .filter(|d| d.pending_start().is_some())
            .map(|_| PARTIAL_TIMEOUT);
        let event = self
            .grouper
            .as_ref()
            .filter(|g| g.has_pending())
            .map(Grouper::timeout);
        partial.into_iter().chain(event).min()
    }

    /// Where the first byte not yet shaped into a line to send is, when
    /// something is pending (a group of container lines, a multi-line
    /// event): a stopping reading's checkpoint is at most there.
    pub fn pending_start(&self) -> Option<u64> {
        let group = self.decoder.as_ref().and_then(Decoder::pending_start);
        let event = self.grouper.as_ref().and_then(Grouper::pending_start);
        group.into_iter().chain(event).min()
    }

    /// What the container decoder found since the last call.
    pub fn take_counts(&mut self) -> Counts {
        self.decoder
            .as_mut()
            .map(Decoder::take_counts)
            .unwrap_or_default()
    }
}

/// `line` cut after `k` bytes of its data: the first part keeps the start
/// of its range and its place (a whole line becomes a head), the second
/// the rest of the range (terminator included) and is numbered next.
fn split_line(line: Line, k: usize) -> (Line, Line) {
    let mut data = line.data;
    let rest = data.split_off(k);
    // A container line's bytes are not the file's (the runtime's wrapper
    // is gone): both pieces keep its range, so a stop sends both or
    // neither. So do a tied line's.
    let cut = line.start + k as u64;
    let (first_end, second_start) = match line.entry {
        Some(_) => (line.end, line.start),
        None => (cut, cut),
    };
    let (first, second) = match line.piece {
        Piece::Whole => (Piece::Head, Piece::Tail),
        Piece::Head => (Piece::Head, Piece::Middle),
        Piece::Middle => (Piece::Middle, Piece::Middle),
        Piece::Tail => (Piece::Middle, Piece::Tail),
    };
    (
        Line {
            data,
            piece: first,
            part: line.part,
            start: line.start,
            end: first_end,
            entry: line.entry.clone(),
        },
        Line {
            data: rest,
            piece: second,
            part: line.part + 1,
            start: second_start,
            end: line.end,
            entry: line.entry,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::framing::Framer;

    fn settings(oversize: Oversize) -> FlowSettings {
        let policy = match oversize {
            Oversize::Split => "split",
            Oversize::Truncate => "truncate",
            Oversize::Drop => "drop",
        };
        flow(&format!("oversize = \"{policy}\"\n"))
    }

    fn flow(extra: &str) -> FlowSettings {
        let text = format!(
            "state_dir = \"/tmp/s\"\n[[flow]]\nname = \"a\"\npaths = [\"/l/*.log\"]\nstream = \"s\"\n{extra}"
        );
        match crate::config::Settings::from_toml(std::path::Path::new("t.toml"), &text) {
            Ok(mut s) => s.flows.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    /// The ranges of `ready` and `dead` together cover `0..end` once.
    fn assert_covers(ready: &[Line], dead: &[Dead], end: u64, what: &str) {
        let mut ranges: Vec<(u64, u64)> = ready
            .iter()
            .chain(dead.iter().map(|(l, _)| l))
            .map(|l| (l.start, l.end))
            .collect();
        ranges.sort();
        assert_eq!(ranges.first().map(|r| r.0), Some(0), "{what}");
        assert!(
            ranges.windows(2).all(|w| w[0].1 == w[1].0),
            "{what}: {ranges:?}"
        );
        assert_eq!(ranges.last().map(|r| r.1), Some(end), "{what}");
    }

    fn framed(text: &[u8], max: usize) -> Vec<Line> {
        let mut out = Vec::new();
        Framer::new(0, max, true).feed(text, &mut out);
        out
    }

    #[test]
    fn each_oversize_policy_sends_or_dead_letters_every_piece() {
        for (policy, sent, dead_n) in [
            (Oversize::Split, vec!["ok", "abcd", "efgh", "ij", "z"], 0),
            (
                Oversize::Truncate,
                vec!["ok", "abcd [truncated by kinetail]", "z"],
                2,
            ),
            (Oversize::Drop, vec!["ok", "z"], 3),
        ] {
            let mut shaper = Shaper::new(&settings(policy));
            let mut lines = framed(b"ok\nabcdefghij\nz\n", 4);
            let (mut ready, mut dead) = (Vec::new(), Vec::new());
            shaper.shape(&mut lines, &mut ready, &mut dead);
            let got: Vec<String> = ready
                .iter()
                .map(|l| String::from_utf8_lossy(&l.data).into_owned())
                .collect();
            assert_eq!(got, sent, "{policy:?}");
            assert_eq!(dead.len(), dead_n, "{policy:?}");
            // Every byte range is accounted for once, sent or dead.
            assert_covers(&ready, &dead, 16, &format!("{policy:?}"));
        }
    }

    #[test]
    fn filters_keep_what_include_matches_and_exclude_does_not() {
        let shaper = Shaper::new(&flow(
            "include_lines = [\"ERROR\", \"WARN\"]\nexclude_lines = [\"healthcheck\"]\n",
        ));
        let mut lines = framed(b"INFO a\nERROR b\nWARN healthcheck c\nWARN d\n", 100);
        let out = shaper.filter(&mut lines);
        let data = |v: &[Line]| {
            v.iter()
                .map(|l| String::from_utf8_lossy(&l.data).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(data(&lines), vec!["ERROR b", "WARN d"]);
        assert_eq!(data(&out), vec!["INFO a", "WARN healthcheck c"]);
    }

    /// Frames and fits `text` for a flow, as the tailer does.
    fn shaped(s: &FlowSettings, text: &[u8]) -> (Vec<Line>, Vec<Dead>) {
        let mut shaper = Shaper::new(s);
        let mut lines = framed(text, max_line_piece(s));
        let (mut ready, mut dead) = (Vec::new(), Vec::new());
        shaper.shape(&mut lines, &mut ready, &mut dead);
        shaper.fit(&mut ready, &mut dead);
        (ready, dead)
    }

    /// The record a line makes in an envelope flow, with the longest key.
    fn record_size(s: &FlowSettings, line: &Line) -> usize {
        let mut out = Vec::new();
        let long_path = "/".repeat(4096);
        let ctx = crate::records::envelope::LineContext {
            timestamp: "2026-12-04T00:00:00.000Z",
            host: "host",
            path: &long_path,
            flow: "a",
            metadata: "",
            kubernetes: "",
            reading: u64::MAX,
            read_ms: 0,
        };
        match &s.record.envelope {
            Some(env) => {
                env.encode(line, ctx, &mut out);
            }
            None => out = line.data.clone(),
        }
        out.len() + s.partition_key.max_bytes() + s.record.compression.margin(out.len())
    }

    #[test]
    fn long_lines_stay_whole_while_their_record_fits() {
        // 200 KB of plain text in an envelope, 1 MiB less the longest
        // random key raw: whole.
        for (extra, len) in [
            ("format = \"json\"\n", 200_000),
            ("format = \"json\"\n", 900_000),
            ("", MAX_BYTES_PER_RECORD - 16),
        ] {
            let s = flow(extra);
            let mut text = vec![b'a'; len];
            text.push(b'\n');
            let (ready, dead) = shaped(&s, &text);
            assert_eq!(ready.len(), 1, "{extra}{len}: one record");
            assert!(dead.is_empty());
            assert_eq!(ready[0].piece, Piece::Whole, "{extra}{len}");
            assert!(record_size(&s, &ready[0]) <= MAX_BYTES_PER_RECORD);
        }
    }

    #[test]
    fn lines_that_do_not_fit_once_encoded_are_cut_into_records_that_fit() {
        // Quotes escape to two bytes, control bytes to six, invalid bytes
        // to U+FFFD plus base64: each kind cut where it stops fitting.
        for (unit, policy) in [
            (&b"\""[..], "split"),
            (&b"\x01"[..], "split"),
            (&b"\xff"[..], "split"),
            ("é".as_bytes(), "split"),
            (&b"\""[..], "truncate"),
            (&b"\""[..], "drop"),
        ] {
            let s = flow(&format!("format = \"json\"\noversize = \"{policy}\"\n"));
            // Longer than framing's pieces for two-byte characters.
            let len = if unit.len() == 2 { 1_200_000 } else { 700_000 };
            let mut text: Vec<u8> = unit.iter().copied().cycle().take(len).collect();
            text.push(b'\n');
            let (ready, dead) = shaped(&s, &text);
            for l in &ready {
                assert!(
                    record_size(&s, l) <= MAX_BYTES_PER_RECORD,
                    "{policy} {unit:?}: a record of {} bytes",
                    record_size(&s, l)
                );
                if std::str::from_utf8(unit).is_ok() {
                    assert!(
                        std::str::from_utf8(&l.data).is_ok(),
                        "cut between characters"
                    );
                }
            }
            // Every byte of the line is sent or dead-lettered, once.
            assert_covers(&ready, &dead, text.len() as u64, policy);
            let parts: Vec<u32> = ready.iter().map(|l| l.part).collect();
            match policy {
                "split" => {
                    assert!(ready.len() >= 2, "{unit:?}: cut");
                    assert_eq!(parts, (0..ready.len() as u32).collect::<Vec<_>>());
                    let joined: Vec<u8> = ready.iter().flat_map(|l| l.data.clone()).collect();
                    assert_eq!(joined, text[..text.len() - 1], "{unit:?}");
                }
                "truncate" => {
                    assert_eq!(ready.len(), 1);
                    assert!(ready[0].data.ends_with(TRUNCATION_MARKER));
                    assert_eq!(dead.len(), 1);
                }
                _ => {
                    assert!(ready.is_empty());
                    assert_eq!(dead.len(), 1);
                }
            }
        }
    }
}
