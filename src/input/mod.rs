//! Input: which files a flow follows (globs, identity, discovery) and
//! reading each of them (the tailer).

pub mod discovery;
pub mod globs;
pub mod identity;
pub mod tailer;
