//! Test workload: joins a cgroup, then creates COUNT empty files in DIR (on tmpfs, so each is an
//! inode and a dentry charged to the cgroup as slab) and keeps them.
//!
//! Usage: `mkfiles CGROUP_PROCS_FILE DIR COUNT`

use std::{env, fs, path::Path, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    let (Some(procs), Some(dir), Some(count)) = (
        args.get(1),
        args.get(2),
        args.get(3).and_then(|c| c.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: mkfiles CGROUP_PROCS_FILE DIR COUNT");
        return ExitCode::from(2);
    };
    if let Err(e) = fs::write(procs, std::process::id().to_string()) {
        eprintln!("mkfiles: cannot join {procs}: {e}");
        return ExitCode::from(2);
    }
    for i in 0..count {
        let file = Path::new(dir).join(format!("f{i}"));
        if let Err(e) = fs::File::create(&file) {
            eprintln!("mkfiles: cannot create {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
