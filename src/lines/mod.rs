//! Lines: bytes into lines (framing), a container runtime's entries into
//! the application's lines (container), lines into events (multiline), and
//! what is kept and how it fits a record (shaping).

pub mod container;
pub mod framing;
pub mod multiline;
pub mod shaping;
