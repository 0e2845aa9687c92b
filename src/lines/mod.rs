//! Lines: bytes into lines (framing), lines into events (multiline), and
//! what is kept and how it fits a record (shaping).

pub mod framing;
pub mod multiline;
pub mod shaping;
