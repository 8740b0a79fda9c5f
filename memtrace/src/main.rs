use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = memtrace::cli::Cli::parse();
    memtrace::cli::main(cli, started)
}
