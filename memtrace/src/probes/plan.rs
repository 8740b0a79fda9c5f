//! Each probe point's strategies, best first, and the programs each attaches. A point is
//! attached with the first strategy the running kernel accepts, found by trying (never by
//! kernel version), and every attempt is kept so `memtrace probes` can say why a strategy was
//! refused.

use std::{fs, io};

use aya::{
    Ebpf,
    programs::{
        FEntry, FExit, KProbe, KProbeError, Program, RawTracePoint, TracePoint,
        fentry::FEntryLinkId, fexit::FExitLinkId, kprobe::KProbeLinkId,
        raw_trace_point::RawTracePointLinkId,
    },
};
use memtrace_common::{
    KernelOffsets,
    names::{
        CHARGE_FUNCTION, CHARGE_PAGE_FUNCTION, KMEM_CACHE_ALLOC_FUNCTION,
        KMEM_CACHE_ALLOC_NODE_FUNCTION, KMEM_CACHE_FREE_FUNCTION, OOM_KILL_FUNCTION,
        PROG_CGROUP_MKDIR, PROG_CGROUP_RELEASE, PROG_CGROUP_RMDIR, PROG_CHARGE_FEXIT,
        PROG_CHARGE_KPROBE, PROG_CHARGE_KRETPROBE, PROG_CHARGE_STAT, PROG_FILEMAP_ADD,
        PROG_FILEMAP_ADD_REFAULT, PROG_FILEMAP_DELETE, PROG_LRU_INSERTION, PROG_OOM_FENTRY,
        PROG_OOM_KPROBE, PROG_OOM_MARK_VICTIM, PROG_RECLAIM_BEGIN, PROG_RECLAIM_END,
        PROG_REFAULT_FENTRY, PROG_REFAULT_KPROBE, PROG_REFAULT_STAT, PROG_SLAB_CACHE_ALLOC,
        PROG_SLAB_CACHE_ALLOC_FEXIT, PROG_SLAB_CACHE_ALLOC_FEXIT_TRACKED,
        PROG_SLAB_CACHE_ALLOC_NODE_FEXIT, PROG_SLAB_CACHE_ALLOC_NODE_FEXIT_TRACKED,
        PROG_SLAB_CACHE_ALLOC_TRACKED, PROG_SLAB_CACHE_FREE, PROG_SLAB_CACHE_FREE_FENTRY,
        PROG_SLAB_CACHE_FREE_FENTRY_TRACKED, PROG_SLAB_CACHE_FREE_TRACKED, PROG_SLAB_KFREE,
        PROG_SLAB_KFREE_TRACKED, PROG_SLAB_KMALLOC, PROG_SLAB_KMALLOC_NODE,
        PROG_SLAB_KMALLOC_NODE_TRACKED, PROG_SLAB_KMALLOC_TRACKED, PROG_TRY_CHARGE_FEXIT,
        PROG_TRY_CHARGE_KPROBE, PROG_TRY_CHARGE_KRETPROBE, REFAULT_FUNCTION, TRY_CHARGE_FUNCTION,
        TRY_CHARGE_OLD_FUNCTION,
    },
};

use super::{ProbeError, ProbePoint, Strategy, aya_btf::AyaBtf, program_error};
use crate::startup::{self, timed};

