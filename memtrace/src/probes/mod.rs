//! Capability detection, BTF offsets, loading and attaching the programs.

pub mod btf;
pub mod capability;
pub mod privileges;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use memtrace_common::{
    LostKind,
    names::{
        EVENTS_MAP, LOST_MAP, OFFSETS_GLOBAL, PROG_CGROUP_MKDIR, PROG_CGROUP_RELEASE,
        PROG_CGROUP_RMDIR, PROG_OOM_MARK_VICTIM,
    },
};

pub use self::btf::{BtfError, KernelBtf};

/// The compiled programs, built by `build.rs` (aya-build) for the BPF target.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Privilege(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("loading memtrace's eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF object has no {0}: memtrace was built wrong")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("starting the eBPF log forwarder: {0}")]
    Logger(#[source] aya_log::Error),
    #[error("{what}: {source}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
}

/// One probe point and how it was attached, for users (`memtrace probes`, the start-up line) and
/// for trace file headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedPoint {
    /// Probe point, in event-type words (`oom_kill`).
    pub point: &'static str,
    /// Strategy, e.g. `raw_tp/mark_victim`.
    pub strategy: &'static str,
}

impl std::fmt::Display for AttachedPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.point, self.strategy)
    }
}

/// A probe point attached through raw tracepoints.
struct RawTracepointPoint {
    point: &'static str,
    strategy: &'static str,
    /// (program, raw tracepoint)
    programs: &'static [(&'static str, &'static str)],
}

const RAW_TRACEPOINTS: [RawTracepointPoint; 2] = [
    RawTracepointPoint {
        point: "oom_kill",
        strategy: "raw_tp/mark_victim",
        programs: &[(PROG_OOM_MARK_VICTIM, "mark_victim")],
    },
    RawTracepointPoint {
        point: "cgroup",
        strategy: "raw_tp/cgroup_mkdir+cgroup_rmdir+cgroup_release",
        programs: &[
            (PROG_CGROUP_MKDIR, "cgroup_mkdir"),
            (PROG_CGROUP_RMDIR, "cgroup_rmdir"),
            (PROG_CGROUP_RELEASE, "cgroup_release"),
        ],
    },
];

fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    tracepoint: &str,
) -> Result<(), ProbeError> {
    let program_error = |source| ProbeError::Program {
        what: format!("raw tracepoint {tracepoint}"),
        source,
    };
    let p: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or(ProbeError::Missing(program))?
        .try_into()
        .map_err(program_error)?;
    p.load().map_err(program_error)?;
    p.attach(tracepoint).map_err(program_error)?;
    Ok(())
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    /// Owns the programs and their links.
    _ebpf: Ebpf,
    /// Forwards the programs' `aya_log_ebpf` messages to `log`. Must outlive the programs:
    /// dropping it closes its map.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ring: Option<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    pub attached: Vec<AttachedPoint>,
}

impl Probes {
    /// Checks privileges, resolves offsets from BTF, loads the object and attaches every probe
    /// point.
    ///
    /// # Errors
    ///
    /// Not root, no BTF, a member missing from BTF, or a program the kernel refuses.
    pub fn attach() -> Result<Self, ProbeError> {
        privileges::require_root()?;
        privileges::raise_memlock();
        let offsets = KernelBtf::from_sys()?.kernel_offsets()?;
        log::debug!("kernel offsets: {offsets:?}");
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .load(EBPF_OBJECT)
            .map_err(ProbeError::Load)?;

        let mut attached = Vec::new();
        for RawTracepointPoint {
            point,
            strategy,
            programs,
        } in RAW_TRACEPOINTS
        {
            for (program, tracepoint) in programs {
                attach_raw_tracepoint(&mut ebpf, program, tracepoint)?;
            }
            attached.push(AttachedPoint { point, strategy });
        }

        let ring = RingBuf::try_from(take_map(&mut ebpf, EVENTS_MAP)?).map_err(|source| {
            ProbeError::Map {
                what: EVENTS_MAP.into(),
                source,
            }
        })?;
        let lost = PerCpuArray::try_from(take_map(&mut ebpf, LOST_MAP)?).map_err(|source| {
            ProbeError::Map {
                what: LOST_MAP.into(),
                source,
            }
        })?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf).map_err(ProbeError::Logger)?;
        Ok(Self {
            _ebpf: ebpf,
            logger: Some(logger),
            ring: Some(ring),
            lost,
            attached,
        })
    }

    /// The ring buffer, handed once to the pipeline's reader.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
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

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing(name))
}
