//! Events from the kernel's ring-buffer records, with what userspace knew when they arrived.

use memtrace_common::event::{
    CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RMDIR, CHARGE_STRATEGY_FEXIT, CgroupRecord,
    ChargeFailRecord, OOM_FLAG_CONTROL, OOM_FLAG_MEMCG, OOM_FLAG_RSS, OOM_FLAG_TASK,
    OOM_STRATEGY_FENTRY, OOM_STRATEGY_KPROBE, OOM_STRATEGY_RAW_TP, OomKillRecord, Record,
};

use super::{
    CgroupAction, CgroupChange, ChargeFail, ChargeFailFromReclaim, ChargeProbe, Event, Memcg,
    MemorySource, OomConstraint, OomKill, OomProbe, Reclaim, What, c_str,
};
use crate::attribution::{ContainerIdentity, MemoryStats};

/// What userspace adds to a kernel record when it arrives, while the cgroup still exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The record's memcg: path and owner (its id is the record's).
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub memcg_limit_bytes: Option<u64>,
    pub memcg_usage_bytes: Option<u64>,
    /// OOM kills: the kernel's own account and the memory at the kill.
    pub oom: Option<OomContext>,
    /// Cgroup release: when the cgroup was removed (`CLOCK_BOOTTIME` ns), if memtrace saw it.
    pub removed_ns: Option<u64>,
    /// Charge failures: the memcg's own count of them when the event arrived.
    pub charge_failures: Option<u64>,
}

/// What an OOM kill's context adds to the victim: which limit fired and what the memory was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OomContext {
    pub constraint: Option<OomConstraint>,
    /// The memcg whose limit fired; `None` for a global OOM.
    pub limit_cgroup: Option<String>,
    pub limit_container: Option<ContainerIdentity>,
    pub memory: Option<MemoryStats>,
    pub memory_source: Option<MemorySource>,
    /// The victim's comm as the kernel's report gives it (for kernels whose tracepoint gives
    /// only the pid).
    pub task: Option<String>,
}

impl Event {
    /// The event a kernel record stands for, with its context.
    #[must_use]
    pub fn from_kernel(record: &Record, context: Context, page_size: u64) -> Self {
        let bytes = |pages: u64| pages.saturating_mul(page_size);
        let (timestamp_ns, memcg_id, what) = match record {
            Record::OomKill(r) => (
                r.header.timestamp_ns,
                (r.flags & OOM_FLAG_MEMCG != 0).then_some(r.memcg_id),
                What::OomKill(oom_kill(r, &context, page_size)),
            ),
            Record::Cgroup(r) => (
                r.header.timestamp_ns,
                Some(r.memcg_id),
                What::Cgroup(cgroup(r, &context, page_size)),
            ),
            Record::Reclaim(r) => (
                r.header.timestamp_ns,
                Some(r.memcg_id),
                What::Reclaim(Reclaim {
                    pid: r.pid,
                    duration_ns: r.duration_ns,
                    reclaimed_bytes: bytes(r.nr_reclaimed),
                    order: r.order,
                    gfp_flags: r.gfp_flags,
                    ineffective: r.nr_reclaimed == 0,
                }),
            ),
            Record::ChargeFail(r) => (
                r.header.timestamp_ns,
                Some(r.memcg_id),
                What::ChargeFail(charge_fail(r, &context)),
            ),
        };
        Self {
            timestamp_ns,
            memcg: Memcg {
                id: memcg_id,
                cgroup: context.cgroup,
                container: context.container,
            },
            what,
        }
    }

    /// A memcg limit reclaim episode as the charge failure that started it (when `try_charge`
    /// is derived): `try_charge_memcg()` reclaims only after the page counter refused a charge.
    #[must_use]
    pub fn charge_fail_from_reclaim(&self, charge_failures: Option<u64>) -> Option<Self> {
        let What::Reclaim(r) = &self.what else {
            return None;
        };
        Some(Self {
            timestamp_ns: self.timestamp_ns,
            memcg: self.memcg.clone(),
            what: What::ChargeFailFromReclaim(ChargeFailFromReclaim {
                pid: r.pid,
                gfp_flags: r.gfp_flags,
                reclaimed_bytes: r.reclaimed_bytes,
                reclaim_ns: r.duration_ns,
                charge_failures,
            }),
        })
    }
}

fn oom_kill(r: &OomKillRecord, context: &Context, page_size: u64) -> OomKill {
    let has = |flag| r.flags & flag != 0;
    let bytes = |pages: u64| has(OOM_FLAG_RSS).then(|| pages.saturating_mul(page_size));
    let oom = context.oom.clone().unwrap_or_default();
    OomKill {
        pid: r.pid,
        tgid: has(OOM_FLAG_TASK).then_some(r.tgid),
        comm: if has(OOM_FLAG_TASK) {
            Some(c_str(&r.comm))
        } else {
            oom.task
        },
        memcg_limit_bytes: context.memcg_limit_bytes,
        memcg_usage_bytes: context.memcg_usage_bytes,
        anon_rss_bytes: bytes(r.anon_rss_pages),
        file_rss_bytes: bytes(r.file_rss_pages),
        shmem_rss_bytes: bytes(r.shmem_rss_pages),
        constraint: oom.constraint,
        probe: match r.strategy {
            OOM_STRATEGY_FENTRY => Some(OomProbe::Fentry),
            OOM_STRATEGY_KPROBE => Some(OomProbe::Kprobe),
            OOM_STRATEGY_RAW_TP => Some(OomProbe::RawTp),
            _ => None,
        },
        limit_cgroup: oom.limit_cgroup,
        limit_container: oom.limit_container,
        memory: oom.memory,
        memory_source: oom.memory_source,
        oom_total_bytes: has(OOM_FLAG_CONTROL).then(|| r.totalpages.saturating_mul(page_size)),
    }
}

