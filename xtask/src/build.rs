//! `cargo xtask build`: memtrace and the integration-test binaries.

use clap::Args;

use crate::{
    process, setup,
    workspace::{MEMTRACE, TESTS, Workspace},
};

#[derive(Args)]
pub struct Options {
    /// Build with optimisations (cargo's `release` profile)
    #[arg(long)]
    release: bool,
}

/// Sets up, then builds.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    setup::run(workspace)?;
    let mut cargo = workspace.cargo();
    cargo.arg("build");
    if options.release {
        cargo.arg("--release");
    }
    process::run(cargo.args(["-p", MEMTRACE, "-p", TESTS]))
}
