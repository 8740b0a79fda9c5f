//! Capability detection, BTF offsets, loading and attaching the programs.

pub mod aggregate;
mod aya_btf;
mod bpf_sys;
pub mod btf;
mod btf_index;
mod cache_slots;
pub mod capability;
mod deferred_maps;
pub mod derived;
mod direct;
mod early_maps;
pub mod filter;
pub mod floor;
pub mod kallsyms;
mod map_batch;
pub mod memory_map;
pub mod plan;
pub mod point;
mod preload;
pub mod privileges;
pub mod support;

use std::{io, thread::JoinHandle, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
};
use memtrace_common::{
    IgnoredCallers, LostKind,
    names::{
        AGG_ACTIVE_MAP, CACHE_FILE_MAPS, CACHE_MEMCG_MAPS, CACHE_MEMCG_SPILL_MAPS, CACHE_NAMES_MAP,
        CACHE_SLOTS_MAP, CHARGE_MAPS, CHARGE_SPILL_MAPS, EVENTS_MAP, FILE_PATHS_MAP,
        FILTER_ENABLED_GLOBAL, FILTER_MAP, IGNORED_CALLERS_MAP, INODE_IDS_MAP, LOST_MAP,
        MEMCG_IDS_MAP, MEMMAP_TGID_GLOBAL, OFFSETS_GLOBAL, SLAB_MAPS, SLAB_SPILL_MAPS,
    },
};

use crate::startup::{self, Timeline, timed};

use self::aya_btf::AyaBtf;
pub use self::{
    aggregate::{Aggregates, CacheDrain, Drain, MapSizes, SlabCache},
    btf::{BtfError, KernelBtf},
    derived::Sources,
    filter::KernelFilter,
    point::{ProbePoint, Strategy},
};

/// The compiled programs, built by `build.rs` (aya-build) for the BPF target.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Privilege(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Unsupported(#[from] support::Unsupported),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("loading memtrace's eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF object has no {0}: memtrace was built wrong")]
    Missing(&'static str),
    /// The kernel refused a program; a verifier's full log goes to the debug log.
    #[error("{what}: {reason}")]
    Program { what: String, reason: String },
    #[error("no way to attach {}: {}", .0.point, describe_attempts(&.0.attempts))]
    NoStrategy(plan::PointOutcome),
    #[error("this kernel refused every probe point (`memtrace probes` shows why)")]
    NothingAttached,
    #[error("starting the eBPF log forwarder: {0}")]
    Logger(#[source] aya_log::Error),
    #[error("{what}: {source}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    /// A system call memtrace makes itself (batch map reads) or a file it reads failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// One probe point and the strategy that attached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedPoint {
    pub point: ProbePoint,
    pub strategy: Strategy,
    /// Which of the strategy's candidates ([`plan::candidate`]): 1 where the kernel has the
    /// function under its older name (`try_charge` on 5.10).
    pub variant: usize,
}

impl std::fmt::Display for AttachedPoint {
    /// `oom_kill=raw_tp/mark_victim`: for people (the start-up line) and trace file headers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.point, self.strategy)?;
        if let Some(c) = plan::candidate(self.point, self.strategy, self.variant) {
            write!(f, "/{}", c.attach.targets())?;
        }
        Ok(())
    }
}

/// One line for users; the verifier's log (many lines) goes to the debug log.
fn program_error(what: String, source: &aya::programs::ProgramError) -> ProbeError {
    log::debug!("{what}: {source:?}");
    let mut reason = source.to_string();
    let mut cause = std::error::Error::source(source);
    while let Some(e) = cause {
        reason = format!("{reason}: {e}");
        cause = e.source();
    }
    if let Some(cut) = reason.find(". Verifier output") {
        reason.truncate(cut);
        reason.push_str(" (RUST_LOG=debug shows the verifier's log)");
    }
    ProbeError::Program { what, reason }
}

/// How to load the programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachOptions {
    /// Size of the ring buffer for one-by-one events: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// (point, strategy) pairs from `--probe-strategy`.
    pub forced: Vec<(ProbePoint, Strategy)>,
    /// Only these points (`--events`); `None`: all.
    pub points: Option<Vec<ProbePoint>>,
    /// Hot paths count only the memcgs put in the [`KernelFilter`].
    pub kernel_filter: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            forced: Vec::new(),
            points: None,
            kernel_filter: false,
        }
    }
}

/// Threads that create the costliest maps beside BTF and the object's parse
/// ([`early_maps`]).
const EARLY_MAP_THREADS: usize = 4;