fn cgroup(r: &CgroupRecord, context: &Context, page_size: u64) -> CgroupChange {
    let charged_bytes =
        (r.flags & CGROUP_FLAG_CHARGED != 0).then(|| r.charged_pages.saturating_mul(page_size));
    let action = match r.action {
        CGROUP_MKDIR => CgroupAction::Created,
        CGROUP_RMDIR => CgroupAction::Removed,
        _ => CgroupAction::Freed,
    };
    CgroupChange {
        action,
        dying: action == CgroupAction::Removed && charged_bytes.is_some_and(|b| b > 0),
        charged_bytes,
        dying_ns: context
            .removed_ns
            .map(|removed| r.header.timestamp_ns.saturating_sub(removed)),
    }
}

fn charge_fail(r: &ChargeFailRecord, context: &Context) -> ChargeFail {
    ChargeFail {
        pid: r.pid,
        tgid: r.tgid,
        comm: c_str(&r.comm),
        nr_pages: r.nr_pages,
        gfp_flags: r.gfp_flags,
        errno: r.ret.saturating_neg(),
        probe: if r.strategy == CHARGE_STRATEGY_FEXIT {
            ChargeProbe::Fexit
        } else {
            ChargeProbe::Kprobe
        },
        charge_failures: context.charge_failures,
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::{EventHeader, EventKind, ReclaimRecord, event::CGROUP_RELEASE};

    use super::*;

    #[test]
    fn an_oom_kill_takes_its_context() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"memhog");
        let record = Record::OomKill(OomKillRecord {
            header: EventHeader {
                kind: EventKind::OomKill as u32,
                pad: 0,
                timestamp_ns: 1_000,
            },
            memcg_id: 42,
            pid: 7,
            tgid: 7,
            anon_rss_pages: 2,
            flags: OOM_FLAG_MEMCG | OOM_FLAG_RSS | OOM_FLAG_TASK,
            strategy: OOM_STRATEGY_RAW_TP,
            comm,
            ..OomKillRecord::default()
        });
        let context = Context {
            cgroup: Some("/x".into()),
            memcg_limit_bytes: Some(64 << 20),
            oom: Some(OomContext {
                constraint: Some(OomConstraint::Memcg),
                limit_cgroup: Some("/".into()),
                ..OomContext::default()
            }),
            ..Context::default()
        };
        let event = Event::from_kernel(&record, context, 4096);
        assert_eq!(event.memcg.id, Some(42));
        assert_eq!(event.memcg.cgroup.as_deref(), Some("/x"));
        let What::OomKill(kill) = event.what else {
            panic!("not an OOM kill")
        };
        assert_eq!(kill.comm.as_deref(), Some("memhog"));
        assert_eq!(kill.anon_rss_bytes, Some(8192));
        assert_eq!(kill.probe, Some(OomProbe::RawTp));
        assert_eq!(kill.limit_cgroup.as_deref(), Some("/"));
    }

    #[test]
    fn cgroup_release_says_how_long_it_was_dying() {
        let record = Record::Cgroup(CgroupRecord {
            header: EventHeader {
                kind: EventKind::Cgroup as u32,
                pad: 0,
                timestamp_ns: 3_500_000_000,
            },
            memcg_id: 9,
            action: CGROUP_RELEASE,
            ..CgroupRecord::default()
        });
        let context = Context {
            cgroup: Some("/gone".into()),
            removed_ns: Some(1_000_000_000),
            ..Context::default()
        };
        let What::Cgroup(change) = Event::from_kernel(&record, context, 4096).what else {
            panic!("not a cgroup event")
        };
        assert_eq!(change.action, CgroupAction::Freed);
        assert_eq!(change.dying_ns, Some(2_500_000_000));
        assert!(!change.dying);
    }

    #[test]
    fn a_reclaim_that_freed_nothing_derives_a_charge_failure() {
        let record = ReclaimRecord {
            header: EventHeader {
                kind: EventKind::Reclaim as u32,
                pad: 0,
                timestamp_ns: 5,
            },
            memcg_id: 3,
            duration_ns: 1_500,
            pid: 11,
            ..ReclaimRecord::default()
        };
        let reclaim = Event::from_kernel(&Record::Reclaim(record), Context::default(), 4096);
        let derived = reclaim.charge_fail_from_reclaim(Some(4)).expect("derived");
        assert_eq!(derived.what.type_name(), "charge_fail");
        assert_eq!(
            derived.what.derived_from(),
            Some(crate::probes::ProbePoint::Reclaim)
        );
        let What::ChargeFailFromReclaim(f) = derived.what else {
            panic!("not derived")
        };
        assert_eq!((f.pid, f.reclaimed_bytes, f.reclaim_ns), (11, 0, 1_500));
        assert_eq!(f.charge_failures, Some(4));
    }
}
