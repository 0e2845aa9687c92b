//! State: what kinetail keeps: acks and watermarks (checkpoint), the
//! saved store, the in-flight byte budget, the dead-letter file.

pub mod budget;
pub mod checkpoint;
pub mod dead_letter;
pub mod store;
