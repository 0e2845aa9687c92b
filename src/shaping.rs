//! Shaping: what framed lines become before they are keyed. The oversize
//! policy decides what happens to the pieces of a line too long for one
//! record, and multi-line grouping joins lines into events.
//!
//! Pure: the [`Shaper`] takes framed lines and returns the lines to send and
//! the lines to dead-letter (with the reason); the tailer writes those and
//! owns the clock that decides when a pending event has waited long enough.

use std::time::Duration;

use crate::batcher::MAX_DATA_BYTES;
use crate::config::{FlowSettings, Oversize};
use crate::framing::{Line, Piece};
use crate::multiline::Grouper;

/// Appended to the part of a truncated line that is sent.
pub const TRUNCATION_MARKER: &[u8] = b" [truncated by kinetail]";

/// The longest piece framing cuts an over-long line into: a Kinesis record
/// with room for the truncation marker.
pub const MAX_LINE_PIECE: usize = MAX_DATA_BYTES - TRUNCATION_MARKER.len();

/// A line that is not sent, and why.
pub type Dead = (Line, &'static str);

#[derive(Debug)]
pub struct Shaper {
    oversize: Oversize,
    grouper: Option<Grouper>,
}

impl Shaper {
    pub fn new(settings: &FlowSettings) -> Shaper {
        Shaper {
            oversize: settings.oversize,
            grouper: settings.multiline.clone().map(Grouper::new),
        }
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
        let text = format!(
            "state_dir = \"/tmp/s\"\n[[flow]]\nname = \"a\"\npaths = [\"/l/*.log\"]\nstream = \"s\"\noversize = \"{}\"\n",
            match oversize {
                Oversize::Split => "split",
                Oversize::Truncate => "truncate",
                Oversize::Drop => "drop",
            }
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
}
