//! A terminal for tests of full-screen programs (`memtrace top`): a detached tmux session with
//! a shell, driven by `send-keys` and read with `capture-pane`, as a person at a terminal would.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

/// A tmux session running `bash`; killed on drop.
pub struct Tmux {
    pub session: String,
}

impl Tmux {
    /// A session `width` × `height` running a plain bash (no rc files, a `$ ` prompt).
    ///
    /// # Panics
    ///
    /// When tmux is missing or cannot start (`cargo xtask test` installs it).
    #[must_use]
    pub fn start(name: &str, width: u16, height: u16) -> Self {
        let session = format!("memtrace-{name}-{}", std::process::id());
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &session])
            .output();
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args([
                "env",
                "PS1=$ ",
                "TERM=xterm-256color",
                "bash",
                "--norc",
                "--noprofile",
            ])
            .status()
            .unwrap_or_else(|e| {
                panic!("tmux cannot be run ({e}): install it (apt-get install tmux)")
            });
        assert!(status.success(), "tmux new-session failed: {status}");
        let tmux = Self { session };
        // capture-pane drops trailing blanks: the prompt reads `$`.
        tmux.wait_for("the shell's prompt", Duration::from_secs(10), |s| {
            s.lines().any(|l| l.trim_end() == "$")
        });
        tmux
    }

    fn tmux(args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"));
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) {
        Self::tmux(&["send-keys", "-t", &self.session, "-l", line]);
        Self::tmux(&["send-keys", "-t", &self.session, "Enter"]);
    }

    /// Presses keys by tmux's names (`q`, `Enter`, `Escape`, `C-c`, `Home`).
    pub fn press(&self, key: &str) {
        Self::tmux(&["send-keys", "-t", &self.session, key]);
    }

    /// What the pane shows now.
    #[must_use]
    pub fn screen(&self) -> String {
        Self::tmux(&["capture-pane", "-p", "-t", &self.session])
    }

    /// A tmux format of the pane, e.g. `#{alternate_on}`, `#{pane_current_command}`.
    #[must_use]
    pub fn pane(&self, format: &str) -> String {
        Self::tmux(&["display-message", "-p", "-t", &self.session, format])
            .trim()
            .to_owned()
    }

    /// Waits until the screen satisfies `ready`; returns it.
    ///
    /// # Panics
    ///
    /// After `timeout`, with what the screen showed.
    pub fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; the screen shows:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .output();
    }
}
