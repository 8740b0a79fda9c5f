use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    // glibc gives each thread that allocates an arena of its own, and the blocking threads
    // (drains, cgroup walks, counters passes) come and go: on a node with a thousand memcgs
    // their arenas held a third of memtrace's resident memory. Two are plenty for a tracer.
    //
    // And fixed thresholds instead of glibc's sliding ones: after a burst (thousands of files
    // named in one interval) glibc raised its mmap threshold to the size of the largest
    // buffer freed, so the next large tables came from the heap and their pages stayed
    // resident after they were freed. With blocks of 128 KiB and more mapped on their own, and
    // the heap's top given back above 1 MiB, two memtraces watching the same three bursts of
    // 6 000 files peaked at 31.5 MB (glibc's defaults) and 25.1 MB (these); in a second run on
    // a busier machine at 40.4 and 31.6 MB. `cargo xtask bench soak` measures the growth.
    // SAFETY: mallopt only changes the allocator's tuning; no allocation is in flight.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = memtrace::cli::Cli::parse();
    memtrace::cli::main(cli, started)
}
