//! Records: a line becomes a record (its key, its data: the line or its
//! envelope, with the fields a parser found, compressed), is routed to a lane, and is packed into calls
//! (entries, aggregates, batches).

pub mod aggregate;
pub mod batcher;
pub mod compress;
pub mod envelope;
pub mod keying;
pub mod kubernetes;
#[cfg(feature = "aws")]
pub mod metadata;
pub mod packing;
pub mod parse;
pub mod pods;
pub mod route;
pub mod time;
