//! The one event model: what the pipeline produces and every output consumes — the live stream
//! (text, JSON Lines), trace files (written and replayed), `report`, the Perfetto export, and
//! the outputs that come next (metrics, `top`).
//!
//! An [`Event`] is *when* (`CLOCK_BOOTTIME` ns), *which memcg* ([`Memcg`]: id, cgroup path and
//! container as they were at the time) and *what* happened ([`What`]). Values are in base
//! units (bytes, nanoseconds) and typed (enums, not strings); wall-clock time and human units
//! are made only where text is written (`sinks`, `report`, `export`).
//!
//! Adding an event kind: its kernel record in `memtrace-common` if the kernel writes it, its
//! program, a [`What`] variant with its payload here (plus its name in [`What::type_name`]),
//! and its line in `sinks::text`. The trace format stores `What` with postcard as it is.

pub(crate) mod compact;
mod counters;
mod file;
mod kernel;
mod lost;
mod sample;

use serde::{Deserialize, Serialize};

pub use counters::{Change, Counter, CounterChanges, CounterSource, CounterValues};
pub use file::{FileName, Named};
pub use kernel::{Context, OomContext};
pub use lost::{LossCause, LossTally, Lost};
pub use sample::Sample;
pub(crate) use sample::{before_version_5, with_layout_before_version_5};

use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    named::snake_case_enum,
    probes::{ProbePoint, Strategy},
};

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, or when its interval ended: nanoseconds since boot, suspend included
    /// (`CLOCK_BOOTTIME`, as the kernel stamps its records).
    pub timestamp_ns: u64,
    /// The memcg it is about.
    pub memcg: Memcg,
    pub what: What,
}

/// A memory cgroup as it was when the event happened: the cgroup may be gone later, so its name
/// and owner travel with the event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memcg {
    /// `kernfs_node.id`: the cgroup directory's inode number; `None` when the kernel did not
    /// say (a `stats` sample is read by path).
    #[serde(rename = "memcg_id")]
    pub id: Option<u64>,
    /// Path in the memory hierarchy, `/` for the root memcg.
    pub cgroup: Option<String>,
    /// Container, pod or service the cgroup belongs to.
    pub container: Option<ContainerIdentity>,
}

/// Declares [`What`] once: each variant with its payload and its [`EventType`]. What follows
/// from that list: [`What::event_type`], the trace encoding (postcard, by variant, as the
/// derived `Deserialize` reads it back) and the JSON shape (the payload's own fields, flat
/// beside the `type` that names the variant), so no output needs an arm per variant.
macro_rules! what {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) => $event_type:ident, )+) => {
        /// What happened. Events that userspace infers on kernels that refuse the direct probe
        /// are their own variants ([`What::ChargeFromPageCache`],
        /// [`What::ChargeFailFromReclaim`]); the kernel's records carry only what the kernel
        /// writes.
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        #[expect(
            clippy::large_enum_variant,
            reason = "built, written and dropped one at a time; never stored in bulk"
        )]
        pub enum What {
            $( $(#[$doc])* $variant($payload), )+
        }

        impl What {
            /// A derived event has the type of what it stands for (a charge failure inferred
            /// from reclaim is a `charge_fail`), and [`What::derived_from`] says so.
            #[must_use]
            pub const fn event_type(&self) -> EventType {
                match self {
                    $( Self::$variant(_) => EventType::$event_type, )+
                }
            }
        }

        impl Serialize for What {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                /// The variants' positions, as `Deserialize` numbers them.
                enum Index {
                    $( $variant, )+
                }
                match self {
                    $(
                        Self::$variant(payload) => {
                            if serializer.is_human_readable() {
                                payload.serialize(serializer)
                            } else {
                                serializer.serialize_newtype_variant(
                                    "What",
                                    Index::$variant as u32,
                                    stringify!($variant),
                                    payload,
                                )
                            }
                        }
                    )+
                }
            }
        }
    };
}