/// Room for thousands of OOM, reclaim and cgroup events between two reads: 3 449 cgroup
/// records (304 bytes each with the ring's header, most of it the path), 16 384 reclaim
/// episodes. 256 KiB held 862 cgroup records, and lost 138 of a thousand containers churned
/// while the reader waited for a CPU on a loaded 2-core machine (tests/metrics.rs); the
/// kernel charges the buffer to memtrace's memcg, and it is mapped, so it costs up to 1 MiB.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 1024 * 1024;

/// Parses a `--ring-buffer-size` value: the kernel wants a power of two of at least a page.
///
/// # Errors
///
/// A message saying what is wrong with the value.
pub fn parse_ring_buffer_size(value: &str) -> Result<u32, String> {
    let bytes: u32 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of bytes"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "{bytes} is not a power of two of at least 4096 (e.g. 4096, 262144, 1048576)"
        ));
    }
    Ok(bytes)
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    /// Owns the programs and their links.
    _ebpf: Ebpf,
    /// Forwards the programs' `aya_log_ebpf` messages to `log`. Must outlive the programs:
    /// dropping it closes its map.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ring: Option<RingBuf<MapData>>,
    aggregates: Option<Aggregates>,
    kernel_filter: Option<KernelFilter>,
    lost: PerCpuArray<MapData, u64>,
    pub attached: Vec<AttachedPoint>,
    /// Per point: every strategy tried, and why the refused ones were refused.
    pub outcomes: Vec<plan::PointOutcome>,
    /// `enum oom_constraint` names by value, from BTF.
    pub oom_constraints: Vec<(u32, String)>,
}

impl Probes {
    /// Checks privileges, resolves offsets from BTF, loads the object and attaches every probe
    /// point.
    ///
    /// # Errors
    ///
    /// Not root, no BTF, a member missing from BTF, or a program the kernel refuses.
    pub fn attach(options: &AttachOptions, timeline: &mut Timeline) -> Result<Self, ProbeError> {
        privileges::require_root()?;
        support::check()?;
        privileges::raise_memlock();
        timeline.phase("kernel checks");
        let early_maps = early_maps::EarlyMaps::start(
            early_maps::specs(aggregate::entries_from_env(), options.kernel_filter),
            EARLY_MAP_THREADS,
        );
        let mut callers = CallersReader::start(may_attach(options, ProbePoint::Slab));
        let kernel_btf = KernelBtf::from_sys()?;
        timeline.phase("btf open");
        // Parsed beside the rest, and only where a strategy that needs it may be tried and the
        // kernel loads fentry programs.
        let aya_btf = if may_try_btf_traced(options) {
            AyaBtf::in_background(&kernel_btf)
        } else {
            AyaBtf::default()
        };
        let mut offsets = kernel_btf.kernel_offsets()?;
        let oom_constraints = kernel_btf.enum_names("oom_constraint")?;
        timeline.phase("btf offsets");
        let object = direct::object(EBPF_OBJECT, &kernel_btf, &mut offsets);
        log::debug!("kernel offsets: {offsets:?}");
        timeline.phase("in-place reads tried");
        let (tgid, filter_enabled) = (std::process::id(), u32::from(options.kernel_filter));
        let mut loader = EbpfLoader::new();
        loader
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(MEMMAP_TGID_GLOBAL, &tgid, true)
            .override_global(FILTER_ENABLED_GLOBAL, &filter_enabled, true)
            .map_max_entries(EVENTS_MAP, options.ring_buffer_bytes);
        if !options.kernel_filter {
            // Never read without a filter: a hash map's buckets cost creation time (a
            // millisecond for the 65 536 of a full one) even where no entry is ever made.
            loader.map_max_entries(FILTER_MAP, 1);
        }
        deferred_maps::shrink(&mut loader);
        early_maps.shrink(&mut loader);
        let mut ebpf = loader.load(object.bytes()).map_err(ProbeError::Load)?;
        drop(object);
        early_maps.install(&ebpf)?;
        timeline.phase("object load (maps)");
        preload::preload(&mut ebpf, options, &offsets, &aya_btf);
        timeline.phase("preload (verifier, on every CPU)");

        let mut beside = Beside {
            aya_btf,
            callers: &mut callers,
        };
        let attached_points = attach_points(&mut ebpf, options, &offsets, &mut beside, timeline);
        beside.aya_btf.drop_beside();
        let (attached, outcomes) = attached_points?;
        if attached.is_empty() {
            return Err(ProbeError::NothingAttached);
        }

        let ring: RingBuf<MapData> = typed_map(&mut ebpf, EVENTS_MAP)?;
        let lost: PerCpuArray<MapData, u64> = typed_map(&mut ebpf, LOST_MAP)?;
        let aggregates = Aggregates {
            active: typed_map(&mut ebpf, AGG_ACTIVE_MAP)?,
            half: 0,
            cache_memcg: typed_map_pair(&mut ebpf, CACHE_MEMCG_MAPS)?,
            cache_memcg_spill: typed_map_pair(&mut ebpf, CACHE_MEMCG_SPILL_MAPS)?,
            cache_file: typed_map_pair(&mut ebpf, CACHE_FILE_MAPS)?,
            cache_slots: cache_slots::CacheSlots(typed_map(&mut ebpf, CACHE_SLOTS_MAP)?),
            inode_ids: typed_map(&mut ebpf, INODE_IDS_MAP)?,
            file_paths: typed_map(&mut ebpf, FILE_PATHS_MAP)?,
            memcg_ids: typed_map(&mut ebpf, MEMCG_IDS_MAP)?,
            charge: typed_map_pair(&mut ebpf, CHARGE_MAPS)?,
            charge_spill: typed_map_pair(&mut ebpf, CHARGE_SPILL_MAPS)?,
            slab: typed_map_pair(&mut ebpf, SLAB_MAPS)?,
            slab_spill: typed_map_pair(&mut ebpf, SLAB_SPILL_MAPS)?,
            cache_names: typed_map(&mut ebpf, CACHE_NAMES_MAP)?,
            refaults: attached.iter().any(|a| {
                a.point == ProbePoint::PageCache
                    && plan::counts_refaults(a.point, a.strategy, a.variant)
            }),
            memcg_pointers: aggregate::MemcgPointers::default(),
            deleted_files: std::collections::HashMap::new(),
            unkeyed: Vec::new(),
            reader: aggregate::DrainReader::new()?,
            idle: aggregate::IdleKeys::default(),
        };
        let kernel_filter = KernelFilter::new(typed_map(&mut ebpf, FILTER_MAP)?);
        let logger = aya_log::EbpfLogger::init(&mut ebpf).map_err(ProbeError::Logger)?;
        timeline.phase("maps taken, log forwarder");
        Ok(Self {
            _ebpf: ebpf,
            logger: Some(logger),
            ring: Some(ring),
            aggregates: Some(aggregates),
            kernel_filter: options.kernel_filter.then_some(kernel_filter),
            lost,
            attached,
            outcomes,
            oom_constraints,
        })
    }

