//! Probe points and their strategies, best first. Each point is attached with the first
//! strategy the running kernel accepts, found by trying (never by kernel version), and every
//! attempt is kept so `memtrace probes` can say why a strategy was refused.

use aya::{
    Btf, Ebpf,
    programs::{
        FEntry, FExit, KProbe, RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
    },
};
use memtrace_common::{
    KernelOffsets,
    names::{
        CHARGE_FUNCTION, OOM_KILL_FUNCTION, PROG_CGROUP_MKDIR, PROG_CGROUP_RELEASE,
        PROG_CGROUP_RMDIR, PROG_CHARGE_FEXIT, PROG_CHARGE_KPROBE, PROG_CHARGE_KRETPROBE,
        PROG_CHARGE_STAT, PROG_FILEMAP_ADD, PROG_FILEMAP_DELETE, PROG_OOM_FENTRY, PROG_OOM_KPROBE,
        PROG_OOM_MARK_VICTIM, PROG_RECLAIM_BEGIN, PROG_RECLAIM_END, PROG_SLAB_CACHE_ALLOC,
        PROG_SLAB_CACHE_ALLOC_TRACKED, PROG_SLAB_CACHE_FREE, PROG_SLAB_CACHE_FREE_TRACKED,
        PROG_SLAB_KFREE, PROG_SLAB_KFREE_TRACKED, PROG_SLAB_KMALLOC, PROG_SLAB_KMALLOC_TRACKED,
        PROG_TRY_CHARGE_FEXIT, PROG_TRY_CHARGE_KPROBE, PROG_TRY_CHARGE_KRETPROBE,
        TRY_CHARGE_FUNCTION,
    },
};

use super::{ProbeError, program_error};

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
    Derived { from: &'static str },
    /// (program, raw tracepoint) pairs, all needed.
    RawTracepoints(&'static [(&'static str, &'static str)]),
    /// The same, for programs that need the kernel's memory map, measured first
    /// ([`super::memory_map`]).
    RawTracepointsWithMemoryMap(&'static [(&'static str, &'static str)]),
    /// A classic tracepoint (needs tracefs, which is mounted if missing).
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
}

pub struct Strategy {
    /// `fentry`, `kprobe` or `raw_tp`: what `--probe-strategy POINT=NAME` names.
    pub name: &'static str,
    pub attach: Attach,
}

impl Strategy {
    /// `fentry/oom_kill_process`, `raw_tp/cgroup_mkdir+cgroup_rmdir`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.attach {
            Attach::Fentry { function, .. }
            | Attach::Kprobe { function, .. }
            | Attach::Fexit { function, .. }
            | Attach::KprobeReturn { function, .. } => format!("{}/{function}", self.name),
            Attach::Derived { from } => format!("{}/{from}", self.name),
            Attach::RawTracepoints(pairs) | Attach::RawTracepointsWithMemoryMap(pairs) => {
                let names: Vec<&str> = pairs.iter().map(|(_, tp)| *tp).collect();
                format!("{}/{}", self.name, names.join("+"))
            }
            Attach::Tracepoint { category, name, .. } => {
                format!("{}/{category}:{name}", self.name)
            }
        }
    }
}

pub struct Point {
    /// In event-type words: `oom_kill`, `cgroup`, `page_cache`, `reclaim`.
    pub name: &'static str,
    /// Best first.
    pub strategies: &'static [Strategy],
}

/// Strategies with no programs of their own: `try_charge` derives charge failures from memcg
/// reclaim, `charge` derives pages charged from the page cache added.
pub const DERIVED: &str = "derived";
/// The `slab` strategy that remembers each counted object until its free.
pub const TRACKED: &str = "tracked";

