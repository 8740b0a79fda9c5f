//! Per-event cost on each hot tracepoint, memtrace against bpftrace doing the same aggregation in
//! the same runs, with the limits: the kernel's run time ÷ run count of each tool's
//! programs on the tracepoint, per run, then the median over the runs of the workload that
//! drives that tracepoint. Pure, so that it is tested without a kernel.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    bpf_stats::{ProgramKey, Usage},
    stats::{median, per_event},
    tracer::Tool,
    workload::Kind,
};

/// A tracepoint whose per-event cost has a limit relative to bpftrace's.
struct Target {
    what: &'static str,
    /// The workload whose runs drive the tracepoint.
    workload: Kind,
    tracepoint: &'static str,
    /// memtrace's programs counted: those whose (kernel-truncated, 15-character) name starts
    /// with this; empty: all of its programs on the tracepoint.
    memtrace_program: &'static str,
    /// memtrace's cost ÷ bpftrace's, at most.
    max_ratio: f64,
    limit: &'static str,
}

const HALF: f64 = 0.5;
const THIRD: f64 = 1.0 / 3.0;

const TARGETS: [Target; 7] = [
    Target {
        what: "page-cache add",
        workload: Kind::ColdRead,
        tracepoint: "mm_filemap_add_to_page_cache",
        memtrace_program: "",
        max_ratio: HALF,
        limit: "½",
    },
    Target {
        what: "page-cache delete",
        workload: Kind::ColdRead,
        tracepoint: "mm_filemap_delete_from_page_cache",
        memtrace_program: "",
        max_ratio: HALF,
        limit: "½",
    },
    Target {
        what: "slab alloc",
        workload: Kind::SlabChurn,
        tracepoint: "kmem_cache_alloc",
        memtrace_program: "",
        max_ratio: THIRD,
        limit: "⅓",
    },
    Target {
        what: "slab kmalloc",
        workload: Kind::SlabChurn,
        tracepoint: "kmalloc",
        memtrace_program: "",
        max_ratio: THIRD,
        limit: "⅓",
    },
    Target {
        what: "slab free",
        workload: Kind::SlabChurn,
        tracepoint: "kmem_cache_free",
        memtrace_program: "",
        max_ratio: THIRD,
        limit: "⅓",
    },
    Target {
        what: "slab kfree",
        workload: Kind::SlabChurn,
        tracepoint: "kfree",
        memtrace_program: "",
        max_ratio: THIRD,
        limit: "⅓",
    },
    Target {
        what: "charge stat update",
        workload: Kind::ColdRead,
        tracepoint: "mod_memcg_lruvec_state",
        // `memcg_lruvec_stat`; the refault program on the same tracepoint is another feature.
        memtrace_program: "memcg_lruvec_st",
        max_ratio: 1.0,
        limit: "1",
    },
];

/// One tracepoint's comparison.
#[derive(Debug, Serialize)]
pub struct PerEvent {
    pub what: &'static str,
    pub workload: Kind,
    pub tracepoint: &'static str,
    /// Median over runs of each tool's nanoseconds per event; `None`: no run had an event.
    pub memtrace_ns: Option<f64>,
    pub bpftrace_ns: Option<f64>,
    pub floor_ns: Option<f64>,
    /// The count floor's: one per-CPU hash count per event, the least a per-key aggregation
    /// costs there.
    pub count_floor_ns: Option<f64>,
    /// Median events per memtrace run.
    pub events: Option<f64>,
    /// memtrace ÷ bpftrace.
    pub ratio: Option<f64>,
    pub max_ratio: f64,
    pub limit: &'static str,
}

impl PerEvent {
    pub fn pass(&self) -> bool {
        self.ratio.is_some_and(|ratio| ratio <= self.max_ratio)
    }

    /// The most memtrace may cost per event to meet the limit, when it is below what a per-key
    /// count alone costs on this tracepoint (then no per-key aggregation can meet it here).
    pub fn limit_below_count_floor(&self) -> Option<f64> {
        let allowed = self.bpftrace_ns? * self.max_ratio;
        (allowed < self.count_floor_ns?).then_some(allowed)
    }
}

/// Every target's comparison, from each program's usage run by run.
pub fn compare(per_run: &BTreeMap<(Kind, Tool, ProgramKey), Vec<Usage>>) -> Vec<PerEvent> {
    TARGETS
        .iter()
        .map(|target| {
            let of = |tool: Tool| {
                let runs = runs_of(per_run, target, tool);
                let ns: Vec<f64> = runs
                    .iter()
                    .filter_map(|u| per_event(u.run_time_ns, u.run_cnt))
                    .collect();
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "a figure for people: 52 bits of events are plenty"
                )]
                let events: Vec<f64> = runs.iter().map(|u| u.run_cnt as f64).collect();
                (median(&ns), median(&events))
            };
            let (memtrace_ns, events) = of(Tool::Memtrace);
            let (bpftrace_ns, _) = of(Tool::Bpftrace);
            let (floor_ns, _) = of(Tool::Floor);
            let (count_floor_ns, _) = of(Tool::CountFloor);
            let ratio = memtrace_ns
                .zip(bpftrace_ns)
                .and_then(|(ours, theirs)| super::stats::ratio(ours, theirs));
            PerEvent {
                what: target.what,
                workload: target.workload,
                tracepoint: target.tracepoint,
                memtrace_ns,
                bpftrace_ns,
                floor_ns,
                count_floor_ns,
                events,
                ratio,
                max_ratio: target.max_ratio,
                limit: target.limit,
            }
        })
        .collect()
}

