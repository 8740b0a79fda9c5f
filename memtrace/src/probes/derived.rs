//! Events userspace derives from other probe points on kernels that refuse the direct ones.

use std::collections::HashMap;

use memtrace_common::{
    ChargeDelta, ChargeFailRecord, EventHeader, EventKind, ReclaimRecord,
    event::CHARGE_STRATEGY_DERIVED,
};

use super::{AttachedPoint, CacheDrain};
use crate::event::ChargeSource;

/// Where the points whose strategies may be derived got their events, from what attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// What `charge` counts: charge calls, memcg stat updates, or page cache added.
    pub charge: ChargeSource,
    /// `try_charge` failures are derived from memcg limit reclaim episodes.
    pub charge_failures_from_reclaim: bool,
}

impl Sources {
    #[must_use]
    pub fn of(attached: &[AttachedPoint]) -> Self {
        let strategy = |point: &str| {
            attached
                .iter()
                .find(|a| a.point == point)
                .map(|a| a.strategy.split('/').next().unwrap_or_default().to_owned())
        };
        Self {
            charge: match strategy("charge").as_deref() {
                Some("raw_tp") => ChargeSource::StatUpdates,
                Some(super::plan::DERIVED) => ChargeSource::PageCache,
                _ => ChargeSource::Charge,
            },
            charge_failures_from_reclaim: strategy("try_charge").as_deref()
                == Some(super::plan::DERIVED),
        }
    }
}

/// Pages charged per memcg id, as page cache added in the interval: on kernels that allow
/// neither fexit nor kprobes and have no memcg stat tracepoint (before 6.16), the file pages a
/// memcg was charged are the page cache added to it (anon pages are not seen).
#[must_use]
pub fn charges_from_page_cache(cache: &CacheDrain) -> HashMap<u64, ChargeDelta> {
    cache
        .by_memcg
        .iter()
        .filter(|(_, delta)| delta.added_pages > 0)
        .map(|(&memcg_id, delta)| {
            let charge = ChargeDelta {
                pages: delta.added_pages,
                charges: 0,
            };
            (memcg_id, charge)
        })
        .collect()
}

/// A memcg limit reclaim episode as the charge failure that started it: `try_charge_memcg()`
/// reclaims only after the page counter refused a charge (`memory.failcnt` / `max` counts it).
/// The pages asked for are not known; what reclaim freed is.
#[must_use]
pub fn charge_failure_from_reclaim(r: &ReclaimRecord) -> ChargeFailRecord {
    ChargeFailRecord {
        header: EventHeader {
            kind: EventKind::ChargeFail as u32,
            cpu: r.header.cpu,
            timestamp_ns: r.header.timestamp_ns,
        },
        memcg_id: r.memcg_id,
        gfp_flags: r.gfp_flags,
        nr_pages: 0,
        ret: 0,
        pid: r.pid,
        tgid: 0,
        strategy: CHARGE_STRATEGY_DERIVED,
        pad: 0,
        comm: [0; 16],
        nr_reclaimed: r.nr_reclaimed,
        reclaim_ns: r.duration_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_strategies_that_attached() {
        let attached = |charge: &str, try_charge: &str| {
            vec![
                AttachedPoint {
                    point: "charge",
                    strategy: charge.to_owned(),
                },
                AttachedPoint {
                    point: "try_charge",
                    strategy: try_charge.to_owned(),
                },
            ]
        };
        assert_eq!(
            Sources::of(&attached(
                "raw_tp/mod_memcg_lruvec_state",
                "derived/reclaim"
            )),
            Sources {
                charge: ChargeSource::StatUpdates,
                charge_failures_from_reclaim: true
            }
        );
        assert_eq!(
            Sources::of(&attached("derived/page_cache", "derived/reclaim")).charge,
            ChargeSource::PageCache
        );
        assert_eq!(
            Sources::of(&attached(
                "fentry/__mem_cgroup_charge",
                "kprobe/try_charge_memcg"
            )),
            Sources::default()
        );
    }

    #[test]
    fn page_cache_added_becomes_pages_charged_per_memcg() {
        let delta = |added_pages, removed_pages| memtrace_common::CacheDelta {
            added_pages,
            removed_pages,
        };
        // The per-memcg totals include the files'.
        let cache = CacheDrain {
            by_memcg: HashMap::from([(1, delta(13, 9)), (2, delta(0, 5)), (3, delta(7, 7))]),
            by_file: vec![(1, None, delta(10, 0)), (3, None, delta(7, 7))],
        };
        let charges = charges_from_page_cache(&cache);
        let pages = |memcg| charges.get(&memcg).map(|c| (c.pages, c.charges));
        assert_eq!(pages(1), Some((13, 0)));
        assert_eq!(pages(2), None);
        assert_eq!(pages(3), Some((7, 0)));
    }

    #[test]
    fn a_reclaim_episode_becomes_a_derived_charge_failure() {
        let reclaim = ReclaimRecord {
            header: EventHeader {
                kind: EventKind::Reclaim as u32,
                cpu: 1,
                timestamp_ns: 10,
            },
            memcg_id: 42,
            duration_ns: 5000,
            nr_reclaimed: 0,
            gfp_flags: 0xcc0,
            order: 0,
            pid: 7,
        };
        let failure = charge_failure_from_reclaim(&reclaim);
        assert_eq!(failure.memcg_id, 42);
        assert_eq!(failure.strategy, CHARGE_STRATEGY_DERIVED);
        assert_eq!((failure.nr_reclaimed, failure.reclaim_ns), (0, 5000));
        assert_eq!(failure.header.timestamp_ns, 10);
    }
}
