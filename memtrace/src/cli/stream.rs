//! How the text stream is written: summarised (the default) or every event (`--each`), and the
//! grace before a removed container is called dying. Shared by `run`, `record --print` and
//! `replay`.

use std::{io::IsTerminal as _, time::Duration};

use crate::sinks::TextOptions;

#[derive(Debug, clap::Args)]
pub struct TextArgs {
    /// Text: print every event on its own line as it comes. Without it, reclaim episodes and
    /// charge failures are summarised per container per interval (how many, freed, stall, how
    /// many freed nothing, the worst one), and OOM kills stand out on their own `!!!` line.
    /// JSON Lines and trace files always keep every event.
    #[arg(long)]
    pub each: bool,
    /// Text: a container removed while memory is still charged to it is reported as DYING only
    /// if the kernel has not freed it after this long (e.g. 500ms, 10s); freed sooner, its
    /// removal and release are one line. Ignored with --each.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "2s")]
    pub dying_grace: Duration,
}

impl TextArgs {
    /// The options for a text sink on stdout: colour only on a terminal, and not when
    /// `NO_COLOR` is set (<https://no-color.org>).
    #[must_use]
    pub fn options(&self) -> TextOptions {
        TextOptions {
            each: self.each,
            dying_grace: self.dying_grace,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::{cli::Cli, sinks::DEFAULT_DYING_GRACE};

    #[test]
    fn the_grace_defaults_to_the_sinks_default() {
        let cli = Cli::try_parse_from(["memtrace", "run"]).expect("parse");
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.text.dying_grace, DEFAULT_DYING_GRACE);
        assert!(!args.text.each);
        let cli = Cli::try_parse_from([
            "memtrace",
            "replay",
            "f",
            "--each",
            "--dying-grace",
            "500ms",
        ])
        .expect("parse");
        let crate::cli::Command::Replay(args) = cli.command else {
            panic!("not replay");
        };
        assert!(args.text.each);
        assert_eq!(args.text.dying_grace, std::time::Duration::from_millis(500));
    }
}