    /// The ring buffer, handed once to the pipeline's reader.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The kernel-side aggregates, handed once to the pipeline, which drains them.
    pub fn take_aggregates(&mut self) -> Option<Aggregates> {
        self.aggregates.take()
    }

    /// The kernel-side filter, when one was asked for, handed once to whoever keeps it current.
    pub fn take_kernel_filter(&mut self) -> Option<KernelFilter> {
        self.kernel_filter.take()
    }

    /// The log forwarder, handed once to the pipeline, which flushes it when it has messages.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Events the kernel side could not report, per kind, summed over CPUs.
    ///
    /// # Errors
    ///
    /// When the map cannot be read.
    pub fn lost(&self) -> Result<Vec<(LostKind, u64)>, ProbeError> {
        LostKind::ALL
            .iter()
            .map(|&kind| {
                let per_cpu =
                    self.lost
                        .get(&(kind as u32), 0)
                        .map_err(|source| ProbeError::Map {
                            what: LOST_MAP.into(),
                            source,
                        })?;
                Ok((kind, per_cpu.iter().sum()))
            })
            .collect()
    }
}

/// Attaches every point asked for, each with the best strategy the kernel allows.
fn attach_points(
    ebpf: &mut Ebpf,
    options: &AttachOptions,
    offsets: &memtrace_common::KernelOffsets,
    beside: &mut Beside<'_>,
    timeline: &mut Timeline,
) -> Result<(Vec<AttachedPoint>, Vec<plan::PointOutcome>), ProbeError> {
    let mut attached: Vec<AttachedPoint> = Vec::new();
    let mut outcomes = Vec::new();
    for &point in ProbePoint::ALL {
        if options
            .points
            .as_ref()
            .is_some_and(|wanted| !wanted.contains(&point))
        {
            continue;
        }
        let forced = options
            .forced
            .iter()
            .find(|(p, _)| *p == point)
            .map(|&(_, s)| s);
        let attached_points: Vec<ProbePoint> = attached.iter().map(|a| a.point).collect();
        if point == ProbePoint::Slab {
            beside.callers.install(ebpf)?;
        }
        let outcome = plan::attach_point(
            ebpf,
            point,
            forced,
            &mut beside.aya_btf,
            offsets,
            &attached_points,
        );
        match outcome.chosen {
            Some(strategy) => attached.push(AttachedPoint {
                point,
                strategy,
                variant: outcome.variant,
            }),
            // Asked for by name (--events or --probe-strategy): its absence is an error.
            None if options.points.is_some() || forced.is_some() => {
                return Err(ProbeError::NoStrategy(outcome));
            }
            // Part of "everything": run without it, and say so.
            None => eprintln!(
                "memtrace: {}",
                ProbeError::NoStrategy(outcome.clone())
                    .to_string()
                    .replacen("no way to attach", "running without probe point", 1)
            ),
        }
        outcomes.push(outcome);
        timeline.phase(&format!("attach {point}"));
    }
    Ok((attached, outcomes))
}

