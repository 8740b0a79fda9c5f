//! `memtrace replay`: print a recorded trace the way `run` printed it live.

use std::{io, path::PathBuf, process::ExitCode};

use super::{
    select::{SelectArgs, Selection, TIME_HELP},
    stream::TextArgs,
    trace_input::TraceInput,
};
use crate::sinks;

/// Exit status when the file's tail was cut (the recorder was killed): everything before the
/// cut was printed.
pub const EXIT_TAIL_CUT: u8 = 3;

const AFTER_HELP: &str = "\
Exit status: 0 the whole file was read; 1 it could not be read (not a trace, another format
version, damaged: what came before the damage is printed); 3 the recording stops before its
end marker (a recorder killed or out of disk): everything up to the last whole chunk, at most
the last second of the recording missing, was printed, and a warning says where it was cut.

Examples:
  memtrace replay node1.mtrace
  memtrace replay node1.mtrace --each          every reclaim and charge failure on its own line
  memtrace replay node1.mtrace --type oom_kill,reclaim --pod shop/cart-7d9f
  memtrace replay node1.mtrace --since 10m --until 2026-11-27T16:00:00Z --format json
  memtrace replay node1.mtrace --format json | jq 'select(.type==\"oom_kill\")'";

/// Print a recorded trace file with the same lines `memtrace run` printed live, with the same
/// filters.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{TIME_HELP}\n\n{AFTER_HELP}"))]
pub struct Args {
    /// Trace file written by `memtrace record`.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: sinks::Format,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub text: TextArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let input = TraceInput::open(&args.file, "replay", true)?;
    let header = input.header().clone();
    let selection = Selection::new(&args.select, &header);
    let mut sink = sinks::terminal(
        args.format,
        io::stdout(),
        input.clock(),
        &args.text.options(),
    );
    let result = input.for_each(|event| {
        if selection.wants(event) {
            sink.write(event)?;
        }
        Ok(())
    });
    // What was read is printed before any error about what follows it.
    sink.end()?;
    let info = result?;
    if info.cut_short.is_some() {
        return Ok(ExitCode::from(EXIT_TAIL_CUT));
    }
    let lost = match info.lost_events {
        Some(lost) => format!("{lost} lost"),
        None => "lost events not counted in this file (see the last file of a rotated recording)"
            .to_owned(),
    };
    eprintln!(
        "memtrace: {} recorded on {} (kernel {}, probes {}): {} events, {lost}",
        args.file.display(),
        header.host,
        header.kernel_release,
        header.probes.join(" "),
        info.recorded_events.unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}
