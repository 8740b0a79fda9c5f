//! The events users see, built from kernel records plus what userspace knew at the time.

use memtrace_common::{
    CgroupRecord, ChargeFailRecord, OomKillRecord,
    event::{
        CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RMDIR, CHARGE_STRATEGY_DERIVED,
        CHARGE_STRATEGY_FENTRY, CHARGE_STRATEGY_KPROBE, OOM_FLAG_MEMCG, OOM_FLAG_RSS,
        OOM_FLAG_TASK, OOM_STRATEGY_FENTRY, OOM_STRATEGY_KPROBE, OOM_STRATEGY_RAW_TP, Record,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    clock::format_wall,
};

/// What userspace added to a kernel record when it arrived. The cgroup may be gone later, so
/// this is recorded with the event, not recomputed on replay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Cgroup path in the memory hierarchy, `/` for the root memcg.
    pub cgroup: Option<String>,
    /// Container, pod or service the cgroup belongs to, captured while it existed.
    pub container: Option<ContainerIdentity>,
    pub memcg_limit_bytes: Option<u64>,
    pub memcg_usage_bytes: Option<u64>,
    /// OOM kills: the kernel's own account and the memory at the kill.
    pub oom: Option<OomContext>,
    /// Cgroup release: when the cgroup was removed (`CLOCK_BOOTTIME` ns), if memtrace saw it.
    pub removed_ns: Option<u64>,
    /// Charge failures: the memcg's own count of them (`memory.failcnt` on v1, `max` in
    /// `memory.events` on v2) when the event arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_failures: Option<u64>,
}

/// What an OOM kill's context adds to the victim: which limit fired and what the memory was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomContext {
    /// The kernel's `constraint=` (`CONSTRAINT_MEMCG`, `CONSTRAINT_NONE` for a global OOM, …).
    pub constraint: Option<String>,
    /// The memcg whose limit fired (the victim's or an ancestor, e.g. the pod); `None` for a
    /// global OOM.
    pub limit_cgroup: Option<String>,
    /// Who `limit_cgroup` belongs to (typically the pod).
    pub limit_container: Option<ContainerIdentity>,
    /// Memory of `limit_cgroup` (or, in a global OOM, of the victim's memcg) at the kill.
    pub memory: Option<MemoryStats>,
    /// Where `memory` comes from: [`MEMORY_FROM_KERNEL_REPORT`] or [`MEMORY_FROM_CGROUPFS`].
    pub memory_source: Option<String>,
    /// The victim's comm as the kernel's report gives it (for kernels whose tracepoint gives
    /// only the pid).
    pub task: Option<String>,
}

/// `memory` was printed by the kernel in its OOM report, at the kill.
pub const MEMORY_FROM_KERNEL_REPORT: &str = "kernel_oom_report";
/// `memory` was read from cgroupfs after the kill (the victim's memory may be freed already).
pub const MEMORY_FROM_CGROUPFS: &str = "cgroupfs_after_kill";

/// A sample of one memcg's memory, taken by userspace every `--stats-interval`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSample {
    pub timestamp_ns: u64,
    pub cgroup: String,
    pub container: Option<ContainerIdentity>,
    pub memory: MemoryStats,
}

/// Page cache charged to one memcg during one interval, from the kernel's aggregates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSample {
    /// End of the interval.
    pub timestamp_ns: u64,
    pub interval_ns: u64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub added_pages: u64,
    pub removed_pages: u64,
    /// The files that grew most, largest net growth first.
    pub top_files: Vec<FileDelta>,
}

/// One file's page cache charged to a memcg during an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDelta {
    /// Kernel encoding: `major << 20 | minor`.
    pub dev: u32,
    pub ino: u64,
    pub added_pages: u64,
    pub removed_pages: u64,
}

/// Pages charged to one memcg during one interval, from the kernel's aggregates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeSample {
    /// End of the interval.
    pub timestamp_ns: u64,
    pub interval_ns: u64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub pages: u64,
    /// Charge calls; 0 unless counted at the charge function.
    pub charges: u64,
    pub source: ChargeSource,
}

