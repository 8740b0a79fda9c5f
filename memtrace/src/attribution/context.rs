//! The context userspace adds to a kernel record as it arrives.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use memtrace_common::{
    CgroupRecord, ChargeDelta, OomKillRecord,
    event::{
        CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RELEASE, CGROUP_RMDIR, OOM_FLAG_CONTROL,
        OOM_FLAG_MEMCG, Record,
    },
};

use super::{
    ContainerIdentity, DyingTracker, Filter, IdentityKind, KmsgOomLines, MemcgResolver,
    MemoryStats, PodDirectory, Removed, failcnt::FailureCounts, memcg_path_of_pid,
};
use crate::{
    event::{
        ChargeSource, Charges, ChargesFromPageCache, Context, Device, Event, FileCache, Memcg,
        MemorySource, OomConstraint, OomContext, PageCache, Slab, SlabCache, What, c_str,
    },
    probes::{CacheDrain, Drain, ProbeError, filter::KernelFilter},
};

/// Files listed per memcg and interval in `cache` events.
const TOP_FILES: usize = 5;
/// Caches listed per memcg and interval in `slab` events.
const TOP_SLAB_CACHES: usize = 10;

/// How long an OOM kill waits for the kernel's `oom-kill:` line, which is printed just before
/// the victim is marked but read by another thread.
const KMSG_WAIT: Duration = Duration::from_millis(300);

/// Resolves a record's memcg to its cgroup path and reads what cgroupfs says now, while the
/// cgroup still exists; follows cgroup lifecycles.
pub struct LiveContext {
    resolver: MemcgResolver,
    pods: PodDirectory,
    kmsg: Option<KmsgOomLines>,
    dying: DyingTracker,
    filter: Filter,
    page_size: u64,
    /// `enum oom_constraint` names by value, for kills the probe saw with `oom_control`.
    oom_constraints: Vec<(u32, String)>,
    /// The kernel's copy of the filter, kept current as matching cgroups appear.
    kernel_filter: Option<KernelFilter>,
    failure_counts: FailureCounts,
}

impl LiveContext {
    /// `kmsg`: the kernel log follower, when `/dev/kmsg` could be opened.
    #[must_use]
    pub fn new(
        resolver: MemcgResolver,
        pods: PodDirectory,
        kmsg: Option<KmsgOomLines>,
        filter: Filter,
        page_size: u64,
        oom_constraints: Vec<(u32, String)>,
    ) -> Self {
        Self {
            resolver,
            pods,
            kmsg,
            dying: DyingTracker::default(),
            filter,
            page_size,
            oom_constraints,
            kernel_filter: None,
            failure_counts: FailureCounts::default(),
        }
    }

    /// Hands the kernel side the memcgs the filter selects now, and keeps it current as
    /// cgroups are created. Returns how many match now.
    ///
    /// # Errors
    ///
    /// When the kernel's map cannot be written.
    pub fn filter_in_kernel(&mut self, mut kernel: KernelFilter) -> Result<usize, ProbeError> {
        let mut matching = 0;
        for (memcg_id, path) in self.resolver.hierarchy().walk() {
            let identity = self.identity(Some(&path));
            if self.filter.matches(Some(&path), identity.as_ref()) {
                kernel.allow(memcg_id)?;
                matching += 1;
            }
        }
        self.kernel_filter = Some(kernel);
        Ok(matching)
    }

    #[must_use]
    pub fn resolver(&self) -> &MemcgResolver {
        &self.resolver
    }

    /// The event a kernel record stands for, with its context; `None` when the user's filter
    /// does not want it (its bookkeeping, e.g. a cgroup's name, is kept all the same).
    pub fn observe(&mut self, record: &Record) -> Option<Event> {
        let context = match record {
            Record::OomKill(r) => self.oom_kill(r),
            Record::Cgroup(r) => self.cgroup(r),
            Record::Reclaim(r) => self.of_memcg(r.memcg_id),
            Record::ChargeFail(r) => {
                let mut context = self.of_memcg(r.memcg_id);
                context.charge_failures =
                    self.charge_failures(r.memcg_id, context.cgroup.as_deref());
                context
            }
        };
        let wanted = self
            .filter
            .matches(context.cgroup.as_deref(), context.container.as_ref())
            || context.oom.as_ref().is_some_and(|oom| {
                // The pod whose limit fired is asked about: its container's kill matters.
                self.filter
                    .matches(oom.limit_cgroup.as_deref(), oom.limit_container.as_ref())
            });
        wanted.then(|| Event::from_kernel(record, context, self.page_size))
    }

