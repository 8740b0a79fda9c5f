//! `cargo xtask setup`: the pinned toolchains and bpf-linker, each installed only when missing.

use std::process::Command;

use anyhow::Context as _;

use crate::{bpf_linker, process, workspace::Workspace};

/// Installs whatever of the toolchains and bpf-linker is missing, printing one line per step.
pub fn run(workspace: &Workspace) -> anyhow::Result<()> {
    let rustup = which::which("rustup").ok().context(
        "setup step `rustup` failed: rustup is not on PATH; install it from https://rustup.rs",
    )?;
    eprintln!("rustup: ok ({})", rustup.display());

    let listed = process::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("setup step `rustup toolchain list` failed")?;
    for toolchain in [&workspace.userspace, &workspace.ebpf] {
        toolchain
            .ensure_installed(&listed)
            .with_context(|| format!("setup step `toolchain {}` failed", toolchain.channel))?;
    }

    bpf_linker::ensure_installed(workspace)
        .with_context(|| format!("setup step `bpf-linker {}` failed", bpf_linker::VERSION))
}
