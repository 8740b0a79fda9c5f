//! `cargo xtask run`: build memtrace and become `memtrace run`.

use std::{
    convert::Infallible, ffi::OsString, os::unix::process::CommandExt as _, process::Command,
};

use clap::Args;

use crate::{
    process::{self, Shown},
    setup,
    workspace::{MEMTRACE, Workspace},
};

#[derive(Args)]
pub struct Options {
    /// Build and run the unoptimised debug build instead of the release build
    #[arg(long)]
    debug: bool,

    /// Arguments for `memtrace run`
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// Sets up, builds memtrace, and replaces this process with it, so that Ctrl-C reaches memtrace
/// directly. Returns only on failure. memtrace itself reports a missing root.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<Infallible> {
    setup::run(workspace)?;
    let mut cargo = workspace.cargo();
    cargo.arg("build");
    let profile = if options.debug {
        "debug"
    } else {
        cargo.arg("--release");
        "release"
    };
    process::run(cargo.args(["-p", MEMTRACE]))?;

    let mut memtrace = Command::new(workspace.target_dir().join(profile).join(MEMTRACE));
    memtrace.arg("run").args(&options.args);
    eprintln!("$ {}", Shown(&memtrace));
    let error = memtrace.exec();
    Err(process::spawn_error(&memtrace, error))
}