/// What a `charge` sample counted, by the strategy the kernel allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeSource {
    /// Each charge at the kernel's charge function (fexit or kprobe).
    #[default]
    Charge,
    /// Anon and file pages added, from memcg stat updates (`memcg:mod_memcg_lruvec_state`).
    StatUpdates,
    /// Page cache added to the memcg (file pages only), from the page-cache probe point.
    PageCache,
}

impl ChargeSource {
    pub const ALL: [Self; 3] = [Self::Charge, Self::StatUpdates, Self::PageCache];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::StatUpdates => "stat_updates",
            Self::PageCache => "page_cache",
        }
    }
}

/// Memcg-accounted slab memory of one memcg during one interval, per cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabSample {
    /// End of the interval.
    pub timestamp_ns: u64,
    pub interval_ns: u64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    /// Largest net growth first.
    pub caches: Vec<SlabCacheDelta>,
}

/// One slab cache's accounted objects allocated and freed in a memcg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabCacheDelta {
    /// `dentry`, `shmem_inode_cache`, `kmalloc-cg-512`, …
    pub cache: String,
    pub alloc_bytes: u64,
    pub alloc_objects: u64,
    pub free_bytes: u64,
    pub free_objects: u64,
}

impl SlabCacheDelta {
    #[must_use]
    pub fn net_bytes(&self) -> i64 {
        i64::try_from(self.alloc_bytes).unwrap_or(i64::MAX)
            - i64::try_from(self.free_bytes).unwrap_or(i64::MAX)
    }
}

/// What the pipeline hands the sinks, and what the trace file stores.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "built, written and dropped one at a time; never stored in bulk"
)]
pub enum Observed {
    /// A kernel record with its context.
    Kernel { record: Record, context: Context },
    /// A cgroupfs sample.
    Stats(StatsSample),
    /// An interval of page cache, from the kernel's aggregates.
    Cache(CacheSample),
    /// An interval of charges, from the kernel's aggregates.
    Charge(ChargeSample),
    /// An interval of accounted slab, from the kernel's aggregates.
    Slab(SlabSample),
}

impl Observed {
    /// The cgroup the event is about and its container, as `--cgroup`/`--container`/`--pod`
    /// match them.
    #[must_use]
    pub fn cgroup(&self) -> (Option<&str>, Option<&ContainerIdentity>) {
        match self {
            Self::Kernel { context, .. } => (context.cgroup.as_deref(), context.container.as_ref()),
            Self::Stats(s) => (Some(&s.cgroup), s.container.as_ref()),
            Self::Cache(s) => (s.cgroup.as_deref(), s.container.as_ref()),
            Self::Charge(s) => (s.cgroup.as_deref(), s.container.as_ref()),
            Self::Slab(s) => (s.cgroup.as_deref(), s.container.as_ref()),
        }
    }

    /// For an OOM kill, the cgroup whose limit fired and its owner (the pod, typically): a
    /// filter on the pod wants its containers' kills.
    #[must_use]
    pub fn limit_cgroup(&self) -> Option<(Option<&str>, Option<&ContainerIdentity>)> {
        match self {
            Self::Kernel { context, .. } => context
                .oom
                .as_ref()
                .map(|oom| (oom.limit_cgroup.as_deref(), oom.limit_container.as_ref())),
            Self::Stats(_) | Self::Cache(_) | Self::Charge(_) | Self::Slab(_) => None,
        }
    }

    /// When it happened (`CLOCK_BOOTTIME` ns): a kernel record's stamp, a sample's end.
    #[must_use]
    pub fn timestamp_ns(&self) -> u64 {
        match self {
            Self::Kernel { record, .. } => match record {
                Record::OomKill(r) => r.header.timestamp_ns,
                Record::Cgroup(r) => r.header.timestamp_ns,
                Record::Reclaim(r) => r.header.timestamp_ns,
                Record::ChargeFail(r) => r.header.timestamp_ns,
            },
            Self::Stats(s) => s.timestamp_ns,
            Self::Cache(s) => s.timestamp_ns,
            Self::Charge(s) => s.timestamp_ns,
            Self::Slab(s) => s.timestamp_ns,
        }
    }
}

