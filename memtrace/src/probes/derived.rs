//! Events userspace derives from other probe points on kernels that refuse the direct ones.

use memtrace_common::{
    ChargeFailRecord, EventHeader, EventKind, ReclaimRecord, event::CHARGE_STRATEGY_DERIVED,
};

use super::AttachedPoint;

/// Where the points whose strategies may be derived got their events, from what attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// `charge` counts memcg stat updates (anon and file pages added), not charge calls.
    pub charge_from_stat_updates: bool,
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
            charge_from_stat_updates: strategy("charge").as_deref() == Some("raw_tp"),
            charge_failures_from_reclaim: strategy("try_charge").as_deref()
                == Some(super::plan::DERIVED),
        }
    }
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
                charge_from_stat_updates: true,
                charge_failures_from_reclaim: true
            }
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