/// How one strategy attaches its programs.
pub enum Attach {
    Fentry {
        program: &'static str,
        function: &'static str,
    },
    Kprobe {
        program: &'static str,
        function: &'static str,
    },
    /// fexit: the function's arguments and its return value.
    Fexit {
        program: &'static str,
        function: &'static str,
    },
    /// A kprobe that keeps the arguments and a kretprobe that reads the return value.
    KprobeReturn {
        entry: &'static str,
        ret: &'static str,
        function: &'static str,
    },
    /// No programs of its own: userspace derives the point's events from another point's,
    /// which must be attached.
    Derived { from: ProbePoint },
    /// (program, raw tracepoint) pairs, all needed.
    RawTracepoints(&'static [(&'static str, &'static str)]),
    /// The same, for programs that need the kernel's memory map, measured first
    /// ([`super::memory_map`]).
    RawTracepointsWithMemoryMap(&'static [(&'static str, &'static str)]),
    /// fentry, fexit and kprobe programs (each attached as its own program type says) on
    /// (program, function) pairs, and raw tracepoint programs, all needed; with the memory map
    /// measured first when `memory_map`.
    Functions {
        functions: &'static [(&'static str, &'static str)],
        raw: &'static [(&'static str, &'static str)],
        memory_map: bool,
    },
    /// A classic tracepoint (needs tracefs, which is mounted if missing).
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
}

/// One strategy of a point's plan: its name and the programs it attaches.
pub struct Candidate {
    pub strategy: Strategy,
    pub attach: Attach,
}

impl Candidate {
    /// `fentry/oom_kill_process`, `raw_tp/cgroup_mkdir+cgroup_rmdir`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{}/{}", self.strategy, self.attach.targets())
    }
}

impl Attach {
    /// What the programs attach to: `oom_kill_process`, `cgroup_mkdir+cgroup_rmdir`,
    /// `oom:mark_victim`; for a derived strategy, the point it derives from.
    #[must_use]
    pub fn targets(&self) -> String {
        match self {
            Self::Fentry { function, .. }
            | Self::Kprobe { function, .. }
            | Self::Fexit { function, .. }
            | Self::KprobeReturn { function, .. } => (*function).to_owned(),
            Self::Derived { from } => from.name().to_owned(),
            Self::RawTracepoints(pairs) | Self::RawTracepointsWithMemoryMap(pairs) => {
                let names: Vec<&str> = pairs.iter().map(|(_, tp)| *tp).collect();
                names.join("+")
            }
            Self::Tracepoint { category, name, .. } => format!("{category}:{name}"),
            Self::Functions { functions, raw, .. } => {
                let names: Vec<&str> = functions.iter().chain(*raw).map(|(_, f)| *f).collect();
                names.join("+")
            }
        }
    }

    /// The programs it loads (the memory map's calibration programs aside).
    #[must_use]
    pub fn programs(&self) -> Vec<&'static str> {
        match self {
            Self::Fentry { program, .. }
            | Self::Kprobe { program, .. }
            | Self::Fexit { program, .. }
            | Self::Tracepoint { program, .. } => vec![program],
            Self::KprobeReturn { entry, ret, .. } => vec![entry, ret],
            Self::Derived { .. } => Vec::new(),
            Self::RawTracepoints(pairs) | Self::RawTracepointsWithMemoryMap(pairs) => {
                pairs.iter().map(|(program, _)| *program).collect()
            }
            Self::Functions { functions, raw, .. } => functions
                .iter()
                .chain(*raw)
                .map(|(program, _)| *program)
                .collect(),
        }
    }
}

/// The tracepoints whose third argument the slab programs read as the `struct kmem_cache *`.
const KMEM_CACHE_TRACEPOINTS: [&str; 2] = ["kmem_cache_alloc", "kmem_cache_free"];

/// `point`'s strategies, best first.
#[must_use]
pub const fn strategies(point: ProbePoint) -> &'static [Candidate] {
    match point {
        ProbePoint::OomKill => OOM_KILL,
        ProbePoint::Cgroup => CGROUP,
        ProbePoint::PageCache => PAGE_CACHE,
        ProbePoint::Reclaim => RECLAIM,
        ProbePoint::Charge => CHARGE,
        ProbePoint::TryCharge => TRY_CHARGE,
        ProbePoint::Slab => SLAB,
    }
}