    /// The charge failure a memcg limit reclaim episode began with, when `try_charge` is
    /// derived from reclaim.
    pub fn charge_fail_from_reclaim(&mut self, reclaim: &Event) -> Option<Event> {
        let memcg_id = reclaim.memcg.id?;
        let failures = self.charge_failures(memcg_id, reclaim.memcg.cgroup.as_deref());
        reclaim.charge_fail_from_reclaim(failures)
    }

    /// The memcg's own count of failed charges, read from cgroupfs at most every so often.
    fn charge_failures(&mut self, memcg_id: u64, cgroup: Option<&str>) -> Option<u64> {
        let hierarchy = self.resolver.hierarchy();
        self.failure_counts.get(memcg_id, Instant::now(), || {
            hierarchy.charge_failures(cgroup?)
        })
    }

    /// Path and container of a memcg id (0: the kernel could not tell).
    fn of_memcg(&mut self, memcg_id: u64) -> Context {
        let Memcg {
            cgroup, container, ..
        } = self.memcg(memcg_id);
        Context {
            cgroup,
            container,
            ..Context::default()
        }
    }

    /// A memcg id as events name it: with its path and owner.
    fn memcg(&mut self, memcg_id: u64) -> Memcg {
        let cgroup = if memcg_id == 0 {
            None
        } else {
            self.resolver.path(memcg_id).map(str::to_owned)
        };
        Memcg {
            id: Some(memcg_id),
            container: self.identity(cgroup.as_deref()),
            cgroup,
        }
    }

    /// The memcg of an interval's aggregate, if the user's filter wants it.
    fn wanted_memcg(&mut self, memcg_id: u64) -> Option<Memcg> {
        let memcg = self.memcg(memcg_id);
        self.filter
            .matches(memcg.cgroup.as_deref(), memcg.container.as_ref())
            .then_some(memcg)
    }

    /// One interval of the kernel's page-cache aggregates as a `cache` event per memcg, with
    /// each memcg's files that grew most.
    pub fn cache_events(
        &mut self,
        drain: &CacheDrain,
        timestamp_ns: u64,
        interval_ns: u64,
    ) -> Vec<Event> {
        let page_size = self.page_size;
        let bytes = |pages: u64| pages.saturating_mul(page_size);
        let mut files: HashMap<u64, Vec<FileCache>> = HashMap::new();
        for (memcg_id, inode, delta) in &drain.by_file {
            // An inode whose id the kernel could not read shows as 0:0 inode 0.
            let inode = inode.unwrap_or_default();
            files.entry(*memcg_id).or_default().push(FileCache::new(
                Device::from_kernel(inode.dev),
                inode.ino,
                bytes(delta.added_pages),
                bytes(delta.removed_pages),
            ));
        }
        let mut events = Vec::new();
        for (&memcg_id, delta) in &drain.by_memcg {
            let Some(memcg) = self.wanted_memcg(memcg_id) else {
                continue;
            };
            let mut top_files = files.remove(&memcg_id).unwrap_or_default();
            top_files.sort_by_key(|f| std::cmp::Reverse((f.net_bytes, f.added_bytes)));
            top_files.truncate(TOP_FILES);
            let mut cache = PageCache::new(
                interval_ns,
                bytes(delta.added_pages),
                bytes(delta.removed_pages),
            );
            cache.top_files = top_files;
            events.push(Event {
                timestamp_ns,
                memcg,
                what: What::Cache(cache),
            });
        }
        sort_by_cgroup(&mut events);
        events
    }

    /// One interval of the kernel's charge aggregates as a `charge` event per memcg.
    pub fn charge_events(
        &mut self,
        charges: &HashMap<u64, ChargeDelta>,
        timestamp_ns: u64,
        interval_ns: u64,
        source: ChargeSource,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for (&memcg_id, delta) in charges {
            let Some(memcg) = self.wanted_memcg(memcg_id) else {
                continue;
            };
            events.push(Event {
                timestamp_ns,
                memcg,
                what: What::Charge(Charges {
                    interval_ns,
                    charged_bytes: delta.pages.saturating_mul(self.page_size),
                    charges: (source == ChargeSource::Charge).then_some(delta.charges),
                    source,
                }),
            });
        }
        sort_by_cgroup(&mut events);
        events
    }

