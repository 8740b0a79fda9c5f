//! Test workload: joins a cgroup, then allocates and touches memory 1 MiB at a time until the
//! kernel kills it, or until a cap so that a test mistake (no limit) cannot exhaust the machine.
//!
//! Usage: `memhog CGROUP_PROCS_FILE CAP_MIB [huge]`
//! Exit status 3: the cap was reached without an OOM kill.
//!
//! With `huge`, memory comes 2 MiB at a time, aligned and advised `MADV_HUGEPAGE`: each fault
//! first tries a transparent huge page, whose 512-page charge the memcg refuses at its limit
//! with `-ENOMEM` on every kernel (the OOM killer is not invoked for so large an order), before
//! the fault falls back to small pages. A charge refusal the kernel reports, made certain.

use std::{alloc::Layout, process::ExitCode};

const HUGE: usize = 2 << 20;

fn main() -> ExitCode {
    let (cap, huge) = match memtrace_tests::join_cgroup("memhog", "CAP_MIB [huge]", |args| {
        let cap = args.first()?.parse::<usize>().ok()?;
        match args.get(1).map(String::as_str) {
            None => Some((cap, false)),
            Some("huge") => Some((cap, true)),
            Some(_) => None,
        }
    }) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    if huge {
        huge_pages(cap);
    } else {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..cap {
            // Non-zero bytes: every page is really touched, so it is charged to the memcg.
            chunks.push(vec![0x5a; 1 << 20]);
        }
        std::hint::black_box(&chunks);
    }
    eprintln!("memhog: reached the {cap} MiB cap without being OOM-killed");
    ExitCode::from(3)
}

/// Touches `cap` MiB in 2 MiB blocks advised as huge pages (never freed: the process ends).
fn huge_pages(cap: usize) {
    let layout = Layout::from_size_align(HUGE, HUGE).expect("layout");
    for _ in 0..cap.div_ceil(2) {
        // SAFETY: a non-zero size; the block is written only within its bounds.
        let block = unsafe { std::alloc::alloc(layout) };
        assert!(!block.is_null(), "memhog: allocation failed");
        // SAFETY: the block is ours, aligned to and as long as a huge page.
        let advised = unsafe { libc::madvise(block.cast(), HUGE, libc::MADV_HUGEPAGE) };
        assert_eq!(advised, 0, "madvise: {}", std::io::Error::last_os_error());
        // SAFETY: as above; non-zero bytes so every page is charged.
        unsafe { block.write_bytes(0x5a, HUGE) };
    }
}
