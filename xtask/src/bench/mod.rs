//! `cargo xtask bench`: what memtrace costs the workloads it watches, next to bpftrace doing
//! per-cgroup counting on the same tracepoints. The method, and why it is this one on a noisy
//! shared machine, is in shared/BENCHMARKING.md: the kernel's own per-program accounting for the
//! steady figure, medians of interleaved runs for the slowdown, and launch-to-attached time.
//! It ends with the userspace pipeline's throughput (`cargo xtask bench pipeline`).

mod bpf_stats;
mod cgroup;
mod counters;
mod interrupt;
mod memcgs;
mod node;
mod per_event;
mod pipeline;
mod report;
mod soak;
mod startup;
mod stats;
mod storms;
mod trace;
mod tracer;
mod watched;
mod worker;
mod workload;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use memtrace_common::cgroup::MemoryHierarchy;

use self::{
    bpf_stats::StatsEnabled,
    cgroup::BenchCgroup,
    report::{Context, Report, Samples},
    tracer::{Tool, Tracer},
    workload::{Kind, Workloads},
};
use crate::{
    process, setup,
    vm::apt::Apt,
    workspace::{MEMTRACE, Workspace},
};

/// The peer and the tool that reads the kernel's per-program statistics.
const PACKAGES: &[&str] = &["bpftrace", "bpftool"];

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Options {
    /// What to measure instead of the kernel-side cost
    #[command(subcommand)]
    what: Option<What>,
    /// Runs of each configuration (untraced, memtrace, bpftrace) per workload, interleaved
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    runs: u16,
}

#[derive(clap::Subcommand)]
enum What {
    /// The trace file format: events/s written and read on one core, bytes per event on disk
    Trace,
    /// The userspace pipeline: ring-buffer records decoded, attributed and written as JSON
    /// Lines and a trace file, events/s on one core (target: 1 M/s)
    Pipeline,
    /// Storms with nothing lost (root): 200 OOM kills across 20 memcgs, 5 000 memcgs created
    /// and removed under a filter, a pod held at its limit for 10 s; for each its rate, events
    /// expected vs. seen, lost, memtrace's CPU and peak RSS, and how late events came
    Storms(storms::Options),
    /// Following containers' kernel counters on a node with many memory cgroups (root):
    /// memtrace's CPU with counters off and on, and the time per counters pass
    Counters(counters::Options),
    /// A node with many containers (root): memtrace's CPU idle and busy, each interval's
    /// drain, its memory, and its tables and kernel maps after the containers are gone
    Node(node::Options),
    /// Hours of a node's life in minutes (root): `memtrace record` under container churn,
    /// OOM kills, page cache and slab; RSS each minute, loss, trace file size per hour
    Soak(soak::Options),
    /// The process in each container of `node` and `soak`
    #[command(hide = true)]
    Worker(worker::Options),
    /// Start-up: exec of `memtrace run` to "attached", idle and with a busy loop on every CPU,
    /// with memtrace's own phases (target: 150 ms; as root)
    Startup {
        /// Launches under each load, each paired with one of `memtrace --version`
        #[arg(long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u16).range(1..=1000))]
        runs: u16,
        /// Another build of memtrace to launch in the same rounds, e.g. one built from the
        /// commit before a change: compared on the same moments of the same machine
        #[arg(long, value_name = "BINARY")]
        against: Option<std::path::PathBuf>,
    },
}

/// Sets up, builds memtrace (release), installs bpftrace and bpftool, runs the workloads under
/// each configuration, then prints the table and writes `<target>/bench/latest.json`. Misses
/// against the targets are reported, not failed: only what could not be measured fails.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    match &options.what {
        Some(What::Trace) => return trace::run(workspace),
        Some(What::Counters(counters)) => {
            setup::run(workspace)?;
            return counters::run(workspace, counters);
        }
        Some(What::Startup { runs, against }) => {
            setup::run(workspace)?;
            return startup::run(workspace, usize::from(*runs), against.as_deref());
        }
        Some(What::Node(node)) => {
            setup::run(workspace)?;
            return node::run(workspace, node);
        }
        Some(What::Soak(soak)) => {
            setup::run(workspace)?;
            return soak::run(workspace, soak);
        }
        Some(What::Worker(worker)) => return worker::run(worker),
        Some(What::Storms(storms)) => {
            setup::run(workspace)?;
            return storms::run(workspace, storms);
        }
        Some(What::Pipeline) => {
            setup::run(workspace)?;
            return pipeline::run(workspace);
        }
        None => {}
    }
    let started = Instant::now();
    let proc_self = fs::metadata("/proc/self").context("reading /proc/self")?;
    if proc_self.uid() != 0 {
        bail!(
            "bench must run as root (it mounts a tmpfs, creates a memory cgroup, drops the page \
             cache and loads BPF programs): run `sudo -E cargo xtask bench`"
        );
    }
    setup::run(workspace)?;
    let memtrace = build_memtrace(workspace)?;
    Apt::system(&workspace.tools_dir().join("bench"))
        .for_task("bench")
        .ensure_installed(PACKAGES)?;
    let bpftrace_version = process::output(Command::new("bpftrace").arg("--version"))
        .context("bench step `bpftrace --version` failed")?;

    interrupt::catch();
    let mounts = memtrace_common::cgroup::mounts()?;
    let hierarchy = MemoryHierarchy::discover()
        .context("the bench runs its workloads in a memory cgroup of their own")?;
    let out_dir = workspace.target_dir().join("bench");

    eprintln!(
        "bench: writing the cold-read file ({} GiB) in {}",
        workload::COLD_BYTES >> 30,
        out_dir.display()
    );
    let workloads = Workloads::prepare(&out_dir, &mounts)
        .context("bench step `prepare the workloads` failed")?;
    let mut cgroup =
        BenchCgroup::create(&hierarchy).context("bench step `create the memory cgroup` failed")?;
    let runs = usize::from(options.runs);
    let measured = measure(&memtrace, runs, &workloads, &mut cgroup);
    let context = Context {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_default(),
        bpftrace: bpftrace_version.trim().to_owned(),
        cgroup_version: cgroup.version.to_string(),
        cgroup: cgroup.path.clone(),
        runs,
    };
    // Unmount, remove the cgroup and the file before reporting, whatever happened.
    drop(cgroup);
    drop(workloads);
    let samples = match measured {
        Err(_) if interrupt::interrupted() => bail!("bench interrupted; cleaned up"),
        measured => measured.context("bench step `measure` failed")?,
    };

    let report = Report::new(context, &samples, started.elapsed().as_secs_f64())
        .context("bench step `summarise` failed")?;
    println!("{}", report.render());
    let json = out_dir.join("latest.json");
    let text = serde_json::to_string_pretty(&report).context("serialising the report")?;
    fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    println!("JSON: {}", json.display());
    // The userspace side's cost, on the same build settings: a few seconds more.
    pipeline::run(workspace)
}

