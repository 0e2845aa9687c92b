//! The pure core of checkpoints: acknowledged byte ranges in any order in,
//! the end of the longest contiguous confirmed prefix out.

use std::collections::BTreeMap;

/// The end of the longest contiguous confirmed prefix.
#[derive(Debug, Clone, Default)]
pub struct Watermark {
    offset: u64,
    /// Confirmed ranges beyond `offset`: start -> end.
    ahead: BTreeMap<u64, u64>,
}

impl Watermark {
    pub fn new(offset: u64) -> Watermark {
        Watermark {
            offset,
            ahead: BTreeMap::new(),
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Ranges confirmed but not yet joined to the prefix.
    pub fn gaps(&self) -> usize {
        self.ahead.len()
    }

    /// Records `[start, end)` as confirmed. Returns whether the offset moved.
    pub fn ack(&mut self, start: u64, end: u64) -> bool {
        if end <= self.offset || end <= start {
            return false;
        }
        let before = self.offset;
        if start <= self.offset {
            self.offset = end;
        } else {
            let e = self.ahead.entry(start).or_insert(end);
            *e = (*e).max(end);
        }
        while let Some((&s, &e)) = self.ahead.first_key_value() {
            if s > self.offset {
                break;
            }
            self.ahead.pop_first();
            self.offset = self.offset.max(e);
        }
        self.offset != before
    }
}
