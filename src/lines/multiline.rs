//! Multi-line events: consecutive lines joined into one record, such as a
//! Java stack trace under the log line that announced it.
//!
//! Pure: the [`Grouper`] takes framed lines and returns events; the
//! caller decides when the flush timeout has passed (it owns the clock).
//! An event's range runs from its first line's start to its last line's
//! end, so its checkpoint is the end of its last line. Lines are joined
//! with `\n`. Pieces of an over-long line are never joined: they flush the
//! pending event and pass through.

use std::time::Duration;

use crate::lines::framing::{Line, Piece};

/// How lines group into events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A line matching the pattern starts a new event; others continue it.
    Start(crate::re::Re),
    /// A line matching the pattern continues the event; others start one.
    Continue(crate::re::Re),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultilineSettings {
    pub rule: Rule,
    /// An event is cut after this many lines.
    pub max_lines: usize,
    /// An event is cut before it would exceed this many bytes.
    pub max_bytes: usize,
    /// A pending event is sent after this long without a new line.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Grouper {
    settings: MultilineSettings,
    pending: Option<(Line, usize)>,
}

impl Grouper {
    pub fn new(settings: MultilineSettings) -> Grouper {
        Grouper {
            settings,
            pending: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Where the pending event starts, if one is pending.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|(l, _)| l.start)
    }

    /// Sends the pending event, if any.
    pub fn flush(&mut self, out: &mut Vec<Line>) {
        if let Some((event, _)) = self.pending.take() {
            out.push(event);
        }
    }

    /// Takes the next framed line.
    pub fn push(&mut self, line: Line, out: &mut Vec<Line>) {
        if line.piece != Piece::Whole {
            self.flush(out);
            out.push(line);
            return;
        }
        let continues = match &self.settings.rule {
            Rule::Start(re) => !re.is_match(&line.data),
            Rule::Continue(re) => re.is_match(&line.data),
        };
        match self.pending.as_mut() {
            Some((event, lines))
                if continues
                    && *lines < self.settings.max_lines
                    && event.data.len() + 1 + line.data.len() <= self.settings.max_bytes =>
            {
                event.data.push(b'\n');
                event.data.extend_from_slice(&line.data);
                event.end = line.end;
                *lines += 1;
            }
            _ => {
                self.flush(out);
                self.pending = Some((line, 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::framing::Framer;

    fn run(rule: Rule, text: &[u8], max_lines: usize, max_bytes: usize) -> (Vec<Line>, Grouper) {
        let mut f = Framer::new(0, 1 << 20, true);
        let mut lines = Vec::new();
        f.feed(text, &mut lines);
        let mut a = Grouper::new(MultilineSettings {
            rule,
            max_lines,
            max_bytes,
            timeout: Duration::from_millis(100),
        });
        let mut out = Vec::new();
        for l in lines {
            a.push(l, &mut out);
        }
        (out, a)
    }

    const TRACE: &[u8] = b"2026-11-25 10:00:00 ERROR boom\r\njava.lang.IllegalStateException: x\r\n\tat a.B.c(B.java:1)\r\n\tat a.B.d(B.java:2)\r\n2026-11-25 10:00:01 INFO ok\r\n";

    #[test]
    fn start_pattern_groups_a_stack_trace() {
        let re = regex::bytes::Regex::new(r"^\d{4}-\d\d-\d\d ").unwrap();
        let (out, mut a) = run(Rule::Start(re.into()), TRACE, 100, 1 << 20);
        assert_eq!(
            out.len(),
            1,
            "the last event waits for the next start or the timeout"
        );
        assert_eq!(
            out[0].data,
            b"2026-11-25 10:00:00 ERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)"
        );
        let next = TRACE
            .windows(19)
            .position(|w| w == b"2026-11-25 10:00:01")
            .unwrap() as u64;
        assert_eq!(
            (out[0].start, out[0].end),
            (0, next),
            "the range ends after the last line's terminator"
        );
        let mut rest = Vec::new();
        a.flush(&mut rest);
        assert_eq!(rest[0].data, b"2026-11-25 10:00:01 INFO ok");
        assert_eq!(rest[0].start, next);
    }

    #[test]
    fn continue_pattern_and_limits() {
        let re = regex::bytes::Regex::new(r"^(\s|java\.)").unwrap();
        let (out, _) = run(Rule::Continue(re.clone().into()), TRACE, 100, 1 << 20);
        assert_eq!(out.len(), 1);
        assert!(out[0].data.ends_with(b"(B.java:2)"));
        let (out, _) = run(Rule::Continue(re.clone().into()), TRACE, 2, 1 << 20);
        assert_eq!(out.len(), 2, "max_lines cuts the event");
        assert_eq!(
            out[0].data,
            b"2026-11-25 10:00:00 ERROR boom\njava.lang.IllegalStateException: x"
        );
        let (out, _) = run(Rule::Continue(re.into()), TRACE, 100, 40);
        assert_eq!(
            out[0].data, b"2026-11-25 10:00:00 ERROR boom",
            "max_bytes cuts the event"
        );
    }
}