/// In attach order: a derived strategy comes after the point it derives from.
pub const POINTS: [Point; 7] = [
    Point {
        name: "oom_kill",
        strategies: &[
            // Has `oom_control`: the limit that fired, read in the kernel at the kill.
            Strategy {
                name: "fentry",
                attach: Attach::Fentry {
                    program: PROG_OOM_FENTRY,
                    function: OOM_KILL_FUNCTION,
                },
            },
            Strategy {
                name: "kprobe",
                attach: Attach::Kprobe {
                    program: PROG_OOM_KPROBE,
                    function: OOM_KILL_FUNCTION,
                },
            },
            Strategy {
                name: "raw_tp",
                attach: Attach::RawTracepoints(&[(PROG_OOM_MARK_VICTIM, "mark_victim")]),
            },
        ],
    },
    Point {
        name: "cgroup",
        strategies: &[Strategy {
            name: "raw_tp",
            attach: Attach::RawTracepoints(&[
                (PROG_CGROUP_MKDIR, "cgroup_mkdir"),
                (PROG_CGROUP_RMDIR, "cgroup_rmdir"),
                (PROG_CGROUP_RELEASE, "cgroup_release"),
            ]),
        }],
    },
    Point {
        name: "page_cache",
        strategies: &[Strategy {
            name: "raw_tp",
            attach: Attach::RawTracepoints(&[
                (PROG_FILEMAP_ADD, "mm_filemap_add_to_page_cache"),
                (PROG_FILEMAP_DELETE, "mm_filemap_delete_from_page_cache"),
            ]),
        }],
    },
    Point {
        name: "reclaim",
        strategies: &[Strategy {
            name: "raw_tp",
            attach: Attach::RawTracepoints(&[
                (PROG_RECLAIM_BEGIN, "mm_vmscan_memcg_reclaim_begin"),
                (PROG_RECLAIM_END, "mm_vmscan_memcg_reclaim_end"),
            ]),
        }],
    },
    Point {
        name: "charge",
        strategies: &[
            Strategy {
                name: "fentry",
                attach: Attach::Fexit {
                    program: PROG_CHARGE_FEXIT,
                    function: CHARGE_FUNCTION,
                },
            },
            Strategy {
                name: "kprobe",
                attach: Attach::KprobeReturn {
                    entry: PROG_CHARGE_KPROBE,
                    ret: PROG_CHARGE_KRETPROBE,
                    function: CHARGE_FUNCTION,
                },
            },
            // 6.16+: memcg stat updates; pages only, labelled as derived from them.
            Strategy {
                name: "raw_tp",
                attach: Attach::RawTracepoints(&[(PROG_CHARGE_STAT, "mod_memcg_lruvec_state")]),
            },
            // Before 6.16 without fexit or kprobes: the page cache added to each memcg (file
            // pages only).
            Strategy {
                name: DERIVED,
                attach: Attach::Derived { from: "page_cache" },
            },
        ],
    },
    Point {
        name: "try_charge",
        strategies: &[
            Strategy {
                name: "fentry",
                attach: Attach::Fexit {
                    program: PROG_TRY_CHARGE_FEXIT,
                    function: TRY_CHARGE_FUNCTION,
                },
            },
            Strategy {
                name: "kprobe",
                attach: Attach::KprobeReturn {
                    entry: PROG_TRY_CHARGE_KPROBE,
                    ret: PROG_TRY_CHARGE_KRETPROBE,
                    function: TRY_CHARGE_FUNCTION,
                },
            },
            // Every memcg limit reclaim starts with a charge the page counter refused.
            Strategy {
                name: DERIVED,
                attach: Attach::Derived { from: "reclaim" },
            },
        ],
    },
    Point {
        name: "slab",
        strategies: &[
            // Each object's memcg as the kernel charged it, read from its slab.
            Strategy {
                name: "raw_tp",
                attach: Attach::RawTracepointsWithMemoryMap(&[
                    (PROG_SLAB_CACHE_ALLOC, "kmem_cache_alloc"),
                    (PROG_SLAB_KMALLOC, "kmalloc"),
                    (PROG_SLAB_CACHE_FREE, "kmem_cache_free"),
                    (PROG_SLAB_KFREE, "kfree"),
                ]),
            },
            // The allocating task's memcg, each object remembered until its free: twice the
            // cost, for kernels whose memory map cannot be measured.
            Strategy {
                name: TRACKED,
                attach: Attach::RawTracepoints(&[
                    (PROG_SLAB_CACHE_ALLOC_TRACKED, "kmem_cache_alloc"),
                    (PROG_SLAB_KMALLOC_TRACKED, "kmalloc"),
                    (PROG_SLAB_CACHE_FREE_TRACKED, "kmem_cache_free"),
                    (PROG_SLAB_KFREE_TRACKED, "kfree"),
                ]),
            },
        ],
    },
];

