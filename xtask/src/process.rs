//! Running external commands: each is echoed (on stderr, so that `cargo xtask run`'s stdout is
//! memtrace's alone) before it runs, and a failure becomes an error that
//! names the command and its exit status.

use std::{
    borrow::Cow,
    ffi::OsStr,
    fmt,
    io::ErrorKind,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail};

/// Displays a command the way one would type it in a shell. Variables set on the command are
/// shown as assignments, except `PATH`, which would drown the rest.
pub struct Shown<'a>(pub &'a Command);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.0.get_envs() {
            if let Some(value) = value
                && name != "PATH"
            {
                write!(f, "{}={} ", name.to_string_lossy(), quote(value))?;
            }
        }
        write!(f, "{}", quote(self.0.get_program()))?;
        for arg in self.0.get_args() {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// Quotes `word` for a POSIX shell when it holds anything a shell would interpret.
pub fn quote(word: &OsStr) -> Cow<'_, str> {
    // Only a word with a NUL cannot be quoted; no argument, variable or path can hold one.
    match word.to_string_lossy() {
        Cow::Borrowed(word) => shlex::try_quote(word).unwrap_or(Cow::Borrowed(word)),
        Cow::Owned(word) => {
            Cow::Owned(shlex::try_quote(&word).map_or(word.clone(), Cow::into_owned))
        }
    }
}

/// Prints `cmd`, runs it with the terminal attached, and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", Shown(cmd));
    let status = cmd.status().map_err(|error| spawn_error(cmd, error))?;
    if !status.success() {
        bail!("`{}` failed with {status}", Shown(cmd));
    }
    Ok(())
}

/// Prints `cmd`, runs it with its standard error on the terminal (cargo's progress), and returns
/// its standard output; fails unless it exits successfully.
pub fn run_for_stdout(cmd: &mut Command) -> anyhow::Result<String> {
    eprintln!("$ {}", Shown(cmd));
    let Output { status, stdout, .. } = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| spawn_error(cmd, error))?;
    if !status.success() {
        bail!("`{}` failed with {status}", Shown(cmd));
    }
    String::from_utf8(stdout).with_context(|| format!("`{}` printed non-UTF-8 output", Shown(cmd)))
}

/// Runs `cmd` silently and returns its standard output; on failure the error carries what the
/// command wrote to standard error.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().map_err(|error| spawn_error(cmd, error))?;
    if !status.success() {
        bail!(
            "`{}` failed with {status}: {}",
            Shown(cmd),
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    String::from_utf8(stdout).with_context(|| format!("`{}` printed non-UTF-8 output", Shown(cmd)))
}

/// The error for a command that could not even start, saying so plainly when the program is
/// not installed.
pub fn spawn_error(cmd: &Command, error: std::io::Error) -> anyhow::Error {
    if error.kind() == ErrorKind::NotFound {
        anyhow::anyhow!(
            "could not run `{}`: `{}` was not found",
            Shown(cmd),
            cmd.get_program().to_string_lossy()
        )
    } else {
        anyhow::Error::new(error).context(format!("could not run `{}`", Shown(cmd)))
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::Shown;

    #[test]
    fn shows_a_command_as_typed_in_a_shell() {
        let mut cmd = Command::new("cargo");
        cmd.args(["+1.99.1", "test", "--", "it's here", ""])
            .env("MEMTRACE_BIN", "/repo/target/debug/memtrace")
            .env("PATH", "/elsewhere");
        assert_eq!(
            Shown(&cmd).to_string(),
            r#"MEMTRACE_BIN=/repo/target/debug/memtrace cargo +1.99.1 test -- "it's here" ''"#
        );
    }
}
