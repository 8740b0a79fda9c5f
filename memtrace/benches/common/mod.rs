//! What the benchmarks share: deterministic dice, kernel record headers, and a clock of the
//! CPU time a benchmark used.

use std::time::Duration;

use memtrace_common::{EventHeader, EventKind};

/// xorshift64*: deterministic, and no dependency for a benchmark's dice.
pub struct Dice(pub u64);

impl Dice {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A kernel record's header, as the programs write it.
pub fn header(kind: EventKind, timestamp_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        pad: 0,
        timestamp_ns,
    }
}

/// CPU time this thread has used: on a machine shared with other work, the time the work would
/// take on a core of its own (wall time also counts the time other processes ran).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on every Linux
    // memtrace runs on, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}
