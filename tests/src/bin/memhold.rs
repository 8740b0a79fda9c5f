//! Test workload: joins a cgroup, allocates and touches MIB MiB, prints `held` on stdout, then
//! keeps the memory until it is killed (at most ten minutes, so a lost one does not linger).
//!
//! Usage: `memhold CGROUP_PROCS_FILE MIB`

use std::{io::Write as _, process::ExitCode, time::Duration};

fn main() -> ExitCode {
    let mib = match memtrace_tests::join_cgroup("memhold", "MIB", |args| {
        args.first()?.parse::<usize>().ok()
    }) {
        Ok(mib) => mib,
        Err(code) => return code,
    };
    // Non-zero bytes: every page is really touched, so it is charged to the memcg.
    let chunks: Vec<Vec<u8>> = (0..mib).map(|_| vec![0x5a; 1 << 20]).collect();
    let mut out = std::io::stdout();
    if writeln!(out, "held").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    std::thread::sleep(Duration::from_secs(600));
    std::hint::black_box(&chunks);
    ExitCode::SUCCESS
}