what! {
    OomKill(OomKill) => OomKill,
    Cgroup(CgroupChange) => Cgroup,
    /// A periodic sample of the memcg's memory and counters, from cgroupfs.
    Stats(Sample) => Stats,
    Cache(PageCache) => Cache,
    Reclaim(Reclaim) => Reclaim,
    Charge(Charges) => Charge,
    ChargeFromPageCache(ChargesFromPageCache) => Charge,
    ChargeFail(ChargeFail) => ChargeFail,
    ChargeFailFromReclaim(ChargeFailFromReclaim) => ChargeFail,
    Slab(Slab) => Slab,
    /// A memcg's own kernel counters that changed.
    Counters(CounterChanges) => Counters,
    /// Events counted instead of delivered (a full ring buffer or map, a blocked output).
    Lost(Lost) => Lost,
}

snake_case_enum! {
    /// An event's `"type"`: what users select with `--type` and see in every output. Which
    /// probe point produces which is [`ProbePoint::events`].
    pub enum EventType {
        OomKill,
        Cgroup,
        Stats,
        Cache,
        Reclaim,
        Charge,
        ChargeFail,
        Slab,
        Counters,
        Lost,
    }
}

impl What {
    /// Every `"type"` name, for `--type`; a unit test checks it against [`EventType::ALL`].
    pub const TYPES: &[&str] = &[
        "oom_kill",
        "cgroup",
        "stats",
        "cache",
        "reclaim",
        "charge",
        "charge_fail",
        "slab",
        "counters",
        "lost",
    ];

    /// The `"type"` users see.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.event_type().name()
    }

    /// Fills in what trace files do not store because it follows from other fields (growth).
    pub fn restore_derived(&mut self) {
        match self {
            Self::Cache(c) => {
                c.net_bytes = net(c.added_bytes, c.removed_bytes);
                for f in &mut c.top_files {
                    f.net_bytes = net(f.added_bytes, f.removed_bytes);
                }
            }
            Self::Slab(s) => {
                s.net_bytes = net(s.allocated_bytes, s.freed_bytes);
                for c in &mut s.caches {
                    c.net_bytes = net(c.allocated_bytes, c.freed_bytes);
                }
            }
            _ => {}
        }
    }

    /// For an event userspace inferred, the probe point it was inferred from.
    #[must_use]
    pub const fn derived_from(&self) -> Option<ProbePoint> {
        match self {
            Self::ChargeFromPageCache(_) => Some(ProbePoint::PageCache),
            Self::ChargeFailFromReclaim(_) => Some(ProbePoint::Reclaim),
            _ => None,
        }
    }
}

impl Event {
    /// For an OOM kill, the cgroup whose limit fired and its owner (the pod, typically): a
    /// filter on the pod wants its containers' kills.
    #[must_use]
    pub fn limit_cgroup(&self) -> Option<(Option<&str>, Option<&ContainerIdentity>)> {
        match &self.what {
            What::OomKill(k) => Some((k.limit_cgroup.as_deref(), k.limit_container.as_ref())),
            _ => None,
        }
    }
}

/// A task the OOM killer chose.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKill {
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    /// The victim memcg's limit and usage, read from cgroupfs when the event arrived.
    #[serde(with = "compact::option")]
    pub memcg_limit_bytes: Option<u64>,
    #[serde(with = "compact::option")]
    pub memcg_usage_bytes: Option<u64>,
    /// The victim's rss as the kernel counts it (`get_mm_counter()`).
    #[serde(with = "compact::option")]
    pub anon_rss_bytes: Option<u64>,
    #[serde(with = "compact::option")]
    pub file_rss_bytes: Option<u64>,
    #[serde(with = "compact::option")]
    pub shmem_rss_bytes: Option<u64>,
    pub constraint: Option<OomConstraint>,
    /// Which probe saw the kill.
    pub probe: Option<OomProbe>,
    /// The memcg whose limit fired (the victim's or an ancestor's, e.g. the pod); `None` for a
    /// global OOM or when the kernel's report was not seen (it is rate-limited).
    pub limit_cgroup: Option<String>,
    /// Who `limit_cgroup` belongs to (typically the pod).
    pub limit_container: Option<ContainerIdentity>,
    /// Memory of `limit_cgroup` (or, in a global OOM, of the victim's memcg) at the kill.
    pub memory: Option<MemoryStats>,
    pub memory_source: Option<MemorySource>,
    /// With the kernel's `oom_control` (fentry/kprobe): the memory the OOM killer weighed the
    /// victims against (`totalpages`: the limit that fired, or RAM and swap in a global OOM).
    #[serde(with = "compact::option")]
    pub oom_total_bytes: Option<u64>,
}

