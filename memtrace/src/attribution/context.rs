//! The context userspace adds to a kernel record as it arrives.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use memtrace_common::{
    CacheDelta, CgroupRecord, ChargeDelta, InodeId, OomKillRecord,
    event::{
        CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RELEASE, CGROUP_RMDIR, OOM_FLAG_CONTROL,
        OOM_FLAG_MEMCG, Record,
    },
};

use super::{
    ContainerIdentity, DyingTracker, FileNames, Filter, Forgotten, IdentityKind, KmsgOomLines,
    MemcgResolver, MemoryHierarchy, MemoryStats, OomKillLine, PodDirectory, Removed,
    RuntimeLookups, RuntimeNames,
    counter_changes::CounterTracker,
    counter_gate::{CounterGate, Decision, Pass},
    counter_scan::CounterScan,
    counters,
    failcnt::FailureCounts,
    memcg_path_of_pid,
};
use crate::{
    event::{
        ChargeSource, Charges, ChargesFromPageCache, Context, CounterChanges, CounterValues,
        Device, Event, FileCache, FileName, Memcg, MemorySource, OomConstraint, OomContext,
        PageCache, Sample, Slab, SlabCache, What, c_str,
    },
    probes::{CacheDrain, Drain, ProbeError, derived::ChargesFrom, filter::KernelFilter},
};

/// Files listed per memcg and interval in `cache` events; the others are summed in one "other
/// files" row.
const TOP_FILES: usize = 10;
/// Caches listed per memcg and interval in `slab` events.
const TOP_SLAB_CACHES: usize = 10;

/// How long an OOM kill is held for the kernel's `oom-kill:` line, which is printed just before
/// the victim is marked but read by another thread (and rate-limited in an OOM storm). The
/// pipeline holds the kill, not the events behind it. 150 ms was too short on a 2-core node
/// while other memtraces loaded their programs: a `run` stream gave a kill without the
/// constraint that a `record` beside it got.
pub const KMSG_WAIT: Duration = Duration::from_millis(500);

/// Containers whose runtime names are kept: far more than a node runs at once, so a name is
/// still there when a memcg that stayed dying for a long time is freed; past it the oldest
/// half is dropped.
const RUNTIME_NAMES_KEPT: usize = 16_384;

/// How long a freed memcg's name is kept for events still on their way (an interval's
/// aggregates name memcgs freed during it).
const RELEASED_GRACE: Duration = Duration::from_secs(5);

/// Entries of [`LiveContext`]'s tables (see [`LiveContext::table_sizes`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Memcgs named, as events name them.
    pub names: usize,
    /// Cgroup paths known by memcg id.
    pub paths: usize,
    /// Freed memcgs whose names are kept a little longer.
    pub released: usize,
    /// Containers whose runtime's names were asked for.
    pub runtime_names: usize,
    /// Memcgs removed and not freed yet.
    pub dying: usize,
    /// Page-cache files named.
    pub files: usize,
    /// Page-cache files' names forgotten so far, by why.
    pub forgotten: Forgotten,
}

/// Resolves a record's memcg to its cgroup path and reads what cgroupfs says now, while the
/// cgroup still exists; follows cgroup lifecycles. Never walks the cgroup hierarchy itself:
/// [`LiveContext::unknown_ids`] says when a walk would tell more, the pipeline walks off its
/// consumer and hands the result to [`LiveContext::learn`].
pub struct LiveContext {
    resolver: MemcgResolver,
    /// Each memcg as events name it (path and owner), resolved once; forgotten
    /// [`RELEASED_GRACE`] after the kernel frees it.
    names: HashMap<u64, Memcg>,
    released: VecDeque<(u64, Instant)>,
    pods: PodDirectory,
    runtimes: RuntimeLookups,
    /// What the runtimes' state says about each container id asked about (`None`: asked, no
    /// answer yet or never), in the order asked.
    runtime_names: HashMap<String, Option<RuntimeNames>>,
    runtime_asked: VecDeque<String>,
    /// Pods named by their containers' CRI labels (`io.kubernetes.pod.uid`), by UID: they
    /// name the pod's own memcg, which no runtime knows.
    runtime_pods: HashMap<String, RuntimeNames>,
    kmsg: Option<KmsgOomLines>,
    dying: DyingTracker,
    filter: Filter,
    page_size: u64,
    /// `enum oom_constraint` names by value, for kills the probe saw with `oom_control`.
    oom_constraints: Vec<(u32, String)>,
    /// The kernel's copy of the filter, kept current as matching cgroups appear.
    kernel_filter: Option<KernelFilter>,
    failure_counts: FailureCounts,
    /// Page-cache files' names, resolved once per file.
    files: FileNames,
    /// Whether counters are read (`--counters-interval` not 0).
    follows_counters: bool,
    counters: CounterTracker,
    /// Which memcgs a counters or `stats` pass reads; with the pass while it runs.
    counter_gate: Arc<Mutex<CounterGate>>,
    /// Memcg ids the kernel counted something for, and cgroups it notified, since the last
    /// pass began: the next one reads theirs.
    counter_marks: (HashSet<u64>, HashSet<String>),
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
            names: HashMap::new(),
            released: VecDeque::new(),
            pods,
            runtimes: RuntimeLookups::default(),
            runtime_names: HashMap::new(),
            runtime_asked: VecDeque::new(),
            runtime_pods: HashMap::new(),
            kmsg,
            dying: DyingTracker::default(),
            filter,
            page_size,
            oom_constraints,
            kernel_filter: None,
            failure_counts: FailureCounts::default(),
            files: FileNames::default(),
            follows_counters: false,
            counters: CounterTracker::default(),
            counter_gate: Arc::default(),
            counter_marks: (HashSet::new(), HashSet::new()),
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