    /// Derived: page cache added per memcg in an interval, as its charges.
    pub fn charges_from_page_cache_events(
        &mut self,
        pages_added: &HashMap<u64, u64>,
        timestamp_ns: u64,
        interval_ns: u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for (&memcg_id, &pages) in pages_added {
            let Some(memcg) = self.wanted_memcg(memcg_id) else {
                continue;
            };
            events.push(Event {
                timestamp_ns,
                memcg,
                what: What::ChargeFromPageCache(ChargesFromPageCache {
                    interval_ns,
                    charged_bytes: pages.saturating_mul(self.page_size),
                }),
            });
        }
        sort_by_cgroup(&mut events);
        events
    }

    /// One interval of the kernel's slab aggregates as a `slab` event per memcg, caches with
    /// the largest net growth first.
    pub fn slab_events(
        &mut self,
        drain: &Drain,
        timestamp_ns: u64,
        interval_ns: u64,
    ) -> Vec<Event> {
        let mut by_memcg: HashMap<u64, Vec<SlabCache>> = HashMap::new();
        for (memcg_id, cache, delta) in &drain.slab {
            by_memcg.entry(*memcg_id).or_default().push(SlabCache::new(
                cache.clone(),
                (delta.alloc_bytes, delta.alloc_objects),
                (delta.free_bytes, delta.free_objects),
            ));
        }
        let mut events = Vec::new();
        for (memcg_id, mut caches) in by_memcg {
            let Some(memcg) = self.wanted_memcg(memcg_id) else {
                continue;
            };
            caches.sort_by(|a, b| {
                b.net_bytes
                    .cmp(&a.net_bytes)
                    .then_with(|| a.cache.cmp(&b.cache))
            });
            caches.truncate(TOP_SLAB_CACHES);
            events.push(Event {
                timestamp_ns,
                memcg,
                what: What::Slab(Slab::new(interval_ns, caches)),
            });
        }
        sort_by_cgroup(&mut events);
        events
    }

    /// Who a cgroup belongs to: container and pod from the path, names from kubelet's files.
    fn identity(&mut self, cgroup: Option<&str>) -> Option<ContainerIdentity> {
        let mut identity = ContainerIdentity::from_cgroup_path(cgroup?);
        self.pods.enrich(&mut identity);
        (identity.kind() != IdentityKind::Unknown).then_some(identity)
    }

    /// One `stats` event per active container and pod (and the `--cgroup` the user named),
    /// from cgroupfs.
    pub fn stats_events(&mut self, timestamp_ns: u64) -> Vec<Event> {
        let mut samples = Vec::new();
        for cgroup in self.resolver.rescan() {
            let identity = self.identity(Some(&cgroup));
            let active = identity.as_ref().is_some_and(|i| {
                matches!(i.kind(), IdentityKind::Container | IdentityKind::Pod) && !i.is_conmon()
            });
            let named = self.filter.cgroup.as_deref() == Some(cgroup.as_str());
            if !(active || named) || !self.filter.matches(Some(&cgroup), identity.as_ref()) {
                continue;
            }
            if let Some(memory) = MemoryStats::read(self.resolver.hierarchy(), &cgroup) {
                samples.push(Event {
                    timestamp_ns,
                    memcg: Memcg {
                        id: None,
                        cgroup: Some(cgroup),
                        container: identity,
                    },
                    what: What::Stats(memory),
                });
            }
        }
        sort_by_cgroup(&mut samples);
        samples
    }

