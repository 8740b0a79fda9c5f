//! Trace files: a versioned header, then append-only, checksummed, independently compressed
//! blocks of records (the cgroup table as it grows, events), then an end marker. `format` has
//! the layout, `records` what is inside a block; docs/trace-format.md has both byte by byte.

mod format;
mod reader;
mod recording;
mod records;
mod v2;
mod writer;

#[cfg(test)]
mod tests;

pub use format::{FlightCut, FlightWindow, MAX_BLOCK, TraceHeader, VERSION};
pub use reader::{TraceError, TraceItem, TraceReader, cut_short};
pub use recording::{FileFull, Limits, Recording, rotated_name};
pub use records::{Decoder, Encoder};
pub use writer::{SEAL_AGE, TraceWriter};
