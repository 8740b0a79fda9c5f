//! Ctrl-C during the bench: the terminal sends SIGINT to the tracers and to this process alike.
//! Dying at once would leave the tmpfs mounted and the cgroup behind,
//! so SIGINT and SIGTERM only raise a flag; the bench checks it between steps and unwinds, and
//! every guard undoes what it set up.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    /// glibc's `signal(2)`: BSD semantics, the handler stays installed and interrupted system
    /// calls restart. std already links libc; xtask has no other use for the `libc` crate.
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn raise_flag(_signum: i32) {
    // An atomic store is async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM raise the flag instead of killing this process.
pub fn catch() {
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: `raise_flag` only stores to an atomic, which is async-signal-safe, and the
        // signal numbers are Linux's for every architecture std supports there.
        unsafe { signal(signum, raise_flag) };
    }
}

/// Fails once SIGINT or SIGTERM has arrived.
pub fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
