//! The terminal while `top` runs: raw mode and the alternate screen, given back on every way
//! out — a return, an error (the guard's drop), a panic (ratatui's hook restores first, then
//! the message is printed on the normal screen).

use std::io::{self, IsTerminal as _};

use anyhow::Context as _;
use ratatui::DefaultTerminal;

/// Why `top` will not start without a terminal, and what to use instead.
pub const NO_TERMINAL: &str = "memtrace top needs a terminal (stdin and stdout): to stream \
     events into a pipe or a file use `memtrace run` (or `memtrace record -o FILE`)";

/// Whether stdin and stdout are a terminal.
#[must_use]
pub fn is_terminal() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// The terminal, taken over until dropped.
pub struct Screen {
    pub terminal: DefaultTerminal,
}

impl Screen {
    /// Enters raw mode and the alternate screen, and installs the panic hook that leaves them.
    ///
    /// # Errors
    ///
    /// When the terminal refuses raw mode.
    pub fn take() -> anyhow::Result<Self> {
        let terminal = ratatui::try_init().context("taking over the terminal")?;
        Ok(Self { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = crossterm::execute!(io::stdout(), crossterm::cursor::Show);
    }
}