    fn oom_kill(&mut self, r: &OomKillRecord) -> Context {
        let line = self.kmsg.as_ref().and_then(|k| k.take(r.pid, KMSG_WAIT));
        let cgroup = if r.flags & OOM_FLAG_MEMCG != 0 {
            self.resolver.path(r.memcg_id).map(str::to_owned)
        } else {
            // The kernel gave only a pid (older `mark_victim`): its own report names the
            // victim's memcg; else ask /proc while the victim is still exiting.
            line.as_ref()
                .and_then(|l| l.task_memcg.clone())
                .or_else(|| memcg_path_of_pid(r.pid, self.resolver.hierarchy().version))
        };
        // With `oom_control` (fentry/kprobe strategies) the kernel said in the probe which
        // memcg's limit fired and what its counter read at the kill; else its report says.
        let control = r.flags & OOM_FLAG_CONTROL != 0;
        let limit_cgroup = if control {
            (r.limit_memcg_id != 0)
                .then(|| self.resolver.path(r.limit_memcg_id).map(str::to_owned))
                .flatten()
        } else {
            line.as_ref().and_then(|l| l.oom_memcg.clone())
        };
        let constraint = if control {
            self.oom_constraints
                .iter()
                .find(|(value, _)| *value == r.constraint)
                .map_or_else(
                    || OomConstraint::Other(format!("constraint {}", r.constraint)),
                    |(_, n)| OomConstraint::from_name(n),
                )
                .into()
        } else {
            line.as_ref()
                .map(|l| OomConstraint::from_name(&l.constraint))
        };
        let hierarchy = self.resolver.hierarchy();
        // The memory of the limit that fired as the kernel printed it at the kill; failing that
        // (no report: rate-limited, or a global OOM), cgroupfs now, after the victim's memory
        // may already be freed.
        let from_report = line.as_ref().and_then(|l| l.report.as_ref()).map(|r| {
            MemoryStats::from_stat(
                hierarchy.version,
                &r.stat,
                r.usage_bytes,
                r.limit_bytes,
                r.kmem_usage_bytes,
            )
        });
        let (mut memory, memory_source) = if let Some(m) = from_report {
            (Some(m), Some(MemorySource::KernelOomReport))
        } else {
            let m = limit_cgroup
                .as_deref()
                .or(cgroup.as_deref())
                .and_then(|c| MemoryStats::read(hierarchy, c));
            let source = m.as_ref().map(|_| MemorySource::CgroupfsAfterKill);
            (m, source)
        };
        if control && r.limit_memcg_id != 0 {
            // The page counter as the probe read it, at the kill.
            let m = memory.get_or_insert_with(MemoryStats::default);
            m.usage_bytes = Some(r.limit_usage_pages.saturating_mul(self.page_size));
            m.limit_bytes =
                Some(r.limit_max_pages.saturating_mul(self.page_size)).filter(|&l| l < 1 << 62);
            m.working_set_bytes = m
                .usage_bytes
                .map(|u| u.saturating_sub(m.inactive_file_bytes.unwrap_or(0)));
        }
        let memcg_limit_bytes = cgroup.as_deref().and_then(|c| hierarchy.limit_bytes(c));
        let memcg_usage_bytes = cgroup.as_deref().and_then(|c| hierarchy.usage_bytes(c));
        Context {
            container: self.identity(cgroup.as_deref()),
            memcg_limit_bytes,
            memcg_usage_bytes,
            oom: Some(OomContext {
                constraint,
                limit_container: self.identity(limit_cgroup.as_deref()),
                limit_cgroup,
                memory,
                memory_source,
                task: line.as_ref().and_then(|l| l.task.clone()),
            }),
            cgroup,
            removed_ns: None,
            charge_failures: None,
        }
    }

    fn cgroup(&mut self, r: &CgroupRecord) -> Context {
        let reported = c_str(&r.path);
        let mut context = Context::default();
        if r.action == CGROUP_RELEASE {
            context.removed_ns = self.dying.freed(r.memcg_id).map(|d| d.removed_ns);
        }
        // The kernel's own word for the path wins; it is also how a cgroup created before
        // memtrace started and removed since gets its name.
        context.cgroup = if reported.is_empty() {
            self.resolver.path(r.memcg_id).map(str::to_owned)
        } else {
            self.resolver.insert(r.memcg_id, reported.clone());
            Some(reported)
        };
        context.container = self.identity(context.cgroup.as_deref());
        if r.action == CGROUP_MKDIR
            && let Some(kernel) = self.kernel_filter.as_mut()
            && self
                .filter
                .matches(context.cgroup.as_deref(), context.container.as_ref())
            && let Err(e) = kernel.allow(r.memcg_id)
        {
            log::warn!("{e}: events of {:?} will be missing", context.cgroup);
        }
        if r.action == CGROUP_RMDIR {
            let charged_bytes = (r.flags & CGROUP_FLAG_CHARGED != 0)
                .then(|| r.charged_pages.saturating_mul(self.page_size));
            self.dying.removed(
                r.memcg_id,
                Removed {
                    cgroup: context.cgroup.clone(),
                    removed_ns: r.header.timestamp_ns,
                    charged_bytes,
                },
            );
        }
        context
    }

    /// Memcgs removed while memtrace watched and not freed yet, oldest first.
    #[must_use]
    pub fn still_dying(&self) -> Vec<Removed> {
        self.dying.dying()
    }
}

/// Events of one interval in cgroup order, so a terminal shows them in a stable order.
fn sort_by_cgroup(events: &mut [Event]) {
    events.sort_by(|a, b| a.memcg.cgroup.cmp(&b.memcg.cgroup));
}
