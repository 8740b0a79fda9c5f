//! The report as data: events go in one at a time ([`ReportBuilder::add`]), a [`Report`] comes
//! out. Pure (no I/O, no clock), so every section is unit-tested from hand-made events, and the
//! text, JSON and HTML renderers only lay it out.
//!
//! Memory held is bounded by what the report shows, not by the trace's length, except for the
//! `stats` timelines (one point per sampled cgroup and `--stats-interval`: 10 s samples of 100
//! containers for a day are under a million points).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{
    signals::{PodLimit, Signals, Throttling, ThrottlingAcc},
    summary::{self, Summary},
    verdict::{self, Evidence, RiskEvidence, Verdict},
};
use crate::{
    attribution::{ContainerIdentity, IdentityKind, MemcgCensus, MemoryStats},
    event::{
        CgroupAction, CgroupChange, ChargeFail, ChargeFailFromReclaim, Counter, CounterChanges,
        Event, FileName, HostClock, Memcg, MemorySource, OomConstraint, OomKill,
        PageCache as CacheInterval, Reclaim as ReclaimEpisode, Slab as SlabInterval, What,
        add_known,
    },
    units::{micros, seconds},
};

/// `memory_source` of an OOM whose memory the kernel printed at the kill.
const MEMORY_FROM_KERNEL_REPORT: &str = MemorySource::KernelOomReport.name();

/// Reclaims that freed nothing, listed one by one per container (the rest are counted).
pub const LISTED_FAILURES: usize = 20;
/// Files listed per container, largest net page-cache growth first.
pub const LISTED_FILES: usize = 10;
/// Slab caches listed per container, largest peak growth first.
pub const LISTED_CACHES: usize = 10;
/// Containers listed as top page-cache growers.
pub const LISTED_GROWERS: usize = 10;
/// Reclaim marks on a timeline are counted per this many ns, so a storm of reclaims (thousands
/// a second under pressure) is a few marks, not thousands.
pub const MARK_BUCKET_NS: u64 = 1_000_000_000;

/// What the trace file says about itself, handed in by whoever read it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TraceInfo {
    pub file: String,
    pub host: String,
    pub kernel_release: String,
    pub memtrace_version: String,
    pub probes: Vec<String>,
    /// From the end marker; `None` when the recording was cut short.
    pub recorded_events: Option<u64>,
    /// `None` also when this file did not count them (all but the last file of a rotated
    /// recording).
    pub lost_events: Option<u64>,
    /// Why the file ended early (the reader's message), if it did.
    pub cut_short: Option<String>,
    /// The recording host's memory cgroups at the start (from the header), if counted.
    pub memcgs_at_start: Option<MemcgCensus>,
    /// A flight recorder's file: the window around the OOM kill it keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flight: Option<super::FlightInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub trace: TraceInfo,
    /// The answer first: OOM kills with the limit that fired and the verdict, what grew most,
    /// dying memcgs. Made from every container, before `--top` leaves any out.
    pub summary: Summary,
    /// Events read.
    pub events: u64,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// Timelines count from here (`CLOCK_BOOTTIME` ns).
    pub first_timestamp_ns: Option<u64>,
    pub last_timestamp_ns: Option<u64>,
    /// Containers and pods before host and system cgroups; in each, those with OOM kills
    /// first, then by peak usage. `--top N` keeps the first N.
    pub containers: Vec<ContainerReport>,
    /// How many containers `--top` left out of `containers`.
    pub containers_left_out: usize,
    /// Containers whose page cache grew most at its peak, largest first.
    pub page_cache_growers: Vec<CacheGrower>,
    pub dying: DyingReport,
}

/// One container (or pod, or systemd unit; or a bare cgroup when the path names none).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerReport {
    /// The container's name for people, or its cgroup path.
    pub name: String,
    /// `container` or `pod` (a workload), `systemd_unit` or `unknown` (the host's own cgroups).
    pub kind: IdentityKind,
    pub container: Option<ContainerIdentity>,
    /// Every cgroup of this container that an event named.
    pub cgroups: Vec<String>,
    pub oom_kills: Vec<OomReport>,
    /// The cgroup whose samples make `memory` (the container's outermost).
    pub memory_cgroup: Option<String>,
    pub memory: Vec<MemoryPoint>,
    /// When `memory_cgroup` has no limit of its own: the nearest sampled ancestor's (e.g. the
    /// pod's), the limit its memory counts against.
    pub applied_limit: Option<AppliedLimit>,
    pub page_cache: PageCache,
    pub reclaim: Reclaim,
    pub charges: Charges,
    pub charge_failures: ChargeFailures,
    pub slab: Slab,
    /// The kernel's own counters that changed during the recording (`counters` events), in
    /// counter order.
    pub counters: Vec<CounterTotal>,
    /// Held at `memory.high` (v2): how often, how long, how much its tasks stalled.
    pub throttling: Option<Throttling>,
    /// Not OOM-killed but in trouble: throttled, thrashing, or at its limit with reclaim
    /// failing; with the evidence.
    pub at_risk: Option<Verdict>,
    /// Reclaims, charge failures and OOM kills, for the timeline.
    pub marks: Vec<Mark>,
}

/// How much one of the kernel's counters of a container moved during the recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterTotal {
    pub counter: Counter,
    /// The sum of its changes (a level such as `dirty_bytes` may end where it began).
    pub delta: i64,
    /// Its value at its last change.
    pub last: u64,
    /// `counters` events that changed it.
    pub changes: u64,
}

/// The limit of an ancestor cgroup that applies to a container without one of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedLimit {
    pub cgroup: String,
    /// Who the cgroup belongs to (`pod:<uid>`, …) or its path.
    pub owner: String,
    /// The ancestor's limit at its samples, oldest first.
    pub timeline: Vec<LimitPoint>,
}