/// How to turn kernel timestamps and page counts into wall time and bytes, for the machine the
/// events came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostClock {
    pub boot_time_wall_ns: u64,
    pub page_size: u64,
}

impl HostClock {
    /// An event timestamp as wall time, RFC 3339. Saturating: a trace file can hold any
    /// numbers, and a nonsensical time must print as one, not overflow.
    #[must_use]
    pub fn wall(&self, timestamp_ns: u64) -> String {
        format_wall(self.boot_time_wall_ns.saturating_add(timestamp_ns))
    }
}

/// One event as users see it; `--format json` prints it with a `"type"` tag.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "built, written and dropped one at a time; never stored in bulk"
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    OomKill(OomKill),
    Cgroup(CgroupEvent),
    Stats(StatsEvent),
    Cache(CacheEvent),
    Reclaim(ReclaimEvent),
    Charge(ChargeEvent),
    ChargeFail(ChargeFailEvent),
    Slab(SlabEvent),
}

/// Pages charged to a memcg during an interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChargeEvent {
    pub time: String,
    pub timestamp_ns: u64,
    pub interval_seconds: f64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub charged_bytes: u64,
    pub charged_pages: u64,
    /// Charge calls (`null` unless counted at the charge function).
    pub charges: Option<u64>,
    /// `charge` (the kernel's charge function); on kernels that allow neither fexit nor
    /// kprobes, `stat_updates` (anon and file pages added, from memcg stat updates, 6.16+) or
    /// `page_cache` (file pages added to the page cache only).
    pub source: &'static str,
}

/// A charge a memcg could not take.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChargeFailEvent {
    pub time: String,
    pub timestamp_ns: u64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    /// Pages asked for (`null` when derived: reclaim does not say).
    pub nr_pages: Option<u32>,
    pub gfp_flags: String,
    /// `ENOMEM` (the charge failed after reclaim and the OOM killer), or, when derived,
    /// `limit_reclaim_freed_nothing` / `limit_reclaim`: the page counter refused the charge and
    /// reclaim ran (freeing nothing: the road to an OOM kill).
    pub outcome: String,
    /// Derived in userspace from a memcg limit reclaim episode and the memcg's failure counter,
    /// on kernels that allow neither fexit nor kprobes on `try_charge_memcg`.
    pub derived: bool,
    /// `fentry`, `kprobe` or `reclaim` (derived).
    pub source: &'static str,
    /// Derived: what the reclaim freed and how long it took.
    pub reclaimed_bytes: Option<u64>,
    pub reclaim_us: Option<f64>,
    /// The memcg's own count of failed charges when the event arrived.
    pub charge_failures: Option<u64>,
}

/// Accounted slab memory of a memcg during an interval, per cache.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlabEvent {
    pub time: String,
    pub timestamp_ns: u64,
    pub interval_seconds: f64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub net_bytes: i64,
    /// Largest net growth first.
    pub caches: Vec<SlabCacheEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlabCacheEvent {
    pub cache: String,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub net_bytes: i64,
    pub allocated_objects: u64,
    pub freed_objects: u64,
}

/// Page cache charged to a memcg and removed from it during an interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheEvent {
    pub time: String,
    pub timestamp_ns: u64,
    pub interval_seconds: f64,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    /// Growth over the interval (negative: the cache shrank).
    pub net_bytes: i64,
    pub top_files: Vec<FileEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEvent {
    /// `major:minor`, as `ls -l /dev` and `/proc/self/mountinfo` show it.
    pub device: String,
    pub inode: u64,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    pub net_bytes: i64,
}

