//! A progress bar on stderr for long reads of trace files, only when someone watches it.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::trace::TraceReader;

/// Files smaller than this read in well under a second: no bar.
const MIN_BYTES: u64 = 8 << 20;

/// Progress through a trace file, by bytes read.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar for `reader` when stderr is a terminal, the file is large, and stdout is not the
    /// same terminal (lines printed there would tear the bar).
    #[must_use]
    pub fn for_reader(reader: &TraceReader, prints_to_stdout: bool) -> Self {
        let watched = std::io::stderr().is_terminal()
            && !(prints_to_stdout && std::io::stdout().is_terminal());
        let bar = reader
            .total_bytes()
            .filter(|&total| watched && total >= MIN_BYTES)
            .map(|total| {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "reading [{wide_bar}] {bytes}/{total_bytes} {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar
            });
        Self { bar }
    }

    /// Moves the bar to where `reader` is.
    pub fn update(&self, reader: &TraceReader) {
        if let Some(bar) = &self.bar {
            bar.set_position(reader.bytes_read());
        }
    }

    /// Removes the bar, so that messages after it start on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