const OOM_KILL: &[Candidate] = &[
    // Has `oom_control`: the limit that fired, read in the kernel at the kill.
    Candidate {
        strategy: Strategy::Fentry,
        attach: Attach::Fentry {
            program: PROG_OOM_FENTRY,
            function: OOM_KILL_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Kprobe,
        attach: Attach::Kprobe {
            program: PROG_OOM_KPROBE,
            function: OOM_KILL_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::RawTp,
        attach: Attach::RawTracepoints(&[(PROG_OOM_MARK_VICTIM, "mark_victim")]),
    },
];

const CGROUP: &[Candidate] = &[Candidate {
    strategy: Strategy::RawTp,
    attach: Attach::RawTracepoints(&[
        (PROG_CGROUP_MKDIR, "cgroup_mkdir"),
        (PROG_CGROUP_RMDIR, "cgroup_rmdir"),
        (PROG_CGROUP_RELEASE, "cgroup_release"),
    ]),
}];

/// The page-cache tracepoints every `page_cache` strategy attaches.
const PAGE_CACHE_TRACEPOINTS: &[(&str, &str)] = &[
    (PROG_FILEMAP_ADD, "mm_filemap_add_to_page_cache"),
    (PROG_FILEMAP_DELETE, "mm_filemap_delete_from_page_cache"),
    (PROG_LRU_INSERTION, "mm_lru_insertion"),
];

/// Programs that count refaults: a `page_cache` strategy with one of them fills in
/// `refault_bytes`.
const REFAULT_PROGRAMS: [&str; 3] = [PROG_REFAULT_FENTRY, PROG_REFAULT_KPROBE, PROG_REFAULT_STAT];

const PAGE_CACHE: &[Candidate] = &[
    // Refaults from the folio `workingset_refault()` is handed: no cost on the adds.
    Candidate {
        strategy: Strategy::Fentry,
        attach: Attach::Functions {
            functions: &[(PROG_REFAULT_FENTRY, REFAULT_FUNCTION)],
            raw: PAGE_CACHE_TRACEPOINTS,
            memory_map: false,
        },
    },
    Candidate {
        strategy: Strategy::Kprobe,
        attach: Attach::Functions {
            functions: &[(PROG_REFAULT_KPROBE, REFAULT_FUNCTION)],
            raw: PAGE_CACHE_TRACEPOINTS,
            memory_map: false,
        },
    },
    // 6.16+ without fentry or kprobes: refaults from the memcg stat update that follows each
    // add, which remembers its file per CPU.
    Candidate {
        strategy: Strategy::RawTp,
        attach: Attach::RawTracepoints(&[
            (PROG_FILEMAP_ADD_REFAULT, "mm_filemap_add_to_page_cache"),
            (PROG_FILEMAP_DELETE, "mm_filemap_delete_from_page_cache"),
            (PROG_LRU_INSERTION, "mm_lru_insertion"),
            (PROG_REFAULT_STAT, "mod_memcg_lruvec_state"),
        ]),
    },
    // Adds and removals only; `refault_bytes` is absent.
    Candidate {
        strategy: Strategy::RawTp,
        attach: Attach::RawTracepoints(PAGE_CACHE_TRACEPOINTS),
    },
];

/// Whether `point`'s candidate counts page-cache refaults.
#[must_use]
pub fn counts_refaults(point: ProbePoint, strategy: Strategy, variant: usize) -> bool {
    candidate(point, strategy, variant).is_some_and(|c| match c.attach {
        Attach::Functions { functions, raw, .. } => functions
            .iter()
            .chain(raw)
            .any(|(program, _)| REFAULT_PROGRAMS.contains(program)),
        Attach::RawTracepoints(pairs) => pairs
            .iter()
            .any(|(program, _)| REFAULT_PROGRAMS.contains(program)),
        _ => false,
    })
}

const RECLAIM: &[Candidate] = &[Candidate {
    strategy: Strategy::RawTp,
    attach: Attach::RawTracepoints(&[
        (PROG_RECLAIM_BEGIN, "mm_vmscan_memcg_reclaim_begin"),
        (PROG_RECLAIM_END, "mm_vmscan_memcg_reclaim_end"),
    ]),
}];

const CHARGE: &[Candidate] = &[
    // Counts at the return: the charge may fail.
    // Each function-based strategy twice: under the function's name, then under its older
    // one (tried only when the kernel has no function of the first name).
    Candidate {
        strategy: Strategy::Fexit,
        attach: Attach::Fexit {
            program: PROG_CHARGE_FEXIT,
            function: CHARGE_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Fexit,
        attach: Attach::Fexit {
            program: PROG_CHARGE_FEXIT,
            function: CHARGE_PAGE_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Kprobe,
        attach: Attach::KprobeReturn {
            entry: PROG_CHARGE_KPROBE,
            ret: PROG_CHARGE_KRETPROBE,
            function: CHARGE_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Kprobe,
        attach: Attach::KprobeReturn {
            entry: PROG_CHARGE_KPROBE,
            ret: PROG_CHARGE_KRETPROBE,
            function: CHARGE_PAGE_FUNCTION,
        },
    },
    // 6.16+: memcg stat updates; pages only, labelled as derived from them.
    Candidate {
        strategy: Strategy::RawTp,
        attach: Attach::RawTracepoints(&[(PROG_CHARGE_STAT, "mod_memcg_lruvec_state")]),
    },
    // Before 6.16 without fexit or kprobes: the page cache added to each memcg (file
    // pages only).
    Candidate {
        strategy: Strategy::Derived,
        attach: Attach::Derived {
            from: ProbePoint::PageCache,
        },
    },
];

const TRY_CHARGE: &[Candidate] = &[
    // The return value says whether the charge failed.
    Candidate {
        strategy: Strategy::Fexit,
        attach: Attach::Fexit {
            program: PROG_TRY_CHARGE_FEXIT,
            function: TRY_CHARGE_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Fexit,
        attach: Attach::Fexit {
            program: PROG_TRY_CHARGE_FEXIT,
            function: TRY_CHARGE_OLD_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Kprobe,
        attach: Attach::KprobeReturn {
            entry: PROG_TRY_CHARGE_KPROBE,
            ret: PROG_TRY_CHARGE_KRETPROBE,
            function: TRY_CHARGE_FUNCTION,
        },
    },
    Candidate {
        strategy: Strategy::Kprobe,
        attach: Attach::KprobeReturn {
            entry: PROG_TRY_CHARGE_KPROBE,
            ret: PROG_TRY_CHARGE_KRETPROBE,
            function: TRY_CHARGE_OLD_FUNCTION,
        },
    },
    // Every memcg limit reclaim starts with a charge the page counter refused.
    Candidate {
        strategy: Strategy::Derived,
        attach: Attach::Derived {
            from: ProbePoint::Reclaim,
        },
    },
];

const SLAB: &[Candidate] = &[
    // Each object's memcg as the kernel charged it, read from its slab.
    Candidate {
        strategy: Strategy::RawTp,
        attach: Attach::RawTracepointsWithMemoryMap(&[
            (PROG_SLAB_CACHE_ALLOC, "kmem_cache_alloc"),
            (PROG_SLAB_KMALLOC, "kmalloc"),
            (PROG_SLAB_CACHE_FREE, "kmem_cache_free"),
            (PROG_SLAB_KFREE, "kfree"),
        ]),
    },
    // The same, where the kmem_cache_* tracepoints do not pass the cache (5.10): the cache
    // from the functions' own arguments.
    Candidate {
        strategy: Strategy::Fexit,
        attach: Attach::Functions {
            functions: &[
                (PROG_SLAB_CACHE_ALLOC_FEXIT, KMEM_CACHE_ALLOC_FUNCTION),
                (
                    PROG_SLAB_CACHE_ALLOC_NODE_FEXIT,
                    KMEM_CACHE_ALLOC_NODE_FUNCTION,
                ),
                (PROG_SLAB_CACHE_FREE_FENTRY, KMEM_CACHE_FREE_FUNCTION),
            ],
            raw: &[
                (PROG_SLAB_KMALLOC, "kmalloc"),
                (PROG_SLAB_KMALLOC_NODE, "kmalloc_node"),
                (PROG_SLAB_KFREE, "kfree"),
            ],
            memory_map: true,
        },
    },
    // The allocating task's memcg, each object remembered until its free: twice the
    // cost, for kernels whose memory map cannot be measured.
    Candidate {
        strategy: Strategy::Tracked,
        attach: Attach::RawTracepoints(&[
            (PROG_SLAB_CACHE_ALLOC_TRACKED, "kmem_cache_alloc"),
            (PROG_SLAB_KMALLOC_TRACKED, "kmalloc"),
            (PROG_SLAB_CACHE_FREE_TRACKED, "kmem_cache_free"),
            (PROG_SLAB_KFREE_TRACKED, "kfree"),
        ]),
    },
    Candidate {
        strategy: Strategy::Tracked,
        attach: Attach::Functions {
            functions: &[
                (
                    PROG_SLAB_CACHE_ALLOC_FEXIT_TRACKED,
                    KMEM_CACHE_ALLOC_FUNCTION,
                ),
                (
                    PROG_SLAB_CACHE_ALLOC_NODE_FEXIT_TRACKED,
                    KMEM_CACHE_ALLOC_NODE_FUNCTION,
                ),
                (
                    PROG_SLAB_CACHE_FREE_FENTRY_TRACKED,
                    KMEM_CACHE_FREE_FUNCTION,
                ),
            ],
            raw: &[
                (PROG_SLAB_KMALLOC_TRACKED, "kmalloc"),
                (PROG_SLAB_KMALLOC_NODE_TRACKED, "kmalloc_node"),
                (PROG_SLAB_KFREE_TRACKED, "kfree"),
            ],
            memory_map: false,
        },
    },
];

/// The functions fentry and fexit strategies load against, each once.
pub fn btf_traced_functions() -> impl Iterator<Item = &'static str> {
    let mut seen = Vec::new();
    ProbePoint::ALL
        .iter()
        .flat_map(|&point| strategies(point))
        .flat_map(|c| match c.attach {
            Attach::Fentry { function, .. } | Attach::Fexit { function, .. } => vec![function],
            Attach::Functions { functions, .. } => functions.iter().map(|(_, f)| *f).collect(),
            _ => Vec::new(),
        })
        .filter(move |function| {
            let new = !seen.contains(function);
            seen.push(function);
            new
        })
}

/// `point`'s strategy `strategy`, if its plan has it: the `variant`th of its candidates (0
/// names a function by its current name, 1 by its older one).
#[must_use]
pub fn candidate(
    point: ProbePoint,
    strategy: Strategy,
    variant: usize,
) -> Option<&'static Candidate> {
    strategies(point)
        .iter()
        .filter(|c| c.strategy == strategy)
        .nth(variant)
}

/// One strategy tried for a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub strategy: Strategy,
    /// What it attaches to (`oom_kill_process`), as [`Attach::targets`].
    pub targets: String,
    /// `Err`: why the kernel (or aya) refused it, one line.
    pub result: Result<(), String>,
}

impl std::fmt::Display for Attempt {
    /// `fentry/oom_kill_process`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.strategy, self.targets)
    }
}

/// Everything tried for one point, and what was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointOutcome {
    pub point: ProbePoint,
    pub attempts: Vec<Attempt>,
    pub chosen: Option<Strategy>,
    /// Which of the chosen strategy's candidates attached ([`candidate`]'s `variant`).
    pub variant: usize,
    /// The strategy was forced with `--probe-strategy`.
    pub forced: bool,
}

/// Tries `point`'s strategies in order (only `forced`, when given) until one attaches.
/// `attached` names the points attached so far, which derived strategies need.
pub fn attach_point(
    ebpf: &mut Ebpf,
    point: ProbePoint,
    forced: Option<Strategy>,
    btf: &mut AyaBtf,
    offsets: &KernelOffsets,
    attached: &[ProbePoint],
) -> PointOutcome {
    let mut attempts = Vec::new();
    let mut chosen = None;
    let mut variant = 0;
    for candidate in strategies(point) {
        if forced.is_some_and(|f| f != candidate.strategy) {
            continue;
        }
        let result = match candidate.attach {
            Attach::RawTracepoints(pairs) | Attach::RawTracepointsWithMemoryMap(pairs)
                if refused_before_loading(pairs, offsets) =>
            {
                Err(
                    "this kernel's kmem_cache_alloc and kmem_cache_free tracepoints do not pass \
                     the struct kmem_cache * (6.0+; BTF prototypes btf_trace_kmem_cache_*)"
                        .to_owned(),
                )
            }
            Attach::Derived { from } if !attached.contains(&from) => Err(format!(
                "derives from the {from} probe point, which is not attached \
                 (add it to --events)"
            )),
            _ => attach(ebpf, &candidate.attach, btf, offsets).map_err(|e| e.to_string()),
        };
        log::debug!("{point} {}: {result:?}", candidate.describe());
        let ok = result.is_ok();
        attempts.push(Attempt {
            strategy: candidate.strategy,
            targets: candidate.attach.targets(),
            result,
        });
        if ok {
            chosen = Some(candidate.strategy);
            variant = attempts
                .iter()
                .filter(|a| a.strategy == candidate.strategy)
                .count()
                - 1;
            break;
        }
    }
    PointOutcome {
        point,
        attempts,
        chosen,
        variant,
        forced: forced.is_some(),
    }
}

/// Whether start-up knows, before loading anything, that the kernel refuses this strategy:
/// the function is not in its BTF, it refused the test fentry program ([`AyaBtf::refused`]),
/// it has no kprobe PMU, or its `kmem_cache_*` tracepoints do not pass the cache. Trying it
/// then costs nothing: [`attach`] says no at once, for the same reason.
#[must_use]
pub fn known_refused(ebpf: &Ebpf, attach: &Attach, btf: &AyaBtf, offsets: &KernelOffsets) -> bool {
    let refused = |program: &str, function: &str| match ebpf.program(program) {
        Some(Program::FEntry(_) | Program::FExit(_)) => {
            btf.refused().is_some() || btf.known_absent(function).is_some()
        }
        Some(Program::KProbe(_)) => kprobe_pmu().is_err(),
        _ => false,
    };
    match attach {
        Attach::Fentry { program, function }
        | Attach::Fexit { program, function }
        | Attach::Kprobe { program, function }
        | Attach::KprobeReturn {
            entry: program,
            function,
            ..
        } => refused(program, function),
        Attach::Functions { functions, .. } => functions.iter().any(|(p, f)| refused(p, f)),
        Attach::RawTracepoints(pairs) | Attach::RawTracepointsWithMemoryMap(pairs) => {
            refused_before_loading(pairs, offsets)
        }
        Attach::Derived { .. } | Attach::Tracepoint { .. } => false,
    }
}

/// Loads and attaches one strategy's programs.
///
/// # Errors
///
/// The kernel's (or aya's) refusal, as one line.
pub fn attach(
    ebpf: &mut Ebpf,
    attach: &Attach,
    btf: &mut AyaBtf,
    offsets: &KernelOffsets,
) -> Result<(), ProbeError> {
    // fentry and fexit load against the function's BTF and attach alike; aya gives them no
    // common trait, so one macro serves both types.
    macro_rules! attach_btf_traced {
        ($ty:ty, $kind:literal, $program:expr, $function:expr) => {{
            let error = |source| program_error(format!("{} {}", $kind, $function), &source);
            // Absent first: of two reasons, the function's absence is the one that holds on
            // every kernel.
            if let Some(absent) = btf.known_absent($function) {
                return Err(error(absent.into()));
            }
            let btf = btf.get($kind, $function)?;
            let p: &mut $ty = program_to_load(ebpf, $program)?.try_into().map_err(error)?;
            p.load($function, btf).map_err(error)?;
            p.attach().map_err(error)?;
        }};
    }
    match attach {
        Attach::Fentry { program, function } => {
            attach_btf_traced!(FEntry, "fentry", program, function);
        }
        Attach::Fexit { program, function } => {
            attach_btf_traced!(FExit, "fexit", program, function);
        }
        Attach::Kprobe { program, function } => {
            let error = |source| program_error(format!("kprobe {function}"), &source);
            kprobe_pmu().map_err(|e| error(e.into()))?;
            let p: &mut KProbe = program_to_load(ebpf, program)?.try_into().map_err(error)?;
            load_once(p).map_err(error)?;
            p.attach(*function, 0).map_err(error)?;
        }
        Attach::KprobeReturn {
            entry,
            ret,
            function,
        } => {
            let error = |source| program_error(format!("kretprobe {function}"), &source);
            kprobe_pmu().map_err(|e| error(e.into()))?;
            let r: &mut KProbe = program_to_load(ebpf, ret)?.try_into().map_err(error)?;
            load_once(r).map_err(error)?;
            let ret_link = r.attach(*function, 0).map_err(error)?;
            let entered = (|| {
                let error = |source| program_error(format!("kprobe {function}"), &source);
                let p: &mut KProbe = program_to_load(ebpf, entry)?.try_into().map_err(error)?;
                load_once(p).map_err(error)?;
                p.attach(*function, 0).map_err(error)
            })();
            if let Err(e) = entered {
                // A return probe alone would count nothing; leave nothing half-attached.
                if let Ok(r) = <&mut KProbe>::try_from(program_mut(ebpf, ret)?) {
                    let _ = r.detach(ret_link);
                }
                return Err(e);
            }
        }
        Attach::Derived { .. } => {}
        Attach::RawTracepoints(pairs) => attach_all_raw(ebpf, pairs)?,
        Attach::RawTracepointsWithMemoryMap(pairs) => {
            let (installed, took) = timed(|| super::memory_map::install(ebpf, offsets));
            startup::within("memory map", took, "its raw_tp strategy");
            installed?;
            attach_all_raw(ebpf, pairs)?;
        }
        Attach::Functions {
            functions,
            raw,
            memory_map,
        } => {
            if *memory_map {
                let (installed, took) = timed(|| super::memory_map::install(ebpf, offsets));
                startup::within("memory map", took, "its fexit strategy");
                installed?;
            }
            attach_functions_and_raw(ebpf, functions, raw, btf)?;
        }
        Attach::Tracepoint {
            program,
            category,
            name,
        } => {
            super::privileges::ensure_tracefs()?;
            let error = |source| program_error(format!("tracepoint {category}:{name}"), &source);
            let p: &mut TracePoint = program_to_load(ebpf, program)?.try_into().map_err(error)?;
            p.load().map_err(error)?;
            p.attach(category, name).map_err(error)?;
        }
    }
    Ok(())
}

/// Where the kernel's kprobe PMU says its perf event type; absent without `CONFIG_KPROBES`.
const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Whether kprobes can attach at all, asked before a kprobe program is loaded: aya attaches
/// them through the kprobe PMU (on every kernel memtrace runs on, 4.17+) and fails when there
/// is none, after the verifier spent 5 ms on the program (several times that on a busy
/// machine). The error is the one aya's attach gives.
fn kprobe_pmu() -> Result<(), KProbeError> {
    fs::read_to_string(KPROBE_PMU_TYPE)
        .and_then(|ty| ty.trim().parse::<u32>().map_err(io::Error::other))
        .map(drop)
        .map_err(|io_error| KProbeError::FileError {
            filename: KPROBE_PMU_TYPE.into(),
            io_error,
        })
}

/// Whether these raw tracepoints are refused without trying: the slab programs read the
/// `struct kmem_cache *` that `kmem_cache_alloc` and `kmem_cache_free` pass only since 6.0.
#[must_use]
pub fn refused_before_loading(pairs: &[(&str, &str)], offsets: &KernelOffsets) -> bool {
    offsets.kmem_tracepoints_pass_cache == 0
        && pairs
            .iter()
            .any(|(_, tp)| KMEM_CACHE_TRACEPOINTS.contains(tp))
}

/// Loads a kprobe program unless an earlier candidate did: a kprobe loads the same for any
/// function, and the next candidate tries the function's older name with it.
fn load_once(p: &mut KProbe) -> Result<(), aya::programs::ProgramError> {
    if p.fd().is_ok() {
        return Ok(());
    }
    p.load()
}

/// Attaches every (program, raw tracepoint) pair, or none: when the kernel refuses one, those
/// already attached are detached again, so a strategy never runs half-attached, nor next to
/// the strategy tried after it on the same tracepoints (which would count events twice).
fn attach_all_raw(
    ebpf: &mut Ebpf,
    pairs: &[(&'static str, &'static str)],
) -> Result<(), ProbeError> {
    let mut attached = Vec::new();
    for &(program, tracepoint) in pairs {
        match attach_raw(ebpf, program, tracepoint) {
            Ok(link) => attached.push((program, link)),
            Err(e) => {
                for (program, link) in attached {
                    if let Ok(p) = <&mut RawTracePoint>::try_from(program_mut(ebpf, program)?) {
                        let _ = p.detach(link);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One attached program, to detach again when a later one of its strategy is refused.
enum Link {
    Fentry(&'static str, FEntryLinkId),
    Fexit(&'static str, FExitLinkId),
    Kprobe(&'static str, KProbeLinkId),
    Raw(&'static str, RawTracePointLinkId),
}

/// [`attach_all_raw`] for a strategy with fentry and fexit programs too: all attached, or none.
fn attach_functions_and_raw(
    ebpf: &mut Ebpf,
    functions: &[(&'static str, &'static str)],
    raw: &[(&'static str, &'static str)],
    btf: &mut AyaBtf,
) -> Result<(), ProbeError> {
    let mut links = Vec::new();
    let result = (|| {
        for &(program, function) in functions {
            // fentry and fexit load against aya's BTF; a function it knows absent is refused
            // before aya scans for it.
            let traced = matches!(
                program_mut(ebpf, program)?,
                Program::FEntry(_) | Program::FExit(_)
            );
            let aya = if traced {
                if let Some(absent) = btf.known_absent(function) {
                    return Err(program_error(
                        format!("fentry/fexit {function}"),
                        &absent.into(),
                    ));
                }
                Some(btf.get("fentry/fexit", function)?)
            } else {
                None
            };
            let link = match (program_to_load(ebpf, program)?, aya) {
                (Program::FEntry(p), Some(btf)) => {
                    let error = |source| program_error(format!("fentry {function}"), &source);
                    p.load(function, btf).map_err(error)?;
                    Link::Fentry(program, p.attach().map_err(error)?)
                }
                (Program::FExit(p), Some(btf)) => {
                    let error = |source| program_error(format!("fexit {function}"), &source);
                    p.load(function, btf).map_err(error)?;
                    Link::Fexit(program, p.attach().map_err(error)?)
                }
                (Program::KProbe(p), _) => {
                    let error = |source| program_error(format!("kprobe {function}"), &source);
                    kprobe_pmu().map_err(|e| error(e.into()))?;
                    load_once(p).map_err(error)?;
                    Link::Kprobe(program, p.attach(function, 0).map_err(error)?)
                }
                _ => return Err(ProbeError::Missing(program)),
            };
            links.push(link);
        }
        for &(program, tracepoint) in raw {
            links.push(Link::Raw(program, attach_raw(ebpf, program, tracepoint)?));
        }
        Ok(())
    })();
    if result.is_err() {
        for link in links {
            // Best effort: a program that cannot be detached is unloaded with memtrace.
            let _ = detach(ebpf, link);
        }
    }
    result
}

fn detach(ebpf: &mut Ebpf, link: Link) -> Result<(), Box<dyn std::error::Error>> {
    match link {
        Link::Fentry(program, id) => {
            <&mut FEntry>::try_from(program_mut(ebpf, program)?)?.detach(id)?;
        }
        Link::Fexit(program, id) => {
            <&mut FExit>::try_from(program_mut(ebpf, program)?)?.detach(id)?;
        }
        Link::Kprobe(program, id) => {
            <&mut KProbe>::try_from(program_mut(ebpf, program)?)?.detach(id)?;
        }
        Link::Raw(program, id) => {
            <&mut RawTracePoint>::try_from(program_mut(ebpf, program)?)?.detach(id)?;
        }
    }
    Ok(())
}

/// Loads `program`, unless it was loaded already ([`super::preload`]), and attaches it to the
/// raw tracepoint.
///
/// # Errors
///
/// The kernel's (or aya's) refusal, as one line.
pub fn attach_raw(
    ebpf: &mut Ebpf,
    program: &'static str,
    tracepoint: &'static str,
) -> Result<RawTracePointLinkId, ProbeError> {
    let error = |source| program_error(format!("raw tracepoint {tracepoint}"), &source);
    let p: &mut RawTracePoint = program_to_load(ebpf, program)?.try_into().map_err(error)?;
    if p.fd().is_err() {
        p.load().map_err(error)?;
    }
    p.attach(tracepoint).map_err(error)
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Program, ProbeError> {
    ebpf.program_mut(name).ok_or(ProbeError::Missing(name))
}

/// [`program_mut`] for a program about to be loaded: the deferred maps it uses get their full
/// size first ([`super::deferred_maps`]).
fn program_to_load<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Program, ProbeError> {
    super::deferred_maps::grow_for(ebpf, [name])?;
    program_mut(ebpf, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(point: ProbePoint) -> Vec<String> {
        strategies(point).iter().map(Candidate::describe).collect()
    }

    #[test]
    fn strategies_describe_what_they_attach() {
        assert_eq!(
            described(ProbePoint::OomKill),
            [
                "fentry/oom_kill_process",
                "kprobe/oom_kill_process",
                "raw_tp/mark_victim"
            ]
        );
        assert_eq!(
            described(ProbePoint::TryCharge),
            [
                "fexit/try_charge_memcg",
                "fexit/try_charge",
                "kprobe/try_charge_memcg",
                "kprobe/try_charge",
                "derived/reclaim"
            ]
        );
    }

    #[test]
    fn each_point_names_a_strategy_in_one_run_and_derives_from_an_earlier_point() {
        for (i, point) in ProbePoint::ALL.iter().copied().enumerate() {
            let plan = strategies(point);
            assert!(!plan.is_empty(), "{point}");
            for (j, c) in plan.iter().enumerate() {
                // Again only right after itself: the same function under its older name.
                let again = plan[..j].iter().any(|d| d.strategy == c.strategy);
                assert!(
                    !again || plan[j - 1].strategy == c.strategy,
                    "{point}: {} in two places",
                    c.strategy
                );
                if let Attach::Derived { from } = c.attach {
                    assert!(ProbePoint::ALL[..i].contains(&from), "{point} from {from}");
                }
            }
        }
    }
}