/// The kernel's `enum oom_constraint`: what the OOM killer was constrained by. Stored and
/// shown as the kernel's name, so a name a newer kernel adds survives a round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomConstraint {
    /// A global OOM: the whole machine ran out.
    None,
    Cpuset,
    MemoryPolicy,
    /// A memcg's limit.
    Memcg,
    /// A name a newer kernel added.
    Other(String),
}

impl Serialize for OomConstraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for OomConstraint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| Self::from_name(&name))
    }
}

impl OomConstraint {
    /// From the kernel's name (`CONSTRAINT_MEMCG`), as BTF and the `oom-kill:` line spell it.
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        match name {
            "CONSTRAINT_NONE" => Self::None,
            "CONSTRAINT_CPUSET" => Self::Cpuset,
            "CONSTRAINT_MEMORY_POLICY" => Self::MemoryPolicy,
            "CONSTRAINT_MEMCG" => Self::Memcg,
            other => Self::Other(other.to_owned()),
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::None => "CONSTRAINT_NONE",
            Self::Cpuset => "CONSTRAINT_CPUSET",
            Self::MemoryPolicy => "CONSTRAINT_MEMORY_POLICY",
            Self::Memcg => "CONSTRAINT_MEMCG",
            Self::Other(name) => name,
        }
    }
}

/// The program that saw an OOM kill: one of the `oom_kill` point's strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OomProbe {
    /// fentry on `oom_kill_process` (with the kernel's `oom_control`).
    Fentry,
    /// kprobe on `oom_kill_process` (with the kernel's `oom_control`).
    Kprobe,
    /// The raw tracepoint `oom:mark_victim`.
    RawTp,
}

impl OomProbe {
    #[must_use]
    pub const fn strategy(self) -> Strategy {
        match self {
            Self::Fentry => Strategy::Fentry,
            Self::Kprobe => Strategy::Kprobe,
            Self::RawTp => Strategy::RawTp,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        self.strategy().name()
    }
}

/// Where an OOM kill's `memory` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// The kernel's own OOM report, printed at the kill.
    KernelOomReport,
    /// cgroupfs read after the kill (the victim's memory may be freed already).
    CgroupfsAfterKill,
    /// The last `stats` sample before the kill (`report`, when the kernel's report was not
    /// seen).
    SampleBeforeKill,
}

impl MemorySource {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::KernelOomReport => "kernel_oom_report",
            Self::CgroupfsAfterKill => "cgroupfs_after_kill",
            Self::SampleBeforeKill => "sample_before_kill",
        }
    }
}

/// A memory cgroup's lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupChange {
    pub action: CgroupAction,
    /// Removed while memory is still charged to it: the memcg stays allocated (and holds a memcg
    /// id) until that memory is reclaimed.
    pub dying: bool,
    /// At removal: memory still charged to it, what keeps it alive.
    #[serde(with = "compact::option")]
    pub charged_bytes: Option<u64>,
    /// At release: how long it was dying, when memtrace saw the removal.
    pub dying_ns: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupAction {
    /// `cgroup_mkdir`.
    Created,
    /// `cgroup_rmdir`: offline; dying while something pins it.
    Removed,
    /// `cgroup_release`: nothing pins it any more.
    Freed,
}

impl CgroupAction {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Removed => "removed",
            Self::Freed => "freed",
        }
    }
}

/// Page cache charged to a memcg and removed from it during an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCache {
    pub interval_ns: u64,
    #[serde(with = "compact")]
    pub added_bytes: u64,
    #[serde(with = "compact")]
    pub removed_bytes: u64,
    /// Growth over the interval (negative: the cache shrank).
    #[serde(with = "compact::derived")]
    pub net_bytes: i64,
    /// The files that changed most (largest growth or shrinkage first), then, when some were
    /// left out, an "other files" row ([`FileName::other`]) with the rest: the rows add up to
    /// `added_bytes` and `removed_bytes`.
    pub top_files: Vec<FileCache>,
    /// Of `added_bytes`, what was read again soon after reclaim evicted it (the kernel's
    /// `workingset_refault_file`): thrashing. `None` where the probe strategy does not count
    /// refaults, and in trace files before version 5.
    #[serde(default, with = "compact::since_v5")]
    pub refault_bytes: Option<u64>,
}