/// Builds memtrace as a node runs it (release) and returns the binary's path.
fn build_memtrace(workspace: &Workspace) -> anyhow::Result<std::path::PathBuf> {
    process::run(
        workspace
            .cargo()
            .args(["build", "--release", "-p", MEMTRACE]),
    )
    .context("bench step `build memtrace` failed")?;
    Ok(workspace.target_dir().join("release").join(MEMTRACE))
}

/// Runs each workload `runs` times under each configuration, interleaved, with the kernel's BPF
/// statistics on for as long as it runs (the kernel turns them off when its file closes).
fn measure(
    memtrace: &Path,
    runs: usize,
    workloads: &Workloads,
    cgroup: &mut BenchCgroup,
) -> anyhow::Result<Samples> {
    let _stats = StatsEnabled::enable()?;
    let mut samples = Samples::default();
    for kind in Kind::ALL {
        for run in 1..=runs {
            for tool in [
                None,
                Some(Tool::Memtrace),
                Some(Tool::Bpftrace),
                Some(Tool::Floor),
                Some(Tool::CountFloor),
            ] {
                interrupt::check()?;
                let label = tool.map_or("untraced", Tool::name);
                let took = match tool {
                    None => {
                        Workloads::before(kind)?;
                        timed(kind, workloads, cgroup)?
                    }
                    Some(tool) => traced(tool, kind, memtrace, workloads, cgroup, &mut samples)
                        .with_context(|| {
                            format!("{} run {run} with {} failed", kind.name(), tool.name())
                        })?,
                };
                eprintln!(
                    "bench: {} {run}/{runs} {label:<8} {:.3} s",
                    kind.name(),
                    took.as_secs_f64()
                );
                samples
                    .wall
                    .entry((kind, tool))
                    .or_default()
                    .push(took.as_secs_f64());
            }
        }
    }
    Ok(samples)
}

/// One run of `kind` under `tool`: launch, wait until attached, prepare, read the programs'
/// statistics, time the workload, read them again, stop the tracer.
fn traced(
    tool: Tool,
    kind: Kind,
    memtrace: &Path,
    workloads: &Workloads,
    cgroup: &mut BenchCgroup,
    samples: &mut Samples,
) -> anyhow::Result<Duration> {
    let tracer = Tracer::launch(tool, memtrace)?;
    samples
        .startup
        .entry(tool)
        .or_default()
        .push(tracer.startup.as_secs_f64());
    // The statistics cover what comes before the timed run too: the cold read's drop of the
    // page cache is where the page-cache removals are.
    let start = bpf_stats::usage(&bpf_stats::programs()?, &tracer.programs);
    Workloads::before(kind)?;
    let elapsed = timed(kind, workloads, cgroup)?;
    let end = bpf_stats::usage(&bpf_stats::programs()?, &tracer.programs);
    let used = bpf_stats::delta(&start, &end, &tracer.programs)?;
    let stdout = tracer.stop()?;
    for (key, usage) in used {
        samples
            .per_run
            .entry((kind, tool, key.clone()))
            .or_default()
            .push(usage);
        let total = samples.programs.entry((kind, tool, key)).or_default();
        total.run_time_ns += usage.run_time_ns;
        total.run_cnt += usage.run_cnt;
    }
    if tool == Tool::Memtrace {
        samples
            .attributed
            .entry(kind)
            .or_default()
            .push(tracer::attributed_cache_bytes(&stdout, &cgroup.path));
    }
    Ok(elapsed)
}

/// Runs `kind` once inside the bench's cgroup and returns how long it took.
fn timed(kind: Kind, workloads: &Workloads, cgroup: &mut BenchCgroup) -> anyhow::Result<Duration> {
    cgroup.enter()?;
    let start = Instant::now();
    let ran = workloads.run(kind);
    let took = start.elapsed();
    cgroup.leave()?;
    ran.with_context(|| format!("running the {} workload", kind.name()))?;
    Ok(took)
}