    /// The memcg ids a record names that a walk of the hierarchy could name: handle the
    /// record after [`LiveContext::learn`] has the walk, or it goes out without its cgroup.
    #[must_use]
    pub fn unknown_ids(&self, record: &Record) -> Vec<u64> {
        let ids = match record {
            Record::OomKill(r) => [
                (r.flags & OOM_FLAG_MEMCG != 0).then_some(r.memcg_id),
                (r.flags & OOM_FLAG_CONTROL != 0).then_some(r.limit_memcg_id),
            ],
            // A cgroup record names its own path, but for the lifecycle of a cgroup created
            // before memtrace and removed since.
            Record::Cgroup(r) => [(r.path[0] == 0).then_some(r.memcg_id), None],
            other => [Some(other.memcg_id()), None],
        };
        ids.into_iter()
            .flatten()
            .filter(|&id| self.is_unknown(id))
            .collect()
    }

    /// The memcg ids of an interval's aggregates that a walk could name.
    #[must_use]
    pub fn unknown_ids_in(&self, drain: &Drain) -> Vec<u64> {
        let mut ids: Vec<u64> = drain
            .cache
            .by_memcg
            .keys()
            .chain(drain.charge.keys())
            .chain(drain.slab.iter().map(|(id, _, _)| id))
            .copied()
            .filter(|&id| self.is_unknown(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn is_unknown(&self, memcg_id: u64) -> bool {
        !self.names.contains_key(&memcg_id) && self.resolver.is_unknown(memcg_id)
    }

    /// Takes in a walk of the hierarchy made for the `asked` ids.
    pub fn learn(&mut self, found: Vec<(u64, String)>, asked: &[u64]) {
        self.resolver.learn(found, asked);
    }

    /// A walk of the hierarchy, to run off the consumer.
    pub fn walker(&self) -> impl FnOnce() -> Vec<(u64, String)> + Send + 'static {
        let hierarchy = self.resolver.hierarchy().clone();
        move || hierarchy.walk()
    }

    /// The event a kernel record stands for, with its context; `None` when the user's filter
    /// does not want it (its bookkeeping, e.g. a cgroup's name, is kept all the same). An OOM
    /// kill goes through [`LiveContext::oom_arrived`] instead.
    #[expect(
        clippy::match_wildcard_for_single_variants,
        reason = "the default arm is for every record about its memcg alone, now and later"
    )]
    pub fn observe(&mut self, record: &Record) -> Option<Event> {
        let context = match record {
            Record::OomKill(r) => {
                let arrival = self.oom_arrived(r);
                let line = self.oom_report_line(r.pid);
                return self.oom_event(&arrival, line);
            }
            Record::Cgroup(r) => self.cgroup(r),
            Record::ChargeFail(r) => {
                let mut context = self.of_memcg(r.memcg_id);
                context.charge_failures =
                    self.charge_failures(r.memcg_id, context.cgroup.as_deref());
                context
            }
            // A record about its memcg and nothing else needs only its name: records added
            // later too.
            other => self.of_memcg(other.memcg_id()),
        };
        self.wants(&context)
            .then(|| Event::from_kernel(record, context, self.page_size))
    }

