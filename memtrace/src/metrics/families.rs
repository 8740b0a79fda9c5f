//! Every metric memtrace serves: its name, help, unit and labels, registered once.
//!
//! Names follow Prometheus' conventions: the `memtrace_` prefix, base units in the name
//! (`_bytes`, `_seconds`, added by the client from the registered unit) and `_total` on
//! counters (added by the client too). The README lists them; a unit test checks that list.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{
    labels::{ContainerLabels, LostLabels, OomLabels},
    memcg::MemcgFamilies,
    node::NodeMemcgs,
};
use crate::attribution::MemoryHierarchy;

type Counters = Family<ContainerLabels, Counter>;
type Gauges = Family<ContainerLabels, Gauge>;

/// The metric families, and the registry that encodes them.
#[derive(Debug)]
pub struct Families {
    pub registry: Registry,
    pub oom_kills: Family<OomLabels, Counter>,
    pub reclaims: Counters,
    pub reclaims_freed_nothing: Counters,
    pub reclaim_seconds: Family<ContainerLabels, Counter<f64, AtomicU64>>,
    pub reclaimed_bytes: Counters,
    pub charge_failures: Counters,
    pub page_cache_added_bytes: Counters,
    pub page_cache_removed_bytes: Counters,
    pub page_cache_refault_bytes: Counters,
    pub slab_allocated_bytes: Counters,
    pub slab_freed_bytes: Counters,
    pub lost_events: Family<LostLabels, Counter>,
    pub working_set_bytes: Gauges,
    pub usage_bytes: Gauges,
    pub limit_bytes: Gauges,
    pub anon_bytes: Gauges,
    pub file_bytes: Gauges,
    pub shmem_bytes: Gauges,
    pub kernel_bytes: Gauges,
    /// The memcg's own kernel counters (`counters`).
    pub memcg: MemcgFamilies,
}

impl Families {
    #[must_use]
    #[expect(
        clippy::too_many_lines,
        reason = "one registration per metric, side by side, with its help"
    )]
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        let mut registry = Registry::with_prefix("memtrace");
        let mut counter = |name: &str, help: &str, unit: Option<Unit>| {
            let family = Counters::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
                None => registry.register(name, help, family.clone()),
            }
            family
        };
        let reclaims = counter(
            "reclaims",
            "Memory-cgroup limit reclaim episodes: a charge hit the limit and the kernel tried to \
             free the container's memory",
            None,
        );
        let reclaims_freed_nothing = counter(
            "reclaims_freed_nothing",
            "Limit reclaim episodes that freed nothing (anon without swap, dirty or pinned \
             pages): the road to an OOM kill",
            None,
        );
        let reclaimed_bytes = counter(
            "reclaimed",
            "Memory freed by limit reclaim",
            Some(Unit::Bytes),
        );
        let charge_failures = counter(
            "charge_failures",
            "Charges the container's memory cgroup refused at its limit",
            None,
        );
        let page_cache_added_bytes = counter(
            "page_cache_added",
            "Page cache charged to the container",
            Some(Unit::Bytes),
        );
        let page_cache_removed_bytes = counter(
            "page_cache_removed",
            "Page cache removed from the container (reclaimed, truncated or deleted)",
            Some(Unit::Bytes),
        );
        let page_cache_refault_bytes = counter(
            "page_cache_refaults",
            "Page cache added to the container that had been evicted shortly before (a \
             workingset refault: re-read after eviction, i.e. thrashing), as memtrace counts it \
             in the kernel beside the adds; no series where the probe strategy cannot count \
             refaults. Per container only: the file re-read most is in `memtrace report`, \
             `top` and the event stream, not here, as a series per file would grow without \
             bound",
            Some(Unit::Bytes),
        );
        let slab_allocated_bytes = counter(
            "slab_allocated",
            "Memcg-accounted slab (kernel objects: dentries, inodes, sockets) allocated for the \
             container",
            Some(Unit::Bytes),
        );
        let slab_freed_bytes = counter(
            "slab_freed",
            "Memcg-accounted slab freed in the container",
            Some(Unit::Bytes),
        );
        let oom_kills = Family::<OomLabels, Counter>::default();
        registry.register(
            "oom_kills",
            "Processes of the container the kernel OOM-killed, by verdict (why: anon_growth, \
             page_cache_not_reclaimed, slab_growth, limit_too_low, unknown)",
            oom_kills.clone(),
        );
        let reclaim_seconds = Family::<ContainerLabels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "reclaim",
            "Time spent in limit reclaim episodes",
            Unit::Seconds,
            reclaim_seconds.clone(),
        );
        let lost_events = Family::<LostLabels, Counter>::default();
        registry.register(
            "lost_events",
            "Events the kernel side could not report (ring buffer or a map full), per kind",
            lost_events.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let family = Gauges::default();
            registry.register_with_unit(name, help, Unit::Bytes, family.clone());
            family
        };
        let working_set_bytes = gauge(
            "memory_working_set",
            "Working set as the kubelet and cAdvisor compute it (usage - inactive_file): what \
             evictions and dashboards look at",
        );
        let usage_bytes = gauge(
            "memory_usage",
            "Memory charged to the container's memory cgroup",
        );
        let limit_bytes = gauge(
            "memory_limit",
            "The memory cgroup's limit (no series when unlimited)",
        );
        let anon_bytes = gauge("memory_anon", "Anonymous memory (heap, stacks)");
        let file_bytes = gauge("memory_file", "Page cache, shmem included");
        let shmem_bytes = gauge("memory_shmem", "Shared memory and tmpfs");
        let kernel_bytes = gauge(
            "memory_kernel",
            "Kernel memory charged to the container (slab, stacks, page tables)",
        );
        let memcg = MemcgFamilies::register(&mut registry);
        registry.register_collector(Box::new(NodeMemcgs::new(hierarchy)));
        Self {
            registry,
            oom_kills,
            reclaims,
            reclaims_freed_nothing,
            reclaim_seconds,
            reclaimed_bytes,
            charge_failures,
            page_cache_added_bytes,
            page_cache_removed_bytes,
            page_cache_refault_bytes,
            slab_allocated_bytes,
            slab_freed_bytes,
            lost_events,
            working_set_bytes,
            usage_bytes,
            limit_bytes,
            anon_bytes,
            file_bytes,
            shmem_bytes,
            kernel_bytes,
            memcg,
        }
    }

    /// Removes every series of a container but its OOM kills (whose labels include the
    /// verdict: [`Self::oom_kills`] is cleaned by whoever knows them).
    pub fn remove(&self, labels: &ContainerLabels) {
        for family in [
            &self.reclaims,
            &self.reclaims_freed_nothing,
            &self.reclaimed_bytes,
            &self.charge_failures,
            &self.page_cache_added_bytes,
            &self.page_cache_removed_bytes,
            &self.page_cache_refault_bytes,
            &self.slab_allocated_bytes,
            &self.slab_freed_bytes,
        ] {
            family.remove(labels);
        }
        for family in self.gauges() {
            family.remove(labels);
        }
        self.reclaim_seconds.remove(labels);
        self.memcg.remove(labels);
    }

    fn gauges(&self) -> [&Gauges; 7] {
        [
            &self.working_set_bytes,
            &self.usage_bytes,
            &self.limit_bytes,
            &self.anon_bytes,
            &self.file_bytes,
            &self.shmem_bytes,
            &self.kernel_bytes,
        ]
    }
}
