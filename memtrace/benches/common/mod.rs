//! What the benchmarks share: deterministic dice and kernel record headers.

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