/// One file's page cache in a memcg during an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCache {
    pub device: Device,
    pub inode: u64,
    #[serde(with = "compact")]
    pub added_bytes: u64,
    #[serde(with = "compact")]
    pub removed_bytes: u64,
    #[serde(with = "compact::derived")]
    pub net_bytes: i64,
    /// Its path and state; trace files store it once per file, apart from events.
    #[serde(
        default,
        with = "compact::apart",
        skip_serializing_if = "FileName::is_unknown"
    )]
    pub name: FileName,
    /// Of `added_bytes`, the refaults ([`PageCache::refault_bytes`]).
    #[serde(default, with = "compact::since_v5")]
    pub refault_bytes: Option<u64>,
}

impl PageCache {
    #[must_use]
    pub fn new(interval_ns: u64, added_bytes: u64, removed_bytes: u64) -> Self {
        Self {
            interval_ns,
            added_bytes,
            removed_bytes,
            net_bytes: net(added_bytes, removed_bytes),
            top_files: Vec::new(),
            refault_bytes: None,
        }
    }
}

impl FileCache {
    #[must_use]
    pub fn new(device: Device, inode: u64, added_bytes: u64, removed_bytes: u64) -> Self {
        Self {
            device,
            inode,
            added_bytes,
            removed_bytes,
            net_bytes: net(added_bytes, removed_bytes),
            name: FileName::default(),
            refault_bytes: None,
        }
    }

    /// The same, with its name.
    #[must_use]
    pub fn named(mut self, name: FileName) -> Self {
        self.name = name;
        self
    }

    /// What every output shows for the file ([`Named`]).
    #[must_use]
    pub fn name(&self) -> Named<'_> {
        self.name.display(self.device, self.inode)
    }
}

/// Refaults summed over intervals: known once any interval counted them (`None` is "not
/// counted", not zero).
#[must_use]
pub fn add_known(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        _ => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

/// Growth: what came minus what went, saturating.
#[must_use]
pub fn net(added: u64, removed: u64) -> i64 {
    i64::try_from(added)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(removed).unwrap_or(i64::MAX))
}

/// A device number, `major:minor` as `ls -l /dev` and `/proc/self/mountinfo` show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Device {
    pub major: u32,
    pub minor: u32,
}

impl Device {
    /// From the kernel's encoding, `major << 20 | minor` (`s_dev`).
    #[must_use]
    pub const fn from_kernel(dev: u32) -> Self {
        Self {
            major: dev >> 20,
            minor: dev & 0xf_ffff,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Device {
    type Err = &'static str;

    /// `MAJOR:MINOR`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (major, minor) = s
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or("a device is MAJOR:MINOR")?;
        Ok(Self { major, minor })
    }
}

/// `"254:0"` for people and JSON; two integers in trace files.
impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            (self.major, self.minor).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            String::deserialize(deserializer)?
                .parse()
                .map_err(serde::de::Error::custom)
        } else {
            let (major, minor) = <(u32, u32)>::deserialize(deserializer)?;
            Ok(Self { major, minor })
        }
    }
}

/// One memcg limit reclaim episode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaim {
    /// The reclaiming task; its memcg (the event's) is the one whose charge hit a limit (its own
    /// or an ancestor's).
    pub pid: u32,
    pub duration_ns: u64,
    #[serde(with = "compact")]
    pub reclaimed_bytes: u64,
    pub order: u32,
    pub gfp_flags: u64,
    /// Reclaimed nothing: the memory could not be freed (anon without swap, dirty or pinned
    /// pages), the road to an OOM kill.
    pub ineffective: bool,
}

/// Memory charged to a memcg during an interval, counted in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charges {
    pub interval_ns: u64,
    #[serde(with = "compact")]
    pub charged_bytes: u64,
    /// Charge calls (`None` unless counted at the charge function).
    pub charges: Option<u64>,
    pub source: ChargeSource,
}

/// What a kernel-counted `charge` interval counted, by the strategy the kernel allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeSource {
    /// Each charge at the kernel's charge function (fexit or kprobe).
    #[default]
    Charge,
    /// Anon and file pages added, from memcg stat updates (`memcg:mod_memcg_lruvec_state`).
    StatUpdates,
}

