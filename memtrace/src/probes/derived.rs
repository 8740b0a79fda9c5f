//! What userspace derives from other probe points on kernels that refuse the direct ones.

use std::collections::HashMap;

use memtrace_common::ChargeDelta;

use super::{AttachedPoint, CacheDrain, ProbePoint, Strategy};
use crate::event::ChargeSource;

/// Where the points whose strategies may be derived got their events, from what attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// What `charge` events count.
    pub charges: ChargesFrom,
    /// `try_charge` failures are derived from memcg limit reclaim episodes.
    pub charge_failures_from_reclaim: bool,
}

/// Where `charge` events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargesFrom {
    /// The kernel's charge aggregate, counting what `source` says.
    Kernel(ChargeSource),
    /// Page cache added to each memcg (file pages only), on kernels without a charge probe.
    PageCache,
}

impl Default for ChargesFrom {
    fn default() -> Self {
        Self::Kernel(ChargeSource::Charge)
    }
}

impl Sources {
    #[must_use]
    pub fn of(attached: &[AttachedPoint]) -> Self {
        let strategy = |point| {
            attached
                .iter()
                .find(|a| a.point == point)
                .map(|a| a.strategy)
        };
        Self {
            charges: match strategy(ProbePoint::Charge) {
                Some(Strategy::RawTp) => ChargesFrom::Kernel(ChargeSource::StatUpdates),
                Some(Strategy::Derived) => ChargesFrom::PageCache,
                _ => ChargesFrom::Kernel(ChargeSource::Charge),
            },
            charge_failures_from_reclaim: strategy(ProbePoint::TryCharge)
                == Some(Strategy::Derived),
        }
    }
}

/// Pages added to the page cache per memcg id, standing in for the pages charged: on kernels
/// that allow neither fexit nor kprobes and have no memcg stat tracepoint (before 6.16), the
/// file pages a memcg was charged are the page cache added to it (anon pages are not seen).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_strategies_that_attached() {
        let attached = |charge, try_charge| {
            vec![
                AttachedPoint {
                    point: ProbePoint::Charge,
                    strategy: charge,
                    variant: 0,
                },
                AttachedPoint {
                    point: ProbePoint::TryCharge,
                    strategy: try_charge,
                    variant: 0,
                },
            ]
        };
        assert_eq!(
            Sources::of(&attached(Strategy::RawTp, Strategy::Derived)),
            Sources {
                charges: ChargesFrom::Kernel(ChargeSource::StatUpdates),
                charge_failures_from_reclaim: true
            }
        );
        assert_eq!(
            Sources::of(&attached(Strategy::Derived, Strategy::Derived)).charges,
            ChargesFrom::PageCache
        );
        assert_eq!(
            Sources::of(&attached(Strategy::Fexit, Strategy::Kprobe)),
            Sources::default()
        );
        assert_eq!(
            AttachedPoint {
                point: ProbePoint::Charge,
                strategy: Strategy::Derived,
                variant: 0,
            }
            .to_string(),
            "charge=derived/page_cache"
        );
    }

    #[test]
    fn page_cache_added_becomes_pages_charged_per_memcg() {
        let delta = |added_pages, removed_pages| memtrace_common::CacheDelta {
            added_pages,
            removed_pages,
            refault_pages: 0,
        };
        // The per-memcg totals include the files'.
        let cache = CacheDrain {
            by_memcg: HashMap::from([(1, delta(13, 9)), (2, delta(0, 5)), (3, delta(7, 7))]),
            by_file: vec![(1, None, delta(10, 0)), (3, None, delta(7, 7))],
            file_keys: Vec::new(),
            unkeyed: Vec::new(),
            paths: Vec::new(),
            refaults: false,
        };
        let charges = charges_from_page_cache(&cache);
        let pages = |memcg| charges.get(&memcg).map(|c| (c.pages, c.charges));
        assert_eq!(pages(1), Some((13, 0)));
        assert_eq!(pages(2), None);
        assert_eq!(pages(3), Some((7, 0)));
    }
}
