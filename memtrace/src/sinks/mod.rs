//! Where events go: the terminal (text or JSON Lines) or a trace file.

mod json;
mod tee;
mod text;

use std::io;

pub use json::JsonSink;
pub use tee::Tee;
pub use text::TextSink;

use crate::event::{Event, HostClock};

/// A consumer of events. `flush` is called whenever the pipeline has no more events queued, so
/// a live terminal or a recording is never more than one batch behind.
pub trait Sink {
    /// # Errors
    ///
    /// I/O errors of the destination.
    fn write(&mut self, event: &Event) -> io::Result<()>;

    /// # Errors
    ///
    /// I/O errors of the destination.
    fn flush(&mut self) -> io::Result<()>;
}

/// Output formats for people and for tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per event, for people.
    #[default]
    Text,
    /// JSON Lines: one object per event with a "type" field.
    Json,
}

/// A terminal sink writing to `out` in `format`, with wall-clock times from `clock`.
#[must_use]
pub fn terminal<W: io::Write + 'static>(format: Format, out: W, clock: HostClock) -> Box<dyn Sink> {
    match format {
        Format::Text => Box::new(TextSink::new(out, clock)),
        Format::Json => Box::new(JsonSink::new(out, clock)),
    }
}
