//! A progress bar on stderr while a large trace file is read, so `report` and `export` on a
//! day-long recording do not look hung. Off when stderr is not a terminal (logs, pipes, tests)
//! and for files that read in a blink.

use std::{io::IsTerminal as _, path::Path, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files smaller than this are read too fast for a bar to be worth drawing.
pub const LARGE_FILE_BYTES: u64 = 8 << 20;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `file`'s size, labelled with what is being done (`report`, `export`).
    #[must_use]
    pub fn for_file(file: &Path, verb: &'static str) -> Self {
        let size = std::fs::metadata(file).map_or(0, |m| m.len());
        if size < LARGE_FILE_BYTES || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        // The template is a constant: it parses, and if a future indicatif disagreed the bar
        // would keep its default look rather than fail the command.
        if let Ok(style) = ProgressStyle::with_template(
            "memtrace: {prefix} {bar:30} {binary_bytes}/{binary_total_bytes} ({eta} left)",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(verb);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    /// Moves the bar to `bytes_read`; cheap enough to call for every event.
    pub fn update(&self, bytes_read: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes_read);
        }
    }
}

impl Drop for Progress {
    /// The bar is erased, so what follows on stderr starts on a clean line.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
