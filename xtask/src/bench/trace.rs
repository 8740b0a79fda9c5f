//! `cargo xtask bench trace`: the trace file format's own benchmark
//! (`memtrace/benches/trace_format.rs`): events/s written and read on one core, bytes per event on disk. Needs no
//! root and no kernel: it measures the file format alone.

use anyhow::Context as _;

use crate::{
    process, setup,
    workspace::{MEMTRACE, Workspace},
};

pub fn run(workspace: &Workspace) -> anyhow::Result<()> {
    setup::run(workspace)?;
    process::run(
        workspace
            .cargo()
            .args(["bench", "-p", MEMTRACE, "--bench", "trace_format"]),
    )
    .context("bench step `trace_format` failed")
}
