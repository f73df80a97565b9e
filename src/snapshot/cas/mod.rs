//! The content-addressed deduplicating snapshot store (work in progress).
pub mod read;
pub mod write;
