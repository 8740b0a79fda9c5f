//! `memtrace replay`: print a recorded trace the way `run` printed it live.

use std::{io, path::PathBuf, process::ExitCode};

use crate::{
    event::{Event, HostClock},
    sinks,
    trace::{TraceItem, TraceReader},
};

/// Print a recorded trace file with the same lines `memtrace run` printed live.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  memtrace replay node1.mtrace\n  \
                        memtrace replay node1.mtrace --format json | jq 'select(.type==\"oom_kill\")'")]
pub struct Args {
    /// Trace file written by `memtrace record`.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: sinks::Format,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut reader = TraceReader::open(&args.file)?;
    let header = reader.header().clone();
    let clock = HostClock {
        boot_time_wall_ns: header.boot_time_wall_ns,
        page_size: header.page_size,
    };
    let mut sink = sinks::terminal(args.format, io::stdout());
    let result = loop {
        match reader.next_item() {
            Ok(Some(TraceItem::Event(observed))) => {
                sink.write(&observed, &Event::new(&observed, clock))?;
            }
            Ok(Some(TraceItem::End { events, lost })) => {
                eprintln!(
                    "memtrace: {} recorded on {} (kernel {}, probes {}): {events} events, {} lost",
                    args.file.display(),
                    header.host,
                    header.kernel_release,
                    header.probes.join(" "),
                    lost.iter().sum::<u64>(),
                );
            }
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    // What was read is printed before any error about what follows it.
    sink.flush()?;
    result?;
    Ok(ExitCode::SUCCESS)
}
