//! A bound on what the ring-buffer reader hands to the consumer and the consumer has not taken
//! yet: the events held in memory while the output is blocked (stdout piped to a reader that
//! stopped reading). Up to the bound, back-pressure costs memory, nothing is lost; past it, the
//! reader drains the ring buffer on and drops the new records, counted per kind, so memtrace's
//! RSS stays bounded and the kernel's buffer never fills behind a stalled consumer. The
//! consumer says what was dropped in the stream (`lost` events, cause `output_blocked`) as
//! soon as it runs again, and the session adds it to the summary and metrics.
//!
//! OOM kills are never dropped: they are rare (the kernel kills one task at a time) and the
//! one event an operator must not miss.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use memtrace_common::{LostKind, event::Record};

/// Records held by default (`--max-held-events`): 32 768 × 304 bytes (a decoded record in
/// memory) ≈ 10 MiB at most; a storm of 10 000 events a second while stdout is not read for
/// 3 s fits.
pub const DEFAULT_MAX_HELD: u64 = 32_768;

/// Shared by the reader (which admits), the consumer (which takes) and the session (which
/// reports what was dropped).
#[derive(Clone, Debug)]
pub struct Backlog(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    max: usize,
    held: AtomicUsize,
    dropped: [AtomicU64; LostKind::COUNT as usize],
}

impl Backlog {
    /// At most `max` records held.
    #[must_use]
    pub fn new(max: u64) -> Self {
        Self(Arc::new(Shared {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            held: AtomicUsize::new(0),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
        }))
    }

    /// The reader's side: what of `batch` may be handed on now; the rest is counted dropped.
    #[must_use]
    pub fn admit(&self, mut batch: Vec<Record>) -> Vec<Record> {
        let held = self.0.held.load(Ordering::Acquire);
        let room = self.0.max.saturating_sub(held);
        if batch.len() > room {
            let mut kept = 0;
            batch.retain(|record| {
                if kept < room || matches!(record, Record::OomKill(_)) {
                    kept += 1;
                    return true;
                }
                self.0.dropped[kind_of(record) as usize].fetch_add(1, Ordering::Relaxed);
                false
            });
        }
        self.0.held.fetch_add(batch.len(), Ordering::AcqRel);
        batch
    }

    /// The consumer's side: it took `n` records.
    pub fn taken(&self, n: usize) {
        self.0.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Records dropped so far, per kind (totals).
    #[must_use]
    pub fn dropped(&self) -> Vec<(LostKind, u64)> {
        LostKind::ALL
            .iter()
            .map(|&kind| (kind, self.0.dropped[kind as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Records held now (admitted, not taken).
    #[must_use]
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Acquire)
    }
}

impl Default for Backlog {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HELD)
    }
}

/// The lost counter a record would have been counted in, had the kernel dropped it.
const fn kind_of(record: &Record) -> LostKind {
    match record {
        Record::OomKill(_) => LostKind::OomKill,
        Record::Cgroup(_) => LostKind::Cgroup,
        Record::Reclaim(_) => LostKind::Reclaim,
        Record::ChargeFail(_) => LostKind::ChargeFail,
    }
}

/// Kernel-side and userspace totals per kind, added.
#[must_use]
pub fn added(a: &[(LostKind, u64)], b: &[(LostKind, u64)]) -> Vec<(LostKind, u64)> {
    LostKind::ALL
        .iter()
        .map(|&kind| {
            let of = |v: &[(LostKind, u64)]| {
                v.iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, n)| n)
                    .sum::<u64>()
            };
            (kind, of(a) + of(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use memtrace_common::{CgroupRecord, OomKillRecord};

    use super::*;

    fn cgroup() -> Record {
        // SAFETY: a plain-old-data record of integers and byte arrays: all zeroes is valid.
        Record::Cgroup(unsafe { std::mem::zeroed::<CgroupRecord>() })
    }

    fn oom() -> Record {
        // SAFETY: as above.
        Record::OomKill(unsafe { std::mem::zeroed::<OomKillRecord>() })
    }

    #[test]
    fn past_the_bound_records_are_dropped_and_counted_but_never_oom_kills() {
        let backlog = Backlog::new(3);
        assert_eq!(backlog.admit(vec![cgroup(), cgroup()]).len(), 2);
        let kept = backlog.admit(vec![cgroup(), cgroup(), oom(), cgroup()]);
        assert_eq!(kept.len(), 2, "one cgroup record fits, and the OOM kill");
        assert!(matches!(kept[1], Record::OomKill(_)));
        assert_eq!(backlog.held(), 4);
        let dropped = backlog.dropped();
        assert_eq!(dropped[LostKind::Cgroup as usize], (LostKind::Cgroup, 2));
        assert_eq!(dropped[LostKind::OomKill as usize], (LostKind::OomKill, 0));
        backlog.taken(4);
        assert_eq!(backlog.admit(vec![cgroup(); 3]).len(), 3);
    }

    #[test]
    fn totals_add_per_kind() {
        let sum = added(
            &[(LostKind::Cgroup, 2), (LostKind::Slab, 1)],
            &[(LostKind::Cgroup, 3)],
        );
        assert_eq!(sum[LostKind::Cgroup as usize], (LostKind::Cgroup, 5));
        assert_eq!(sum[LostKind::Slab as usize], (LostKind::Slab, 1));
        assert_eq!(sum.iter().map(|(_, n)| n).sum::<u64>(), 6);
    }
}