    /// Whether the user's filter wants an event with this context: its memcg, or for an OOM
    /// kill the one whose limit fired (a filter on the pod wants its containers' kills).
    fn wants(&self, context: &Context) -> bool {
        self.filter
            .matches(context.cgroup.as_deref(), context.container.as_ref())
            || context.oom.as_ref().is_some_and(|oom| {
                self.filter
                    .matches(oom.limit_cgroup.as_deref(), oom.limit_container.as_ref())
            })
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

    /// Reads the runtimes' state through `lookups` instead of the host's (another root, or
    /// none for tests).
    #[must_use]
    pub fn with_runtime_lookups(mut self, lookups: RuntimeLookups) -> Self {
        self.runtimes = lookups;
        self
    }

    /// Takes in what the runtimes' state said since the last call; never waits.
    fn take_runtime_answers(&mut self) {
        for (id, names) in self.runtimes.answers() {
            if let Some(uid) = names.pod_uid.clone().filter(|_| names.pod_name.is_some()) {
                if self.runtime_pods.len() >= RUNTIME_NAMES_KEPT {
                    self.runtime_pods.clear();
                }
                self.runtime_pods.insert(uid, names.clone());
            }
            // An answer for a container forgotten meanwhile (its memcg freed) is dropped.
            if let Some(slot) = self.runtime_names.get_mut(&id) {
                *slot = Some(names);
            }
        }
    }

    /// Names a container from its runtime's state: known already, or asked for now (a new
    /// container: its cgroup just appeared). A pod's own memcg is named by its containers.
    fn name_from_runtime(&mut self, identity: &mut ContainerIdentity) {
        if let Some(id) = identity.container_id.as_deref()
            && !self.runtime_names.contains_key(id)
        {
            if self.runtime_asked.len() >= RUNTIME_NAMES_KEPT {
                for old in self.runtime_asked.drain(..RUNTIME_NAMES_KEPT / 2) {
                    self.runtime_names.remove(&old);
                }
            }
            self.runtime_names.insert(id.to_owned(), None);
            self.runtime_asked.push_back(id.to_owned());
            self.runtimes.ask(identity.runtime, id);
        }
        // Until the runtime answers, a container in a known pod has the pod's names.
        apply_runtime_names(&self.runtime_names, &self.runtime_pods, identity);
    }

    /// A memcg id as events name it: with its path and owner, resolved once.
    fn memcg(&mut self, memcg_id: u64) -> Memcg {
        self.take_runtime_answers();
        if let Some(known) = self.names.get_mut(&memcg_id) {
            // The runtime's state is read off the pipeline: its names come after the first
            // events.
            if let Some(c) = known.container.as_mut() {
                apply_runtime_names(&self.runtime_names, &self.runtime_pods, c);
            }
            // The kubelet may write a pod's log directory after its first event.
            if let Some(c) = known.container.as_mut()
                && c.pod_uid.is_some()
                && c.pod_name.is_none()
            {
                self.pods.enrich(c);
            }
            return known.clone();
        }
        let cgroup = if memcg_id == 0 {
            None
        } else {
            self.resolver.path(memcg_id).map(str::to_owned)
        };
        let memcg = Memcg {
            id: Some(memcg_id),
            container: self.identity(cgroup.as_deref()),
            cgroup,
        };
        if memcg.cgroup.is_some() {
            self.names.insert(memcg_id, memcg.clone());
        }
        memcg
    }

    /// Forgets the names of memcgs freed more than [`RELEASED_GRACE`] ago, and the runtime's
    /// names of their containers when no other memcg known is theirs. Returns the ids
    /// forgotten, for the kernel side's tables.
    pub fn expire_released(&mut self) -> Vec<u64> {
        let mut forgotten = Vec::new();
        let mut containers = Vec::new();
        while let Some(&(id, at)) = self.released.front()
            && at.elapsed() >= RELEASED_GRACE
        {
            self.released.pop_front();
            // A memcg no event named (an idle container) has its container in its path only.
            let container = match self.names.remove(&id) {
                Some(memcg) => memcg.container.and_then(|c| c.container_id),
                None => self
                    .resolver
                    .path(id)
                    .and_then(|path| ContainerIdentity::from_cgroup_path(path).container_id),
            };
            containers.extend(container);
            self.resolver.forget(id);
            forgotten.push(id);
        }
        if !containers.is_empty() {
            // A podman container's conmon has a memcg of its own with the container's id.
            let named: HashSet<&str> = self
                .names
                .values()
                .filter_map(|m| m.container.as_ref()?.container_id.as_deref())
                .collect();
            for container in containers {
                if !named.contains(container.as_str()) {
                    self.runtime_names.remove(&container);
                }
            }
        }
        forgotten
    }

    /// The kernel's `INODE_IDS` entries of files whose names were forgotten, for the next
    /// drain to delete ([`Aggregates::forget_files`](crate::probes::aggregate::Aggregates::forget_files)).
    pub fn unkeyed_files(&mut self) -> Vec<(u64, InodeId)> {
        self.files.unkeyed()
    }

    /// How many entries this side's per-memcg and per-container tables hold: they must
    /// stay bounded on a node where containers come and go.
    #[must_use]
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            names: self.names.len(),
            paths: usize::try_from(self.resolver.known()).unwrap_or(usize::MAX),
            released: self.released.len(),
            runtime_names: self.runtime_names.len(),
            dying: self.dying.dying().len(),
            files: self.files.count(),
            forgotten: self.files.forgotten(),
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
    /// each memcg's files that changed most, by name, and one row that sums the others; each
    /// event is handed to `emit` as it is made, in cgroup order ([`Self::wanted_in_order`]).
    ///
    /// # Errors
    ///
    /// What `emit` returns.
    pub fn cache_events(
        &mut self,
        drain: &CacheDrain,
        (timestamp_ns, interval_ns): (u64, u64),
        emit: &mut impl FnMut(&Event) -> io::Result<()>,
    ) -> io::Result<()> {
        let page_size = self.page_size;
        let bytes = |pages: u64| pages.saturating_mul(page_size);
        let refaults = |pages: u64| drain.refaults.then(|| bytes(pages));
        for path in &drain.paths {
            self.files.learn(path);
        }
        self.files
            .counted(timestamp_ns, drain.file_keys.iter().copied());
        self.files.unkeyed_by_drain(&drain.unkeyed);
        self.files.forget();
        let mut files: HashMap<u64, FileRows> = HashMap::new();
        for (memcg_id, inode, delta) in &drain.by_file {
            // A file whose inode the kernel could not read has no row of its own: it is in
            // the memcg's "other files".
            if let Some(id) = inode {
                add_file_row(files.entry(*memcg_id).or_default(), *id, *delta);
            }
        }
        for (memcg_id, memcg) in self.wanted_in_order(drain.by_memcg.keys().copied()) {
            let delta = &drain.by_memcg[&memcg_id];
            let mut top: Vec<(Option<InodeId>, CacheDelta)> = files
                .remove(&memcg_id)
                .unwrap_or_default()
                .into_values()
                .map(|(id, delta)| (Some(id), delta))
                .collect();
            // Largest change either way first: a file dropped matters as much as one read.
            top.sort_by_key(|(_, d)| {
                std::cmp::Reverse((
                    d.added_pages.abs_diff(d.removed_pages),
                    d.added_pages + d.removed_pages,
                ))
            });
            let cut = top.len().saturating_sub(TOP_FILES);
            top.truncate(TOP_FILES);
            let mut top_files: Vec<FileCache> = top
                .into_iter()
                .map(|(inode, d)| {
                    let id = inode.unwrap_or_default();
                    let mut file = FileCache::new(
                        Device::from_kernel(id.dev),
                        id.ino,
                        bytes(d.added_pages),
                        bytes(d.removed_pages),
                    )
                    .named(self.files.name(inode));
                    file.refault_bytes = refaults(d.refault_pages);
                    file
                })
                .collect();
            // The rest: the files cut, and pages the kernel could not count per file.
            let shown_added: u64 = top_files.iter().map(|f| f.added_bytes).sum();
            let shown_removed: u64 = top_files.iter().map(|f| f.removed_bytes).sum();
            let other_added = bytes(delta.added_pages).saturating_sub(shown_added);
            let other_removed = bytes(delta.removed_pages).saturating_sub(shown_removed);
            let shown_refaults: u64 = top_files.iter().filter_map(|f| f.refault_bytes).sum();
            let other_refaults = bytes(delta.refault_pages).saturating_sub(shown_refaults);
            if other_added > 0 || other_removed > 0 || other_refaults > 0 {
                let mut other = FileCache::new(Device::default(), 0, other_added, other_removed)
                    .named(FileName::other(cut as u64));
                // Bytes already.
                other.refault_bytes = drain.refaults.then_some(other_refaults);
                top_files.push(other);
            }
            let mut cache = PageCache::new(
                interval_ns,
                bytes(delta.added_pages),
                bytes(delta.removed_pages),
            );
            cache.top_files = top_files;
            cache.refault_bytes = refaults(delta.refault_pages);
            emit(&Event {
                timestamp_ns,
                memcg,
                what: What::Cache(cache),
            })?;
        }
        Ok(())
    }

    /// One interval of charges as a `charge` event per memcg: the kernel's charge aggregate,
    /// or (derived) the page cache added to each memcg.
    ///
    /// # Errors
    ///
    /// What `emit` returns.
    pub fn charge_events(
        &mut self,
        (charges, from): (&HashMap<u64, ChargeDelta>, ChargesFrom),
        (timestamp_ns, interval_ns): (u64, u64),
        emit: &mut impl FnMut(&Event) -> io::Result<()>,
    ) -> io::Result<()> {
        let page_size = self.page_size;
        self.per_memcg(charges, timestamp_ns, emit, |delta| {
            let charged_bytes = delta.pages.saturating_mul(page_size);
            match from {
                ChargesFrom::Kernel(source) => What::Charge(Charges {
                    interval_ns,
                    charged_bytes,
                    charges: (source == ChargeSource::Charge).then_some(delta.charges),
                    source,
                }),
                ChargesFrom::PageCache => What::ChargeFromPageCache(ChargesFromPageCache {
                    interval_ns,
                    charged_bytes,
                }),
            }
        })
    }

    /// An event per memcg of an interval's aggregate that the user's filter wants, handed to
    /// `emit` in cgroup order.
    fn per_memcg<T>(
        &mut self,
        per_memcg: &HashMap<u64, T>,
        timestamp_ns: u64,
        emit: &mut impl FnMut(&Event) -> io::Result<()>,
        what: impl Fn(&T) -> What,
    ) -> io::Result<()> {
        for (memcg_id, memcg) in self.wanted_in_order(per_memcg.keys().copied()) {
            emit(&Event {
                timestamp_ns,
                memcg,
                what: what(&per_memcg[&memcg_id]),
            })?;
        }
        Ok(())
    }

    /// The memcgs of one interval's events that the user's filter wants, each named once, in
    /// the order their events go out: by cgroup path, so a terminal shows them in a stable
    /// order (ids without a path first). Memcgs are sorted, not events: an interval of a node
    /// with 1 000 containers is thousands of 792-byte events, which made, sorted and kept until
    /// written were most of the consumer's time in the interval (copies, and page faults on the
    /// megabytes allocated anew each interval).
    fn wanted_in_order(&mut self, ids: impl Iterator<Item = u64>) -> Vec<(u64, Memcg)> {
        let mut wanted: Vec<(u64, Memcg)> = ids
            .filter_map(|id| Some((id, self.wanted_memcg(id)?)))
            .collect();
        wanted.sort_by(|(_, a), (_, b)| a.cgroup.cmp(&b.cgroup));
        wanted
    }

    /// One interval of the kernel's slab aggregates as a `slab` event per memcg, caches with
    /// the largest net growth first.
    ///
    /// # Errors
    ///
    /// What `emit` returns.
    pub fn slab_events(
        &mut self,
        drain: &Drain,
        (timestamp_ns, interval_ns): (u64, u64),
        emit: &mut impl FnMut(&Event) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut by_memcg: HashMap<u64, Vec<SlabCache>> = HashMap::new();
        for (memcg_id, cache, delta) in &drain.slab {
            by_memcg.entry(*memcg_id).or_default().push(SlabCache::new(
                cache.clone(),
                (delta.alloc_bytes, delta.alloc_objects),
                (delta.free_bytes, delta.free_objects),
            ));
        }
        for (memcg_id, memcg) in self.wanted_in_order(by_memcg.keys().copied()) {
            let Some(mut caches) = by_memcg.remove(&memcg_id) else {
                continue;
            };
            caches.sort_by(|a, b| {
                b.net_bytes
                    .cmp(&a.net_bytes)
                    .then_with(|| a.cache.cmp(&b.cache))
            });
            // Totals over every cache, then the list cut to the largest growers.
            let mut slab = Slab::new(interval_ns, caches);
            slab.caches.truncate(TOP_SLAB_CACHES);
            emit(&Event {
                timestamp_ns,
                memcg,
                what: What::Slab(slab),
            })?;
        }
        Ok(())
    }

    /// Who a cgroup belongs to: container and pod from the path, names from the runtime's
    /// state, else from the kubelet's log directories.
    fn identity(&mut self, cgroup: Option<&str>) -> Option<ContainerIdentity> {
        let mut identity = ContainerIdentity::from_cgroup_path(cgroup?);
        self.take_runtime_answers();
        self.name_from_runtime(&mut identity);
        self.pods.enrich(&mut identity);
        (identity.kind() != IdentityKind::Unknown).then_some(identity)
    }

    /// A walk of the hierarchy that reads the memory of every container and pod (and of the
    /// `--cgroup` the user named), to run off the consumer.
    /// `full`: every memcg read anew (a global OOM kill's census); else only those something
    /// says changed ([`CounterGate`]), the others sampled as they were.
    pub fn memory_scanner(&mut self, full: bool) -> impl FnOnce() -> MemoryScan + Send + 'static {
        let hierarchy = self.resolver.hierarchy().clone();
        let named = self.filter.cgroup.clone();
        let gate = Arc::clone(&self.counter_gate);
        let active = std::mem::take(&mut self.counter_marks.0);
        move || {
            // The counters pass may hold it: a blocking thread waits.
            let mut gate = gate.lock().unwrap_or_else(PoisonError::into_inner);
            gate.mark_active(active);
            MemoryScan::new(&hierarchy, named.as_deref(), &mut gate, full)
        }
    }