/// One memcg limit reclaim episode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReclaimEvent {
    /// When it began.
    pub time: String,
    pub timestamp_ns: u64,
    /// The reclaiming task's memcg: the one whose charge hit a limit (its own or an ancestor's).
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    pub pid: u32,
    pub duration_us: f64,
    pub nr_reclaimed: u64,
    pub reclaimed_bytes: u64,
    pub order: u32,
    pub gfp_flags: String,
    /// Reclaimed nothing: the memory could not be freed (anon without swap, dirty or pinned
    /// pages), the road to an OOM kill.
    pub ineffective: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomKill {
    /// Wall time, RFC 3339 UTC.
    pub time: String,
    /// Nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    /// Inode number of the victim's memory cgroup directory.
    pub memcg_id: Option<u64>,
    /// The victim's memory cgroup.
    pub cgroup: Option<String>,
    /// The victim's container, pod or service.
    pub container: Option<ContainerIdentity>,
    pub memcg_limit_bytes: Option<u64>,
    pub memcg_usage_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
    /// `CONSTRAINT_MEMCG`, `CONSTRAINT_NONE` (global), … from the kernel's `oom-kill:` line.
    pub constraint: Option<String>,
    /// Which probe saw the kill: `fentry` or `kprobe` on `oom_kill_process` (with the kernel's
    /// `oom_control`), or `raw_tp` on `oom:mark_victim`.
    pub probe: Option<&'static str>,
    /// The memcg whose limit fired; `null` for a global OOM or when the kernel's line was not
    /// seen (it is rate-limited).
    pub limit_cgroup: Option<String>,
    /// Who `limit_cgroup` belongs to (typically the pod, when the pod's limit fired).
    pub limit_container: Option<ContainerIdentity>,
    /// Memory of the memcg whose limit fired (or the victim's in a global OOM) at the kill.
    pub memory: Option<MemoryStats>,
    /// `kernel_oom_report` (as the kernel printed it at the kill) or `cgroupfs_after_kill`.
    pub memory_source: Option<String>,
}

/// Lifecycle of a memory cgroup.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CgroupEvent {
    pub time: String,
    pub timestamp_ns: u64,
    /// `created`, `removed` (offline: dying while something pins it) or `freed`.
    pub action: &'static str,
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub container: Option<ContainerIdentity>,
    /// Removed but still charged: the memcg stays allocated (and holds a memcg id) until that
    /// memory is reclaimed.
    pub dying: bool,
    /// At removal: memory still charged to it, what keeps it alive.
    pub charged_bytes: Option<u64>,
    /// At release: how long it was dying, when memtrace saw the removal.
    pub dying_seconds: Option<f64>,
}

/// A periodic sample of a memcg's memory, from cgroupfs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsEvent {
    pub time: String,
    pub timestamp_ns: u64,
    pub cgroup: String,
    pub container: Option<ContainerIdentity>,
    #[serde(flatten)]
    pub memory: MemoryStats,
}

impl Event {
    #[must_use]
    pub fn new(observed: &Observed, clock: HostClock) -> Self {
        match observed {
            Observed::Kernel {
                record: Record::OomKill(rec),
                context,
            } => Self::OomKill(OomKill::new(rec, context, clock)),
            Observed::Kernel {
                record: Record::Cgroup(rec),
                context,
            } => Self::Cgroup(CgroupEvent::new(rec, context, clock)),
            Observed::Kernel {
                record: Record::Reclaim(rec),
                context,
            } => Self::Reclaim(ReclaimEvent {
                time: clock.wall(rec.header.timestamp_ns),
                timestamp_ns: rec.header.timestamp_ns,
                memcg_id: rec.memcg_id,
                cgroup: context.cgroup.clone(),
                container: context.container.clone(),
                pid: rec.pid,
                #[expect(clippy::cast_precision_loss, reason = "microseconds for people")]
                duration_us: rec.duration_ns as f64 / 1e3,
                nr_reclaimed: rec.nr_reclaimed,
                reclaimed_bytes: rec.nr_reclaimed.saturating_mul(clock.page_size),
                order: rec.order,
                gfp_flags: format!("{:#x}", rec.gfp_flags),
                ineffective: rec.nr_reclaimed == 0,
            }),
            Observed::Kernel {
                record: Record::ChargeFail(rec),
                context,
            } => Self::ChargeFail(ChargeFailEvent::new(rec, context, clock)),
            Observed::Cache(sample) => Self::Cache(CacheEvent::new(sample, clock)),
            Observed::Charge(s) => Self::Charge(ChargeEvent {
                time: clock.wall(s.timestamp_ns),
                timestamp_ns: s.timestamp_ns,
                #[expect(clippy::cast_precision_loss, reason = "seconds for people")]
                interval_seconds: s.interval_ns as f64 / 1e9,
                memcg_id: s.memcg_id,
                cgroup: s.cgroup.clone(),
                container: s.container.clone(),
                charged_bytes: s.pages.saturating_mul(clock.page_size),
                charged_pages: s.pages,
                charges: (s.source == ChargeSource::Charge).then_some(s.charges),
                source: s.source.as_str(),
            }),
            Observed::Slab(s) => Self::Slab(SlabEvent::new(s, clock)),
            Observed::Stats(sample) => Self::Stats(StatsEvent {
                time: clock.wall(sample.timestamp_ns),
                timestamp_ns: sample.timestamp_ns,
                cgroup: sample.cgroup.clone(),
                container: sample.container.clone(),
                memory: sample.memory.clone(),
            }),
        }
    }

