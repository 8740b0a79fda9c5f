//! Test workload: joins a cgroup, then allocates and touches memory 1 MiB at a time until the
//! kernel kills it, or until a cap so that a test mistake (no limit) cannot exhaust the machine.
//!
//! Usage: `memhog CGROUP_PROCS_FILE CAP_MIB`
//! Exit status 3: the cap was reached without an OOM kill.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cap = match memtrace_tests::join_cgroup("memhog", "CAP_MIB", |args| {
        args.first()?.parse::<usize>().ok()
    }) {
        Ok(cap) => cap,
        Err(code) => return code,
    };
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..cap {
        // Non-zero bytes: every page is really touched, so it is charged to the memcg.
        chunks.push(vec![0x5a; 1 << 20]);
    }
    eprintln!("memhog: reached the {cap} MiB cap without being OOM-killed");
    std::hint::black_box(&chunks);
    ExitCode::from(3)
}
