//! `memtrace replay`: print a recorded trace the way `run` printed it live.

use std::{io, path::PathBuf, process::ExitCode};

use super::{
    progress::Progress,
    select::{SelectArgs, Selection, TIME_HELP},
    stream::TextArgs,
};
use crate::{
    event::HostClock,
    sinks,
    trace::{TraceItem, TraceReader, cut_short},
};

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
    let mut reader = TraceReader::open(&args.file)?;
    let header = reader.header().clone();
    let clock = HostClock {
        boot_time_wall_ns: header.boot_time_wall_ns,
        page_size: header.page_size,
    };
    let selection = Selection::new(&args.select, &header);
    let progress = Progress::for_reader(&reader, true);
    let mut sink = sinks::terminal(args.format, io::stdout(), clock, &args.text.options());
    let mut exit = ExitCode::SUCCESS;
    let mut read = 0u64;
    let result = loop {
        match reader.next_item() {
            Ok(Some(TraceItem::Event(event))) => {
                if selection.wants(&event) {
                    sink.write(&event)?;
                }
                read += 1;
                if read.is_multiple_of(4096) {
                    progress.update(&reader);
                }
            }
            Ok(Some(TraceItem::End { events, lost })) => {
                progress.finish();
                let lost = if lost.is_empty() {
                    "lost events not counted in this file (see the last file of a rotated \
                     recording)"
                        .to_owned()
                } else {
                    format!("{} lost", lost.iter().sum::<u64>())
                };
                eprintln!(
                    "memtrace: {} recorded on {} (kernel {}, probes {}): {events} events, {lost}",
                    args.file.display(),
                    header.host,
                    header.kernel_release,
                    header.probes.join(" "),
                );
            }
            Ok(Some(TraceItem::TailCut {
                offset,
                events,
                dropped_bytes,
            })) => {
                progress.finish();
                let cut = cut_short(
                    &args.file.display().to_string(),
                    offset,
                    events,
                    dropped_bytes,
                );
                eprintln!("memtrace: warning: {cut}: all of them printed");
                exit = ExitCode::from(EXIT_TAIL_CUT);
            }
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    progress.finish();
    // What was read is printed before any error about what follows it.
    sink.end()?;
    result?;
    Ok(exit)
}
