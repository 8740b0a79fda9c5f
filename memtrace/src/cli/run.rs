//! `memtrace run`: stream events live.

use std::{io, process::ExitCode, time::Instant};

use super::{
    live::{LiveArgs, Session},
    stream::TextArgs,
};
use crate::sinks;

const EXAMPLES: &str = "\
Examples:
  memtrace run                     per container per interval: page cache, charges, slab, and one
                                   line counting its reclaim episodes and charge failures; OOM
                                   kills at once on their own `!!!` line
  memtrace run --interval 5s       those lines every 5 seconds
  memtrace run --each              every event on its own line
  memtrace run --dying-grace 10s   call a removed container dying after 10 s, not 2 s
  memtrace run --format json --duration 30s   every event, as JSON Lines";

/// Stream memory events live until Ctrl-C (or --duration).
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: sinks::Format,
    #[command(flatten)]
    pub text: TextArgs,
}

pub fn run(args: &Args, started: Instant) -> anyhow::Result<ExitCode> {
    let session = Session::start(&args.live, started)?;
    let mut sink = sinks::terminal(
        args.format,
        io::stdout(),
        session.clock(),
        &args.text.options(),
    );
    let summary = session.stream(sink.as_mut())?;
    summary.print();
    Ok(ExitCode::SUCCESS)
}
