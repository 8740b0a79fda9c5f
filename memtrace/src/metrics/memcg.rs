//! A memcg's own kernel counters (the `counters` events, and the counters of `stats` samples)
//! as families: `memory.events`, PSI stall time, v1's `memory.failcnt` and `under_oom`, and
//! refaults, scans, dirty, writeback and mapped pages from `memory.stat`.
//!
//! The kernel keeps the totals: a series is set to the value cgroupfs says, never counted up
//! from deltas, so a missed read loses nothing. A counter the kernel lacks has no series (not a
//! 0): `oom_group_kill` before 5.17, PSI without `CONFIG_PSI`, v2's counters on v1.
//!
//! Where v1 and v2 count the same thing under another name, the series is the same, so that an
//! alert works on both hierarchies: v1's `memory.failcnt` (charges refused at the limit; plus
//! `memory.memsw.failcnt`, refused at the memory+swap limit, which the kernel tries first) is
//! `event="max"`, as v2's `memory.events` `max` (both counted where `try_charge` finds the page
//! counter full); `workingset_refault` of kernels before 5.9 is `type="file"` (only page cache
//! was tracked then). `memory.stat`'s `shmem` is not repeated here: it is
//! `memtrace_memory_shmem_bytes`, from the same line.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::labels::{ContainerLabels, EventLabels, PageTypeLabels, PressureLabels};
use crate::event::{Counter as Kernel, CounterChanges, CounterValues};

type Counters = Family<ContainerLabels, Counter>;
type Gauges = Family<ContainerLabels, Gauge>;

/// The families of memcg counters.
#[derive(Debug)]
pub struct MemcgFamilies {
    events: Family<EventLabels, Counter>,
    under_oom: Gauges,
    pressure_seconds: Family<PressureLabels, Counter<f64, AtomicU64>>,
    refaults: Family<PageTypeLabels, Counter>,
    activations: Family<PageTypeLabels, Counter>,
    pgscan: Counters,
    pgsteal: Counters,
    dirty_bytes: Gauges,
    writeback_bytes: Gauges,
    file_mapped_bytes: Gauges,
}