/// Derived: page cache added to a memcg during an interval, standing in for its charges on
/// kernels that allow neither fexit nor kprobes and have no memcg stat tracepoint (file pages
/// only; anon pages are not seen).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargesFromPageCache {
    pub interval_ns: u64,
    #[serde(with = "compact")]
    pub charged_bytes: u64,
}

/// A charge `try_charge_memcg()` could not make: it returned an error after reclaim and the OOM
/// killer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeFail {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub nr_pages: u32,
    pub gfp_flags: u64,
    /// The errno returned (12: `ENOMEM`).
    pub errno: i32,
    pub probe: ChargeProbe,
    /// The memcg's own count of failed charges when the event arrived (`memory.failcnt` plus
    /// `memory.memsw.failcnt` on v1, `max` in `memory.events` on v2).
    pub charge_failures: Option<u64>,
}

impl ChargeFail {
    /// The error by name: `ENOMEM` for 12, `errno 5` for others the kernel may add.
    #[must_use]
    pub fn error(&self) -> String {
        match self.errno {
            12 => "ENOMEM".to_owned(),
            4 => "EINTR".to_owned(),
            other => format!("errno {other}"),
        }
    }
}

/// The program that saw a charge fail: one of the `try_charge` point's strategies, both at
/// `try_charge_memcg`'s return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeProbe {
    /// Called `fentry` before it was named for what it is; JSON that says so still reads.
    #[serde(alias = "fentry")]
    Fexit,
    /// kprobe + kretprobe.
    Kprobe,
}

impl ChargeProbe {
    #[must_use]
    pub const fn strategy(self) -> Strategy {
        match self {
            Self::Fexit => Strategy::Fexit,
            Self::Kprobe => Strategy::Kprobe,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        self.strategy().name()
    }
}

/// Derived: a memcg limit reclaim episode as the charge failure that started it, on kernels that
/// allow neither fexit nor kprobes on `try_charge_memcg`: reclaim runs only after the page
/// counter refused a charge (`memory.failcnt` / `max` counts it). The pages asked for are not
/// known; what reclaim freed is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeFailFromReclaim {
    pub pid: u32,
    pub gfp_flags: u64,
    #[serde(with = "compact")]
    pub reclaimed_bytes: u64,
    pub reclaim_ns: u64,
    /// As [`ChargeFail::charge_failures`].
    pub charge_failures: Option<u64>,
}

/// Memcg-accounted slab memory of a memcg during an interval, per cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slab {
    pub interval_ns: u64,
    #[serde(with = "compact")]
    pub allocated_bytes: u64,
    #[serde(with = "compact")]
    pub freed_bytes: u64,
    #[serde(with = "compact::derived")]
    pub net_bytes: i64,
    /// Largest net growth first.
    pub caches: Vec<SlabCache>,
}

/// One slab cache's accounted objects allocated and freed in a memcg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabCache {
    /// `dentry`, `shmem_inode_cache`, `kmalloc-cg-512`, …
    pub cache: String,
    #[serde(with = "compact")]
    pub allocated_bytes: u64,
    #[serde(with = "compact")]
    pub freed_bytes: u64,
    #[serde(with = "compact::derived")]
    pub net_bytes: i64,
    pub allocated_objects: u64,
    pub freed_objects: u64,
}

impl Slab {
    /// Totals from the caches.
    #[must_use]
    pub fn new(interval_ns: u64, caches: Vec<SlabCache>) -> Self {
        let allocated_bytes = caches.iter().map(|c| c.allocated_bytes).sum();
        let freed_bytes = caches.iter().map(|c| c.freed_bytes).sum();
        Self {
            interval_ns,
            allocated_bytes,
            freed_bytes,
            net_bytes: net(allocated_bytes, freed_bytes),
            caches,
        }
    }
}

impl SlabCache {
    #[must_use]
    pub fn new(
        cache: String,
        (allocated_bytes, allocated_objects): (u64, u64),
        (freed_bytes, freed_objects): (u64, u64),
    ) -> Self {
        Self {
            cache,
            allocated_bytes,
            freed_bytes,
            net_bytes: net(allocated_bytes, freed_bytes),
            allocated_objects,
            freed_objects,
        }
    }
}

/// A NUL-terminated kernel string (`comm`, cgroup path), not necessarily UTF-8.
#[must_use]
pub fn c_str(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

/// How to turn kernel timestamps into wall time and pages into bytes, for the machine the
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
        crate::clock::format_wall(self.boot_time_wall_ns.saturating_add(timestamp_ns))
    }
}

