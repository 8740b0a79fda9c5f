//! Why a container was OOM-killed, judged live as `memtrace report` judges it afterwards
//! ([`crate::report::judge`]), for the `verdict` label of `memtrace_oom_kills_total`.

use std::collections::VecDeque;

use crate::{
    event::{HostClock, MemorySource, OomKill},
    report::{Evidence, MemoryPoint, Signals, VerdictKind, judge},
};

/// Samples kept per cgroup: the first (growth since), and the latest few, from which the last
/// one before a kill is taken (a kill is held for the kernel's report line while samples taken
/// after it go on).
const RECENT: usize = 8;

/// A cgroup's `stats` samples, as much of them as a verdict needs.
#[derive(Debug, Default)]
pub struct Samples {
    first: Option<MemoryPoint>,
    recent: VecDeque<MemoryPoint>,
}

impl Samples {
    pub fn push(&mut self, point: MemoryPoint) {
        if self.first.is_none() {
            self.first = Some(point.clone());
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(point);
    }

    fn first_before(&self, at: u64) -> Option<&MemoryPoint> {
        self.first.as_ref().filter(|p| p.timestamp_ns < at)
    }

    fn last_before(&self, at: u64) -> Option<&MemoryPoint> {
        self.recent.iter().rev().find(|p| p.timestamp_ns < at)
    }
}

/// The label value of a verdict: a small fixed set.
#[must_use]
pub const fn label(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::AnonGrowth => "anon_growth",
        VerdictKind::PageCacheNotReclaimed => "page_cache_not_reclaimed",
        VerdictKind::SlabGrowth => "slab_growth",
        VerdictKind::LimitTooLow => "limit_too_low",
        VerdictKind::Unknown => "unknown",
        VerdictKind::Shmem => "shmem",
        VerdictKind::DirtyCache => "dirty_cache",
        VerdictKind::Thrashing => "thrashing",
        VerdictKind::Throttled => "throttled",
        VerdictKind::NearLimit => "near_limit",
        VerdictKind::PodLimitBelowContainers => "pod_limit_below_containers",
        VerdictKind::MemcgIdsRunningOut => "memcg_ids_running_out",
        VerdictKind::NodeOutOfMemory => "node_out_of_memory",
    }
}

/// What the kill's memory and the limit cgroup's samples say, with the victim's container's
/// reclaims before it.
#[must_use]
pub fn judge_kill(
    kill: &OomKill,
    at: u64,
    samples: Option<&Samples>,
    (reclaims, freed_nothing): (u64, u64),
    clock: HostClock,
) -> VerdictKind {
    let last = samples.and_then(|s| s.last_before(at));
    // As the report does: the kernel's own report is the memory at the kill; cgroupfs read
    // after the kill has lost the victim's memory already, so the last sample before it
    // tells more.
    let mut at_kill = match (&kill.memory, last) {
        (Some(m), _) if kill.memory_source == Some(MemorySource::KernelOomReport) => {
            Some(MemoryPoint::new(at, clock.wall(at), m))
        }
        (_, Some(last)) => Some(last.clone()),
        (Some(m), None) => Some(MemoryPoint::new(at, clock.wall(at), m)),
        (None, None) => None,
    };
    if let Some(point) = &mut at_kill {
        point.usage = point.usage.or(kill.memcg_usage_bytes);
        point.limit = point.limit.or(kill.memcg_limit_bytes);
    }
    let first = samples.and_then(|s| s.first_before(at)).cloned();
    judge(&Evidence {
        at_kill,
        history: first.as_slice(),
        reclaims,
        ineffective_reclaims: freed_nothing,
        top_slab_cache: None,
        signals: Signals::default(),
    })
    .kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{attribution::MemoryStats, event::samples::CLOCK};

    const MIB: u64 = 1 << 20;

    fn point(at: u64, anon: u64, file: u64) -> MemoryPoint {
        MemoryPoint::new(
            at,
            String::new(),
            &MemoryStats {
                usage_bytes: Some(anon + file),
                limit_bytes: Some(64 * MIB),
                anon_bytes: Some(anon),
                file_bytes: Some(file),
                kernel_bytes: Some(0),
                ..MemoryStats::default()
            },
        )
    }

    #[test]
    fn anon_that_grew_to_the_limit() {
        let mut samples = Samples::default();
        samples.push(point(1, MIB, MIB));
        samples.push(point(2, 60 * MIB, MIB));
        // Taken after the kill: not the memory at the kill.
        samples.push(point(4, 0, MIB));
        let kill = OomKill::default();
        let kind = judge_kill(&kill, 3, Some(&samples), (3, 3), CLOCK);
        assert_eq!(kind, VerdictKind::AnonGrowth);
    }

    #[test]
    fn the_kernels_report_is_the_memory_at_the_kill() {
        let kill = OomKill {
            memory: Some(MemoryStats {
                usage_bytes: Some(64 * MIB),
                anon_bytes: Some(10 * MIB),
                file_bytes: Some(50 * MIB),
                kernel_bytes: Some(MIB),
                ..MemoryStats::default()
            }),
            memory_source: Some(MemorySource::KernelOomReport),
            ..OomKill::default()
        };
        let kind = judge_kill(&kill, 3, None, (0, 0), CLOCK);
        assert_eq!(label(kind), "page_cache_not_reclaimed");
    }

    #[test]
    fn nothing_known_is_unknown() {
        let kind = judge_kill(&OomKill::default(), 3, None, (0, 0), CLOCK);
        assert_eq!(label(kind), "unknown");
    }

    #[test]
    fn samples_keep_the_first_and_a_few_recent() {
        let mut samples = Samples::default();
        for at in 1..=20 {
            samples.push(point(at, at * MIB, 0));
        }
        assert_eq!(samples.first_before(5).map(|p| p.timestamp_ns), Some(1));
        assert_eq!(samples.last_before(100).map(|p| p.timestamp_ns), Some(20));
        assert_eq!(samples.recent.len(), RECENT);
    }
}
