//! Shaping: what framed lines become before they are keyed. The oversize
//! policy decides what happens to the pieces of a line too long for one
//! record, multi-line grouping joins lines into events, and the line
//! filters (`include_lines`, `exclude_lines`) leave lines out.
//!
//! Pure: the [`Shaper`] takes framed lines and returns the lines to send and
//! the lines to dead-letter (with the reason); the tailer writes those and
//! owns the clock that decides when a pending event has waited long enough.

use std::time::Duration;

use crate::batcher::MAX_DATA_BYTES;
use crate::config::{FlowSettings, Oversize};
use crate::envelope::{ENVELOPE_RESERVE, METADATA_MAX_BYTES, WORST_EXPANSION};
use crate::framing::{Line, Piece};
use crate::multiline::Grouper;
use crate::re::Re;

/// Appended to the part of a truncated line that is sent.
pub const TRUNCATION_MARKER: &[u8] = b" [truncated by kinetail]";

/// The longest piece framing cuts an over-long line into, for a flow: what
/// still fits one Kinesis record once it is shaped. The oversize rule
/// applies to the final record: a line in a JSON envelope may grow by
/// [`WORST_EXPANSION`] with the envelope around it, and compression may add
/// its margin, so pieces are cut small enough for the worst case.
pub fn max_line_piece(settings: &FlowSettings) -> usize {
    let record = &settings.record;
    let room = MAX_DATA_BYTES - record.compression.margin(MAX_DATA_BYTES);
    let line_room = match &record.envelope {
        None => room,
        Some(env) => {
            let fields: usize = env.fields.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
            let reserve = ENVELOPE_RESERVE + fields * WORST_EXPANSION + METADATA_MAX_BYTES;
            room.saturating_sub(reserve) / WORST_EXPANSION
        }
    };
    // The truncation marker is part of the line, and grows with it.
    line_room - TRUNCATION_MARKER.len()
}

/// A line that is not sent, and why.
pub type Dead = (Line, &'static str);

#[derive(Debug)]
pub struct Shaper {
    oversize: Oversize,
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
        Shaper {
            oversize: settings.oversize,
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
    /// to send go to `dead`. Returns whether a whole line went into a
    /// pending multi-line event (its flush timeout starts again).
    pub fn shape(
        &mut self,
        framed: &mut Vec<Line>,
        ready: &mut Vec<Line>,
        dead: &mut Vec<Dead>,
    ) -> bool {
        let mut grouped = false;
        for mut line in framed.drain(..) {
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
            self.flush(ready);
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

    /// Sends the pending multi-line event, if any.
    pub fn flush(&mut self, ready: &mut Vec<Line>) {
        if let Some(g) = self.grouper.as_mut() {
            g.flush(ready);
        }
    }

    /// How long a pending multi-line event waits for another line, if one
    /// is pending.
    pub fn pending_timeout(&self) -> Option<Duration> {
        self.grouper
            .as_ref()
            .filter(|g| g.has_pending())
            .map(Grouper::timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framer;

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
            let mut ranges: Vec<(u64, u64)> = ready
                .iter()
                .chain(dead.iter().map(|(l, _)| l))
                .map(|l| (l.start, l.end))
                .collect();
            ranges.sort();
            assert_eq!(ranges.first().map(|r| r.0), Some(0));
            assert!(
                ranges.windows(2).all(|w| w[0].1 == w[1].0),
                "{policy:?}: {ranges:?}"
            );
            assert_eq!(ranges.last().map(|r| r.1), Some(16));
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

    #[test]
    fn a_piece_in_an_envelope_fits_a_record_in_the_worst_case() {
        for extra in [
            "",
            "format = \"json\"\n",
            "format = \"json\"\ncompression = \"gzip\"\nfields = { a = \"b\" }\n",
            "compression = \"zstd\"\n",
        ] {
            let s = flow(extra);
            let piece = max_line_piece(&s);
            let grow = if s.record.envelope.is_some() {
                WORST_EXPANSION
            } else {
                1
            };
            let worst = (piece + TRUNCATION_MARKER.len()) * grow
                + if s.record.envelope.is_some() {
                    ENVELOPE_RESERVE + METADATA_MAX_BYTES
                } else {
                    0
                };
            assert!(
                worst + s.record.compression.margin(MAX_DATA_BYTES) <= MAX_DATA_BYTES,
                "{extra}"
            );
            assert!(piece > 100 * 1024, "{extra}: pieces of {piece} bytes");
        }
    }
}
