//! The line framer, fed in arbitrary chunks and abandoned at an arbitrary
//! point (as at a truncation): the lines it emits and the bytes it holds
//! cover the input exactly, in order, and no line is longer than its bound.
#![no_main]

use kinetail::lines::framing::{Framer, Piece};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let max = 1 + (ctl as usize % 16);
    let mut framer = Framer::new(0, max, false);
    let mut lines = Vec::new();
    // Chunk sizes from the input itself.
    let mut rest = input;
    let mut step = 1 + ctl as usize % 7;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        framer.feed(&rest[..n], &mut lines);
        rest = &rest[n..];
        step = step % 13 + 1;
    }
    let consumed = framer.consumed();
    let mut rebuilt = Vec::new();
    let mut at = 0;
    for l in &lines {
        assert_eq!(l.start, at, "ranges are contiguous");
        assert!(l.data.len() <= max, "pieces respect the bound");
        rebuilt.extend_from_slice(&l.data);
        if matches!(l.piece, Piece::Whole | Piece::Tail) {
            rebuilt.push(b'\n');
        }
        assert_eq!(l.end, rebuilt.len() as u64, "a range covers its bytes");
        at = l.end;
    }
    assert_eq!(at, consumed);
    // What is held is the rest of the input, never joined with anything.
    if let Some(p) = framer.into_pending() {
        assert_eq!(p.start, consumed);
        rebuilt.extend_from_slice(&p.data);
    }
    assert_eq!(rebuilt, input);
});