    /// Every `"type"` name, for `--type`; a unit test checks it against [`Event::type_name`].
    pub const TYPES: &[&str] = &[
        "oom_kill",
        "cgroup",
        "stats",
        "cache",
        "reclaim",
        "charge",
        "charge_fail",
        "slab",
    ];

    /// When it happened (`CLOCK_BOOTTIME` ns) and as wall time: a kernel record's stamp, a
    /// sample's end.
    #[must_use]
    pub fn when(&self) -> (u64, &str) {
        match self {
            Self::OomKill(e) => (e.timestamp_ns, &e.time),
            Self::Cgroup(e) => (e.timestamp_ns, &e.time),
            Self::Stats(e) => (e.timestamp_ns, &e.time),
            Self::Cache(e) => (e.timestamp_ns, &e.time),
            Self::Reclaim(e) => (e.timestamp_ns, &e.time),
            Self::Charge(e) => (e.timestamp_ns, &e.time),
            Self::ChargeFail(e) => (e.timestamp_ns, &e.time),
            Self::Slab(e) => (e.timestamp_ns, &e.time),
        }
    }

    /// The `"type"` name.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::OomKill(_) => "oom_kill",
            Self::Cgroup(_) => "cgroup",
            Self::Stats(_) => "stats",
            Self::Cache(_) => "cache",
            Self::Reclaim(_) => "reclaim",
            Self::Charge(_) => "charge",
            Self::ChargeFail(_) => "charge_fail",
            Self::Slab(_) => "slab",
        }
    }
}

impl OomKill {
    fn new(rec: &OomKillRecord, context: &Context, clock: HostClock) -> Self {
        let has = |flag| rec.flags & flag != 0;
        let bytes = |pages: u64| has(OOM_FLAG_RSS).then(|| pages.saturating_mul(clock.page_size));
        let oom = context.oom.clone().unwrap_or_default();
        Self {
            time: clock.wall(rec.header.timestamp_ns),
            timestamp_ns: rec.header.timestamp_ns,
            pid: rec.pid,
            tgid: has(OOM_FLAG_TASK).then_some(rec.tgid),
            comm: if has(OOM_FLAG_TASK) {
                Some(c_str(&rec.comm))
            } else {
                oom.task.clone()
            },
            memcg_id: has(OOM_FLAG_MEMCG).then_some(rec.memcg_id),
            cgroup: context.cgroup.clone(),
            container: context.container.clone(),
            memcg_limit_bytes: context.memcg_limit_bytes,
            memcg_usage_bytes: context.memcg_usage_bytes,
            anon_rss_bytes: bytes(rec.anon_rss_pages),
            file_rss_bytes: bytes(rec.file_rss_pages),
            shmem_rss_bytes: bytes(rec.shmem_rss_pages),
            constraint: oom.constraint,
            probe: match rec.strategy {
                OOM_STRATEGY_FENTRY => Some("fentry"),
                OOM_STRATEGY_KPROBE => Some("kprobe"),
                OOM_STRATEGY_RAW_TP => Some("raw_tp"),
                _ => None,
            },
            limit_cgroup: oom.limit_cgroup,
            limit_container: oom.limit_container,
            memory: oom.memory,
            memory_source: oom.memory_source,
        }
    }
}

