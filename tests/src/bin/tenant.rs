//! Test workload, a container's process: joins a cgroup, writes and reads a file of KIB KiB in
//! DIR (page cache), creates a few small files beside it (slab), prints `ready`, then keeps its
//! memcg in use as a running container does, rewriting a page of another file every second,
//! until it is killed (at most ten minutes, so a lost one does not linger). memtrace forgets
//! the kernel's pointer of a memcg nothing counted for 30 intervals: a tenant that went idle
//! once ready lost it before the last of 200 was ready where starting them took longer than
//! that (101 s in a loaded emulated guest), and `node` could not see them all at once.
//!
//! Usage: `tenant CGROUP_PROCS_FILE DIR KIB`

use std::{
    fs,
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

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
    let beat = dir.join("beat");
    let until = Instant::now() + Duration::from_secs(600);
    while Instant::now() < until {
        // Truncated and written again: a page leaves the page cache and a new one is charged.
        if let Err(e) = fs::write(&beat, [0x5a; 4096]) {
            eprintln!("tenant: {}: {e}", beat.display());
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    ExitCode::SUCCESS
}
