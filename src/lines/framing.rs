//! Framing: bytes read from a file become lines, each with the byte range
//! of the file it covers.
//!
//! Pure: [`Framer::feed`] takes the bytes that follow what it was fed
//! before and appends complete lines to a vector. The ranges of the lines
//! it emits are contiguous and cover every byte up to
//! [`Framer::consumed`]: terminators belong to the range of their line, so
//! the checkpoint after a confirmed line points at the next line's first byte.
//!
//! Rules: lines end at `\n`, which is not part of the data; the `\r` of a
//! `\r\n` is removed when `strip_cr` is set; a bare `\r` elsewhere is kept;
//! bytes are bytes (invalid UTF-8 passes through). A trailing line without
//! `\n` is held until its newline arrives. A line longer than `max_bytes` is
//! emitted in pieces of at most `max_bytes` (cut before a UTF-8
//! continuation byte where one is within the last three), so no line is
//! ever held whole in memory beyond that bound. `max_bytes` is what a
//! record can hold of a line that needs no escaping; shaping cuts again
//! what does not fit once encoded (`shaping::Fit`).

/// Which part of a line a [`Line`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A whole line.
    Whole,
    /// The first `max_bytes` of a longer line.
    Head,
    /// A further `max_bytes` of it.
    Middle,
    /// Its end, up to and including the terminator.
    Tail,
}

/// One line (or piece of an over-long line) and the file range it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub data: Vec<u8>,
    pub piece: Piece,
    /// Which piece of its line this is, from 0 (a whole line is piece 0).
    pub part: u32,
    /// Offset of the first byte in the file.
    pub start: u64,
    /// Offset just past the last byte, terminator included.
    pub end: u64,
    /// What the container runtime said of it, when the flow reads a
    /// runtime's log files (`container_format`; see `lines::container`).
    pub entry: Option<Box<Entry>>,
}

/// Which of a container's output streams a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A line a container runtime wrapped: its stream, its time, and where it
/// starts when its range is its group's (see `lines::container`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: Stream,
    /// The runtime's time of the line's first entry, in ms since the
    /// epoch, when it reads.
    pub time_ms: Option<i64>,
    /// Offset of the line's first entry: its own place (offset and id),
    /// which differs from `start` when the line is tied.
    pub at: u64,
    /// Its range is the range of a group of lines that interleave in the
    /// file (a merged line and the other stream's lines between its
    /// pieces): the group is one chunk, confirmed only as a whole, and no
    /// line of it is acked by its range alone.
    pub tied: bool,
}

impl Line {
    /// Where the line itself starts in the file: its offset in an
    /// envelope and in its record's id.
    pub fn at(&self) -> u64 {
        self.entry.as_ref().map_or(self.start, |e| e.at)
    }

    /// Whether its range is shared with other lines (see [`Entry::tied`]).
    pub fn tied(&self) -> bool {
        self.entry.as_ref().is_some_and(|e| e.tied)
    }
}

#[derive(Debug)]
pub struct Framer {
    /// Bytes of the current, unfinished line.
    pending: Vec<u8>,
    /// File offset of `pending[0]`: everything before it has been emitted.
    pending_start: u64,
    max_bytes: usize,
    strip_cr: bool,
    /// The pending line already had pieces emitted.
    split: bool,
    /// How many.
    parts: u32,
}

impl Framer {
    /// A framer whose next byte is at file offset `offset`.
    pub fn new(offset: u64, max_bytes: usize, strip_cr: bool) -> Framer {
        Framer {
            pending: Vec::new(),
            pending_start: offset,
            max_bytes: max_bytes.max(1),
            strip_cr,
            split: false,
            parts: 0,
        }
    }

    /// Offset up to which every byte has been emitted as part of a line.
    pub fn consumed(&self) -> u64 {
        self.pending_start
    }

    /// The unfinished line's bytes, with their range, if there are any:
    /// what is left when the file they came from is abandoned.
    pub fn into_pending(self) -> Option<Line> {
        if self.pending.is_empty() {
            return None;
        }
        let end = self.pending_start + self.pending.len() as u64;
        Some(Line {
            data: self.pending,
            piece: if self.split { Piece::Tail } else { Piece::Head },
            part: self.parts,
            start: self.pending_start,
            end,
            entry: None,
        })
    }