impl CacheEvent {
    fn new(s: &CacheSample, clock: HostClock) -> Self {
        let bytes = |pages: u64| pages.saturating_mul(clock.page_size);
        let net = |added: u64, removed: u64| {
            i64::try_from(bytes(added)).unwrap_or(i64::MAX)
                - i64::try_from(bytes(removed)).unwrap_or(i64::MAX)
        };
        Self {
            time: clock.wall(s.timestamp_ns),
            timestamp_ns: s.timestamp_ns,
            #[expect(clippy::cast_precision_loss, reason = "seconds for people")]
            interval_seconds: s.interval_ns as f64 / 1e9,
            memcg_id: s.memcg_id,
            cgroup: s.cgroup.clone(),
            container: s.container.clone(),
            added_bytes: bytes(s.added_pages),
            removed_bytes: bytes(s.removed_pages),
            net_bytes: net(s.added_pages, s.removed_pages),
            top_files: s
                .top_files
                .iter()
                .map(|f| FileEvent {
                    device: format!("{}:{}", f.dev >> 20, f.dev & 0xf_ffff),
                    inode: f.ino,
                    added_bytes: bytes(f.added_pages),
                    removed_bytes: bytes(f.removed_pages),
                    net_bytes: net(f.added_pages, f.removed_pages),
                })
                .collect(),
        }
    }
}

impl ChargeFailEvent {
    fn new(rec: &ChargeFailRecord, context: &Context, clock: HostClock) -> Self {
        let derived = rec.strategy == CHARGE_STRATEGY_DERIVED;
        let outcome = if !derived {
            errno_name(rec.ret)
        } else if rec.nr_reclaimed == 0 {
            "limit_reclaim_freed_nothing".to_owned()
        } else {
            "limit_reclaim".to_owned()
        };
        Self {
            time: clock.wall(rec.header.timestamp_ns),
            timestamp_ns: rec.header.timestamp_ns,
            memcg_id: rec.memcg_id,
            cgroup: context.cgroup.clone(),
            container: context.container.clone(),
            pid: rec.pid,
            tgid: (!derived).then_some(rec.tgid),
            comm: (!derived).then(|| c_str(&rec.comm)),
            nr_pages: (!derived).then_some(rec.nr_pages),
            gfp_flags: format!("{:#x}", rec.gfp_flags),
            outcome,
            derived,
            source: match rec.strategy {
                CHARGE_STRATEGY_FENTRY => "fentry",
                CHARGE_STRATEGY_KPROBE => "kprobe",
                _ => "reclaim",
            },
            reclaimed_bytes: derived.then(|| rec.nr_reclaimed.saturating_mul(clock.page_size)),
            #[expect(clippy::cast_precision_loss, reason = "microseconds for people")]
            reclaim_us: derived.then(|| rec.reclaim_ns as f64 / 1e3),
            charge_failures: context.charge_failures,
        }
    }
}

/// `ENOMEM` for -12, `errno 5` for others the kernel may add.
fn errno_name(ret: i32) -> String {
    match -ret {
        12 => "ENOMEM".to_owned(),
        4 => "EINTR".to_owned(),
        other => format!("errno {other}"),
    }
}

impl SlabEvent {
    fn new(s: &SlabSample, clock: HostClock) -> Self {
        let caches: Vec<SlabCacheEvent> = s
            .caches
            .iter()
            .map(|c| SlabCacheEvent {
                cache: c.cache.clone(),
                allocated_bytes: c.alloc_bytes,
                freed_bytes: c.free_bytes,
                net_bytes: c.net_bytes(),
                allocated_objects: c.alloc_objects,
                freed_objects: c.free_objects,
            })
            .collect();
        let allocated_bytes = s.caches.iter().map(|c| c.alloc_bytes).sum();
        let freed_bytes = s.caches.iter().map(|c| c.free_bytes).sum();
        Self {
            time: clock.wall(s.timestamp_ns),
            timestamp_ns: s.timestamp_ns,
            #[expect(clippy::cast_precision_loss, reason = "seconds for people")]
            interval_seconds: s.interval_ns as f64 / 1e9,
            memcg_id: s.memcg_id,
            cgroup: s.cgroup.clone(),
            container: s.container.clone(),
            allocated_bytes,
            freed_bytes,
            net_bytes: s.caches.iter().map(SlabCacheDelta::net_bytes).sum(),
            caches,
        }
    }
}

