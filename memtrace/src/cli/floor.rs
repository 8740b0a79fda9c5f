//! `memtrace bench-floor` (hidden): empty programs on the hot-path raw tracepoints until
//! SIGINT or SIGTERM, for `cargo xtask bench` to measure what attaching anything there costs;
//! with `--count`, programs that only count each event per key in a per-CPU hash.

use std::process::ExitCode;

use crate::probes::floor;

/// Attach empty programs to the raw tracepoints memtrace's hot paths use, until Ctrl-C (for
/// `cargo xtask bench`).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  memtrace bench-floor\n  memtrace bench-floor --count")]
pub struct Args {
    /// Programs that count each event in a per-CPU hash (keyed by their first argument's 1 GiB
    /// region) instead of empty ones: the map work of any per-key aggregation, with nothing
    /// read from memory.
    #[arg(long)]
    count: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    // Blocked before attaching, so a signal that comes early waits for `sigwait`.
    // SAFETY: plain libc calls on a local, initialised signal set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        set
    };
    let (_ebpf, attached) = floor::attach(args.count)?;
    eprintln!(
        "memtrace: attached {} {} programs: {}",
        attached.len(),
        if args.count { "count-floor" } else { "empty" },
        attached.join(", ")
    );
    let mut signal = 0;
    // SAFETY: `set` is initialised and `signal` is a valid out-pointer.
    unsafe { libc::sigwait(&raw const set, &raw mut signal) };
    Ok(ExitCode::SUCCESS)
}
