//! What the bench measured, summarised: medians, ratios, per-event costs and the targets,
//! as a table for people and as JSON for tools. Pure, so that it is tested without a kernel.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    bpf_stats::{ProgramKey, Usage},
    per_event::{self, PerEvent},
    stats::{median, per_event, ratio},
    tracer::Tool,
    workload::Kind,
};

/// The limits (the per-event ones are in [`per_event`]): slab churn's slowdown above
/// the floor's at most this part of bpftrace's, and start-up.
const SLAB_CHURN_MAX_PART_OF_BPFTRACE: f64 = 1.0 / 3.0;
const STARTUP_MAX_SECONDS: f64 = 0.15;

/// What was collected, run by run.
#[derive(Debug, Default)]
pub struct Samples {
    /// Wall seconds of each run, by workload and tracer (`None`: untraced).
    pub wall: BTreeMap<(Kind, Option<Tool>), Vec<f64>>,
    /// Seconds from launch to "attached", by tracer.
    pub startup: BTreeMap<Tool, Vec<f64>>,
    /// BPF run time and count, summed over a workload's traced runs.
    pub programs: BTreeMap<(Kind, Tool, ProgramKey), Usage>,
    /// The same, run by run.
    pub per_run: BTreeMap<(Kind, Tool, ProgramKey), Vec<Usage>>,
    /// Page cache memtrace attributed to the bench's cgroup, per traced run.
    pub attributed: BTreeMap<Kind, Vec<u64>>,
}