impl CgroupEvent {
    fn new(rec: &CgroupRecord, context: &Context, clock: HostClock) -> Self {
        let charged_bytes = (rec.flags & CGROUP_FLAG_CHARGED != 0)
            .then(|| rec.charged_pages.saturating_mul(clock.page_size));
        let action = match rec.action {
            CGROUP_MKDIR => "created",
            CGROUP_RMDIR => "removed",
            _ => "freed",
        };
        #[expect(clippy::cast_precision_loss, reason = "seconds for people")]
        let dying_seconds = context
            .removed_ns
            .map(|removed| rec.header.timestamp_ns.saturating_sub(removed) as f64 / 1e9);
        Self {
            time: clock.wall(rec.header.timestamp_ns),
            timestamp_ns: rec.header.timestamp_ns,
            action,
            memcg_id: rec.memcg_id,
            cgroup: context.cgroup.clone(),
            container: context.container.clone(),
            dying: rec.action == CGROUP_RMDIR && charged_bytes.is_some_and(|b| b > 0),
            charged_bytes,
            dying_seconds,
        }
    }
}

/// A NUL-terminated kernel string (`comm`, cgroup path), not necessarily UTF-8.
#[must_use]
pub fn c_str(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use memtrace_common::{EventHeader, EventKind};

    use super::*;

    const CLOCK: HostClock = HostClock {
        boot_time_wall_ns: 1_795_794_421_000_000_000,
        page_size: 4096,
    };

    #[test]
    fn json_has_a_type_tag_and_bytes() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"memhog");
        let observed = Observed::Kernel {
            record: Record::OomKill(OomKillRecord {
                header: EventHeader {
                    kind: EventKind::OomKill as u32,
                    cpu: 0,
                    timestamp_ns: 1_000,
                },
                memcg_id: 42,
                pid: 7,
                tgid: 7,
                anon_rss_pages: 2,
                file_rss_pages: 0,
                shmem_rss_pages: 0,
                flags: OOM_FLAG_MEMCG | OOM_FLAG_RSS | OOM_FLAG_TASK,
                comm,
                ..OomKillRecord::default()
            }),
            context: Context {
                cgroup: Some("/x".into()),
                memcg_limit_bytes: Some(64 << 20),
                oom: Some(OomContext {
                    constraint: Some("CONSTRAINT_MEMCG".into()),
                    limit_cgroup: Some("/".into()),
                    limit_container: None,
                    memory: None,
                    memory_source: None,
                    task: None,
                }),
                ..Context::default()
            },
        };
        let json = serde_json::to_value(Event::new(&observed, CLOCK)).expect("json");
        assert_eq!(json["type"], "oom_kill");
        assert_eq!(json["comm"], "memhog");
        assert_eq!(json["cgroup"], "/x");
        assert_eq!(json["anon_rss_bytes"], 8192);
        assert_eq!(json["time"], "2026-11-27T15:47:01.000001Z");
        assert_eq!(json["limit_cgroup"], "/");
        assert!(json["memcg_usage_bytes"].is_null());
    }

    #[test]
    fn cgroup_release_says_how_long_it_was_dying() {
        let rec = CgroupRecord {
            header: EventHeader {
                kind: EventKind::Cgroup as u32,
                cpu: 0,
                timestamp_ns: 3_500_000_000,
            },
            memcg_id: 9,
            action: memtrace_common::event::CGROUP_RELEASE,
            ..CgroupRecord::default()
        };
        let context = Context {
            cgroup: Some("/gone".into()),
            removed_ns: Some(1_000_000_000),
            ..Context::default()
        };
        let Event::Cgroup(e) = Event::new(
            &Observed::Kernel {
                record: Record::Cgroup(rec),
                context,
            },
            CLOCK,
        ) else {
            panic!("not a cgroup event")
        };
        assert_eq!(e.action, "freed");
        assert_eq!(e.dying_seconds, Some(2.5));
        assert!(!e.dying);
    }

    #[test]
    fn c_str_stops_at_nul_and_tolerates_bad_utf8() {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(c_str(&comm), "a\u{fffd}b");
        assert_eq!(c_str(&[b'x'; 16]), "x".repeat(16));
    }
}