impl AppliedLimit {
    /// The limit at the last sample.
    #[must_use]
    pub fn last_bytes(&self) -> Option<u64> {
        self.timeline.last().map(|p| p.bytes)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LimitPoint {
    pub timestamp_ns: u64,
    pub bytes: u64,
}

/// A `stats` sample, the parts the report uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryPoint {
    pub timestamp_ns: u64,
    pub time: String,
    pub usage: Option<u64>,
    pub limit: Option<u64>,
    pub working_set: Option<u64>,
    pub anon: Option<u64>,
    pub file: Option<u64>,
    pub kernel: Option<u64>,
    /// tmpfs/shmem (part of `file`), when the source said it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem: Option<u64>,
}

impl MemoryPoint {
    #[must_use]
    pub fn new(timestamp_ns: u64, time: String, m: &MemoryStats) -> Self {
        Self {
            timestamp_ns,
            time,
            usage: m.usage_bytes,
            limit: m.limit_bytes,
            working_set: m.working_set_bytes,
            anon: m.anon_bytes,
            file: m.file_bytes,
            kernel: m.kernel_bytes,
            shmem: m.shmem_bytes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomReport {
    pub time: String,
    pub timestamp_ns: u64,
    pub pid: u32,
    pub comm: Option<String>,
    /// The victim's cgroup.
    pub cgroup: Option<String>,
    /// The memcg whose limit fired (the victim's or an ancestor's); `None`: global or unknown.
    pub limit_cgroup: Option<String>,
    /// Who `limit_cgroup` belongs to (`pod:<uid>`, …), or its path.
    pub limit_owner: Option<String>,
    pub constraint: Option<String>,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// The limit memcg's memory at the kill.
    pub memory: Option<MemoryStats>,
    /// `kernel_oom_report`, `cgroupfs_after_kill`, or `sample_before_kill` (the last `stats`
    /// sample, when the kernel's report was not seen).
    pub memory_source: Option<String>,
    pub victim_anon_rss_bytes: Option<u64>,
    pub victim_file_rss_bytes: Option<u64>,
    /// A global OOM (`CONSTRAINT_NONE`): the containers' and pods' memory at the kill, largest
    /// first (`report/global.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_holders: Vec<super::Holder>,
    pub verdict: Verdict,
}

/// `memory_source` of an OOM whose memory is the last sample before the kill.
pub const MEMORY_FROM_SAMPLE: &str = MemorySource::SampleBeforeKill.name();

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PageCache {
    pub intervals: u64,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    /// Growth over the whole recording.
    pub net_bytes: i64,
    /// The most it had grown at any point of the recording: cache that grew to the limit and
    /// was then reclaimed or dropped with its cgroup still counts as the growth it was.
    pub peak_net_bytes: i64,
    /// Of `added_bytes`, pages read again soon after reclaim evicted them, as memtrace counted
    /// them in the kernel (`null` when the strategy that attached could not count them).
    pub refault_bytes: Option<u64>,
    /// Largest peak growth first.
    pub top_files: Vec<FileGrowth>,
}

/// The "other files" row of a report: each interval's files beyond its top ones, and the
/// files a report does not list.
fn other_files() -> FileName {
    FileName {
        note: Some("files not listed on their own".into()),
        ..FileName::other(0)
    }
}

/// The files a container's section lists, largest peak first, at most [`LISTED_FILES`] with
/// the rest summed into the "other files" row (last): the rows still add up to the totals.
fn listed_files(mut files: Vec<FileGrowth>) -> Vec<FileGrowth> {
    let (mut other, mut files): (Vec<FileGrowth>, Vec<FileGrowth>) =
        files.drain(..).partition(|f| f.file.is_other());
    files.sort_by(|a, b| {
        b.peak_net_bytes
            .cmp(&a.peak_net_bytes)
            .then_with(|| b.added_bytes.cmp(&a.added_bytes))
            .then_with(|| (&a.device, a.inode).cmp(&(&b.device, b.inode)))
    });
    let keep = if files.len() + other.len() > LISTED_FILES {
        LISTED_FILES - 1
    } else {
        files.len()
    };
    let cut = files.split_off(keep.min(files.len()));
    if !cut.is_empty() && other.is_empty() {
        other.push(FileGrowth {
            name: String::new(),
            file: other_files(),
            device: crate::event::Device::default().to_string(),
            inode: 0,
            added_bytes: 0,
            removed_bytes: 0,
            net_bytes: 0,
            peak_net_bytes: 0,
            refault_bytes: None,
        });
    }
    if let Some(rest) = other.first_mut() {
        for f in cut {
            rest.refault_bytes = add_known(rest.refault_bytes, f.refault_bytes);
            rest.added_bytes = rest.added_bytes.saturating_add(f.added_bytes);
            rest.removed_bytes = rest.removed_bytes.saturating_add(f.removed_bytes);
            rest.net_bytes = rest.net_bytes.saturating_add(f.net_bytes);
        }
        // A lower bound: the files cut peaked at times of their own.
        rest.peak_net_bytes = rest.peak_net_bytes.max(rest.net_bytes);
    }
    files.extend(other);
    name_files(&mut files);
    files
}

/// Sets each row's name from its parts (`FileName::display`).
fn name_files(files: &mut [FileGrowth]) {
    for f in files {
        let device = f.device.parse().unwrap_or_default();
        f.name = f.file.display(device, f.inode).to_string();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileGrowth {
    /// What every output shows for the file (`FileCache::name`): its path, marked shmem or
    /// deleted, or "other files" for the row that sums the files not listed.
    pub name: String,
    /// The same, in parts: the file's state at its last interval.
    pub file: FileName,
    /// `major:minor`.
    pub device: String,
    pub inode: u64,
    /// Summed over the recording: the intervals where a file was not among its memcg's top
    /// files count in "other files", so the rows add up to the container's totals.
    pub added_bytes: u64,
    pub removed_bytes: u64,
    pub net_bytes: i64,
    pub peak_net_bytes: i64,
    /// Of `added_bytes`, what was read again soon after reclaim evicted it, as memtrace
    /// counted it in the kernel (`null` when the strategy could not count refaults).
    pub refault_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheGrower {
    pub name: String,
    pub peak_net_bytes: i64,
    pub net_bytes: i64,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    /// Of `added_bytes`, the refaults memtrace counted (`PageCache::refault_bytes`).
    pub refault_bytes: Option<u64>,
    pub top_files: Vec<FileGrowth>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reclaim {
    pub episodes: u64,
    /// Reclaims that freed nothing.
    pub failures: u64,
    pub reclaimed_bytes: u64,
    pub total_duration_us: f64,
    pub max_duration_us: f64,
    /// The first [`LISTED_FAILURES`] failures.
    pub listed_failures: Vec<ReclaimFailure>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReclaimFailure {
    pub time: String,
    pub timestamp_ns: u64,
    pub cgroup: Option<String>,
    pub pid: u32,
    pub duration_us: f64,
    pub order: u32,
    pub gfp_flags: String,
}

/// Kernel memory (slab and other kernel allocations charged to the memcg), from the `stats`
/// samples' `kernel`, and memcg-accounted slab per cache from `slab` events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Slab {
    pub first_kernel_bytes: Option<u64>,
    pub last_kernel_bytes: Option<u64>,
    pub peak_kernel_bytes: Option<u64>,
    /// Last minus first sample.
    pub growth_bytes: Option<i64>,
    /// `slab` intervals seen (0: the slab probe was not attached, or nothing was allocated).
    pub intervals: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub net_bytes: i64,
    /// The most accounted slab had grown at any point of the recording.
    pub peak_net_bytes: i64,
    /// Largest peak growth first, at most [`LISTED_CACHES`].
    pub caches: Vec<SlabCacheGrowth>,
}

/// One slab cache's memcg-accounted allocations in a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlabCacheGrowth {
    /// `dentry`, `kmalloc-cg-512`, …
    pub cache: String,
    /// Summed over the intervals where the cache was among those reported.
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub net_bytes: i64,
    pub peak_net_bytes: i64,
}

/// Pages charged to the container, from `charge` events.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Charges {
    pub intervals: u64,
    pub charged_bytes: u64,
    /// The interval that charged most, and when it ended.
    pub busiest_interval_bytes: u64,
    pub busiest_interval: Option<String>,
    pub busiest_interval_seconds: f64,
}

/// Charges the container's memcg could not take, from `charge_fail` events.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChargeFailures {
    pub count: u64,
    /// Of `count`, derived from limit reclaim (kernels without fexit or kprobes).
    pub derived: u64,
    /// The first [`LISTED_FAILURES`].
    pub listed: Vec<ChargeFailure>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChargeFailure {
    pub time: String,
    pub timestamp_ns: u64,
    pub cgroup: Option<String>,
    pub pid: u32,
    pub comm: Option<String>,
    pub nr_pages: Option<u32>,
    pub gfp_flags: String,
    pub outcome: String,
    pub source: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    Reclaim,
    /// A reclaim that freed nothing.
    ReclaimFailed,
    /// A charge the memcg could not take.
    ChargeFail,
    OomKill,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// Exact for OOM kills; for reclaims, the first of its [`MARK_BUCKET_NS`] bucket.
    pub timestamp_ns: u64,
    pub kind: MarkKind,
    pub count: u32,
}

/// Memcgs that were removed while still charged (dying) during the recording. Those already
/// dying when it started are not in the trace; `memtrace run` counts them at start-up.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DyingReport {
    /// Dying memcgs seen, after each change.
    pub timeline: Vec<DyingPoint>,
    pub removed_while_charged: u64,
    pub freed_after_dying: u64,
    pub longest_dying_seconds: Option<f64>,
    /// Still dying when the recording ended, oldest first.
    pub still_dying: Vec<DyingCgroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DyingPoint {
    pub timestamp_ns: u64,
    pub time: String,
    pub dying: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DyingCgroup {
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<String>,
    pub removed: String,
    pub removed_ns: u64,
    pub charged_bytes: Option<u64>,
}

/// Folds events into a [`Report`].
pub struct ReportBuilder {
    /// The recording host's clock, for wall times.
    clock: HostClock,
    events: u64,
    first: Option<(u64, String)>,
    last: Option<(u64, String)>,
    containers: BTreeMap<Owner, ContainerAcc>,
    /// Samples per cgroup (not per container): an OOM's history is its limit memcg's.
    samples: HashMap<String, Vec<MemoryPoint>>,
    dying: DyingAcc,
    /// What `lost` events counted: the loss when the file has no end marker to say it (a
    /// recorder killed before its end).
    lost_in_stream: u64,
}

#[derive(Default)]
struct ContainerAcc {
    container: Option<ContainerIdentity>,
    cgroups: BTreeSet<String>,
    ooms: Vec<PendingOom>,
    cache: PageCache,
    files: HashMap<(String, u64), FileGrowth>,
    reclaim: Reclaim,
    charges: Charges,
    charge_failures: ChargeFailures,
    slab: Slab,
    slab_caches: HashMap<String, SlabCacheGrowth>,
    counters: Vec<CounterTotal>,
    throttling: ThrottlingAcc,
    /// Per bucket and kind: the first timestamp in the bucket and how many.
    marks: BTreeMap<(u64, MarkKind), (u64, u32)>,
}

impl ContainerAcc {
    /// Counts a mark; reclaims of a kind in the same [`MARK_BUCKET_NS`] (aligned on the clock)
    /// are one mark, drawn at the first of them.
    fn mark(&mut self, timestamp_ns: u64, kind: MarkKind) {
        let bucket = match kind {
            MarkKind::OomKill => timestamp_ns,
            MarkKind::Reclaim | MarkKind::ReclaimFailed | MarkKind::ChargeFail => {
                timestamp_ns - timestamp_ns % MARK_BUCKET_NS
            }
        };
        let (first, count) = self
            .marks
            .entry((bucket, kind))
            .or_insert((timestamp_ns, 0));
        *first = (*first).min(timestamp_ns);
        *count += 1;
    }
}

struct PendingOom {
    timestamp_ns: u64,
    cgroup: Option<String>,
    event: OomKill,
    reclaims: u64,
    failures: u64,
    /// The accounted slab cache that had grown most before the kill.
    top_slab_cache: Option<(String, i64)>,
}

#[derive(Default)]
struct DyingAcc {
    report: DyingReport,
    current: BTreeMap<u64, DyingCgroup>,
}

/// Who owns a cgroup in the report (and a track in the Perfetto export): its container, pod or
/// unit, else the cgroup itself. Two owners are the same when their keys are: a container's
/// name may be learned after its first events.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Unique: the full container id, the pod UID, the unit, or the cgroup path. Two containers
    /// whose names read the same (a restarted pod's container) stay apart.
    pub key: String,
    /// For people: `namespace/pod/container`, `runtime:shortid`, … or the cgroup path.
    pub name: String,
}

impl PartialEq for Owner {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Owner {}

impl PartialOrd for Owner {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Owner {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl std::hash::Hash for Owner {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl Owner {
    #[must_use]
    pub fn of(cgroup: Option<&str>, container: Option<&ContainerIdentity>) -> Self {
        let path = || cgroup.unwrap_or("(unknown cgroup)").to_owned();
        let Some(c) = container.filter(|c| c.kind() != IdentityKind::Unknown) else {
            return Self {
                key: format!("cgroup {}", path()),
                name: path(),
            };
        };
        let key = match (c.kind(), &c.container_id, &c.pod_uid, &c.systemd_unit) {
            // A conmon scope carries the id of the container it watches: not the same owner.
            (IdentityKind::Container, Some(id), _, _) if c.is_conmon() => format!("conmon {id}"),
            (IdentityKind::Container, Some(id), _, _) => format!("container {id}"),
            (IdentityKind::Pod, _, Some(uid), _) => format!("pod {uid}"),
            (IdentityKind::SystemdUnit, _, _, Some(unit)) => format!("unit {unit}"),
            _ => format!("cgroup {}", path()),
        };
        Self {
            key,
            name: c.display_name(),
        }
    }
}

impl ReportBuilder {
    /// `clock`: the recording host's, from the trace header.
    #[must_use]
    pub fn new(clock: HostClock) -> Self {
        Self {
            clock,
            events: 0,
            first: None,
            last: None,
            containers: BTreeMap::new(),
            samples: HashMap::new(),
            dying: DyingAcc::default(),
            lost_in_stream: 0,
        }
    }

    /// Folds one event in. Events come in file order, which is time order per kind.
    pub fn add(&mut self, event: &Event) {
        self.events += 1;
        let at = event.timestamp_ns;
        let m = &event.memcg;
        // Every event kind is handled here, by name: a new kind is a compile error until it is
        // given its place in the report.
        match &event.what {
            What::OomKill(e) => self.oom_kill(at, m, e),
            What::Cgroup(e) => self.cgroup(at, m, e),
            What::Stats(e) => self.stats(at, m, e),
            What::Cache(e) => self.cache(m, e),
            What::Reclaim(e) => self.reclaim(at, m, e),
            What::Charge(e) => self.charge(at, m, e.charged_bytes, e.interval_ns),
            What::ChargeFromPageCache(e) => self.charge(at, m, e.charged_bytes, e.interval_ns),
            What::ChargeFail(e) => self.charge_fail(at, m, Failure::Kernel(e)),
            What::ChargeFailFromReclaim(e) => self.charge_fail(at, m, Failure::Derived(e)),
            What::Slab(e) => self.slab(m, e),
            What::Counters(e) => self.counters(at, m, e),
            What::Lost(e) => self.lost_in_stream += e.count,
        }
        if self.first.as_ref().is_none_or(|(t, _)| at < *t) {
            self.first = Some((at, self.clock.wall(at)));
        }
        if self.last.as_ref().is_none_or(|(t, _)| at > *t) {
            self.last = Some((at, self.clock.wall(at)));
        }
    }

    fn container(
        &mut self,
        cgroup: Option<&str>,
        container: Option<&ContainerIdentity>,
    ) -> &mut ContainerAcc {
        let owner = Owner::of(cgroup, container);
        let container = container.filter(|c| c.kind() != IdentityKind::Unknown);
        // The runtime's names (container name, image, pod) may come after a container's first
        // events: an identity that knows more replaces one that knows less, under the same key.
        let known = |c: Option<&ContainerIdentity>| c.map_or(0, ContainerIdentity::known_names);
        let renamed = self
            .containers
            .get(&owner)
            .is_some_and(|acc| known(container) > known(acc.container.as_ref()));
        if renamed && let Some(acc) = self.containers.remove(&owner) {
            self.containers.insert(owner.clone(), acc);
        }
        let acc = self.containers.entry(owner).or_default();
        if acc.container.is_none() || renamed {
            acc.container = container.cloned();
        }
        if let Some(cgroup) = cgroup
            && !acc.cgroups.contains(cgroup)
        {
            acc.cgroups.insert(cgroup.to_owned());
        }
        acc
    }

    fn oom_kill(&mut self, at: u64, m: &Memcg, e: &OomKill) {
        let acc = self.container(m.cgroup.as_deref(), m.container.as_ref());
        acc.mark(at, MarkKind::OomKill);
        let top_slab_cache = acc
            .slab_caches
            .values()
            .filter(|c| c.net_bytes > 0)
            .max_by_key(|c| c.net_bytes)
            .map(|c| (c.cache.clone(), c.net_bytes));
        let pending = PendingOom {
            timestamp_ns: at,
            cgroup: m.cgroup.clone(),
            event: e.clone(),
            reclaims: acc.reclaim.episodes,
            failures: acc.reclaim.failures,
            top_slab_cache,
        };
        acc.ooms.push(pending);
    }

    fn stats(&mut self, at: u64, m: &Memcg, memory: &MemoryStats) {
        let Some(cgroup) = &m.cgroup else { return };
        self.container(Some(cgroup), m.container.as_ref());
        let time = self.clock.wall(at);
        self.samples
            .entry(cgroup.clone())
            .or_default()
            .push(MemoryPoint::new(at, time, memory));
    }

    fn cache(&mut self, m: &Memcg, e: &CacheInterval) {
        let acc = self.container(m.cgroup.as_deref(), m.container.as_ref());
        acc.cache.intervals += 1;
        acc.cache.added_bytes = acc.cache.added_bytes.saturating_add(e.added_bytes);
        acc.cache.removed_bytes = acc.cache.removed_bytes.saturating_add(e.removed_bytes);
        acc.cache.net_bytes = acc.cache.net_bytes.saturating_add(e.net_bytes);
        acc.cache.peak_net_bytes = acc.cache.peak_net_bytes.max(acc.cache.net_bytes);
        acc.cache.refault_bytes = add_known(acc.cache.refault_bytes, e.refault_bytes);
        for f in &e.top_files {
            let file = acc
                .files
                .entry((f.device.to_string(), f.inode))
                .or_insert_with(|| FileGrowth {
                    name: String::new(),
                    file: FileName::default(),
                    device: f.device.to_string(),
                    inode: f.inode,
                    added_bytes: 0,
                    removed_bytes: 0,
                    net_bytes: 0,
                    peak_net_bytes: 0,
                    refault_bytes: None,
                });
            file.refault_bytes = add_known(file.refault_bytes, f.refault_bytes);
            file.added_bytes = file.added_bytes.saturating_add(f.added_bytes);
            file.removed_bytes = file.removed_bytes.saturating_add(f.removed_bytes);
            file.net_bytes = file.net_bytes.saturating_add(f.net_bytes);
            file.peak_net_bytes = file.peak_net_bytes.max(file.net_bytes);
            // Its newest state (deleted since), or, over intervals, every "other files" row.
            file.file = if f.name.is_other() {
                other_files()
            } else {
                f.name.clone()
            };
        }
    }

    fn reclaim(&mut self, at: u64, m: &Memcg, e: &ReclaimEpisode) {
        let time = self.clock.wall(at);
        let acc = self.container(m.cgroup.as_deref(), m.container.as_ref());
        let r = &mut acc.reclaim;
        let duration_us = micros(e.duration_ns);
        r.episodes += 1;
        r.reclaimed_bytes = r.reclaimed_bytes.saturating_add(e.reclaimed_bytes);
        r.total_duration_us += duration_us;
        r.max_duration_us = r.max_duration_us.max(duration_us);
        let kind = if e.ineffective {
            r.failures += 1;
            if r.listed_failures.len() < LISTED_FAILURES {
                r.listed_failures.push(ReclaimFailure {
                    time,
                    timestamp_ns: at,
                    cgroup: m.cgroup.clone(),
                    pid: e.pid,
                    duration_us,
                    order: e.order,
                    gfp_flags: format!("{:#x}", e.gfp_flags),
                });
            }
            MarkKind::ReclaimFailed
        } else {
            MarkKind::Reclaim
        };
        acc.mark(at, kind);
    }

    fn charge(&mut self, at: u64, m: &Memcg, charged_bytes: u64, interval_ns: u64) {
        let time = self.clock.wall(at);
        let c = &mut self
            .container(m.cgroup.as_deref(), m.container.as_ref())
            .charges;
        c.intervals += 1;
        c.charged_bytes = c.charged_bytes.saturating_add(charged_bytes);
        if charged_bytes > c.busiest_interval_bytes {
            c.busiest_interval_bytes = charged_bytes;
            c.busiest_interval = Some(time);
            c.busiest_interval_seconds = seconds(interval_ns);
        }
    }

    fn charge_fail(&mut self, at: u64, m: &Memcg, failure: Failure<'_>) {
        let time = self.clock.wall(at);
        let acc = self.container(m.cgroup.as_deref(), m.container.as_ref());
        acc.mark(at, MarkKind::ChargeFail);
        let f = &mut acc.charge_failures;
        f.count += 1;
        f.derived += u64::from(matches!(failure, Failure::Derived(_)));
        if f.listed.len() < LISTED_FAILURES {
            let (pid, comm, nr_pages, gfp_flags, outcome, source) = match failure {
                Failure::Kernel(e) => (
                    e.pid,
                    Some(e.comm.clone()),
                    Some(e.nr_pages),
                    e.gfp_flags,
                    e.error(),
                    e.probe.name().to_owned(),
                ),
                Failure::Derived(e) => (
                    e.pid,
                    None,
                    None,
                    e.gfp_flags,
                    if e.reclaimed_bytes == 0 {
                        "limit_reclaim_freed_nothing".to_owned()
                    } else {
                        "limit_reclaim".to_owned()
                    },
                    "reclaim".to_owned(),
                ),
            };
            f.listed.push(ChargeFailure {
                time,
                timestamp_ns: at,
                cgroup: m.cgroup.clone(),
                pid,
                comm,
                nr_pages,
                gfp_flags: format!("{gfp_flags:#x}"),
                outcome,
                source,
            });
        }
    }

    fn counters(&mut self, at_ns: u64, m: &Memcg, e: &CounterChanges) {
        let acc = self.container(m.cgroup.as_deref(), m.container.as_ref());
        for &(counter, change) in &e.changed {
            if counter == Counter::High {
                acc.throttling.high(at_ns, e.interval_ns, change.delta);
            }
            let at = acc
                .counters
                .partition_point(|t| (t.counter as usize) < counter as usize);
            if acc.counters.get(at).is_none_or(|t| t.counter != counter) {
                acc.counters.insert(
                    at,
                    CounterTotal {
                        counter,
                        delta: 0,
                        last: 0,
                        changes: 0,
                    },
                );
            }
            let total = &mut acc.counters[at];
            total.delta = total.delta.saturating_add(change.delta);
            total.last = change.value;
            total.changes += 1;
        }
    }

    fn slab(&mut self, m: &Memcg, e: &SlabInterval) {
        let acc = self.container(m.cgroup.as_deref(), m.container.as_ref());
        let s = &mut acc.slab;
        s.intervals += 1;
        s.allocated_bytes = s.allocated_bytes.saturating_add(e.allocated_bytes);
        s.freed_bytes = s.freed_bytes.saturating_add(e.freed_bytes);
        s.net_bytes = s.net_bytes.saturating_add(e.net_bytes);
        s.peak_net_bytes = s.peak_net_bytes.max(s.net_bytes);
        for c in &e.caches {
            let cache = acc
                .slab_caches
                .entry(c.cache.clone())
                .or_insert_with(|| SlabCacheGrowth {
                    cache: c.cache.clone(),
                    allocated_bytes: 0,
                    freed_bytes: 0,
                    net_bytes: 0,
                    peak_net_bytes: 0,
                });
            cache.allocated_bytes = cache.allocated_bytes.saturating_add(c.allocated_bytes);
            cache.freed_bytes = cache.freed_bytes.saturating_add(c.freed_bytes);
            cache.net_bytes = cache.net_bytes.saturating_add(c.net_bytes);
            cache.peak_net_bytes = cache.peak_net_bytes.max(cache.net_bytes);
        }
    }

    fn cgroup(&mut self, at: u64, m: &Memcg, e: &CgroupChange) {
        let time = self.clock.wall(at);
        let memcg_id = m.id.unwrap_or_default();
        let d = &mut self.dying;
        let changed = match e.action {
            CgroupAction::Removed if e.dying => {
                d.report.removed_while_charged += 1;
                d.current.insert(
                    memcg_id,
                    DyingCgroup {
                        memcg_id,
                        cgroup: m.cgroup.clone(),
                        container: m.container.as_ref().map(ContainerIdentity::display_name),
                        removed: time.clone(),
                        removed_ns: at,
                        charged_bytes: e.charged_bytes,
                    },
                );
                true
            }
            CgroupAction::Freed if d.current.remove(&memcg_id).is_some() => {
                d.report.freed_after_dying += 1;
                if let Some(s) = e.dying_ns.map(seconds) {
                    d.report.longest_dying_seconds =
                        Some(d.report.longest_dying_seconds.map_or(s, |l| l.max(s)));
                }
                true
            }
            _ => false,
        };
        if changed {
            d.report.timeline.push(DyingPoint {
                timestamp_ns: at,
                time,
                dying: d.current.len() as u64,
            });
        }
    }

    /// The report of everything added.
    #[must_use]
    pub fn finish(self, mut trace: TraceInfo) -> Report {
        let Self {
            clock,
            events,
            first,
            last,
            containers,
            samples,
            dying,
            lost_in_stream,
        } = self;
        if trace.lost_events.is_none() && lost_in_stream > 0 {
            trace.lost_events = Some(lost_in_stream);
        }
        let owners: HashMap<String, String> = containers
            .iter()
            .flat_map(|(owner, acc)| acc.cgroups.iter().map(|c| (c.clone(), owner.name.clone())))
            .collect();
        let pod_limits = pod_limits(&samples, &owners);
        let mut containers: Vec<ContainerReport> = containers
            .into_iter()
            .map(|(owner, acc)| acc.finish(owner.name, &samples, &owners, &pod_limits, clock))
            .collect();
        let peak = |c: &ContainerReport| c.memory.iter().filter_map(|m| m.usage).max();
        containers.sort_by(|a, b| {
            is_host(a.kind)
                .cmp(&is_host(b.kind))
                .then_with(|| b.oom_kills.len().cmp(&a.oom_kills.len()))
                .then_with(|| peak(b).cmp(&peak(a)))
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut page_cache_growers: Vec<CacheGrower> = containers
            .iter()
            .filter(|c| c.page_cache.peak_net_bytes > 0)
            .map(|c| CacheGrower {
                name: c.name.clone(),
                peak_net_bytes: c.page_cache.peak_net_bytes,
                net_bytes: c.page_cache.net_bytes,
                added_bytes: c.page_cache.added_bytes,
                removed_bytes: c.page_cache.removed_bytes,
                refault_bytes: c.page_cache.refault_bytes,
                top_files: c.page_cache.top_files.iter().take(5).cloned().collect(),
            })
            .collect();
        page_cache_growers.sort_by_key(|g| std::cmp::Reverse(g.peak_net_bytes));
        page_cache_growers.truncate(LISTED_GROWERS);
        let DyingAcc {
            mut report,
            current,
        } = dying;
        report.still_dying = current.into_values().collect();
        report.still_dying.sort_by_key(|d| d.removed_ns);
        Report {
            summary: summary::summarize(&containers, &report, trace.memcgs_at_start),
            containers_left_out: 0,
            trace,
            events,
            first_timestamp_ns: first.as_ref().map(|(t, _)| *t),
            last_timestamp_ns: last.as_ref().map(|(t, _)| *t),
            first_event: first.map(|(_, s)| s),
            last_event: last.map(|(_, s)| s),
            containers,
            page_cache_growers,
            dying: report,
        }
    }
}

/// Whether a cgroup of this kind is the host's own (a systemd unit, the root, a path in no
/// shape memtrace knows) rather than a container or pod.
#[must_use]
pub const fn is_host(kind: IdentityKind) -> bool {
    !matches!(kind, IdentityKind::Container | IdentityKind::Pod)
}

impl Report {
    /// Keeps the first `n` container sections (the summary keeps speaking of all of them) and
    /// says how many were left out.
    pub fn keep_top(&mut self, n: usize) {
        if self.containers.len() > n {
            self.containers_left_out += self.containers.len() - n;
            self.containers.truncate(n);
        }
    }
}

/// Pods whose own limit (at their last sample) is below the sum of their containers' own
/// limits (the cgroups right below them, at their last samples), by the pod's cgroup.
fn pod_limits(
    samples: &HashMap<String, Vec<MemoryPoint>>,
    owners: &HashMap<String, String>,
) -> HashMap<String, PodLimit> {
    let last_limit = |c: &str| samples.get(c)?.iter().rev().find_map(|m| m.limit);
    let mut children: HashMap<&str, (u64, u64)> = HashMap::new();
    for cgroup in samples.keys() {
        if let Some((parent, _)) = cgroup.rsplit_once('/')
            && !parent.is_empty()
            && let Some(limit) = last_limit(cgroup)
        {
            let sum = children.entry(parent).or_default();
            sum.0 = sum.0.saturating_add(limit);
            sum.1 += 1;
        }
    }
    children
        .into_iter()
        .filter(|(pod, _)| ContainerIdentity::from_cgroup_path(pod).kind() == IdentityKind::Pod)
        .filter_map(|(pod, (sum, n))| {
            let limit = last_limit(pod)?;
            (sum > limit).then(|| {
                (
                    pod.to_owned(),
                    PodLimit {
                        cgroup: pod.to_owned(),
                        owner: owner_name(pod, None, owners),
                        limit_bytes: limit,
                        children_limit_bytes: sum,
                        children: n,
                    },
                )
            })
        })
        .collect()
}

/// The nearest ancestor of `cgroup` with a sampled limit, for a cgroup without its own.
fn applied_limit(
    cgroup: &str,
    samples: &HashMap<String, Vec<MemoryPoint>>,
    owners: &HashMap<String, String>,
) -> Option<AppliedLimit> {
    let mut ancestor = cgroup;
    while let Some(cut) = ancestor.rfind('/') {
        ancestor = &ancestor[..cut];
        let key = if ancestor.is_empty() { "/" } else { ancestor };
        let timeline: Vec<LimitPoint> = samples
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some(LimitPoint {
                    timestamp_ns: m.timestamp_ns,
                    bytes: m.limit?,
                })
            })
            .collect();
        if !timeline.is_empty() {
            return Some(AppliedLimit {
                cgroup: key.to_owned(),
                owner: owner_name(key, None, owners),
                timeline,
            });
        }
    }
    None
}

/// Who a cgroup belongs to, for people: the report's own name for it when events named it,
/// else its identity as the event gave it or as its path says, else the path.
fn owner_name(
    cgroup: &str,
    identity: Option<&ContainerIdentity>,
    owners: &HashMap<String, String>,
) -> String {
    if let Some(name) = owners.get(cgroup) {
        return name.clone();
    }
    let identity = identity
        .cloned()
        .unwrap_or_else(|| ContainerIdentity::from_cgroup_path(cgroup));
    Owner::of(Some(cgroup), Some(&identity)).name
}

impl ContainerAcc {
    fn finish(
        self,
        name: String,
        samples: &HashMap<String, Vec<MemoryPoint>>,
        owners: &HashMap<String, String>,
        pod_limits: &HashMap<String, PodLimit>,
        clock: HostClock,
    ) -> ContainerReport {
        let mut files: Vec<FileGrowth> = self.files.into_values().collect();
        name_files(&mut files);
        let mut signals = Signals::gather(
            &files,
            (self.cache.added_bytes, self.cache.refault_bytes),
            &self.counters,
            clock.page_size,
        );
        let files = listed_files(files);
        let throttling = self
            .throttling
            .finish(&self.counters, self.reclaim.episodes);
        signals.throttling.clone_from(&throttling);
        // The outermost sampled cgroup: on v1 its numbers are hierarchical totals, so it holds
        // the sub-cgroups a runtime may create inside the container.
        let memory_cgroup = self
            .cgroups
            .iter()
            .filter(|c| samples.contains_key(*c))
            .min_by_key(|c| (c.len(), (*c).clone()))
            .cloned();
        let mut memory = memory_cgroup
            .as_ref()
            .and_then(|c| samples.get(c))
            .cloned()
            .unwrap_or_default();
        let oom_kills: Vec<OomReport> = self
            .ooms
            .iter()
            .map(|p| {
                let limit_memcg = p.event.limit_cgroup.as_ref().or(p.cgroup.as_ref());
                let signals = Signals {
                    pod_limit: limit_memcg.and_then(|c| pod_limits.get(c)).cloned(),
                    ..signals.clone()
                };
                oom_report(p, samples, owners, clock, signals)
            })
            .collect();
        let applied_limit = memory_cgroup
            .as_deref()
            .filter(|_| memory.iter().all(|m| m.limit.is_none()))
            .and_then(|c| applied_limit(c, samples, owners));
        // The kernel's report is a sample too, at the moment that matters most: a workload
        // that allocates to its limit between two samples would otherwise never reach it on
        // the chart.
        for kill in &oom_kills {
            let limit_memcg = kill.limit_cgroup.as_ref().or(kill.cgroup.as_ref());
            if limit_memcg == memory_cgroup.as_ref()
                && kill.memory_source.as_deref() == Some(MEMORY_FROM_KERNEL_REPORT)
                && let Some(m) = &kill.memory
            {
                let at = memory.partition_point(|p| p.timestamp_ns <= kill.timestamp_ns);
                memory.insert(
                    at,
                    MemoryPoint::new(kill.timestamp_ns, kill.time.clone(), m),
                );
            }
        }
        let slab = slab_section(&self.slab, self.slab_caches, &memory);
        let at_risk = oom_kills.is_empty().then(|| {
            let acc = (&self.reclaim, &self.charge_failures);
            judge_risk(
                &memory,
                memory_cgroup.as_deref(),
                applied_limit.as_ref(),
                acc,
                pod_limits,
                signals,
            )
        });
        let at_risk = at_risk.flatten();
        ContainerReport {
            name,
            kind: self
                .container
                .as_ref()
                .map_or(IdentityKind::Unknown, ContainerIdentity::kind),
            container: self.container,
            cgroups: self.cgroups.into_iter().collect(),
            oom_kills,
            memory_cgroup,
            memory,
            applied_limit,
            page_cache: PageCache {
                top_files: files,
                ..self.cache
            },
            reclaim: self.reclaim,
            charges: self.charges,
            charge_failures: self.charge_failures,
            slab,
            counters: self.counters,
            throttling,
            at_risk,
            marks: self
                .marks
                .into_iter()
                .map(|((_, kind), (timestamp_ns, count))| Mark {
                    timestamp_ns,
                    kind,
                    count,
                })
                .collect(),
        }
    }
}

/// The slab section: kernel memory from the samples, the caches that grew most.
fn slab_section(
    slab: &Slab,
    caches_acc: HashMap<String, SlabCacheGrowth>,
    memory: &[MemoryPoint],
) -> Slab {
    let kernel: Vec<u64> = memory.iter().filter_map(|m| m.kernel).collect();
    let mut caches: Vec<SlabCacheGrowth> = caches_acc.into_values().collect();
    caches.sort_by(|a, b| {
        b.peak_net_bytes
            .cmp(&a.peak_net_bytes)
            .then_with(|| b.allocated_bytes.cmp(&a.allocated_bytes))
            .then_with(|| a.cache.cmp(&b.cache))
    });
    caches.truncate(LISTED_CACHES);
    Slab {
        first_kernel_bytes: kernel.first().copied(),
        last_kernel_bytes: kernel.last().copied(),
        peak_kernel_bytes: kernel.iter().copied().max(),
        growth_bytes: kernel.first().zip(kernel.last()).map(|(&a, &b)| {
            i64::try_from(b).unwrap_or(i64::MAX) - i64::try_from(a).unwrap_or(i64::MAX)
        }),
        caches,
        ..*slab
    }
}

/// The at-risk verdict of a container that was not OOM-killed, from its samples (of
/// `memory_cgroup`), the limit that applies, its reclaims and charge failures and its signals.
fn judge_risk(
    memory: &[MemoryPoint],
    memory_cgroup: Option<&str>,
    applied_limit: Option<&AppliedLimit>,
    (reclaim, charge_failures): (&Reclaim, &ChargeFailures),
    pod_limits: &HashMap<String, PodLimit>,
    mut signals: Signals,
) -> Option<Verdict> {
    // Its own pod's, or its parent pod's when it is a container in one.
    signals.pod_limit = memory_cgroup
        .and_then(|c| {
            pod_limits.get(c).or_else(|| {
                c.rsplit_once('/')
                    .and_then(|(parent, _)| pod_limits.get(parent))
            })
        })
        .cloned();
    verdict::judge_risk(&RiskEvidence {
        peak_working_set: memory.iter().filter_map(|m| m.working_set).max(),
        peak_usage: memory.iter().filter_map(|m| m.usage).max(),
        limit: memory
            .iter()
            .rev()
            .find_map(|m| m.limit)
            .or_else(|| applied_limit.and_then(AppliedLimit::last_bytes)),
        limit_owner: applied_limit.map(|a| a.owner.clone()),
        reclaims: reclaim.episodes,
        ineffective_reclaims: reclaim.failures,
        charge_failures: charge_failures.count,
        signals,
    })
}

/// A charge failure the kernel saw, or one derived from a limit reclaim.
#[derive(Clone, Copy)]
enum Failure<'a> {
    Kernel(&'a ChargeFail),
    Derived(&'a ChargeFailFromReclaim),
}

/// An OOM kill with the memory at the kill and the verdict.
fn oom_report(
    p: &PendingOom,
    samples: &HashMap<String, Vec<MemoryPoint>>,
    owners: &HashMap<String, String>,
    clock: HostClock,
    signals: Signals,
) -> OomReport {
    let e = &p.event;
    let limit_memcg = e.limit_cgroup.as_ref().or(p.cgroup.as_ref());
    let history: &[MemoryPoint] = limit_memcg.and_then(|c| samples.get(c)).map_or(&[], |s| {
        &s[..s.partition_point(|m| m.timestamp_ns < p.timestamp_ns)]
    });
    let source_name = e.memory_source.map(|s| s.name().to_owned());
    // The kernel's own report is the memory at the kill; cgroupfs read after the kill has
    // lost the victim's memory already, so the last sample before it tells more.
    let (memory, source) = match (&e.memory, history.last()) {
        (Some(m), _) if e.memory_source == Some(MemorySource::KernelOomReport) => {
            (Some(m.clone()), source_name)
        }
        (_, Some(last)) => (
            Some(MemoryStats {
                usage_bytes: last.usage,
                limit_bytes: last.limit,
                working_set_bytes: last.working_set,
                anon_bytes: last.anon,
                file_bytes: last.file,
                kernel_bytes: last.kernel,
                shmem_bytes: last.shmem,
                ..MemoryStats::default()
            }),
            Some(MEMORY_FROM_SAMPLE.to_owned()),
        ),
        (Some(m), None) => (Some(m.clone()), source_name),
        (None, None) => (None, None),
    };
    let time = clock.wall(p.timestamp_ns);
    let at_kill = memory.as_ref().map(|m| {
        let mut point = MemoryPoint::new(p.timestamp_ns, time.clone(), m);
        point.usage = point.usage.or(e.memcg_usage_bytes);
        point.limit = point.limit.or(e.memcg_limit_bytes);
        point
    });
    let global = e.constraint == Some(OomConstraint::None);
    let node_holders = if global {
        super::global::holders(samples, owners, p.timestamp_ns)
    } else {
        Vec::new()
    };
    let verdict = if global {
        super::global::verdict(
            &super::global::Victim {
                pid: e.pid,
                comm: e.comm.as_deref(),
                anon_rss_bytes: e.anon_rss_bytes,
                node_bytes: e.oom_total_bytes,
            },
            &node_holders,
        )
    } else {
        verdict::judge(&Evidence {
            at_kill: at_kill.clone(),
            history,
            reclaims: p.reclaims,
            ineffective_reclaims: p.failures,
            top_slab_cache: p.top_slab_cache.clone(),
            signals,
        })
    };
    OomReport {
        time,
        timestamp_ns: p.timestamp_ns,
        pid: e.pid,
        comm: e.comm.clone(),
        cgroup: p.cgroup.clone(),
        limit_cgroup: e.limit_cgroup.clone(),
        limit_owner: e
            .limit_cgroup
            .as_deref()
            .map(|c| owner_name(c, e.limit_container.as_ref(), owners)),
        constraint: e.constraint.as_ref().map(|c| c.name().to_owned()),
        usage_bytes: at_kill.as_ref().and_then(|m| m.usage),
        limit_bytes: at_kill.as_ref().and_then(|m| m.limit),
        memory,
        memory_source: source,
        victim_anon_rss_bytes: e.anon_rss_bytes,
        victim_file_rss_bytes: e.file_rss_bytes,
        node_holders,
        verdict,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        event::{
            Change, ChargeProbe, ChargeSource, Charges, CounterSource, Device, FileCache,
            OomConstraint, OomProbe, SlabCache,
        },
        report::verdict::VerdictKind,
    };

    const MIB: u64 = 1 << 20;
    pub(crate) const CONTAINER_ID: &str =
        "4c01db0b339c5c5ba5f8e1b2a9d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f";

    pub(crate) fn pod_path() -> String {
        "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_owned()
    }

    pub(crate) fn container_path() -> String {
        format!("{}/{CONTAINER_ID}", pod_path())
    }

    pub(crate) const CLOCK: HostClock = HostClock {
        boot_time_wall_ns: 1_795_794_421_000_000_000,
        page_size: 4096,
    };

    pub(crate) fn at(ns: u64, memcg_id: Option<u64>, cgroup: Option<&str>, what: What) -> Event {
        Event {
            timestamp_ns: ns,
            memcg: Memcg {
                id: memcg_id,
                cgroup: cgroup.map(str::to_owned),
                container: cgroup.map(ContainerIdentity::from_cgroup_path),
            },
            what,
        }
    }

    pub(crate) fn stats(ns: u64, cgroup: &str, anon: u64, file: u64) -> Event {
        stats_full(ns, cgroup, anon, file, Some(64 * MIB))
    }

    /// A sample with only anon (and 1 MiB of kernel memory).
    pub(crate) fn stats_with_limit(ns: u64, cgroup: &str, anon: u64, limit: Option<u64>) -> Event {
        stats_full(ns, cgroup, anon, 0, limit)
    }

    fn stats_full(ns: u64, cgroup: &str, anon: u64, file: u64, limit: Option<u64>) -> Event {
        at(
            ns,
            None,
            Some(cgroup),
            What::Stats(
                MemoryStats {
                    usage_bytes: Some(anon + file + MIB),
                    limit_bytes: limit,
                    working_set_bytes: Some(anon + MIB),
                    anon_bytes: Some(anon),
                    file_bytes: Some(file),
                    kernel_bytes: Some(MIB),
                    ..MemoryStats::default()
                }
                .into(),
            ),
        )
    }

    pub(crate) fn oom(ns: u64, cgroup: &str, memory: Option<MemoryStats>) -> Event {
        at(
            ns,
            Some(7),
            Some(cgroup),
            What::OomKill(OomKill {
                pid: 42,
                tgid: Some(42),
                comm: Some("memhog".into()),
                memcg_limit_bytes: Some(64 * MIB),
                memcg_usage_bytes: Some(64 * MIB),
                anon_rss_bytes: Some(60 * MIB),
                file_rss_bytes: Some(0),
                shmem_rss_bytes: Some(0),
                constraint: Some(OomConstraint::Memcg),
                probe: Some(OomProbe::RawTp),
                limit_cgroup: Some(cgroup.to_owned()),
                limit_container: None,
                memory_source: memory.as_ref().map(|_| MemorySource::KernelOomReport),
                memory,
                oom_total_bytes: None,
            }),
        )
    }

    pub(crate) fn reclaim(ns: u64, cgroup: &str, reclaimed: u64) -> Event {
        at(
            ns,
            Some(7),
            Some(cgroup),
            What::Reclaim(ReclaimEpisode {
                pid: 42,
                duration_ns: 120_000,
                reclaimed_bytes: reclaimed,
                order: 0,
                gfp_flags: 0xcc0,
                ineffective: reclaimed == 0,
            }),
        )
    }

    pub(crate) fn cache(ns: u64, cgroup: Option<&str>, inode: u64, added: u64) -> Event {
        cache_delta(ns, cgroup, inode, added, MIB)
    }

    fn cache_delta(ns: u64, cgroup: Option<&str>, inode: u64, added: u64, removed: u64) -> Event {
        let mut cache = CacheInterval::new(1_000_000_000, added, removed);
        cache.top_files = vec![
            FileCache::new(Device { major: 8, minor: 1 }, inode, added, removed).named(FileName {
                path: Some(format!("/data/file{inode}")),
                ..FileName::default()
            }),
        ];
        at(ns, Some(9), cgroup, What::Cache(cache))
    }

    /// A file read in one interval and dropped in a later one ends at zero; past
    /// `LISTED_FILES` files, the rest are one "other files" row; the rows add up to the
    /// container's totals.
    #[test]
    fn a_dropped_file_ends_at_zero_and_files_add_up_to_the_totals() {
        let mut events = vec![cache_delta(1_000, Some("/c"), 1, 200 * MIB, 0)];
        for inode in 2..20 {
            events.push(cache_delta(
                2_000 + inode,
                Some("/c"),
                inode,
                MIB * inode,
                0,
            ));
        }
        events.push(cache_delta(30_000, Some("/c"), 1, 0, 200 * MIB));
        let mut b = ReportBuilder::new(CLOCK);
        for e in &events {
            b.add(e);
        }
        let r = b.finish(TraceInfo::default());
        let c = &r.containers[0];
        let files = &c.page_cache.top_files;
        assert_eq!(files.len(), LISTED_FILES);
        let dropped = files
            .iter()
            .find(|f| f.name == "/data/file1")
            .expect("the dropped file is listed by its peak");
        assert_eq!((dropped.peak_net_bytes, dropped.net_bytes), (200 << 20, 0));
        let other = files.last().expect("rows");
        assert!(other.file.is_other(), "{other:?}");
        assert_eq!(other.name, "other files (files not listed on their own)");
        let added: u64 = files.iter().map(|f| f.added_bytes).sum();
        let removed: u64 = files.iter().map(|f| f.removed_bytes).sum();
        assert_eq!(
            (added, removed),
            (c.page_cache.added_bytes, c.page_cache.removed_bytes)
        );
    }

    pub(crate) fn slab(ns: u64, cgroup: &str, caches: &[(&str, u64, u64)]) -> Event {
        let caches = caches
            .iter()
            .map(|&(cache, allocated, freed)| {
                SlabCache::new(
                    cache.to_owned(),
                    (allocated, allocated / 192),
                    (freed, freed / 192),
                )
            })
            .collect();
        at(
            ns,
            Some(7),
            Some(cgroup),
            What::Slab(SlabInterval::new(1_000_000_000, caches)),
        )
    }

    pub(crate) fn charge(ns: u64, cgroup: &str, bytes: u64) -> Event {
        at(
            ns,
            Some(7),
            Some(cgroup),
            What::Charge(Charges {
                interval_ns: 1_000_000_000,
                charged_bytes: bytes,
                charges: Some(bytes / 4096),
                source: ChargeSource::Charge,
            }),
        )
    }

    pub(crate) fn charge_fail(ns: u64, cgroup: &str) -> Event {
        at(
            ns,
            Some(7),
            Some(cgroup),
            What::ChargeFail(ChargeFail {
                pid: 42,
                tgid: 42,
                comm: "memhog".into(),
                nr_pages: 1,
                gfp_flags: 0xcc0,
                errno: 12,
                probe: ChargeProbe::Fexit,
                charge_failures: Some(1),
            }),
        )
    }

    pub(crate) fn cgroup_event(ns: u64, id: u64, action: CgroupAction, dying: bool) -> Event {
        Event {
            timestamp_ns: ns,
            memcg: Memcg {
                id: Some(id),
                cgroup: Some(format!("/gone-{id}")),
                container: None,
            },
            what: What::Cgroup(CgroupChange {
                action,
                dying,
                charged_bytes: dying.then_some(MIB),
                dying_ns: (action == CgroupAction::Freed).then_some(2_500_000_000),
            }),
        }
    }

    /// A container that allocates until its limit, with reclaims that fail before the kill,
    /// next to a unit that only reads files.
    pub(crate) fn scenario() -> Vec<Event> {
        let c = container_path();
        let mut events = vec![
            stats(0, &c, MIB, MIB),
            stats(1_000_000_000, &c, 30 * MIB, MIB),
            cache(
                1_000_000_000,
                Some("/system.slice/backup.service"),
                11,
                40 * MIB,
            ),
            cache(
                2_000_000_000,
                Some("/system.slice/backup.service"),
                12,
                8 * MIB,
            ),
            cache(
                2_000_000_000,
                Some("/system.slice/backup.service"),
                11,
                2 * MIB,
            ),
            reclaim(2_100_000_000, &c, 8 * MIB),
            reclaim(2_200_000_000, &c, 0),
            reclaim(2_300_000_000, &c, 0),
            stats(2_000_000_000, &c, 61 * MIB, MIB),
            charge(1_000_000_000, &c, 29 * MIB),
            charge(2_000_000_000, &c, 31 * MIB),
            slab(
                1_000_000_000,
                &c,
                &[("dentry", 3 * MIB, 0), ("kmalloc-cg-512", MIB, 0)],
            ),
            slab(
                2_000_000_000,
                &c,
                &[("dentry", 0, 2 * MIB), ("kmalloc-cg-512", MIB, 0)],
            ),
            charge_fail(2_450_000_000, &c),
            cgroup_event(2_400_000_000, 100, CgroupAction::Removed, true),
            cgroup_event(2_450_000_000, 101, CgroupAction::Removed, false),
        ];
        let at_kill = MemoryStats {
            usage_bytes: Some(64 * MIB),
            limit_bytes: Some(64 * MIB),
            anon_bytes: Some(62 * MIB),
            file_bytes: Some(MIB),
            kernel_bytes: Some(MIB),
            ..MemoryStats::default()
        };
        events.push(oom(2_500_000_000, &c, Some(at_kill)));
        events.push(cgroup_event(3_000_000_000, 100, CgroupAction::Freed, false));
        events.push(cgroup_event(
            3_100_000_000,
            102,
            CgroupAction::Removed,
            true,
        ));
        events
    }

    pub(crate) fn scenario_report() -> Report {
        let mut b = ReportBuilder::new(CLOCK);
        for e in scenario() {
            b.add(&e);
        }
        b.finish(TraceInfo {
            file: "test.mtrace".into(),
            host: "node1".into(),
            ..TraceInfo::default()
        })
    }

    #[test]
    fn the_oom_is_under_its_container_with_context_and_verdict() {
        let r = scenario_report();
        assert_eq!(r.events, 19);
        let first = &r.containers[0];
        assert_eq!(first.name, "container:4c01db0b339c");
        assert_eq!(first.oom_kills.len(), 1);
        let kill = &first.oom_kills[0];
        assert_eq!(kill.limit_bytes, Some(64 * MIB));
        assert_eq!(kill.usage_bytes, Some(64 * MIB));
        assert_eq!(
            kill.memory_source.as_deref(),
            Some(MEMORY_FROM_KERNEL_REPORT)
        );
        assert_eq!(kill.verdict.kind, VerdictKind::AnonGrowth, "{kill:?}");
        assert!(kill.verdict.reason.contains("grew by 61.0MiB"), "{kill:?}");
        assert_eq!(
            first.memory.len(),
            4,
            "samples and the kernel's report at the kill"
        );
        assert_eq!(first.memory[3].timestamp_ns, kill.timestamp_ns);
        assert_eq!(first.memory[3].anon, Some(62 * MIB));
        assert_eq!(
            first.memory_cgroup.as_deref(),
            Some(container_path().as_str())
        );
    }

    #[test]
    fn reclaims_are_counted_and_failures_listed_and_marked() {
        let r = scenario_report();
        let c = &r.containers[0];
        assert_eq!(c.reclaim.episodes, 3);
        assert_eq!(c.reclaim.failures, 2);
        assert_eq!(c.reclaim.reclaimed_bytes, 8 * MIB);
        assert_eq!(c.reclaim.listed_failures.len(), 2);
        let kinds: Vec<(MarkKind, u32)> = c.marks.iter().map(|m| (m.kind, m.count)).collect();
        assert_eq!(
            kinds,
            [
                (MarkKind::Reclaim, 1),
                (MarkKind::ReclaimFailed, 2),
                (MarkKind::ChargeFail, 1),
                (MarkKind::OomKill, 1)
            ],
            "reclaims in one second are one mark each kind"
        );
    }

    #[test]
    fn page_cache_growers_rank_files_by_net_growth() {
        let r = scenario_report();
        assert_eq!(r.page_cache_growers.len(), 1);
        let g = &r.page_cache_growers[0];
        assert_eq!(g.name, "backup.service");
        assert_eq!(g.added_bytes, 50 * MIB);
        assert_eq!(g.net_bytes, 47 << 20);
        assert_eq!(g.peak_net_bytes, 47 << 20);
        let inodes: Vec<u64> = g.top_files.iter().map(|f| f.inode).collect();
        assert_eq!(inodes, [11, 12]);
        assert_eq!(g.top_files[0].net_bytes, 40 << 20);
    }

    #[test]
    fn cache_that_grew_then_was_reclaimed_ranks_by_its_peak() {
        let mut b = ReportBuilder::new(CLOCK);
        for e in [
            cache_delta(1, Some("/reader"), 5, 60 * MIB, 0),
            cache_delta(2, Some("/reader"), 5, 4 * MIB, 64 * MIB),
            cache_delta(1, Some("/steady"), 6, 10 * MIB, 0),
        ] {
            b.add(&e);
        }
        let r = b.finish(TraceInfo::default());
        let names: Vec<(&str, i64, i64)> = r
            .page_cache_growers
            .iter()
            .map(|g| (g.name.as_str(), g.peak_net_bytes, g.net_bytes))
            .collect();
        assert_eq!(
            names,
            [("/reader", 60 << 20, 0), ("/steady", 10 << 20, 10 << 20)]
        );
        assert_eq!(
            r.page_cache_growers[0].top_files[0].peak_net_bytes,
            60 << 20
        );
    }

    #[test]
    fn slab_section_follows_kernel_memory_and_slab_caches() {
        let r = scenario_report();
        let s = &r.containers[0].slab;
        assert_eq!(s.first_kernel_bytes, Some(MIB));
        assert_eq!(s.growth_bytes, Some(0));
        assert_eq!(s.intervals, 2);
        assert_eq!((s.net_bytes, s.peak_net_bytes), (3 << 20, 4 << 20));
        let caches: Vec<(&str, i64, i64)> = s
            .caches
            .iter()
            .map(|c| (c.cache.as_str(), c.peak_net_bytes, c.net_bytes))
            .collect();
        assert_eq!(
            caches,
            [
                ("dentry", 3 << 20, 1 << 20),
                ("kmalloc-cg-512", 2 << 20, 2 << 20)
            ]
        );
    }

    #[test]
    fn charges_and_charge_failures_are_counted() {
        let r = scenario_report();
        let c = &r.containers[0];
        assert_eq!(c.charges.intervals, 2);
        assert_eq!(c.charges.charged_bytes, 60 * MIB);
        assert_eq!(c.charges.busiest_interval_bytes, 31 * MIB);
        assert_eq!(c.charge_failures.count, 1);
        assert_eq!(c.charge_failures.listed[0].outcome, "ENOMEM");
    }

    #[test]
    fn dying_memcgs_are_counted_over_time() {
        let r = scenario_report();
        let counts: Vec<u64> = r.dying.timeline.iter().map(|p| p.dying).collect();
        assert_eq!(
            counts,
            [1, 0, 1],
            "removed-but-uncharged memcg 101 is not dying"
        );
        assert_eq!(r.dying.removed_while_charged, 2);
        assert_eq!(r.dying.freed_after_dying, 1);
        assert_eq!(r.dying.longest_dying_seconds, Some(2.5));
        assert_eq!(r.dying.still_dying.len(), 1);
        assert_eq!(r.dying.still_dying[0].memcg_id, 102);
    }

    #[test]
    fn without_the_kernel_report_the_last_sample_before_the_kill_is_used() {
        let c = "/memtrace-test-x";
        let mut b = ReportBuilder::new(CLOCK);
        for e in [
            stats(0, c, MIB, 50 * MIB),
            stats(1_000, c, MIB, 60 * MIB),
            oom(2_000, c, None),
            stats(3_000, c, 0, MIB),
        ] {
            b.add(&e);
        }
        let r = b.finish(TraceInfo::default());
        let c0 = &r.containers[0];
        assert_eq!(c0.name, c, "no container: the cgroup path names it");
        let kill = &c0.oom_kills[0];
        assert_eq!(kill.memory_source.as_deref(), Some(MEMORY_FROM_SAMPLE));
        assert_eq!(kill.verdict.kind, VerdictKind::PageCacheNotReclaimed);
        assert_eq!(r.first_timestamp_ns, Some(0));
        assert_eq!(r.last_timestamp_ns, Some(3_000));
    }

    #[test]
    fn containers_whose_names_read_the_same_stay_apart() {
        let twins = [
            format!("/docker/{}", "ab".repeat(32)),
            format!("/docker/{}", "ab".repeat(6) + &"cd".repeat(26)),
        ];
        let mut b = ReportBuilder::new(CLOCK);
        for c in &twins {
            b.add(&stats(1, c, MIB, MIB));
        }
        let r = b.finish(TraceInfo::default());
        assert_eq!(r.containers.len(), 2);
        assert!(r.containers.iter().all(|c| c.name == "docker:abababababab"));
    }

    /// A host service using more memory than any container still comes after the containers
    /// and pods; `--top` keeps the first sections and counts the rest, and the summary still
    /// speaks of all of them.
    #[test]
    fn containers_and_pods_come_before_host_cgroups_and_top_bounds_them() {
        let mut events = scenario();
        events.push(stats(0, "/system.slice/big.service", 900 * MIB, MIB));
        events.push(stats(0, &pod_path(), 10 * MIB, MIB));
        let mut b = ReportBuilder::new(CLOCK);
        for e in &events {
            b.add(e);
        }
        let mut r = b.finish(TraceInfo::default());
        let order: Vec<(&str, IdentityKind)> = r
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("container:4c01db0b339c", IdentityKind::Container),
                (
                    "pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                    IdentityKind::Pod
                ),
                ("big.service", IdentityKind::SystemdUnit),
                ("backup.service", IdentityKind::SystemdUnit),
            ]
        );
        let summary = r.summary.clone();
        r.keep_top(1);
        assert_eq!(r.containers.len(), 1);
        assert_eq!(r.containers_left_out, 3);
        assert_eq!(r.summary, summary);
        r.keep_top(5);
        assert_eq!((r.containers.len(), r.containers_left_out), (1, 3));
    }

    #[test]
    fn a_container_named_after_its_first_events_is_one_container_under_its_name() {
        let c = format!(
            "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{}",
            "ab".repeat(32)
        );
        // Unnamed; its pod named (from another container's labels); named by its runtime; a
        // late event that knows less does not take the name back.
        let mut in_pod = stats(2, &c, MIB, MIB);
        if let Some(identity) = in_pod.memcg.container.as_mut() {
            identity.pod_namespace = Some("shop".into());
            identity.pod_name = Some("hog-7f9c6d5b4-x2v8q".into());
        }
        let mut named = in_pod.clone();
        named.timestamp_ns = 3;
        if let Some(identity) = named.memcg.container.as_mut() {
            identity.container_name = Some("hog".into());
            identity.image = Some("localhost/busybox:test".into());
        }
        let mut b = ReportBuilder::new(CLOCK);
        for e in [
            stats(1, &c, MIB, MIB),
            in_pod,
            named,
            stats(4, &c, MIB, MIB),
        ] {
            b.add(&e);
        }
        let r = b.finish(TraceInfo::default());
        assert_eq!(r.containers.len(), 1, "{:?}", r.containers);
        assert_eq!(
            r.containers[0].name,
            "shop/hog-7f9c6d5b4-x2v8q/hog (localhost/busybox:test)"
        );
        let identity = r.containers[0].container.as_ref().expect("identity");
        assert_eq!(identity.container_name.as_deref(), Some("hog"));
        assert_eq!(r.containers[0].memory.len(), 4);
    }

    fn counters(ns: u64, cgroup: &str, changed: &[(Counter, u64, i64)]) -> Event {
        at(
            ns,
            Some(7),
            Some(cgroup),
            What::Counters(CounterChanges {
                interval_ns: 1_000_000_000,
                source: CounterSource::Sampled,
                changed: changed
                    .iter()
                    .map(|&(c, value, delta)| (c, Change { value, delta }))
                    .collect(),
            }),
        )
    }

    /// memory.high exists only on cgroup v2 and this project's test hosts are v1: synthetic
    /// `counters` events, as a v2 host records them, make a throttled container.
    #[test]
    fn a_container_held_at_memory_high_is_throttled_and_at_risk() {
        let c = container_path();
        let mut b = ReportBuilder::new(CLOCK);
        for e in [
            stats(0, &c, 40 * MIB, MIB),
            counters(
                2_000_000_000,
                &c,
                &[
                    (Counter::High, 10, 10),
                    (Counter::PressureSomeNs, 900_000_000, 900_000_000),
                    (Counter::PressureFullNs, 200_000_000, 200_000_000),
                ],
            ),
            reclaim(2_500_000_000, &c, MIB),
            counters(
                4_000_000_000,
                &c,
                &[
                    (Counter::High, 25, 15),
                    (Counter::PressureSomeNs, 2_400_000_000, 1_500_000_000),
                ],
            ),
            stats(4_000_000_000, &c, 44 * MIB, MIB),
        ] {
            b.add(&e);
        }
        let r = b.finish(TraceInfo::default());
        let c0 = &r.containers[0];
        let t = c0.throttling.as_ref().expect("throttled");
        assert_eq!(
            (t.high_events, t.first_ns, t.last_ns, t.reclaims),
            (25, 1_000_000_000, 4_000_000_000, 1)
        );
        assert_eq!(
            (t.stall_some_seconds, t.stall_full_seconds),
            (Some(2.4), Some(0.2))
        );
        let risk = c0.at_risk.as_ref().expect("at risk");
        assert_eq!(risk.kind, VerdictKind::Throttled, "{risk:?}");
        assert!(
            risk.reason
                .contains("went over memory.high 25 times over 3.0s"),
            "{risk:?}"
        );
        assert_eq!(r.summary.at_risk[0].verdict.kind, VerdictKind::Throttled);
        let text = crate::report::text(&r);
        assert!(
            text.contains("\nat risk (not OOM-killed): container:4c01db0b339c: throttled at memory.high: usage went over memory.high 25 times"),
            "{text}"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["containers"][0]["at_risk"]["kind"], "throttled");
        assert_eq!(json["containers"][0]["throttling"]["high_events"], 25);
    }

    /// A pod whose limit is below its two containers' limits: the kill by the pod's limit
    /// names it as evidence.
    #[test]
    fn a_kill_by_a_pod_limit_below_its_containers_limits_says_so() {
        let pod = pod_path();
        let other = format!("{pod}/{}", "a".repeat(64));
        let hog = container_path();
        let mut builder = ReportBuilder::new(CLOCK);
        builder.add(&stats_with_limit(0, &pod, 10 * MIB, Some(128 * MIB)));
        builder.add(&stats_with_limit(0, &other, MIB, Some(96 * MIB)));
        builder.add(&stats_with_limit(0, &hog, MIB, Some(96 * MIB)));
        let mut kill = oom(1_000, &hog, None);
        if let What::OomKill(k) = &mut kill.what {
            k.limit_cgroup = Some(pod.clone());
        }
        builder.add(&kill);
        let r = builder.finish(TraceInfo::default());
        let killed = r
            .containers
            .iter()
            .find(|x| !x.oom_kills.is_empty())
            .expect("the killed container");
        let v = &killed.oom_kills[0].verdict;
        let f = v
            .evidence
            .iter()
            .find(|f| f.kind == VerdictKind::PodLimitBelowContainers)
            .unwrap_or_else(|| panic!("{v:?}"));
        assert!(
            f.text.starts_with(
                "pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0's limit 128.0MiB (cgroup \
                 /kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0) is below the sum \
                 of its 2 containers' limits, 192.0MiB"
            ),
            "{f:?}"
        );
    }

    #[test]
    fn events_without_a_cgroup_still_have_an_owner() {
        let mut b = ReportBuilder::new(CLOCK);
        b.add(&cache(5, None, 1, MIB));
        let r = b.finish(TraceInfo::default());
        assert_eq!(r.containers[0].name, "(unknown cgroup)");
    }
}
