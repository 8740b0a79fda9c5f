//! `memtrace export`: a recorded trace for other tools.

use std::{fs::OpenOptions, os::unix::fs::OpenOptionsExt as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use super::trace_input::TraceInput;
use crate::export::PerfettoWriter;

/// Convert a trace file for another tool: `--perfetto` writes Chrome trace JSON for
/// ui.perfetto.dev (a track per container: memory counters, reclaim slices, OOM kills).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  memtrace export --perfetto node1.mtrace -o node1.json\n  \
                        (then open node1.json in ui.perfetto.dev)"
)]
pub struct Args {
    /// Chrome trace event JSON, as Perfetto and `chrome://tracing` load it (the only format so
    /// far; required so that others can be added without changing what this means).
    #[arg(long, required = true)]
    pub perfetto: bool,
    /// Trace file written by `memtrace record`.
    pub file: PathBuf,
    /// File to write.
    #[arg(short, long, value_name = "OUT.json")]
    pub output: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let input = TraceInput::open(&args.file, "export", false)?;
    let out = &args.output;
    let writing = || format!("writing {}", out.display());
    // 0600 like the trace: the export names every container and cgroup on the node.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .with_context(writing)?;
    let exported = PerfettoWriter::new(file, input.info())
        .with_context(writing)
        .and_then(|mut writer| {
            let info = input.for_each(|event| writer.add(event).with_context(writing))?;
            writer.finish(&info).with_context(writing)
        });
    let written = match exported {
        Ok(written) => written,
        Err(err) => {
            // Half a JSON document is no use to anyone, and would look like an export.
            let _ = std::fs::remove_file(out);
            return Err(err);
        }
    };
    eprintln!(
        "memtrace: wrote {written} trace events to {} (open it in ui.perfetto.dev)",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
