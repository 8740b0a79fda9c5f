//! `memtrace record`: write events to a trace file.

use std::{io, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context as _;

use super::{
    live::{LiveArgs, Session},
    stream::TextArgs,
};
use crate::{
    clock,
    sinks::{self, Tee},
    trace::{FileFull, Limits, Recording, TraceHeader},
    units::{human_bytes, parse_size},
};

/// Record events to a trace file until Ctrl-C (or --duration), to analyse later anywhere.
///
/// Events are written in compressed blocks at least every second, so a recorder that is
/// killed (even with `kill -9`) loses at most the last second; `memtrace replay` reads such a
/// file up to its last whole block and says that its tail was cut.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    memtrace record -o node1.mtrace\n  \
    memtrace record -o oom.mtrace --duration 1h\n  \
    memtrace record -o oom.mtrace --print json   also stream JSON Lines on stdout\n  \
    memtrace record -o oom.mtrace --print text   also the text stream, summarised as `run` prints it\n  \
    memtrace record -o node1.mtrace --max-size 100M              stop at 100 MiB\n  \
    memtrace record -o node1.mtrace --max-size 100M --rotate 5   node1.mtrace.000001, …\n    \
                 (each file at most 100 MiB; the newest 5 are kept)")]
pub struct Args {
    /// Trace file to write (created with mode 0600; replaced if it exists).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Never let a file grow past SIZE (e.g. 100M, 2G; at least 64K): without --rotate, the
    /// recording ends there (exit status 0).
    #[arg(long, value_name = "SIZE", value_parser = parse_max_size)]
    pub max_size: Option<u64>,
    /// With --max-size: when a file is full, go on in the next one, keeping at most N files.
    /// They are named OUTPUT.000001, OUTPUT.000002, … (each a complete trace; the last one's
    /// end marker has the session's lost-event counts). Earlier OUTPUT.NNNNNN files are
    /// removed at the start.
    #[arg(long, value_name = "N", requires = "max_size",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rotate: Option<u32>,
    /// Also print the events on stdout, as `memtrace run --format FORMAT` would.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub print: Option<sinks::Format>,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub text: TextArgs,
}

fn parse_max_size(value: &str) -> Result<u64, String> {
    let size = parse_size(value)?;
    // Room for the header and some blocks; smaller would be a file per handful of events.
    let min = 64 << 10;
    if size < min {
        return Err(format!(
            "{value} is below the minimum of {}",
            human_bytes(min)
        ));
    }
    Ok(size)
}

pub fn run(args: &Args, started: Instant) -> anyhow::Result<ExitCode> {
    // Before attaching: every event the recording holds comes after it, so `replay --since 0s`
    // is the whole recording.
    let started_wall_ns = clock::now_wall_ns();
    let session = Session::start(&args.live, started)?;
    let header = TraceHeader {
        memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: read_proc("/proc/sys/kernel/hostname"),
        kernel_release: read_proc("/proc/sys/kernel/osrelease"),
        boot_time_wall_ns: session.clock().boot_time_wall_ns,
        clock: clock::EVENT_CLOCK.to_owned(),
        page_size: session.clock().page_size,
        started_wall_ns,
        probes: session.attached().iter().map(ToString::to_string).collect(),
        cgroup_version: format!("{:?}", session.hierarchy().version).to_lowercase(),
        memcgs_at_start: session.memcgs_at_start(),
    };
    let limits = Limits {
        max_size: args.max_size,
        rotate: args.rotate,
    };
    let mut recording = Recording::create(&args.output, &header, limits)
        .with_context(|| format!("creating {}", args.output.display()))?;
    eprintln!("memtrace: recording to {}", recording.current().display());
    let streamed = match args.print {
        Some(format) => {
            let text = args.text.options();
            let mut terminal = sinks::terminal(format, io::stdout(), session.clock(), &text);
            session.stream(&mut Tee {
                first: &mut recording,
                second: terminal.as_mut(),
            })
        }
        None => session.stream(&mut recording),
    };
    match streamed {
        Ok(summary) => {
            recording
                .finish(&summary.lost)
                .with_context(|| format!("finishing {}", args.output.display()))?;
            summary.print();
        }
        Err(err) if file_full(&err).is_some() => {
            // The programs are detached already; the file was finished when it filled.
            let full = file_full(&err).map(ToString::to_string).unwrap_or_default();
            let events = recording
                .finish(&[])
                .with_context(|| format!("finishing {}", args.output.display()))?;
            eprintln!("memtrace: {full}: recording ended after {events} events");
        }
        Err(err) => return Err(err),
    }
    Ok(ExitCode::SUCCESS)
}

fn file_full(err: &anyhow::Error) -> Option<&FileFull> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .find_map(|e| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<FileFull>())
        })
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
