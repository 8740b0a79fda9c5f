//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::{env, ffi::OsString, process::Command};

use anyhow::Context as _;
use clap::Args;

use crate::{
    process, setup,
    workspace::{EBPF, MEMTRACE, TESTS, Workspace},
};

#[derive(Args)]
pub struct Options {
    /// Arguments for `cargo test` (after a second `--`, for the test binaries)
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// Sets up, then runs each step; the first that fails stops the rest.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    setup::run(workspace)?;

    let cargo = |args: &[&str]| {
        let mut cmd = workspace.cargo();
        cmd.args(args);
        cmd
    };
    // The eBPF crate only builds for the BPF target (through memtrace's build.rs).
    let mut test = cargo(&["test", "--workspace", "--exclude", EBPF]);
    // In CI, one failing test should not hide the others.
    if env::var_os("CI").is_some_and(|ci| ci == "true") {
        test.arg("--no-fail-fast");
    }
    test.args(&options.args).env(
        "MEMTRACE_BIN",
        workspace.target_dir().join("debug").join(MEMTRACE),
    );

    let mut ebpf_clippy = workspace.ebpf_cargo();
    ebpf_clippy.args([
        "clippy",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);

    let steps: [(&str, Command); 5] = [
        ("format", cargo(&["fmt", "--all", "--", "--check"])),
        (
            "clippy",
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                EBPF,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        ("clippy (eBPF)", ebpf_clippy),
        (
            "build",
            cargo(&["build", "-p", MEMTRACE, "-p", TESTS, "--bins"]),
        ),
        ("test", test),
    ];
    for (name, mut command) in steps {
        println!("==> {name}");
        process::run(&mut command).with_context(|| format!("test step `{name}` failed"))?;
    }
    Ok(())
}
