//! `memtrace run`: stream events live.

use std::{io, process::ExitCode, time::Instant};

use super::live::{LiveArgs, Session};
use crate::sinks;

/// Stream memory events live until Ctrl-C (or --duration).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  memtrace run\n  memtrace run --format json --duration 30s")]
pub struct Args {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: sinks::Format,
}

pub fn run(args: &Args, started: Instant) -> anyhow::Result<ExitCode> {
    let session = Session::start(&args.live, started)?;
    let mut sink = sinks::terminal(args.format, io::stdout(), session.clock());
    let summary = session.stream(sink.as_mut())?;
    summary.print();
    Ok(ExitCode::SUCCESS)
}
