//! `memtrace export`: a recorded trace in other tools' formats.
//!
//! - `perfetto`: Chrome trace event JSON, for ui.perfetto.dev and `chrome://tracing`.

mod perfetto;

pub use perfetto::PerfettoWriter;