/// One series of a container: a family, and its own label where the family has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Event(&'static str),
    UnderOom,
    Pressure(&'static str),
    Refaults(&'static str),
    Activations(&'static str),
    Pgscan,
    Pgsteal,
    Dirty,
    Writeback,
    FileMapped,
}

impl Slot {
    /// Every series a container can have.
    const ALL: [Self; 18] = [
        Self::Event("low"),
        Self::Event("high"),
        Self::Event("max"),
        Self::Event("oom"),
        Self::Event("oom_kill"),
        Self::Event("oom_group_kill"),
        Self::UnderOom,
        Self::Pressure("some"),
        Self::Pressure("full"),
        Self::Refaults("anon"),
        Self::Refaults("file"),
        Self::Activations("anon"),
        Self::Activations("file"),
        Self::Pgscan,
        Self::Pgsteal,
        Self::Dirty,
        Self::Writeback,
        Self::FileMapped,
    ];

    /// Where a kernel counter goes; `None`: served by another family.
    const fn of(counter: Kernel) -> Option<Self> {
        Some(match counter {
            Kernel::Low => Self::Event("low"),
            Kernel::High => Self::Event("high"),
            Kernel::Max | Kernel::Failcnt => Self::Event("max"),
            Kernel::Oom => Self::Event("oom"),
            Kernel::OomKill => Self::Event("oom_kill"),
            Kernel::OomGroupKill => Self::Event("oom_group_kill"),
            Kernel::UnderOom => Self::UnderOom,
            Kernel::PressureSomeNs => Self::Pressure("some"),
            Kernel::PressureFullNs => Self::Pressure("full"),
            Kernel::WorkingsetRefaultAnon => Self::Refaults("anon"),
            Kernel::WorkingsetRefaultFile | Kernel::WorkingsetRefault => Self::Refaults("file"),
            Kernel::WorkingsetActivateAnon => Self::Activations("anon"),
            Kernel::WorkingsetActivateFile | Kernel::WorkingsetActivate => {
                Self::Activations("file")
            }
            Kernel::Pgscan => Self::Pgscan,
            Kernel::Pgsteal => Self::Pgsteal,
            Kernel::DirtyBytes => Self::Dirty,
            Kernel::WritebackBytes => Self::Writeback,
            Kernel::FileMappedBytes => Self::FileMapped,
            Kernel::ShmemBytes => return None,
        })
    }
}

impl MemcgFamilies {
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "memcg_events",
            "Events of the container's memory cgroup, from memory.events (v2, hierarchical): \
             low (reclaimed below memory.low), high (over memory.high: throttled), max (a charge \
             hit memory.max), oom, oom_kill, oom_group_kill (5.17+). On v1, max is \
             memory.failcnt plus memory.memsw.failcnt and oom_kill memory.oom_control's \
             oom_kill (4.13+)",
            events.clone(),
        );
        let under_oom = Gauges::default();
        registry.register(
            "memcg_under_oom",
            "1 while the container's memory cgroup is in OOM (v1 memory.oom_control under_oom)",
            under_oom.clone(),
        );
        let pressure_seconds = Family::<PressureLabels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "memcg_pressure",
            "Time the container's tasks stalled on memory, from memory.pressure total= (PSI, v2): \
             kind=some, at least one task; kind=full, all non-idle tasks at once",
            Unit::Seconds,
            pressure_seconds.clone(),
        );
        let refaults = Family::<PageTypeLabels, Counter>::default();
        registry.register(
            "memcg_workingset_refaults",
            "Evicted pages faulted back in while still in the working set (thrashing), from \
             memory.stat workingset_refault_anon and _file (v1: total_workingset_refault_*; \
             before 5.9 workingset_refault, file pages only, as type=file)",
            refaults.clone(),
        );
        let activations = Family::<PageTypeLabels, Counter>::default();
        registry.register(
            "memcg_workingset_activations",
            "Refaulted pages put straight back on the active list, from memory.stat \
             workingset_activate_anon and _file (before 5.9 workingset_activate, as type=file)",
            activations.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let family = Counters::default();
            registry.register(name, help, family.clone());
            family
        };
        let pgscan = counter(
            "memcg_pgscan",
            "Pages scanned by reclaim in the container's memory cgroup, from memory.stat pgscan \
             (v2)",
        );
        let pgsteal = counter(
            "memcg_pgsteal",
            "Pages reclaimed from the container's memory cgroup, from memory.stat pgsteal (v2)",
        );
        let mut gauge = |name: &str, help: &str| {
            let family = Gauges::default();
            registry.register_with_unit(name, help, Unit::Bytes, family.clone());
            family
        };
        let dirty_bytes = gauge(
            "memcg_dirty",
            "Dirty page cache not yet written back, from memory.stat file_dirty (v1: total_dirty)",
        );
        let writeback_bytes = gauge(
            "memcg_writeback",
            "Page cache being written back, from memory.stat file_writeback (v1: \
             total_writeback)",
        );
        let file_mapped_bytes = gauge(
            "memcg_file_mapped",
            "Page cache mapped into processes, from memory.stat file_mapped (v1: \
             total_mapped_file)",
        );
        Self {
            events,
            under_oom,
            pressure_seconds,
            refaults,
            activations,
            pgscan,
            pgsteal,
            dirty_bytes,
            writeback_bytes,
            file_mapped_bytes,
        }
    }

    /// A `stats` sample's counters, every one the kernel has: the series of those it lacks go.
    pub fn sample(&self, labels: &ContainerLabels, values: &CounterValues) {
        let present: Vec<(Slot, u64)> = values
            .0
            .iter()
            .filter_map(|&(c, v)| Some((Slot::of(c)?, v)))
            .collect();
        for slot in Slot::ALL {
            match present.iter().find(|(s, _)| *s == slot) {
                Some(&(_, value)) => self.set(labels, slot, value),
                None => self.remove_one(labels, slot),
            }
        }
    }

    /// A `counters` event: the counters that changed, at their new values.
    pub fn changed(&self, labels: &ContainerLabels, changes: &CounterChanges) {
        for &(counter, change) in &changes.changed {
            if let Some(slot) = Slot::of(counter) {
                self.set(labels, slot, change.value);
            }
        }
    }

    /// Every series of a container.
    pub fn remove(&self, labels: &ContainerLabels) {
        for slot in Slot::ALL {
            self.remove_one(labels, slot);
        }
    }

    fn set(&self, labels: &ContainerLabels, slot: Slot, value: u64) {
        let total = |family: &Counters| {
            // The kernel's total, as is: a cgroup created again at the path starts over, which
            // Prometheus reads as a counter reset.
            family
                .get_or_create(labels)
                .inner()
                .store(value, Ordering::Relaxed);
        };
        let level = |family: &Gauges| {
            family
                .get_or_create(labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        let typed = |family: &Family<PageTypeLabels, Counter>, r#type| {
            family
                .get_or_create(&PageTypeLabels {
                    container: labels.clone(),
                    r#type,
                })
                .inner()
                .store(value, Ordering::Relaxed);
        };
        match slot {
            Slot::Event(event) => self
                .events
                .get_or_create(&EventLabels {
                    container: labels.clone(),
                    event,
                })
                .inner()
                .store(value, Ordering::Relaxed),
            Slot::Pressure(kind) => {
                #[expect(clippy::cast_precision_loss, reason = "seconds as a float")]
                let seconds = value as f64 / 1e9;
                // `Counter<f64, AtomicU64>` keeps the float's bits.
                self.pressure_seconds
                    .get_or_create(&PressureLabels {
                        container: labels.clone(),
                        kind,
                    })
                    .inner()
                    .store(seconds.to_bits(), Ordering::Relaxed);
            }
            Slot::Refaults(r#type) => typed(&self.refaults, r#type),
            Slot::Activations(r#type) => typed(&self.activations, r#type),
            Slot::Pgscan => total(&self.pgscan),
            Slot::Pgsteal => total(&self.pgsteal),
            Slot::UnderOom => level(&self.under_oom),
            Slot::Dirty => level(&self.dirty_bytes),
            Slot::Writeback => level(&self.writeback_bytes),
            Slot::FileMapped => level(&self.file_mapped_bytes),
        }
    }

    fn remove_one(&self, labels: &ContainerLabels, slot: Slot) {
        let container = labels.clone();
        let _ = match slot {
            Slot::Event(event) => self.events.remove(&EventLabels { container, event }),
            Slot::Pressure(kind) => self
                .pressure_seconds
                .remove(&PressureLabels { container, kind }),
            Slot::Refaults(r#type) => self.refaults.remove(&PageTypeLabels { container, r#type }),
            Slot::Activations(r#type) => self
                .activations
                .remove(&PageTypeLabels { container, r#type }),
            Slot::Pgscan => self.pgscan.remove(labels),
            Slot::Pgsteal => self.pgsteal.remove(labels),
            Slot::UnderOom => self.under_oom.remove(labels),
            Slot::Dirty => self.dirty_bytes.remove(labels),
            Slot::Writeback => self.writeback_bytes.remove(labels),
            Slot::FileMapped => self.file_mapped_bytes.remove(labels),
        };
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text;

    use super::*;
    use crate::event::{Change, CounterSource};

    const LABELS: &str = "namespace=\"\",pod=\"\",container=\"\",image=\"\",id=\"/docker/c\"";

    fn families() -> (Registry, MemcgFamilies, ContainerLabels) {
        let mut registry = Registry::with_prefix("memtrace");
        let families = MemcgFamilies::register(&mut registry);
        let labels = ContainerLabels::of(Some("/docker/c"), None);
        (registry, families, labels)
    }

    /// The sample lines, without HELP and TYPE, sorted (a family's series are in no order),
    /// the container's labels written `C`.
    fn samples(registry: &Registry) -> Vec<String> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, registry).expect("encode");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.replace(LABELS, "C"))
            .collect();
        lines.sort();
        lines
    }

    fn sorted(lines: &[&str]) -> Vec<String> {
        let mut lines: Vec<String> = lines.iter().map(|&l| l.to_owned()).collect();
        lines.sort();
        lines
    }

    fn values(counters: &[(Kernel, u64)]) -> CounterValues {
        let mut values = CounterValues::default();
        for &(c, v) in counters {
            values.set(c, v);
        }
        values
    }

    /// What a v1 memcg on 6.18 has: no `memory.events`, PSI or scans.
    fn v1_sample() -> CounterValues {
        values(&[
            (Kernel::OomKill, 2),
            (Kernel::Failcnt, 340),
            (Kernel::UnderOom, 0),
            (Kernel::WorkingsetRefaultAnon, 0),
            (Kernel::WorkingsetRefaultFile, 1553),
            (Kernel::DirtyBytes, 53_248),
            (Kernel::WritebackBytes, 0),
            (Kernel::ShmemBytes, 9_170_944),
            (Kernel::FileMappedBytes, 7_331_840),
        ])
    }

    #[test]
    fn a_v1_sample_has_the_series_its_kernel_counts_and_no_others() {
        let (registry, f, labels) = families();
        f.sample(&labels, &v1_sample());
        assert_eq!(
            samples(&registry),
            sorted(&[
                "memtrace_memcg_events_total{C,event=\"max\"} 340",
                "memtrace_memcg_events_total{C,event=\"oom_kill\"} 2",
                "memtrace_memcg_under_oom{C} 0",
                "memtrace_memcg_workingset_refaults_total{C,type=\"anon\"} 0",
                "memtrace_memcg_workingset_refaults_total{C,type=\"file\"} 1553",
                "memtrace_memcg_dirty_bytes{C} 53248",
                "memtrace_memcg_writeback_bytes{C} 0",
                "memtrace_memcg_file_mapped_bytes{C} 7331840",
            ]),
            "failcnt is event=\"max\"; absent counters (PSI, scans, high…) have no series, \
             shmem is memtrace_memory_shmem_bytes'"
        );
    }

    #[test]
    fn changes_set_the_kernels_totals_and_psi_is_in_seconds() {
        let (registry, f, labels) = families();
        f.sample(
            &labels,
            &values(&[
                (Kernel::High, 12),
                (Kernel::PressureSomeNs, 1_500_000),
                (Kernel::Pgscan, 40),
            ]),
        );
        let changes = CounterChanges {
            interval_ns: 1_000_000_000,
            source: CounterSource::Notified,
            changed: vec![
                (
                    Kernel::High,
                    Change {
                        value: 15,
                        delta: 3,
                    },
                ),
                (
                    Kernel::PressureSomeNs,
                    Change {
                        value: 2_250_000_000,
                        delta: 2_248_500_000,
                    },
                ),
            ],
        };
        f.changed(&labels, &changes);
        assert_eq!(
            samples(&registry),
            sorted(&[
                "memtrace_memcg_events_total{C,event=\"high\"} 15",
                "memtrace_memcg_pressure_seconds_total{C,kind=\"some\"} 2.25",
                "memtrace_memcg_pgscan_total{C} 40",
            ])
        );
    }

    #[test]
    fn a_counter_a_sample_no_longer_has_goes_but_not_its_other_name() {
        let (registry, f, labels) = families();
        f.sample(&labels, &v1_sample());
        // Pre-5.9 refaults and v1's failcnt serve the same series as their newer names.
        f.sample(
            &labels,
            &values(&[(Kernel::Failcnt, 341), (Kernel::WorkingsetRefault, 7)]),
        );
        assert_eq!(
            samples(&registry),
            sorted(&[
                "memtrace_memcg_events_total{C,event=\"max\"} 341",
                "memtrace_memcg_workingset_refaults_total{C,type=\"file\"} 7",
            ])
        );
        f.remove(&labels);
        assert_eq!(samples(&registry), Vec::<String>::new());
    }

    #[test]
    fn every_kernel_counter_has_a_series_every_container_loses() {
        for &counter in Kernel::ALL {
            if let Some(slot) = Slot::of(counter) {
                assert!(Slot::ALL.contains(&slot), "{counter}");
            }
        }
    }
}
