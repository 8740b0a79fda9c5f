//! Where events go: the terminal (text or JSON Lines) or a trace file.

mod carry;
mod counter_text;
mod json;
mod summary;
mod tee;
mod text;

use std::{io, time::Duration};

pub use counter_text::{counter_changes, counter_values};
pub use json::JsonSink;
pub use tee::Tee;
pub use text::{ALARM_PREFIX, TextSink};

use crate::event::{Event, HostClock};

/// A consumer of events. `flush` is called whenever the pipeline has no more events queued, so
/// a live terminal or a recording is never more than one batch behind.
pub trait Sink {
    /// # Errors
    ///
    /// I/O errors of the destination.
    fn write(&mut self, event: &Event) -> io::Result<()>;

    /// The pipeline ended an interval at `end_ns` (`CLOCK_BOOTTIME`), after writing its
    /// page-cache, charge and slab events: a sink that summarises per interval writes its
    /// summaries now. Sinks that keep every event as it comes have nothing to do.
    ///
    /// # Errors
    ///
    /// I/O errors of the destination.
    fn interval_end(&mut self, end_ns: u64) -> io::Result<()> {
        let _ = end_ns;
        Ok(())
    }

    /// No event follows: write what is held back, then flush.
    ///
    /// # Errors
    ///
    /// I/O errors of the destination.
    fn end(&mut self) -> io::Result<()> {
        self.flush()
    }

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

/// How the text stream is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextOptions {
    /// Every event on its own line; else reclaim episodes and charge failures are summarised per
    /// container per interval, and removals wait out `dying_grace`.
    pub each: bool,
    /// A container removed with memory still charged is called dying only when it is not freed
    /// within this.
    pub dying_grace: Duration,
    /// OOM kills in bold red (the output is a terminal).
    pub color: bool,
}

/// How long a removed memcg may take to be freed before it is called dying: long enough for
/// the kernel to reclaim a container's last page cache on an ordinary exit (tens of
/// milliseconds here), short enough that a memcg pinned for good is named within an interval
/// or two.
pub const DEFAULT_DYING_GRACE: Duration = Duration::from_secs(2);

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            each: false,
            dying_grace: DEFAULT_DYING_GRACE,
            color: false,
        }
    }
}

/// A terminal sink writing to `out` in `format`, with wall-clock times from `clock`; JSON
/// Lines keep every event whatever `text` says.
#[must_use]
pub fn terminal<W: io::Write + 'static>(
    format: Format,
    out: W,
    clock: HostClock,
    text: &TextOptions,
) -> Box<dyn Sink> {
    match format {
        Format::Text => Box::new(TextSink::with_options(out, clock, text)),
        Format::Json => Box::new(JsonSink::new(out, clock)),
    }
}
