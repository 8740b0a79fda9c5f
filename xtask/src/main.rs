//! memtrace's developer tasks, run as `cargo xtask <COMMAND>`.

mod bench;
mod bpf_linker;
mod build;
mod fuzz;
mod image;
mod process;
mod run;
mod setup;
mod test;
mod toolchain;
mod vm;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

const EXAMPLES: &str = "\
Examples:
  cargo xtask setup                     install the pinned toolchains and bpf-linker
  cargo xtask build --release           build memtrace and the test binaries, optimised
  cargo xtask run -- --help             build memtrace (release) and show `memtrace run --help`
  cargo xtask run --debug -- ARGS       run the debug build of memtrace as `memtrace run ARGS`
  cargo xtask test                      rustfmt, clippy, build, then the whole test suite
  cargo xtask test -- -- --nocapture    run the test suite with the tests' output shown
  cargo xtask vm-test                   the integration tests on Debian's 6.1 and 6.12 under QEMU
  cargo xtask vm-test --kernel 6.12 -- oom_kill
                                        only tests whose name contains oom_kill, only on 6.12
  sudo -E cargo xtask bench --runs 3    memtrace's cost next to bpftrace's (table, and JSON in
                                        target/bench/latest.json)
  cargo xtask bench trace               trace files: write and read events/s, bytes per event
  sudo -E cargo xtask bench startup --runs 20
                                        exec to attached, idle and under load, per phase
  cargo xtask fuzz --seconds 300        fuzz the trace reader for 5 minutes (cargo-fuzz)
  cargo xtask image --tag REGISTRY/memtrace:0.1.0
                                        the container image, built with podman (deploy/)";

/// Developer tasks for memtrace: install the toolchains, build, run and test.
///
/// Every command first makes sure the pinned Rust toolchains and bpf-linker are installed
/// (what `setup` does), so a fresh clone needs nothing but rustup.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install both pinned toolchains with their components, and bpf-linker (fast when present)
    Setup,
    /// Set up, then build memtrace and the integration-test binaries
    Build(build::Options),
    /// Set up, build memtrace, then run `memtrace run ARGS...` in place of this process
    Run(run::Options),
    /// Set up, install Chromium (for the HTML report test), then check formatting, run clippy,
    /// build, and run the whole test suite
    Test(test::Options),
    /// Set up, install QEMU, then run the integration tests on Debian's kernels in VMs
    VmTest(vm::Options),
    /// Set up, build memtrace (release), then measure what it costs two workloads next to
    /// bpftrace: slowdown, in-kernel cost per event, start-up (as root; about a minute)
    Bench(bench::Options),
    /// Set up, install cargo-fuzz, then fuzz the trace reader for a bounded time
    Fuzz(fuzz::Options),
    /// Set up, install podman, build memtrace (release), then its container image
    Image(image::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line naming the failed step and why; a backtrace would bury it.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    let workspace = Workspace::locate()?;
    match command {
        Command::Setup => setup::run(&workspace),
        Command::Build(options) => build::run(&workspace, &options),
        Command::Run(options) => run::run(&workspace, &options).map(|never| match never {}),
        Command::Test(options) => test::run(&workspace, &options),
        Command::VmTest(options) => vm::run(&workspace, &options),
        Command::Bench(options) => bench::run(&workspace, &options),
        Command::Fuzz(options) => fuzz::run(&workspace, &options),
        Command::Image(options) => image::run(&workspace, &options),
    }
}
