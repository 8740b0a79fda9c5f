//! Loads, on every CPU at once, the programs start-up is sure to try: those of each asked-for
//! point's first strategy that the kernel is not already known to refuse
//! ([`plan::known_refused`]: fentry and fexit where the kernel refused the test program,
//! kprobes where it has no kprobe PMU), when it attaches raw tracepoints. On this host that is
//! every point's: `oom_kill`, `cgroup`, `page_cache`, `reclaim`, `charge`, `slab`. The kernel
//! verifies a program in the thread that loads it, 2–5 ms for each of the larger ones here,
//! several times that on a busy machine, and a dozen of them one after the other were a third
//! of start-up. Attaching stays in the points' order ([`super::plan::attach_point`]) and loads
//! only what is not loaded yet.
//!
//! Programs of later strategies are never loaded here: they are tried only when the one before
//! is refused. A program the kernel refuses here is loaded again when its strategy is tried,
//! so that the refusal is reported where it always was.

use std::thread;

use aya::{Ebpf, programs::Program};
use memtrace_common::KernelOffsets;

use super::{
    AttachOptions, ProbePoint,
    aya_btf::AyaBtf,
    deferred_maps,
    plan::{self, Attach},
};

/// Loads the first strategies' raw tracepoint programs, spread over the CPUs.
pub fn preload(ebpf: &mut Ebpf, options: &AttachOptions, offsets: &KernelOffsets, btf: &AyaBtf) {
    let mut wanted = programs_sure_to_be_tried(ebpf, options, offsets, btf);
    // Those whose maps cannot get their full size are left to their strategy, which says why.
    wanted.retain(|&program| {
        deferred_maps::grow_for(ebpf, [program])
            .inspect_err(|e| log::debug!("not preloading {program}: {e}"))
            .is_ok()
    });
    let mut programs: Vec<(&str, &mut Program)> = ebpf
        .programs_mut()
        .filter(|(name, program)| wanted.contains(name) && program.fd().is_err())
        .collect();
    // The order the points attach in, so that the first points' programs are ready first.
    programs.sort_by_key(|(name, _)| wanted.iter().position(|w| w == name));
    let threads = thread::available_parallelism().map_or(1, usize::from);
    let mut shares: Vec<Vec<(&str, &mut Program)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, program) in programs.into_iter().enumerate() {
        shares[i % threads].push(program);
    }
    thread::scope(|scope| {
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        for share in shares.filter(|share| !share.is_empty()) {
            scope.spawn(move || load(share));
        }
        load(mine);
    });
}

fn load(programs: Vec<(&str, &mut Program)>) {
    for (name, program) in programs {
        let loaded = match program {
            Program::RawTracePoint(p) => p.load(),
            _ => continue,
        };
        if let Err(e) = loaded {
            log::debug!("preloading {name}: {e}; loaded again when its strategy is tried");
        }
    }
}

/// The programs of each asked-for point's first strategy that the kernel is not known to
/// refuse, when it is raw tracepoints.
fn programs_sure_to_be_tried(
    ebpf: &Ebpf,
    options: &AttachOptions,
    offsets: &KernelOffsets,
    btf: &AyaBtf,
) -> Vec<&'static str> {
    ProbePoint::ALL
        .iter()
        .filter(|&&point| super::may_attach(options, point))
        .filter_map(|&point| {
            let forced = options.forced.iter().find(|(p, _)| *p == point);
            plan::strategies(point).iter().find(|c| {
                forced.is_none_or(|&(_, s)| s == c.strategy)
                    && !plan::known_refused(ebpf, &c.attach, btf, offsets)
            })
        })
        .filter_map(|c| match c.attach {
            Attach::RawTracepoints(pairs) | Attach::RawTracepointsWithMemoryMap(pairs) => {
                Some(pairs)
            }
            _ => None,
        })
        .flat_map(|pairs| pairs.iter().map(|&(program, _)| program))
        .collect()
}