/// Parses `POINT=STRATEGY` for `--probe-strategy`.
///
/// # Errors
///
/// A message naming the known points or strategies.
pub fn parse_forced(value: &str) -> Result<(String, String), String> {
    let (point, strategy) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not POINT=STRATEGY (e.g. oom_kill=kprobe)"))?;
    let known = POINTS.iter().find(|p| p.name == point).ok_or_else(|| {
        let names: Vec<&str> = POINTS.iter().map(|p| p.name).collect();
        format!("no probe point {point:?}; there are {}", names.join(", "))
    })?;
    if !known.strategies.iter().any(|s| s.name == strategy) {
        let names: Vec<&str> = known.strategies.iter().map(|s| s.name).collect();
        return Err(format!(
            "{point} has no strategy {strategy:?}; it has {}",
            names.join(", ")
        ));
    }
    Ok((point.to_owned(), strategy.to_owned()))
}

/// Parses a probe point name for `--events`.
///
/// # Errors
///
/// A message naming the known points.
pub fn parse_point(value: &str) -> Result<String, String> {
    if POINTS.iter().any(|p| p.name == value) {
        Ok(value.to_owned())
    } else {
        let names: Vec<&str> = POINTS.iter().map(|p| p.name).collect();
        Err(format!(
            "no probe point {value:?}; there are {}",
            names.join(", ")
        ))
    }
}

/// One strategy tried for a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub strategy: String,
    /// `Err`: why the kernel (or aya) refused it, one line.
    pub result: Result<(), String>,
}

/// Everything tried for one point, and what was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointOutcome {
    pub point: &'static str,
    pub attempts: Vec<Attempt>,
    pub chosen: Option<String>,
    /// The strategy was forced with `--probe-strategy`.
    pub forced: bool,
}

/// Tries `point`'s strategies in order (only `forced`, when given) until one attaches.
/// `attached` names the points attached so far, which derived strategies need.
pub fn attach_point(
    ebpf: &mut Ebpf,
    point: &Point,
    forced: Option<&str>,
    btf: &mut Option<Result<Btf, String>>,
    offsets: &KernelOffsets,
    attached: &[&str],
) -> PointOutcome {
    let mut attempts = Vec::new();
    for strategy in point.strategies {
        if forced.is_some_and(|f| f != strategy.name) {
            continue;
        }
        let result = match strategy.attach {
            Attach::Derived { from } if !attached.contains(&from) => Err(format!(
                "derives from the {from} probe point, which is not attached \
                 (add it to --events)"
            )),
            _ => attach(ebpf, strategy, btf, offsets).map_err(|e| e.to_string()),
        };
        let ok = result.is_ok();
        log::debug!("{} {}: {result:?}", point.name, strategy.describe());
        attempts.push(Attempt {
            strategy: strategy.describe(),
            result,
        });
        if ok {
            return PointOutcome {
                point: point.name,
                chosen: Some(strategy.describe()),
                attempts,
                forced: forced.is_some(),
            };
        }
    }
    PointOutcome {
        point: point.name,
        attempts,
        chosen: None,
        forced: forced.is_some(),
    }
}