/// What start-up prepares on threads of its own, beside loading, for the points that need it.
struct Beside<'a> {
    aya_btf: AyaBtf,
    callers: &'a mut CallersReader,
}

/// The kallsyms reader, started with start-up and waited for only before the slab programs
/// attach, the only ones that need what it finds: kallsyms costs tens of milliseconds of kernel
/// time, which this way overlaps BTF, loading and the other points.
struct CallersReader(Option<JoinHandle<(io::Result<IgnoredCallers>, Duration)>>);

impl CallersReader {
    fn start(wanted: bool) -> Self {
        Self(wanted.then(|| std::thread::spawn(|| timed(kallsyms::bpf_memalloc_callers))))
    }

    /// Waits for the reader and writes what it found to `IGNORED_CALLERS`, once.
    fn install(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        let Some(reader) = self.0.take() else {
            return Ok(());
        };
        let (joined, waited) = timed(|| reader.join());
        let (callers, took) = joined.map_err(|_| ProbeError::Missing("kallsyms reader"))?;
        startup::beside("kallsyms", took);
        startup::within("kallsyms wait", waited, "attach slab");
        let ignored_callers = callers.unwrap_or_else(|e| {
            log::warn!("cannot read /proc/kallsyms ({e}): slab counts may include BPF map memory");
            IgnoredCallers::default()
        });
        log::debug!("slab ignores allocations from {ignored_callers:?}");
        let mut map: Array<_, IgnoredCallers> = typed_map_mut(ebpf, IGNORED_CALLERS_MAP)?;
        map.set(0, &ignored_callers, 0)
            .map_err(|source| ProbeError::Map {
                what: IGNORED_CALLERS_MAP.into(),
                source,
            })
    }
}

/// Whether `point` is asked for (`--events`).
fn may_attach(options: &AttachOptions, point: ProbePoint) -> bool {
    options.points.as_ref().is_none_or(|p| p.contains(&point))
}

/// Whether a strategy that loads against aya's BTF (fentry, fexit) may be tried for a point
/// asked for.
fn may_try_btf_traced(options: &AttachOptions) -> bool {
    ProbePoint::ALL
        .iter()
        .filter(|&&point| may_attach(options, point))
        .any(|&point| {
            let forced = options.forced.iter().find(|(p, _)| *p == point);
            plan::strategies(point).iter().any(|c| {
                matches!(
                    c.attach,
                    plan::Attach::Fentry { .. } | plan::Attach::Fexit { .. }
                ) && forced.is_none_or(|&(_, s)| s == c.strategy)
            })
        })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing(name))
}

/// Takes a map out of the object as its typed aya wrapper.
fn typed_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    M::try_from(take_map(ebpf, name)?).map_err(|source| ProbeError::Map {
        what: name.into(),
        source,
    })
}

/// Takes both halves of a double-buffered map out of the object.
fn typed_map_pair<M>(ebpf: &mut Ebpf, names: [&'static str; 2]) -> Result<[M; 2], ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    Ok([typed_map(ebpf, names[0])?, typed_map(ebpf, names[1])?])
}

/// Borrows a map of the object as its typed aya wrapper, leaving it there (for maps read or
/// written before the programs that use them are loaded).
fn typed_map_mut<'a, M>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(ProbeError::Missing(name))?;
    M::try_from(map).map_err(|source| ProbeError::Map {
        what: name.into(),
        source,
    })
}

/// `fentry/f: refused (why); kprobe/f: refused (why)`.
fn describe_attempts(attempts: &[plan::Attempt]) -> String {
    attempts
        .iter()
        .map(|a| match &a.result {
            Ok(()) => format!("{a}: attached"),
            Err(why) => format!("{a}: {why}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
