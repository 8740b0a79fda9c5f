//! Runs one storm (see `memtrace_tests::storm`) at the size given and prints its outcome as one
//! JSON object: what `cargo xtask bench storms` runs. memtrace is `MEMTRACE_BIN`; the workloads
//! (`memhog`, `readloop`) are the ones built beside this binary.
//!
//! Usage: `storm oom MEMCGS KILLS_EACH` | `storm cgroup COUNT [STALL_SECONDS]` |
//! `storm reclaim SECONDS`

use std::{path::Path, process::ExitCode, time::Duration};

use memtrace_tests::storm::{self, Workloads};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|n| n.parse::<usize>().ok());
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().unwrap_or(Path::new("."));
    let workloads = Workloads {
        memhog: dir.join("memhog"),
        readloop: dir.join("readloop"),
        disk_dir: dir.to_owned(),
    };
    let outcome = match (args.first().map(String::as_str), number(1), number(2)) {
        (Some("oom"), Some(memcgs), Some(kills_each)) => {
            storm::oom_storm(memcgs, kills_each, &workloads)
        }
        (Some("cgroup"), Some(count), stall) => {
            let reader = match stall {
                Some(seconds) if seconds > 0 => {
                    storm::Reader::StdoutStalled(Duration::from_secs(seconds as u64))
                }
                _ => storm::Reader::Reading,
            };
            storm::cgroup_storm(count, reader, &[])
        }
        (Some("reclaim"), Some(seconds), None) => storm::reclaim_storm(seconds as u64, &workloads),
        _ => {
            eprintln!(
                "usage: storm oom MEMCGS KILLS_EACH | storm cgroup COUNT [STALL_SECONDS] | \
                 storm reclaim SECONDS"
            );
            return ExitCode::from(2);
        }
    };
    if !outcome.clean() {
        eprintln!("{}", outcome.stderr);
    }
    println!("{}", outcome.to_json());
    ExitCode::SUCCESS
}
