//! Loads, on every CPU at once (several threads per CPU), the programs start-up is sure to
//! try: those of each asked-for point's first strategy that the kernel is not already known to refuse
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

use std::{sync::Mutex, thread};

use aya::{Ebpf, programs::Program};
use memtrace_common::KernelOffsets;

use crate::startup::timed;

use super::{
    AttachOptions, ProbePoint,
    aya_btf::AyaBtf,
    deferred_maps,
    plan::{self, Attach},
};

/// Loading threads per CPU. The kernel verifies a program in the thread that loads it, and
/// shares the CPUs among threads: with a busy loop on each of the 2 CPUs here, 2 threads
/// verified the 15 programs in 115–192 ms, 6 threads in 86–104 ms (11 alternations of the two,
/// the 6 faster in each). Idle, the verification takes as long either way.
const THREADS_PER_CPU: usize = 3;

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
    // One queue that every thread takes the next program from: the programs' verification
    // times differ tenfold, and a thread that drew the short ones would idle while the other
    // verified the long ones.
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let threads = (THREADS_PER_CPU * cpus).min(programs.len()).max(1);
    let queue = Mutex::new(programs.into_iter());
    let next = || queue.lock().ok()?.next();
    thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| load(next));
        }
        load(next);
    });
}

/// Loads programs from `next` until it has none left.
fn load<'a>(next: impl Fn() -> Option<(&'a str, &'a mut Program)>) {
    while let Some((name, program)) = next() {
        let (loaded, took) = match program {
            Program::RawTracePoint(p) => timed(|| p.load()),
            _ => continue,
        };
        match loaded {
            Ok(()) => log::debug!("preloaded {name} in {took:.1?} (the verifier, mostly)"),
            Err(e) => {
                log::debug!("preloading {name}: {e}; loaded again when its strategy is tried");
            }
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
