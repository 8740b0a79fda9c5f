//! `cargo xtask bench pipeline`: the userspace pipeline's own benchmark
//! (`memtrace/benches/pipeline.rs`): ring-buffer records decoded, attributed and written as JSON
//! Lines and a trace file, in events/s on one core against the 1 M events/s target. Needs no
//! root and no kernel: the cgroup hierarchy it attributes against is a temporary directory.

use anyhow::Context as _;

use crate::{
    process,
    workspace::{MEMTRACE, Workspace},
};

/// Runs the benchmark (an optimised build); set-up is the caller's.
pub fn run(workspace: &Workspace) -> anyhow::Result<()> {
    process::run(
        workspace
            .cargo()
            .args(["bench", "-p", MEMTRACE, "--bench", "pipeline"]),
    )
    .context("bench step `pipeline` failed")
}
