//! Test workload: joins a cgroup, then creates COUNT empty files in DIR (on tmpfs, so each is an
//! inode and a dentry charged to the cgroup as slab) and keeps them.
//!
//! Usage: `mkfiles CGROUP_PROCS_FILE DIR COUNT`

use std::{fs, path::Path, process::ExitCode};

fn main() -> ExitCode {
    let (dir, count) = match memtrace_tests::join_cgroup("mkfiles", "DIR COUNT", |args| {
        Some((args.first()?.clone(), args.get(1)?.parse::<usize>().ok()?))
    }) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    for i in 0..count {
        let file = Path::new(&dir).join(format!("f{i}"));
        if let Err(e) = fs::File::create(&file) {
            eprintln!("mkfiles: cannot create {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