/// Where and how the bench ran.
#[derive(Debug, Serialize)]
pub struct Context {
    pub kernel: String,
    pub bpftrace: String,
    pub cgroup_version: String,
    pub cgroup: String,
    pub runs: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub context: Context,
    pub bpftrace_script: String,
    pub workloads: Vec<WorkloadReport>,
    /// Per-event cost on each hot tracepoint, memtrace against bpftrace.
    pub per_event: Vec<PerEvent>,
    pub startup: Startup,
    pub targets: Vec<Verdict>,
    /// The whole bench, from start to the report (build and installs included).
    pub wall_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    pub workload: Kind,
    pub description: String,
    pub seconds: PerConfig<Vec<f64>>,
    pub median_seconds: PerConfig<f64>,
    /// Traced median ÷ untraced median.
    pub ratio: PerTool<f64>,
    /// In-kernel run time of the tracer's programs per run, in nanoseconds.
    pub bpf_ns_per_run: PerTool<f64>,
    pub programs: Vec<ProgramReport>,
    pub memtrace_attributed_page_cache_bytes: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct PerConfig<T> {
    pub untraced: T,
    pub memtrace: T,
    pub bpftrace: T,
    pub floor: T,
}

#[derive(Debug, Serialize)]
pub struct PerTool<T> {
    pub memtrace: T,
    pub bpftrace: T,
    /// Empty programs on the same tracepoints as bpftrace's.
    pub floor: T,
}

#[derive(Debug, Serialize)]
pub struct ProgramReport {
    pub tool: Tool,
    pub program: String,
    pub tracepoint: String,
    pub events: u64,
    pub run_time_ns: u64,
    pub ns_per_event: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Startup {
    pub seconds: PerTool<Vec<f64>>,
    pub median_seconds: PerTool<f64>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

impl Report {
    /// Summarises `samples`; fails when a configuration has no sample.
    pub fn new(context: Context, samples: &Samples, wall_seconds: f64) -> anyhow::Result<Self> {
        let workloads = Kind::ALL
            .into_iter()
            .map(|kind| WorkloadReport::new(kind, samples, context.runs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let startup_of = |tool: Tool| samples.startup.get(&tool).cloned().unwrap_or_default();
        let seconds = PerTool {
            memtrace: startup_of(Tool::Memtrace),
            bpftrace: startup_of(Tool::Bpftrace),
            floor: startup_of(Tool::Floor),
        };
        let median_seconds = PerTool {
            memtrace: median(&seconds.memtrace).context("no start-up of memtrace measured")?,
            bpftrace: median(&seconds.bpftrace).context("no start-up of bpftrace measured")?,
            floor: median(&seconds.floor).context("no start-up of the floor measured")?,
        };
        let startup = Startup {
            seconds,
            median_seconds,
        };
        let per_event = per_event::compare(&samples.per_run);
        let targets = targets(&workloads, &per_event, &startup);
        Ok(Self {
            context,
            bpftrace_script: super::tracer::bpftrace_script(),
            workloads,
            per_event,
            startup,
            targets,
            wall_seconds,
        })
    }

    /// The table for stdout.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_times(&mut out);
        self.render_programs(&mut out);
        self.render_per_event(&mut out);
        self.render_startup(&mut out);
        let _ = writeln!(out, "\nTargets (from the issue; measured, not enforced)");
        for t in &self.targets {
            let verdict = if t.pass { "PASS" } else { "MISS" };
            let _ = writeln!(out, "  {verdict}  {:<62} {}", t.target, t.measured);
        }
        let _ = write!(out, "\nbench took {:.0} s", self.wall_seconds);
        out
    }

    fn render_times(&self, out: &mut String) {
        let c = &self.context;
        let _ = writeln!(
            out,
            "memtrace bench: {} run{} of each configuration per workload, interleaved \
             (untraced, memtrace, bpftrace, floor: empty programs on memtrace's raw \
             tracepoints, count floor: programs that only count per key there)\nkernel {}; {}; workloads run in the memory cgroup {} ({})",
            c.runs,
            if c.runs == 1 { "" } else { "s" },
            c.kernel,
            c.bpftrace,
            c.cgroup,
            c.cgroup_version
        );
        let _ = writeln!(
            out,
            "BPF run-time statistics on (BPF_ENABLE_STATS) during every run: each traced event also pays the \
             kernel's own accounting (~20 ns), for both tracers alike.\n"
        );
        let _ = writeln!(
            out,
            "Workload time (median wall seconds; ×: traced median ÷ untraced median)"
        );
        row(
            out,
            &TIMES,
            &[
                "workload", "untraced", "memtrace", "×", "bpftrace", "×", "floor", "×",
            ]
            .map(String::from),
        );
        for w in &self.workloads {
            let m = &w.median_seconds;
            let seconds = |s: f64| format!("{s:.3}");
            row(
                out,
                &TIMES,
                &[
                    w.workload.name().to_owned(),
                    seconds(m.untraced),
                    seconds(m.memtrace),
                    times(w.ratio.memtrace),
                    seconds(m.bpftrace),
                    times(w.ratio.bpftrace),
                    seconds(m.floor),
                    times(w.ratio.floor),
                ],
            );
        }
        for w in &self.workloads {
            let _ = writeln!(out, "  {}: {}", w.workload.name(), w.description);
        }
    }

    fn render_programs(&self, out: &mut String) {
        let c = &self.context;
        let _ = writeln!(
            out,
            "\nIn-kernel cost per BPF program (run_time_ns ÷ run_cnt, summed over each \
             workload's traced runs; events are system-wide)"
        );
        row(
            out,
            &PROGRAMS,
            &[
                "workload",
                "tracer",
                "program",
                "tracepoint",
                "events",
                "ns/event",
            ]
            .map(String::from),
        );
        for w in &self.workloads {
            let name = w.workload.name();
            let mut idle: BTreeMap<Tool, Vec<&str>> = BTreeMap::new();
            for p in &w.programs {
                let Some(cost) = p.ns_per_event else {
                    idle.entry(p.tool).or_default().push(&p.program);
                    continue;
                };
                row(
                    out,
                    &PROGRAMS,
                    &[
                        name.to_owned(),
                        p.tool.name().to_owned(),
                        p.program.clone(),
                        p.tracepoint.clone(),
                        p.events.to_string(),
                        format!("{cost:.0}"),
                    ],
                );
            }
            for (tool, programs) in idle {
                let _ = writeln!(
                    out,
                    "  {name:<11} {:<9} no events: {}",
                    tool.name(),
                    programs.join(", ")
                );
            }
            let _ = writeln!(
                out,
                "  {name:<11} BPF time per run: memtrace {:.2} ms, bpftrace {:.2} ms, floor {:.2} ms",
                w.bpf_ns_per_run.memtrace / 1e6,
                w.bpf_ns_per_run.bpftrace / 1e6,
                w.bpf_ns_per_run.floor / 1e6,
            );
            if let Some(mib) = median_mib(&w.memtrace_attributed_page_cache_bytes) {
                let _ = writeln!(
                    out,
                    "  {name:<11} page cache memtrace attributed to {}: {mib:.0} MiB per run \
                     (median)",
                    c.cgroup
                );
            }
        }
    }

    fn render_per_event(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nPer-event cost on the same tracepoint (ns/event, median of each tool's runs of the \
             workload; ×: memtrace ÷ bpftrace; floor: an empty program on memtrace's raw \
             tracepoint; count: a program that only counts each event in a per-CPU hash, the \
             least any per-key aggregation costs)"
        );
        row(
            out,
            &PER_EVENT,
            &[
                "what",
                "tracepoint",
                "events/run",
                "memtrace",
                "bpftrace",
                "floor",
                "count",
                "×",
                "limit",
            ]
            .map(String::from),
        );
        let ns = |ns: Option<f64>| ns.map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"));
        for p in &self.per_event {
            row(
                out,
                &PER_EVENT,
                &[
                    p.what.to_owned(),
                    p.tracepoint.to_owned(),
                    ns(p.events),
                    ns(p.memtrace_ns),
                    ns(p.bpftrace_ns),
                    ns(p.floor_ns),
                    ns(p.count_floor_ns),
                    p.ratio
                        .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
                    format!("≤ {}", p.limit),
                ],
            );
        }
    }

    fn render_startup(&self, out: &mut String) {
        let s = &self.startup.median_seconds;
        let _ = writeln!(
            out,
            "\nStart-up (median seconds from launch to attached, {} launches each)",
            self.startup.seconds.memtrace.len()
        );
        let _ = writeln!(
            out,
            "  memtrace {:.3} s (to \"memtrace: attached ...\")",
            s.memtrace
        );
        let _ = writeln!(
            out,
            "  bpftrace {:.3} s (to \"Attaching N probes...\", which it prints just before \
             attaching; the bench then waits until bpftool shows them attached)",
            s.bpftrace
        );
    }
}

impl WorkloadReport {
    fn new(kind: Kind, samples: &Samples, runs: usize) -> anyhow::Result<Self> {
        let wall =
            |tool: Option<Tool>| samples.wall.get(&(kind, tool)).cloned().unwrap_or_default();
        let seconds = PerConfig {
            untraced: wall(None),
            memtrace: wall(Some(Tool::Memtrace)),
            bpftrace: wall(Some(Tool::Bpftrace)),
            floor: wall(Some(Tool::Floor)),
        };
        let med = |values: &[f64], what: &str| {
            median(values).with_context(|| format!("no {what} run of {} measured", kind.name()))
        };
        let median_seconds = PerConfig {
            untraced: med(&seconds.untraced, "untraced")?,
            memtrace: med(&seconds.memtrace, "memtrace")?,
            bpftrace: med(&seconds.bpftrace, "bpftrace")?,
            floor: med(&seconds.floor, "floor")?,
        };
        let ratio_of = |traced: f64| {
            ratio(traced, median_seconds.untraced)
                .with_context(|| format!("the untraced {} took no time", kind.name()))
        };
        let ratio = PerTool {
            memtrace: ratio_of(median_seconds.memtrace)?,
            bpftrace: ratio_of(median_seconds.bpftrace)?,
            floor: ratio_of(median_seconds.floor)?,
        };

        let programs: Vec<ProgramReport> = samples
            .programs
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|((_, tool, key), usage)| ProgramReport {
                tool: *tool,
                program: key.name.clone(),
                tracepoint: key.attach.clone(),
                events: usage.run_cnt,
                run_time_ns: usage.run_time_ns,
                ns_per_event: per_event(usage.run_time_ns, usage.run_cnt),
            })
            .collect();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a figure for people: 52 bits of nanoseconds are plenty"
        )]
        let per_run = |tool: Tool| {
            let total: u64 = programs
                .iter()
                .filter(|p| p.tool == tool)
                .map(|p| p.run_time_ns)
                .sum();
            total as f64 / runs.max(1) as f64
        };
        let bpf_ns_per_run = PerTool {
            memtrace: per_run(Tool::Memtrace),
            bpftrace: per_run(Tool::Bpftrace),
            floor: per_run(Tool::Floor),
        };
        Ok(Self {
            workload: kind,
            description: kind.describe(),
            seconds,
            median_seconds,
            ratio,
            bpf_ns_per_run,
            programs,
            memtrace_attributed_page_cache_bytes: samples
                .attributed
                .get(&kind)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// The targets, each met or missed.
fn targets(
    workloads: &[WorkloadReport],
    per_event: &[PerEvent],
    startup: &Startup,
) -> Vec<Verdict> {
    let mut targets: Vec<Verdict> = per_event
        .iter()
        .map(|p| {
            let ns = |ns: Option<f64>| ns.map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"));
            Verdict {
                target: format!(
                    "{} ({}): memtrace ≤ {} of bpftrace per event",
                    p.what, p.tracepoint, p.limit
                ),
                measured: format!(
                    "{} ns vs {} ns: {} (floor {} ns, count floor {} ns){}",
                    ns(p.memtrace_ns),
                    ns(p.bpftrace_ns),
                    p.ratio
                        .map_or_else(|| "not measured".to_owned(), |r| format!("×{r:.2}")),
                    ns(p.floor_ns),
                    ns(p.count_floor_ns),
                    p.limit_below_count_floor()
                        .map_or_else(String::new, |allowed| format!(
                            "; out of reach here: the limit allows {allowed:.0} ns, less than a \
                         per-key count alone costs"
                        )),
                ),
                pass: p.pass(),
            }
        })
        .collect();
    for w in workloads {
        if w.workload != Kind::SlabChurn {
            continue;
        }
        let (ours, theirs) = (
            w.ratio.memtrace - w.ratio.floor,
            w.ratio.bpftrace - w.ratio.floor,
        );
        targets.push(Verdict {
            target: format!(
                "{} slowdown above the floor: memtrace ≤ ⅓ of bpftrace's",
                w.workload.name()
            ),
            measured: format!(
                "{ours:+.3} vs {theirs:+.3} (memtrace {}, bpftrace {}, floor {})",
                times(w.ratio.memtrace),
                times(w.ratio.bpftrace),
                times(w.ratio.floor)
            ),
            pass: ours <= SLAB_CHURN_MAX_PART_OF_BPFTRACE * theirs.max(0.0),
        });
    }
    targets.push(Verdict {
        target: format!("memtrace start-up ≤ {STARTUP_MAX_SECONDS:.2} s"),
        measured: format!("{:.3} s", startup.median_seconds.memtrace),
        pass: startup.median_seconds.memtrace <= STARTUP_MAX_SECONDS,
    });
    for w in workloads {
        targets.push(below_bpftrace(
            &format!(
                "{}: memtrace's BPF time per run below bpftrace's",
                w.workload.name()
            ),
            &w.bpf_ns_per_run,
            |ns| format!("{:.2} ms", ns / 1e6),
        ));
    }
    targets
}

fn below_bpftrace(target: &str, figures: &PerTool<f64>, show: impl Fn(f64) -> String) -> Verdict {
    let (ours, theirs) = (figures.memtrace, figures.bpftrace);
    Verdict {
        target: target.to_owned(),
        measured: format!("{} vs {}", show(ours), show(theirs)),
        pass: ours < theirs,
    }
}

/// The workload-time table's column widths; negative: left-aligned.
const TIMES: [isize; 8] = [-11, 9, 10, 7, 10, 7, 10, 7];
/// The per-event table's column widths; negative: left-aligned.
const PER_EVENT: [isize; 9] = [-18, -33, 10, 8, 8, 6, 6, 5, 5];
/// The per-program table's column widths; negative: left-aligned.
const PROGRAMS: [isize; 6] = [-11, -9, -20, -34, 10, 9];

/// One table line: two spaces, then each cell padded to its width (negative: left-aligned),
/// one space apart.
fn row<const N: usize>(out: &mut String, widths: &[isize; N], cells: &[String; N]) {
    out.push(' ');
    for (cell, &width) in cells.iter().zip(widths) {
        let pad = width.unsigned_abs();
        let _ = if width < 0 {
            write!(out, " {cell:<pad$}")
        } else {
            write!(out, " {cell:>pad$}")
        };
    }
    out.push('\n');
}

fn times(ratio: f64) -> String {
    format!("×{ratio:.3}")
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a figure for people: whole MiB are plenty"
)]
fn median_mib(bytes: &[u64]) -> Option<f64> {
    let values: Vec<f64> = bytes
        .iter()
        .map(|&b| b as f64 / f64::from(1 << 20))
        .collect();
    median(&values)
}

#[cfg(test)]
mod tests {
    use super::{Context, Report, Samples};
    use crate::bench::{
        bpf_stats::{ProgramKey, Usage},
        tracer::Tool,
        workload::Kind,
    };

    fn samples() -> Samples {
        let mut samples = Samples::default();
        for (kind, untraced, memtrace, bpftrace, floor) in [
            (
                Kind::SlabChurn,
                [0.40, 0.42, 0.41],
                [0.41, 0.43, 0.90],
                [0.50, 0.52, 0.51],
                [0.41, 0.42, 0.42],
            ),
            (
                Kind::ColdRead,
                [1.00, 1.20, 1.10],
                [1.12, 1.11, 1.13],
                [1.30, 1.25, 1.27],
                [1.10, 1.11, 1.12],
            ),
        ] {
            samples
                .wall
                .insert((kind, Some(Tool::Floor)), floor.to_vec());
            samples.wall.insert((kind, None), untraced.to_vec());
            samples
                .wall
                .insert((kind, Some(Tool::Memtrace)), memtrace.to_vec());
            samples
                .wall
                .insert((kind, Some(Tool::Bpftrace)), bpftrace.to_vec());
        }
        samples
            .startup
            .insert(Tool::Memtrace, vec![0.26, 0.12, 0.11, 0.13, 0.30, 0.12]);
        samples
            .startup
            .insert(Tool::Bpftrace, vec![0.6, 0.7, 0.65, 0.66, 0.61, 0.62]);
        samples
            .startup
            .insert(Tool::Floor, vec![0.6, 0.7, 0.65, 0.66, 0.61, 0.62]);
        let key = |name: &str, attach: &str| ProgramKey {
            name: name.into(),
            attach: attach.into(),
        };
        samples.programs.insert(
            (
                Kind::ColdRead,
                Tool::Memtrace,
                key("filemap_add", "mm_filemap_add_to_page_cache"),
            ),
            Usage {
                run_time_ns: 30_000_000,
                run_cnt: 300_000,
            },
        );
        samples.programs.insert(
            (
                Kind::ColdRead,
                Tool::Memtrace,
                key("oom_mark_victim", "mark_victim"),
            ),
            Usage::default(),
        );
        samples.programs.insert(
            (
                Kind::ColdRead,
                Tool::Bpftrace,
                key("tracepoint_file", "mm_filemap_add_to_page_cache"),
            ),
            Usage {
                run_time_ns: 90_000_000,
                run_cnt: 300_000,
            },
        );
        samples.programs.insert(
            (
                Kind::ColdRead,
                Tool::CountFloor,
                key("count_floor_fil", "mm_filemap_add_to_page_cache"),
            ),
            Usage {
                run_time_ns: 18_000_000,
                run_cnt: 300_000,
            },
        );
        samples.per_run = samples
            .programs
            .iter()
            .map(|(key, usage)| (key.clone(), vec![*usage]))
            .collect();
        samples
    }

    fn context() -> Context {
        Context {
            kernel: "6.18.44".into(),
            bpftrace: "bpftrace v0.17.0".into(),
            cgroup_version: "v1".into(),
            cgroup: "/memtrace-bench-7".into(),
            runs: 3,
        }
    }

    #[test]
    fn summarises_medians_ratios_costs_and_targets() -> anyhow::Result<()> {
        let report = Report::new(context(), &samples(), 100.0)?;
        let slab = &report.workloads[0];
        assert_eq!(slab.median_seconds.untraced, 0.41);
        // The 0.90 outlier does not count.
        assert_eq!(slab.median_seconds.memtrace, 0.43);
        assert!((slab.ratio.memtrace - 0.43 / 0.41).abs() < 1e-12);
        let cold = &report.workloads[1];
        assert_eq!(cold.programs.len(), 4);
        assert_eq!(cold.programs[0].ns_per_event, Some(100.0));
        assert_eq!(cold.programs[1].ns_per_event, None);
        assert_eq!(cold.bpf_ns_per_run.memtrace, 10_000_000.0);
        assert_eq!(cold.bpf_ns_per_run.bpftrace, 30_000_000.0);

        let verdicts: Vec<(&str, bool)> = report
            .targets
            .iter()
            .map(|t| (t.target.as_str(), t.pass))
            .collect();
        let per_event = |what: &str| {
            verdicts
                .iter()
                .find(|(target, _)| target.starts_with(what))
                .map(|&(_, pass)| pass)
        };
        // 100 ns against 300 ns: a third, within half.
        assert_eq!(per_event("page-cache add "), Some(true));
        // Nothing measured is never a pass.
        assert_eq!(per_event("page-cache delete "), Some(false));
        assert_eq!(per_event("charge stat update "), Some(false));
        assert_eq!(verdicts.len(), 7 + 1 + 1 + 2);
        // Above the floor's ×1.024: memtrace +0.024, bpftrace +0.220; a ninth.
        assert_eq!(
            verdicts[7],
            (
                "slab churn slowdown above the floor: memtrace ≤ ⅓ of bpftrace's",
                true
            )
        );
        assert_eq!(verdicts[8], ("memtrace start-up ≤ 0.15 s", true));
        assert_eq!(
            verdicts[9],
            (
                "slab churn: memtrace's BPF time per run below bpftrace's",
                false
            )
        );

        let table = report.render();
        assert!(table.contains("  MISS  slab churn: memtrace's BPF time per run below"));
        assert!(
            table.contains("(memtrace ×1.049, bpftrace ×1.244, floor ×1.024)"),
            "{table}"
        );
        assert!(table.contains("  cold read   memtrace  no events: oom_mark_victim"));
        assert!(
            table.contains("100 ns vs 300 ns: ×0.33 (floor - ns, count floor 60 ns)"),
            "{table}"
        );
        let json = serde_json::to_value(&report)?;
        assert_eq!(json["workloads"][1]["workload"], "cold-read");
        assert_eq!(json["startup"]["median_seconds"]["memtrace"], 0.125);
        Ok(())
    }

    #[test]
    fn a_configuration_without_samples_cannot_be_summarised() {
        let mut samples = samples();
        samples.wall.remove(&(Kind::ColdRead, None));
        assert!(Report::new(context(), &samples, 1.0).is_err());
    }
}