/// Events the outputs' tests render.
#[cfg(test)]
pub(crate) mod samples {
    use super::{Event, HostClock, Memcg, OomConstraint, OomKill, OomProbe, What};

    pub(crate) const CLOCK: HostClock = HostClock {
        boot_time_wall_ns: 1_795_794_421_000_000_000,
        page_size: 4096,
    };

    /// `memhog`, pid 7, OOM-killed in `/x` at its 64 MiB limit, 1 µs after boot.
    pub(crate) fn oom_kill() -> Event {
        Event {
            timestamp_ns: 1_000,
            memcg: Memcg {
                id: Some(42),
                cgroup: Some("/x".into()),
                container: None,
            },
            what: What::OomKill(OomKill {
                pid: 7,
                tgid: Some(7),
                comm: Some("memhog".into()),
                memcg_limit_bytes: Some(64 << 20),
                anon_rss_bytes: Some(63 << 20),
                file_rss_bytes: Some(0),
                shmem_rss_bytes: Some(0),
                constraint: Some(OomConstraint::Memcg),
                probe: Some(OomProbe::RawTp),
                limit_cgroup: Some("/".into()),
                ..OomKill::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_is_listed() {
        let whats = [
            What::OomKill(OomKill::default()),
            What::Cgroup(CgroupChange {
                action: CgroupAction::Created,
                dying: false,
                charged_bytes: None,
                dying_ns: None,
            }),
            What::Stats(MemoryStats::default().into()),
            What::Cache(PageCache::new(1, 2, 3)),
            What::Charge(Charges {
                interval_ns: 1,
                charged_bytes: 1,
                charges: None,
                source: ChargeSource::StatUpdates,
            }),
            What::Slab(Slab::new(1, Vec::new())),
            What::Counters(CounterChanges {
                interval_ns: 1,
                source: CounterSource::Sampled,
                changed: Vec::new(),
            }),
            What::Lost(Lost {
                kind: EventType::Cgroup,
                count: 1,
                total: 1,
                cause: LossCause::RingBufferFull,
                advice: String::new(),
            }),
        ];
        for what in whats {
            assert!(What::TYPES.contains(&what.type_name()), "{what:?}");
        }
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names, What::TYPES);
        for &t in EventType::ALL {
            assert_eq!(EventType::from_name(t.name()), Some(t));
            assert_eq!(serde_json::to_value(t).expect("json"), t.name());
        }
    }

    #[test]
    fn probes_are_named_as_their_strategies() {
        for p in [OomProbe::Fentry, OomProbe::Kprobe, OomProbe::RawTp] {
            assert_eq!(serde_json::to_value(p).expect("json"), p.name());
        }
        for p in [ChargeProbe::Fexit, ChargeProbe::Kprobe] {
            assert_eq!(serde_json::to_value(p).expect("json"), p.name());
        }
        let old: ChargeProbe = serde_json::from_str("\"fentry\"").expect("old name");
        assert_eq!(old, ChargeProbe::Fexit);
    }

    #[test]
    fn constraints_keep_unknown_names() {
        assert_eq!(
            OomConstraint::from_name("CONSTRAINT_MEMCG"),
            OomConstraint::Memcg
        );
        assert_eq!(
            OomConstraint::from_name("CONSTRAINT_NEW").name(),
            "CONSTRAINT_NEW"
        );
        let json = serde_json::to_string(&OomConstraint::Memcg).expect("json");
        assert_eq!(json, "\"CONSTRAINT_MEMCG\"");
    }

    #[test]
    fn devices_are_major_minor_for_people_and_numbers_in_files() {
        let dev = Device::from_kernel(254 << 20);
        assert_eq!(serde_json::to_string(&dev).expect("json"), "\"254:0\"");
        let bytes = postcard::to_stdvec(&dev).expect("postcard");
        assert_eq!(postcard::from_bytes::<Device>(&bytes).expect("back"), dev);
    }

    #[test]
    fn c_str_stops_at_nul_and_tolerates_bad_utf8() {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(c_str(&comm), "a\u{fffd}b");
        assert_eq!(c_str(&[b'x'; 16]), "x".repeat(16));
    }
}
