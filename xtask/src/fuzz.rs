//! `cargo xtask fuzz`: cargo-fuzz (pinned, installed under `.tools/` like bpf-linker) on the
//! trace reader for a bounded time, on the eBPF nightly already pinned for the BPF programs
//! (libFuzzer's sanitizer flags need a nightly; no second one is installed for it).

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;
use clap::Args;

use crate::{process, setup, workspace::Workspace};

/// The cargo-fuzz release that is installed.
pub const VERSION: &str = "0.13.2";

#[derive(Args)]
pub struct Options {
    /// How long to fuzz each target
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
}

/// The fuzz targets in `fuzz/fuzz_targets/`.
const TARGETS: &[&str] = &["trace_reader"];

/// Sets up, installs cargo-fuzz if missing, then fuzzes each target for `seconds`; a crash
/// fails with the input that caused it saved under `<target>/fuzz/artifacts/`.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    setup::run(workspace)?;
    let cargo_fuzz = ensure_installed(workspace)?;
    let out = workspace.target_dir().join("fuzz");
    for target in TARGETS {
        // New inputs go to the first directory (kept between runs, not committed); the seeds
        // (real trace files) are only read.
        let corpus = out.join("corpus").join(target);
        let artifacts = out.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let seeds = workspace.root().join("fuzz").join("seeds").join(target);
        let mut artifact_prefix = artifacts.into_os_string();
        artifact_prefix.push("/");
        let mut prefix_arg = std::ffi::OsString::from("-artifact_prefix=");
        prefix_arg.push(&artifact_prefix);
        let mut cmd = Command::new(&cargo_fuzz);
        cmd.current_dir(workspace.root())
            .env("PATH", workspace.path_env())
            // cargo-fuzz runs `cargo`; rustup's proxy picks this toolchain for it.
            .env("RUSTUP_TOOLCHAIN", &workspace.ebpf.channel)
            .env("CARGO_TARGET_DIR", out.join("build"))
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            // Trace blocks are at most a few MiB; bigger inputs only slow the search.
            .arg("-max_len=65536")
            .arg("-rss_limit_mb=1024")
            .arg(prefix_arg);
        eprintln!("==> fuzz {target} for {} s", options.seconds);
        process::run(&mut cmd).with_context(|| format!("fuzz target `{target}` failed"))?;
    }
    Ok(())
}

/// Installs cargo-fuzz [`VERSION`] under `.tools/cargo-fuzz` unless it is there; returns the
/// executable.
fn ensure_installed(workspace: &Workspace) -> anyhow::Result<PathBuf> {
    let root = workspace.tools_dir().join("cargo-fuzz");
    let binary = root.join("bin").join("cargo-fuzz");
    let label = format!("cargo-fuzz {VERSION}");
    let installed = Command::new(&binary)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|word| word == VERSION)
        });
    if installed {
        eprintln!("{label}: ok (already installed)");
        return Ok(binary);
    }
    eprintln!("{label}: installing (about a minute) ...");
    process::run(
        workspace
            .cargo()
            .args([
                "install",
                "cargo-fuzz",
                "--version",
                VERSION,
                "--locked",
                "--force",
            ])
            .arg("--root")
            .arg(&root),
    )
    .with_context(|| format!("installing {label}"))?;
    Ok(binary)
}
