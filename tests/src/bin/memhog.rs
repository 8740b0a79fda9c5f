//! Test workload: joins a cgroup, then allocates and touches memory 1 MiB at a time until the
//! kernel kills it, or until a cap so that a test mistake (no limit) cannot exhaust the machine.
//!
//! Usage: `memhog CGROUP_PROCS_FILE CAP_MIB`
//! Exit status 3: the cap was reached without an OOM kill.

use std::{env, fs, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    let (Some(procs), Some(cap)) = (
        args.get(1),
        args.get(2).and_then(|c| c.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: memhog CGROUP_PROCS_FILE CAP_MIB");
        return ExitCode::from(2);
    };
    if let Err(e) = fs::write(procs, std::process::id().to_string()) {
        eprintln!("memhog: cannot join {procs}: {e}");
        return ExitCode::from(2);
    }
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..cap {
        // Non-zero bytes: every page is really touched, so it is charged to the memcg.
        chunks.push(vec![0x5a; 1 << 20]);
    }
    eprintln!("memhog: reached the {cap} MiB cap without being OOM-killed");
    std::hint::black_box(&chunks);
    ExitCode::from(3)
}