/// Loads and attaches one strategy's programs.
///
/// # Errors
///
/// The kernel's (or aya's) refusal, as one line.
pub fn attach(
    ebpf: &mut Ebpf,
    strategy: &Strategy,
    btf: &mut Option<Result<Btf, String>>,
    offsets: &KernelOffsets,
) -> Result<(), ProbeError> {
    match &strategy.attach {
        Attach::Fentry { program, function } => {
            let btf = aya_btf(btf, "fentry", function)?;
            let error = |source| program_error(format!("fentry {function}"), &source);
            let p: &mut FEntry = program_mut(ebpf, program)?.try_into().map_err(error)?;
            p.load(function, btf).map_err(error)?;
            p.attach().map_err(error)?;
        }
        Attach::Fexit { program, function } => {
            let btf = aya_btf(btf, "fexit", function)?;
            let error = |source| program_error(format!("fexit {function}"), &source);
            let p: &mut FExit = program_mut(ebpf, program)?.try_into().map_err(error)?;
            p.load(function, btf).map_err(error)?;
            p.attach().map_err(error)?;
        }
        Attach::Kprobe { program, function } => {
            let error = |source| program_error(format!("kprobe {function}"), &source);
            let p: &mut KProbe = program_mut(ebpf, program)?.try_into().map_err(error)?;
            p.load().map_err(error)?;
            p.attach(*function, 0).map_err(error)?;
        }
        Attach::KprobeReturn {
            entry,
            ret,
            function,
        } => {
            let error = |source| program_error(format!("kretprobe {function}"), &source);
            let r: &mut KProbe = program_mut(ebpf, ret)?.try_into().map_err(error)?;
            r.load().map_err(error)?;
            let ret_link = r.attach(*function, 0).map_err(error)?;
            let entered = (|| {
                let error = |source| program_error(format!("kprobe {function}"), &source);
                let p: &mut KProbe = program_mut(ebpf, entry)?.try_into().map_err(error)?;
                p.load().map_err(error)?;
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
            super::memory_map::install(ebpf, offsets)?;
            attach_all_raw(ebpf, pairs)?;
        }
        Attach::Tracepoint {
            program,
            category,
            name,
        } => {
            super::privileges::ensure_tracefs()?;
            let error = |source| program_error(format!("tracepoint {category}:{name}"), &source);
            let p: &mut TracePoint = program_mut(ebpf, program)?.try_into().map_err(error)?;
            p.load().map_err(error)?;
            p.attach(category, name).map_err(error)?;
        }
    }
    Ok(())
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

/// Loads `program` and attaches it to the raw tracepoint.
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
    let p: &mut RawTracePoint = program_mut(ebpf, program)?.try_into().map_err(error)?;
    p.load().map_err(error)?;
    p.attach(tracepoint).map_err(error)
}

/// aya's own BTF parse, needed to load fentry and fexit programs; once, and only if needed.
fn aya_btf<'a>(
    btf: &'a mut Option<Result<Btf, String>>,
    kind: &str,
    function: &str,
) -> Result<&'a Btf, ProbeError> {
    btf.get_or_insert_with(|| Btf::from_sys_fs().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ProbeError::Program {
            what: format!("{kind} {function}"),
            reason: format!("kernel BTF: {e}"),
        })
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, ProbeError> {
    ebpf.program_mut(name).ok_or(ProbeError::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_strategies_are_checked_against_the_plan() {
        assert_eq!(
            parse_forced("oom_kill=kprobe"),
            Ok(("oom_kill".into(), "kprobe".into()))
        );
        assert!(parse_forced("oom_kill").is_err());
        assert!(
            parse_forced("nope=kprobe")
                .expect_err("must be refused")
                .contains("oom_kill, cgroup, page_cache, reclaim, charge, try_charge, slab")
        );
        assert!(
            parse_forced("cgroup=fentry")
                .expect_err("must be refused")
                .contains("raw_tp")
        );
        assert!(parse_point("reclaim").is_ok());
        assert!(parse_point("slab").is_ok());
        assert!(parse_point("kmem").is_err());
        assert_eq!(
            parse_forced("try_charge=derived"),
            Ok(("try_charge".into(), "derived".into()))
        );
    }

    #[test]
    fn strategies_describe_what_they_attach() {
        let oom = &POINTS[0];
        let names: Vec<String> = oom.strategies.iter().map(Strategy::describe).collect();
        assert_eq!(
            names,
            [
                "fentry/oom_kill_process",
                "kprobe/oom_kill_process",
                "raw_tp/mark_victim"
            ]
        );
    }
}
