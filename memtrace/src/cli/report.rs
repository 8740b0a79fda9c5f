//! `memtrace report`: what a recorded trace says, per container.

use std::{
    fs::OpenOptions,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;

use super::trace_input::TraceInput;
use crate::report::{self, ReportBuilder};

/// The answer first (OOM kills with the limit that fired and a verdict, what grew most, dying
/// memcgs), then per container: OOM kills, page-cache growth, reclaim, slab.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  memtrace report node1.mtrace\n  \
                        memtrace report node1.mtrace --top 5\n  \
                        memtrace report node1.mtrace --format json | jq .summary\n  \
                        memtrace report node1.mtrace --html node1.html")]
pub struct Args {
    /// Trace file written by `memtrace record`.
    pub file: PathBuf,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    /// Also write the report with timeline charts to this HTML file (one self-contained file).
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// At most N container sections (containers and pods first, then host cgroups) in every
    /// output; the summary at the top still counts all of them.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object: the whole report.
    Json,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let input = TraceInput::open(&args.file, "report", false)?;
    let mut builder = ReportBuilder::new(input.clock());
    let info = input.for_each(|event| {
        builder.add(event);
        Ok(())
    })?;
    let mut report = builder.finish(info);
    if let Some(n) = args.top {
        report.keep_top(n);
    }
    if let Some(out) = &args.html {
        let html = report::html(&report)?;
        // 0600 like the trace: the report names every container and cgroup on the node.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(out)
            .and_then(|mut f| f.write_all(html.as_bytes()))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("memtrace: wrote the HTML report to {}", out.display());
    }
    let mut stdout = io::stdout().lock();
    match args.format {
        ReportFormat::Text => stdout.write_all(report::text(&report).as_bytes())?,
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            stdout.write_all(b"\n")?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