/// `tool`'s programs on the target's tracepoint, summed per run.
fn runs_of(
    per_run: &BTreeMap<(Kind, Tool, ProgramKey), Vec<Usage>>,
    target: &Target,
    tool: Tool,
) -> Vec<Usage> {
    let mut runs: Vec<Usage> = Vec::new();
    for ((kind, t, key), usages) in per_run {
        let wanted = *kind == target.workload
            && *t == tool
            && key.attach.split('+').any(|tp| tp == target.tracepoint)
            && (tool != Tool::Memtrace || key.name.starts_with(target.memtrace_program));
        if !wanted {
            continue;
        }
        if runs.len() < usages.len() {
            runs.resize(usages.len(), Usage::default());
        }
        for (run, usage) in runs.iter_mut().zip(usages) {
            run.run_time_ns += usage.run_time_ns;
            run.run_cnt += usage.run_cnt;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::compare;
    use crate::bench::{
        bpf_stats::{ProgramKey, Usage},
        tracer::Tool,
        workload::Kind,
    };

    fn usage(run_time_ns: u64, run_cnt: u64) -> Usage {
        Usage {
            run_time_ns,
            run_cnt,
        }
    }

    #[test]
    fn compares_medians_of_runs_on_the_same_tracepoint() {
        let key = |name: &str, attach: &str| ProgramKey {
            name: name.into(),
            attach: attach.into(),
        };
        let mut per_run = BTreeMap::new();
        // memtrace: 100, 40, 50 ns per event: median 50.
        per_run.insert(
            (
                Kind::ColdRead,
                Tool::Memtrace,
                key("filemap_add_ref", "mm_filemap_add_to_page_cache"),
            ),
            vec![usage(1000, 10), usage(400, 10), usage(500, 10)],
        );
        // bpftrace: 200, 100, 300: median 200.
        per_run.insert(
            (
                Kind::ColdRead,
                Tool::Bpftrace,
                key("tracepoint_file", "mm_filemap_add_to_page_cache"),
            ),
            vec![usage(2000, 10), usage(1000, 10), usage(3000, 10)],
        );
        // The same tracepoint in the other workload does not count.
        per_run.insert(
            (
                Kind::SlabChurn,
                Tool::Memtrace,
                key("filemap_add_ref", "mm_filemap_add_to_page_cache"),
            ),
            vec![usage(1_000_000, 1)],
        );
        // Two memtrace programs on the stat tracepoint: only the charge one is the target's.
        per_run.insert(
            (
                Kind::ColdRead,
                Tool::Memtrace,
                key("memcg_lruvec_st", "mod_memcg_lruvec_state"),
            ),
            vec![usage(300, 10)],
        );
        per_run.insert(
            (
                Kind::ColdRead,
                Tool::Memtrace,
                key("refault_stat", "mod_memcg_lruvec_state"),
            ),
            vec![usage(9000, 10)],
        );
        per_run.insert(
            (
                Kind::ColdRead,
                Tool::Bpftrace,
                key("tracepoint_memc", "mod_memcg_lruvec_state"),
            ),
            vec![usage(600, 10), usage(0, 0)],
        );

        let compared = compare(&per_run);
        let add = &compared[0];
        assert_eq!(add.tracepoint, "mm_filemap_add_to_page_cache");
        assert_eq!(add.memtrace_ns, Some(50.0));
        assert_eq!(add.bpftrace_ns, Some(200.0));
        assert_eq!(add.ratio, Some(0.25));
        assert!(add.pass());
        assert_eq!(add.floor_ns, None);

        let delete = &compared[1];
        assert_eq!(delete.ratio, None);
        assert!(!delete.pass(), "nothing measured is not a pass");

        let stat = &compared[6];
        assert_eq!(stat.memtrace_ns, Some(30.0));
        // A run without events has no per-event cost.
        assert_eq!(stat.bpftrace_ns, Some(60.0));
        assert_eq!(stat.ratio, Some(0.5));
        assert!(stat.pass());
    }

    #[test]
    fn a_limit_below_what_a_per_key_count_costs_is_out_of_reach() {
        let mut per_run = BTreeMap::new();
        let runs = |ns: u64| vec![usage(ns * 1000, 1000); 3];
        let key = |name: &str| ProgramKey {
            name: name.into(),
            attach: "kmem_cache_free".into(),
        };
        per_run.insert(
            (Kind::SlabChurn, Tool::Memtrace, key("slab_cache_free")),
            runs(160),
        );
        per_run.insert(
            (Kind::SlabChurn, Tool::Bpftrace, key("kmem_cache_free")),
            runs(240),
        );
        per_run.insert(
            (Kind::SlabChurn, Tool::CountFloor, key("count_floor_kme")),
            runs(90),
        );
        let free = compare(&per_run)
            .into_iter()
            .find(|p| p.tracepoint == "kmem_cache_free")
            .expect("the free target");
        assert_eq!(free.count_floor_ns, Some(90.0));
        // ⅓ of 240 ns is 80 ns, under the 90 ns a per-key count alone costs.
        assert_eq!(free.limit_below_count_floor(), Some(80.0));
        assert!(!free.pass());
    }
}