    /// Reads counters too, into `stats` samples and `counters` events, from now: the memcgs'
    /// counters are read once here, before the session says it is attached, so that every
    /// change after that is told.
    pub fn follow_counters(&mut self) {
        self.follows_counters = true;
        let scan = self.counter_scanner(true)();
        let baseline = self.counter_events(scan, crate::clock::boot_ns());
        debug_assert!(baseline.is_empty(), "the first pass is the baseline");
    }

    /// A pass over the counters of the memcgs `stats` samples, to run off the consumer: of
    /// each that something says changed, or of all when `full` (the first and the last pass).
    pub fn counter_scanner(&mut self, full: bool) -> impl FnOnce() -> CounterScan + Send + 'static {
        let hierarchy = self.resolver.hierarchy().clone();
        let named = self.filter.cgroup.clone();
        let gate = Arc::clone(&self.counter_gate);
        let (active, notified) = std::mem::take(&mut self.counter_marks);
        move || {
            // A `stats` pass may hold it: a blocking thread waits.
            let mut gate = gate.lock().unwrap_or_else(PoisonError::into_inner);
            gate.mark_active(active);
            for cgroup in &notified {
                gate.mark_notified(cgroup);
            }
            CounterScan::new(&hierarchy, named.as_deref(), &mut gate, full)
        }
    }

    /// The kernel's aggregates of an interval counted something for these memcgs: the next
    /// counters pass reads theirs.
    pub fn counted_activity(&mut self, drain: &Drain) {
        // Taken by each pass; bounded should no pass run (counters and `stats` off).
        if self.counter_marks.0.len() > 1 << 16 {
            self.counter_marks.0.clear();
        }
        self.counter_marks.0.extend(
            drain
                .cache
                .by_memcg
                .keys()
                .chain(drain.charge.keys())
                .chain(drain.slab.iter().map(|(id, _, _)| id))
                .copied(),
        );
    }

    /// Usage files the counters passes keep open; `None` while a pass runs.
    #[must_use]
    pub fn counter_files_open(&self) -> Option<usize> {
        Some(self.counter_gate.try_lock().ok()?.open_files())
    }

    /// A `counters` event per followed memcg whose counters changed since the last scan (or
    /// notification), that the user's filter wants.
    pub fn counter_events(&mut self, scan: CounterScan, timestamp_ns: u64) -> Vec<Event> {
        if let Some(found) = scan.found {
            self.resolver.learn(found, &[]);
        }
        let ids: HashMap<String, u64> = scan
            .counters
            .iter()
            .map(|(id, path, _)| (path.clone(), *id))
            .collect();
        let read = scan
            .counters
            .into_iter()
            .map(|(_, path, values)| (path, values))
            .collect();
        let mut changed = self.counters.pass(timestamp_ns, scan.started_ns, read);
        // In cgroup order, as every interval's events.
        changed.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut events = Vec::with_capacity(changed.len());
        for (cgroup, changes) in changed {
            let id = ids.get(&cgroup).copied();
            events.extend(self.counter_event(id, cgroup, changes, timestamp_ns));
        }
        events
    }

    /// The cgroups whose counters are followed, as of the last scan.
    pub fn counter_cgroups(&self) -> impl Iterator<Item = &str> {
        self.counters.cgroups()
    }

    /// A `counters` event for a memcg whose counters the kernel said changed (v2
    /// `memory.events`, v1 `memory.oom_control`), read now; `None` when nothing changed.
    pub fn notified_counters(&mut self, cgroup: &str, timestamp_ns: u64) -> Option<Event> {
        let values = counters::read_notified(self.resolver.hierarchy(), cgroup)?;
        self.counter_marks.1.insert(cgroup.to_owned());
        let changes = self.counters.notified(timestamp_ns, cgroup, &values)?;
        self.counter_event(None, cgroup.to_owned(), changes, timestamp_ns)
    }

    fn counter_event(
        &mut self,
        id: Option<u64>,
        cgroup: String,
        changes: CounterChanges,
        timestamp_ns: u64,
    ) -> Option<Event> {
        let identity = self.identity(Some(&cgroup));
        self.filter
            .matches(Some(&cgroup), identity.as_ref())
            .then_some(Event {
                timestamp_ns,
                memcg: Memcg {
                    id,
                    cgroup: Some(cgroup),
                    container: identity,
                },
                what: What::Counters(changes),
            })
    }

    /// One `stats` event per active container and pod (and the `--cgroup` the user named)
    /// that the user's filter wants, from a [`MemoryScan`].
    pub fn stats_events(&mut self, scan: MemoryScan, timestamp_ns: u64) -> Vec<Event> {
        if let Some(found) = scan.found {
            self.resolver.learn(found, &[]);
        }
        let mut samples = Vec::new();
        let mut by_path = scan.samples;
        // In cgroup order, as every interval's events.
        by_path.sort_by(|(a, _), (b, _)| a.cmp(b));
        for (cgroup, mut memory) in by_path {
            let identity = self.identity(Some(&cgroup));
            if !self.filter.matches(Some(&cgroup), identity.as_ref()) {
                continue;
            }
            if self.follows_counters {
                // The counters as the last pass (or notification) had them; a memcg no pass
                // has seen yet is read now.
                memory.counters = match self.counters.values(&cgroup) {
                    Some(values) => values.clone(),
                    None => counters::read(self.resolver.hierarchy(), &cgroup).unwrap_or_default(),
                };
            }
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
        samples
    }

    /// An OOM kill as it arrives: what must be read before the victim is gone (its memcg's
    /// limit and usage, `/proc/PID/cgroup` when the kernel gave only a pid). The kernel's
    /// report line may still be on its way ([`LiveContext::oom_report_line`]).
    #[must_use]
    pub fn oom_arrived(&mut self, r: &OomKillRecord) -> OomArrival {
        let hierarchy = self.resolver.hierarchy();
        let cgroup = if r.flags & OOM_FLAG_MEMCG != 0 {
            self.resolver.path(r.memcg_id).map(str::to_owned)
        } else {
            // The kernel gave only a pid (older `mark_victim`): its own report names the
            // victim's memcg; else ask /proc while the victim is still exiting.
            memcg_path_of_pid(r.pid, hierarchy.version)
        };
        OomArrival {
            record: *r,
            memcg_limit_bytes: cgroup.as_deref().and_then(|c| hierarchy.limit_bytes(c)),
            memcg_usage_bytes: cgroup.as_deref().and_then(|c| hierarchy.usage_bytes(c)),
            cgroup,
            arrived: Instant::now(),
        }
    }

    /// Whether OOM kills wait for the kernel's report (no: `/dev/kmsg` could not be read).
    #[must_use]
    pub fn follows_kernel_log(&self) -> bool {
        self.kmsg.is_some()
    }

    /// The kernel's `oom-kill:` line for a victim, if it has arrived; never waits.
    #[must_use]
    pub fn oom_report_line(&self, pid: u32) -> Option<OomKillLine> {
        self.kmsg.as_ref().and_then(|k| k.take(pid, Duration::ZERO))
    }

    /// The event of an OOM kill, with the kernel's report line when it came in time; `None`
    /// when the user's filter wants neither the victim's memcg nor the one whose limit fired.
    pub fn oom_event(&mut self, arrival: &OomArrival, line: Option<OomKillLine>) -> Option<Event> {
        let context = self.oom_kill(arrival, line);
        self.wants(&context)
            .then(|| Event::from_kernel(&Record::OomKill(arrival.record), context, self.page_size))
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "the line is the kill's: taken from the log, used here, dropped"
    )]
    fn oom_kill(&mut self, arrival: &OomArrival, line: Option<OomKillLine>) -> Context {
        let r = &arrival.record;
        let cgroup = if r.flags & OOM_FLAG_MEMCG != 0 {
            arrival.cgroup.clone()
        } else {
            // The kernel's own report names the victim's memcg; else /proc said at arrival.
            line.as_ref()
                .and_then(|l| l.task_memcg.clone())
                .or_else(|| arrival.cgroup.clone())
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
                MemoryStats::report_format(&r.stat, hierarchy.version),
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
        let (memcg_limit_bytes, memcg_usage_bytes) = if cgroup == arrival.cgroup {
            (arrival.memcg_limit_bytes, arrival.memcg_usage_bytes)
        } else {
            let c = cgroup.as_deref();
            (
                c.and_then(|c| hierarchy.limit_bytes(c)),
                c.and_then(|c| hierarchy.usage_bytes(c)),
            )
        };
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
            self.released.push_back((r.memcg_id, Instant::now()));
            // A freed memcg is counted no more: the kernel's copy of the filter forgets it.
            if let Some(kernel) = self.kernel_filter.as_mut()
                && let Err(e) = kernel.forget(r.memcg_id)
            {
                log::debug!("{e}");
            }
        }
        // The kernel's own word for the path wins; it is also how a cgroup created before
        // memtrace started and removed since gets its name.
        context.cgroup = if reported.is_empty() {
            self.resolver.path(r.memcg_id).map(str::to_owned)
        } else {
            if r.action == CGROUP_MKDIR {
                // A new cgroup may reuse a freed one's id: the kernel's word replaces the name.
                self.names.remove(&r.memcg_id);
            }
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

/// Fills an identity with what the runtimes' state said about its container, or about its pod
/// through another container's labels.
fn apply_runtime_names(
    containers: &HashMap<String, Option<RuntimeNames>>,
    pods: &HashMap<String, RuntimeNames>,
    identity: &mut ContainerIdentity,
) {
    if let Some(Some(names)) = identity
        .container_id
        .as_deref()
        .and_then(|id| containers.get(id))
    {
        names.apply(identity);
    } else if let Some(names) = identity.pod_uid.as_deref().and_then(|uid| pods.get(uid)) {
        names.apply_pod(identity);
    }
}

/// An OOM kill waiting for the kernel's report line.
#[derive(Clone, Debug)]
pub struct OomArrival {
    pub record: OomKillRecord,
    /// The victim's memcg as known at arrival (from its id, or `/proc/PID/cgroup`).
    cgroup: Option<String>,
    memcg_limit_bytes: Option<u64>,
    memcg_usage_bytes: Option<u64>,
    pub arrived: Instant,
}

/// What a `stats` pass found: the memcgs of a walk of the hierarchy (when it walked), and the
/// memory of its containers and pods.
pub struct MemoryScan {
    found: Option<Vec<(u64, String)>>,
    samples: Vec<(String, Sample)>,
}

impl MemoryScan {
    fn new(
        hierarchy: &MemoryHierarchy,
        named: Option<&str>,
        gate: &mut CounterGate,
        full: bool,
    ) -> Self {
        let (full, found) = gate.begin(hierarchy, (Pass::Stats, full), |path| {
            is_sampled(path, named)
        });
        let mut samples = Vec::with_capacity(gate.followed().len());
        let mut gone = Vec::new();
        for (id, path) in gate.followed().to_vec() {
            let memory = match gate.decide(hierarchy, Pass::Stats, (id, &path), full) {
                Decision::Unchanged => gate.last_sample(&path).cloned(),
                Decision::Read => {
                    let memory = MemoryStats::read(hierarchy, &path);
                    if let Some(memory) = &memory {
                        gate.sampled(&path, memory);
                    }
                    memory
                }
            };
            let Some(memory) = memory else {
                gone.push(path);
                continue;
            };
            // The counters come from the counters passes (LiveContext::stats_events).
            let counters = CounterValues::default();
            samples.push((path, Sample { memory, counters }));
        }
        for path in gone {
            gate.gone(&path);
        }
        gate.end(Pass::Stats);
        Self { found, samples }
    }
}

/// Whether `stats` samples and `counters` follow a cgroup: a container's or a pod's (not
/// conmon's), or the one `--cgroup` names.
pub(super) fn is_sampled(path: &str, named: Option<&str>) -> bool {
    let identity = ContainerIdentity::from_cgroup_path(path);
    let active = matches!(identity.kind(), IdentityKind::Container | IdentityKind::Pod)
        && !identity.is_conmon();
    active || named == Some(path)
}

/// A memcg's files in an interval, by (device, inode).
type FileRows = HashMap<(u32, u64), (InodeId, CacheDelta)>;

/// Adds a file's counts to a memcg's rows, one row per file (device, inode), as trace files name
/// a file by (device, inode): the kernel counts per key, so one file can come twice (a tmpfs
/// file's adds seen on the LRU and its removal at deletion; an inode number reused within the
/// interval). The row is deleted when either was: a file deleted during the interval.
fn add_file_row(rows: &mut FileRows, id: InodeId, delta: CacheDelta) {
    let (row, sum) = rows
        .entry((id.dev, id.ino))
        .or_insert((id, CacheDelta::default()));
    row.flags |= id.flags;
    sum.added_pages += delta.added_pages;
    sum.removed_pages += delta.removed_pages;
    sum.refault_pages += delta.refault_pages;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::CgroupVersion;

    /// A context that knows memcg 7 as `/pod` (its hierarchy is an empty directory).
    fn context(root: &std::path::Path) -> LiveContext {
        let hierarchy = MemoryHierarchy {
            root: root.to_owned(),
            version: CgroupVersion::V1,
        };
        let mut context = LiveContext::new(
            MemcgResolver::new(hierarchy),
            PodDirectory::new(root.join("no-logs")),
            None,
            Filter::default(),
            4096,
            Vec::new(),
        );
        context.learn(vec![(7, "/pod".to_owned())], &[7]);
        context
    }

    #[test]
    fn a_memcg_s_file_rows_add_up_to_its_totals_refaults_included() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut context = context(root.path());
        let delta = |added_pages, removed_pages, refault_pages| CacheDelta {
            added_pages,
            removed_pages,
            refault_pages,
        };
        // Twelve files, two more than a memcg lists: the two with the least change, and the
        // pages counted without a file, are the "other files" row.
        let by_file: Vec<_> = (1..=12)
            .map(|ino| {
                let id = InodeId {
                    ino,
                    dev: 8 << 20,
                    flags: 0,
                };
                (7, Some(id), delta(10 * ino, 0, ino))
            })
            .collect();
        let files: u64 = (1..=12).sum();
        let drain = CacheDrain {
            by_memcg: HashMap::from([(7, delta(10 * files + 5, 0, files + 2))]),
            by_file,
            refaults: true,
            ..CacheDrain::default()
        };
        let mut events = Vec::new();
        context
            .cache_events(&drain, (1, 1_000_000_000), &mut |e: &Event| {
                events.push(e.clone());
                Ok(())
            })
            .expect("no output to fail");
        let [event] = events.as_slice() else {
            panic!("one cache event for the memcg: {events:?}")
        };
        assert_eq!(event.memcg.cgroup.as_deref(), Some("/pod"));
        let What::Cache(cache) = &event.what else {
            panic!("a cache event: {event:?}")
        };
        assert_eq!(
            cache.top_files.len(),
            TOP_FILES + 1,
            "ten files and the others"
        );
        let other = cache.top_files.last().expect("the others' row");
        assert_eq!(other.name.other_files, Some(2));
        // Files 1 and 2 (30 pages added, 3 refaulted) and the 5 and 2 pages without a file.
        assert_eq!(other.added_bytes, 35 * 4096);
        assert_eq!(other.refault_bytes, Some(5 * 4096));
        let sum = |f: fn(&FileCache) -> u64| cache.top_files.iter().map(f).sum::<u64>();
        assert_eq!(sum(|f| f.added_bytes), cache.added_bytes);
        assert_eq!(
            Some(sum(|f| f.refault_bytes.unwrap_or(0))),
            cache.refault_bytes
        );
    }

    #[test]
    fn an_interval_s_memcgs_go_out_by_path_unnamed_first_and_only_those_wanted() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut context = context(root.path());
        context.learn(
            vec![
                (1, "/b".to_owned()),
                (3, "/a/x".to_owned()),
                (5, "/a".to_owned()),
            ],
            &[1, 3, 5],
        );
        // Memcg 2 has no path (its hierarchy has no such cgroup).
        let order = |context: &mut LiveContext| -> Vec<u64> {
            let ids = [1, 2, 3, 5, 7].into_iter();
            context
                .wanted_in_order(ids)
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(order(&mut context), [2, 5, 3, 1, 7]);
        context.filter = Filter {
            cgroup: Some("/a".to_owned()),
            ..Filter::default()
        };
        assert_eq!(order(&mut context), [5, 3], "only /a and below");
    }

    #[test]
    fn a_file_counted_twice_in_an_interval_is_one_row_deleted_if_either_was() {
        let id = |flags| InodeId {
            ino: 7,
            dev: 254 << 20,
            flags,
        };
        let delta = |added_pages, removed_pages| CacheDelta {
            added_pages,
            removed_pages,
            refault_pages: 0,
        };
        let mut rows = FileRows::new();
        add_file_row(
            &mut rows,
            id(InodeId::UNLINKED | InodeId::PATH_SENT),
            delta(0, 1),
        );
        add_file_row(&mut rows, id(InodeId::PATH_SENT), delta(3, 3));
        let (row, sum) = rows[&(254 << 20, 7)];
        assert_eq!((sum.added_pages, sum.removed_pages), (3, 4));
        assert_eq!(
            row.flags,
            InodeId::UNLINKED | InodeId::PATH_SENT,
            "deleted during the interval"
        );
        add_file_row(&mut rows, id(InodeId::UNLINKED), delta(1, 0));
        assert_eq!(rows.len(), 1);
    }
}
