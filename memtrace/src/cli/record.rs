//! `memtrace record`: write events to a trace file.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context as _;

use super::live::{LiveArgs, Session};
use crate::{
    clock,
    trace::{TraceHeader, TraceWriter},
};

/// Record events to a trace file until Ctrl-C (or --duration), to analyse later anywhere.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  memtrace record -o node1.mtrace\n  \
                        memtrace record -o oom.mtrace --duration 1h")]
pub struct Args {
    /// Trace file to write (created with mode 0600; replaced if it exists).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub live: LiveArgs,
}

pub fn run(args: &Args, started: Instant) -> anyhow::Result<ExitCode> {
    let session = Session::start(&args.live, started)?;
    let header = TraceHeader {
        memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: read_proc("/proc/sys/kernel/hostname"),
        kernel_release: read_proc("/proc/sys/kernel/osrelease"),
        boot_time_wall_ns: session.clock().boot_time_wall_ns,
        clock: clock::EVENT_CLOCK.to_owned(),
        page_size: session.clock().page_size,
        started_wall_ns: clock::now_wall_ns(),
        probes: session.attached().iter().map(ToString::to_string).collect(),
        cgroup_version: format!("{:?}", session.hierarchy().version).to_lowercase(),
    };
    let mut writer = TraceWriter::create(&args.output, &header)
        .with_context(|| format!("creating {}", args.output.display()))?;
    eprintln!("memtrace: recording to {}", args.output.display());
    let summary = session.stream(&mut writer)?;
    writer
        .finish(&summary.lost)
        .with_context(|| format!("finishing {}", args.output.display()))?;
    summary.print();
    Ok(ExitCode::SUCCESS)
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
