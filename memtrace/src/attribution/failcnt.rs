//! Memcgs' charge-failure counts (`memory.failcnt`, v2 `memory.events` `max`), read from
//! cgroupfs at most once per [`FRESH_FOR`] per memcg: a storm of charge failures (one per limit
//! reclaim) would otherwise cost a file read per event.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How old a count may be when an event shows it.
pub const FRESH_FOR: Duration = Duration::from_millis(100);
/// Memcgs remembered before stale ones are forgotten.
const KEEP: usize = 4096;

#[derive(Default)]
pub struct FailureCounts {
    read: HashMap<u64, (Instant, Option<u64>)>,
}

impl FailureCounts {
    /// `memcg_id`'s count as of at most [`FRESH_FOR`] ago, calling `read` when older.
    pub fn get(
        &mut self,
        memcg_id: u64,
        now: Instant,
        read: impl FnOnce() -> Option<u64>,
    ) -> Option<u64> {
        if let Some(&(at, count)) = self.read.get(&memcg_id)
            && now.saturating_duration_since(at) < FRESH_FOR
        {
            return count;
        }
        if self.read.len() >= KEEP {
            self.read
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < FRESH_FOR);
        }
        let count = read();
        self.read.insert(memcg_id, (now, count));
        count
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn reads_each_memcg_at_most_once_while_fresh() {
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Some(reads.get())
        };
        let mut counts = FailureCounts::default();
        let start = Instant::now();
        assert_eq!(counts.get(7, start, read), Some(1));
        assert_eq!(counts.get(7, start + FRESH_FOR / 2, read), Some(1));
        assert_eq!(counts.get(8, start + FRESH_FOR / 2, read), Some(2));
        assert_eq!(counts.get(7, start + FRESH_FOR, read), Some(3));
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn forgets_stale_memcgs_when_full() {
        let mut counts = FailureCounts::default();
        let start = Instant::now();
        for id in 0..KEEP as u64 {
            counts.get(id, start, || Some(id));
        }
        counts.get(u64::MAX, start + FRESH_FOR, || None);
        assert_eq!(counts.read.len(), 1);
    }
}