    /// Bytes held for the unfinished line.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn emit(&mut self, mut data: Vec<u8>, range_len: u64, terminated: bool, out: &mut Vec<Line>) {
        if terminated && self.strip_cr && data.last() == Some(&b'\r') {
            data.pop();
        }
        let piece = match (self.split, terminated) {
            (false, true) => Piece::Whole,
            (false, false) => Piece::Head,
            (true, false) => Piece::Middle,
            (true, true) => Piece::Tail,
        };
        let part = self.parts;
        self.split = !terminated;
        self.parts = if terminated { 0 } else { part + 1 };
        let start = self.pending_start;
        self.pending_start += range_len;
        out.push(Line {
            data,
            piece,
            part,
            start,
            end: self.pending_start,
            entry: None,
        });
    }

    /// Frames `chunk`, the bytes that follow everything fed so far.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Line>) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let piece = &rest[..i];
            if self.pending.is_empty() && piece.len() <= self.max_bytes {
                self.emit(piece.to_vec(), i as u64 + 1, true, out);
            } else {
                self.pending.extend_from_slice(piece);
                self.split_oversize(out, true);
                let data = std::mem::take(&mut self.pending);
                let len = data.len() as u64 + 1;
                self.emit(data, len, true, out);
            }
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        self.split_oversize(out, false);
    }

    /// Emits leading `max_bytes` pieces of the pending line while it is too
    /// long. With `terminated`, the remainder is the end of the line and may
    /// exceed `max_bytes` by one `\r` that is about to be stripped.
    fn split_oversize(&mut self, out: &mut Vec<Line>, terminated: bool) {
        let allowance = if terminated && self.strip_cr && self.pending.last() == Some(&b'\r') {
            1
        } else {
            0
        };
        while self.pending.len() > self.max_bytes + allowance {
            // Cut before a UTF-8 character's continuation bytes, so that
            // the pieces of a text line stay text.
            let mut at = self.max_bytes;
            while at + 3 > self.max_bytes && at > 1 && self.pending[at] & 0xC0 == 0x80 {
                at -= 1;
            }
            let rest = self.pending.split_off(at);
            let piece = std::mem::replace(&mut self.pending, rest);
            let len = piece.len() as u64;
            self.emit(piece, len, false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(chunks: &[&[u8]], max: usize, strip: bool) -> (Vec<Line>, Framer) {
        let mut f = Framer::new(0, max, strip);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        (out, f)
    }

    #[test]
    fn splits_on_newline_and_strips_crlf_only() {
        let (lines, f) = frame(&[b"a\r\nb\rc\n\nlast"], 100, true);
        let data: Vec<&[u8]> = lines.iter().map(|l| l.data.as_slice()).collect();
        assert_eq!(data, vec![&b"a"[..], b"b\rc", b""]);
        assert_eq!((lines[0].start, lines[0].end), (0, 3));
        assert_eq!((lines[1].start, lines[1].end), (3, 7));
        assert_eq!((lines[2].start, lines[2].end), (7, 8));
        assert_eq!(f.consumed(), 8);
        assert_eq!(f.pending_len(), 4);
    }

    #[test]
    fn pieces_of_an_oversize_line_are_marked() {
        let (lines, _) = frame(&[b"abcdefghij\nxy\n"], 4, true);
        let pieces: Vec<Piece> = lines.iter().map(|l| l.piece).collect();
        assert_eq!(
            pieces,
            vec![Piece::Head, Piece::Middle, Piece::Tail, Piece::Whole]
        );
        assert_eq!(
            lines.iter().map(|l| l.part).collect::<Vec<_>>(),
            vec![0, 1, 2, 0]
        );
        assert_eq!(lines[2].data, b"ij");
        assert_eq!((lines[2].start, lines[2].end), (8, 11));
    }

    #[test]
    fn keeps_cr_when_asked() {
        let (lines, _) = frame(&[b"a\r\n"], 100, false);
        assert_eq!(lines[0].data, b"a\r");
    }

    #[test]
    fn lines_span_chunks_and_crlf_split_across_reads() {
        let (lines, _) = frame(&[b"hel", b"lo\r", b"\nwor", b"ld\n"], 100, true);
        assert_eq!(lines[0].data, b"hello");
        assert_eq!((lines[0].start, lines[0].end), (0, 7));
        assert_eq!(lines[1].data, b"world");
    }

    #[test]
    fn oversize_lines_come_out_in_pieces_without_waiting_for_newline() {
        let (lines, f) = frame(&[b"abcdefghij"], 4, true);
        let data: Vec<&[u8]> = lines.iter().map(|l| l.data.as_slice()).collect();
        assert_eq!(data, vec![&b"abcd"[..], b"efgh"]);
        assert_eq!(f.pending_len(), 2);
        // A line of exactly max_bytes plus CRLF is one record.
        let (lines, _) = frame(&[b"abcd\r\n"], 4, true);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].data, b"abcd");
    }

    proptest! {
        /// Whatever the chunking, the emitted ranges are contiguous, cover
        /// every byte up to the last newline, and the data equals the lines
        /// of the input.
        #[test]
        fn ranges_are_contiguous_and_data_matches(
            text in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(b'\r'), Just(0xffu8)], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            max in 1usize..50,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&text[prev..c]); prev = c; }
            chunks.push(&text[prev..]);
            let (lines, f) = frame(&chunks, max, false);
            let mut next = 0u64;
            let mut rebuilt = Vec::new();
            for l in &lines {
                prop_assert_eq!(l.start, next);
                prop_assert!(l.data.len() <= max);
                prop_assert!(l.end > l.start);
                next = l.end;
                rebuilt.extend_from_slice(&l.data);
                if (l.end - l.start) as usize == l.data.len() + 1 { rebuilt.push(b'\n'); }
            }
            prop_assert_eq!(f.consumed(), next);
            prop_assert_eq!(&rebuilt[..], &text[..next as usize]);
            prop_assert_eq!(next as usize + f.pending_len(), text.len());
        }
    }
}
