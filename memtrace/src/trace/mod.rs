//! Trace files: a versioned header, then append-only checksummed frames (the cgroup table as it
//! grows, events, an end marker). See `format` for the layout.

mod format;
mod reader;
mod writer;

pub use format::{TraceHeader, VERSION};
pub use reader::{TraceError, TraceItem, TraceReader};
pub use writer::TraceWriter;
