use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    // glibc gives each thread that allocates an arena of its own, and the blocking threads
    // (drains, cgroup walks, counters passes) come and go: on a node with a thousand memcgs
    // their arenas held a third of memtrace's resident memory. Two are plenty for a tracer.
    // SAFETY: mallopt only changes the allocator's tuning; no allocation is in flight.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = memtrace::cli::Cli::parse();
    memtrace::cli::main(cli, started)
}
