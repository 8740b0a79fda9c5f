//! Test workload, a container's process: joins a cgroup, writes and reads a file of KIB KiB in
//! DIR (page cache), creates a few small files beside it (slab), prints `ready`, then sleeps
//! until it is killed (at most ten minutes, so a lost one does not linger).
//!
//! Usage: `tenant CGROUP_PROCS_FILE DIR KIB`

use std::{fs, io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

fn main() -> ExitCode {
    let (dir, kib) = match memtrace_tests::join_cgroup("tenant", "DIR KIB", |args| {
        Some((
            PathBuf::from(args.first()?),
            args.get(1)?.parse::<usize>().ok()?,
        ))
    }) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let file = dir.join("cache");
    let written = fs::write(&file, vec![0x5a; kib << 10]).and_then(|()| fs::read(&file));
    if let Err(e) = written {
        eprintln!("tenant: {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    for i in 0..4 {
        if let Err(e) = fs::File::create(dir.join(format!("small-{i}"))) {
            eprintln!("tenant: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    let mut out = std::io::stdout();
    if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    std::thread::sleep(Duration::from_secs(600));
    ExitCode::SUCCESS
}
