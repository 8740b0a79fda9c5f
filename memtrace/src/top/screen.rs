//! The terminal while `top` runs: raw mode and the alternate screen, given back on every way
//! out — a return, an error (the guard's drop), a panic (the hooks restore first, then the
//! message is printed on the normal screen).
//!
//! What memtrace writes on stderr meanwhile (a warning about a cgroup that vanished, a probe's
//! message) would be drawn over the table and stay there until the next full redraw, so it is
//! held in a memory file and printed once the screen is given back.

use std::{
    fs::File,
    io::{self, IsTerminal as _, Read as _, Seek as _, Write as _},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::Context as _;
use ratatui::DefaultTerminal;

/// Why `top` will not start without a terminal, and what to use instead.
pub const NO_TERMINAL: &str = "memtrace top needs a terminal (stdin and stdout): to stream \
     events into a pipe or a file use `memtrace run` (or `memtrace record -o FILE`)";

/// The real stderr while it is held, for the panic hook; -1 when it is not held.
static REAL_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Whether stdin and stdout are a terminal.
#[must_use]
pub fn is_terminal() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// The terminal, taken over until dropped.
pub struct Screen {
    pub terminal: DefaultTerminal,
    held: Option<HeldStderr>,
}

impl Screen {
    /// Enters raw mode and the alternate screen, holds stderr, and installs the panic hooks
    /// that undo both.
    ///
    /// # Errors
    ///
    /// When the terminal refuses raw mode.
    pub fn take() -> anyhow::Result<Self> {
        // ratatui's hook leaves the alternate screen and raw mode, then calls the one before.
        let terminal = ratatui::try_init().context("taking over the terminal")?;
        let held = HeldStderr::hold()
            .inspect_err(|e| log::debug!("stderr not held while top runs: {e}"))
            .ok();
        let restore_terminal = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            give_back_stderr();
            restore_terminal(info);
        }));
        Ok(Self { terminal, held })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = crossterm::execute!(io::stdout(), crossterm::cursor::Show);
        if let Some(held) = self.held.take() {
            held.release();
        }
    }
}

/// stderr pointed at a memory file.
struct HeldStderr {
    file: File,
    /// The real stderr, kept open for its way back.
    _real: OwnedFd,
}

impl HeldStderr {
    fn hold() -> io::Result<Self> {
        let real = io::stderr().as_fd().try_clone_to_owned()?;
        // SAFETY: a NUL-terminated name and valid flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"memtrace-top-stderr".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        REAL_STDERR.store(real.as_raw_fd(), Ordering::SeqCst);
        redirect_stderr(file.as_raw_fd())?;
        Ok(Self { file, _real: real })
    }

    /// Points stderr back at the real one and prints what was held.
    fn release(mut self) {
        give_back_stderr();
        let mut held = Vec::new();
        if self.file.rewind().is_ok() && self.file.read_to_end(&mut held).is_ok() {
            let _ = io::stderr().write_all(&held);
        }
    }
}

/// Points stderr at `fd`.
fn redirect_stderr(fd: RawFd) -> io::Result<()> {
    // SAFETY: both are open descriptors (`fd` owned by the caller, 2 by the process); dup2
    // replaces 2 atomically, so a writer on another thread writes to one or the other.
    if unsafe { libc::dup2(fd, libc::STDERR_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Stderr back to the real one, if it is held (also from the panic hook).
fn give_back_stderr() {
    let real = REAL_STDERR.swap(-1, Ordering::SeqCst);
    if real >= 0 {
        let _ = redirect_stderr(real);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is written on fd 2 while held goes to the memory file, and stderr is the real one
    /// again after.
    #[test]
    fn stderr_is_held_and_given_back() {
        let real = io::stderr().as_fd().try_clone_to_owned().expect("dup");
        let real_inode = |fd: RawFd| {
            let path = format!("/proc/self/fd/{fd}");
            std::fs::read_link(path).expect("fd link")
        };
        let before = real_inode(libc::STDERR_FILENO);
        let mut held = HeldStderr::hold().expect("hold");
        assert_ne!(
            real_inode(libc::STDERR_FILENO),
            before,
            "stderr points elsewhere"
        );
        let line = b"held while the screen is up\n";
        // SAFETY: fd 2 is open; the buffer is valid for its length.
        let written = unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len()) };
        assert_eq!(usize::try_from(written).ok(), Some(line.len()));
        let mut content = Vec::new();
        held.file.rewind().expect("rewind");
        held.file.read_to_end(&mut content).expect("read");
        assert_eq!(content, line);
        give_back_stderr();
        assert_eq!(real_inode(libc::STDERR_FILENO), before);
        assert_eq!(real_inode(real.as_raw_fd()), before);
    }
}
