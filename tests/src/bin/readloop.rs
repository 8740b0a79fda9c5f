//! Test workload: joins a cgroup, waits for a line on stdin (so that whoever watches it can get
//! ready), then reads FILE from start to end again and again for SECONDS, and prints how many
//! bytes it read. Under a memory limit smaller than the file, every read charges page cache
//! at the limit: a steady storm of limit reclaim, from one process.
//!
//! Usage: `readloop CGROUP_PROCS_FILE FILE SECONDS`

use std::{
    fs::File,
    io::{BufRead as _, Read as _},
    process::ExitCode,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let (file, seconds) = match memtrace_tests::join_cgroup("readloop", "FILE SECONDS", |args| {
        Some((args.first()?.clone(), args.get(1)?.parse::<u64>().ok()?))
    }) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let mut go = String::new();
    if std::io::stdin().lock().read_line(&mut go).is_err() {
        return ExitCode::FAILURE;
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    while Instant::now() < until {
        let mut f = match File::open(&file) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("readloop: {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) => {
                    eprintln!("readloop: {file}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if Instant::now() >= until {
                break;
            }
        }
    }
    println!("{total}");
    ExitCode::SUCCESS
}
