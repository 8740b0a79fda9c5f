//! `cargo xtask bench soak [--minutes N]`: memtrace recording a node with mixed churn for N
//! minutes (root). `memtrace record` (release) writes a trace file while containers start and
//! stop (a few a second, shaped like a kubelet's and podman's), half of them write, read and
//! delete files and churn slab, and one in a while is OOM-killed at its memcg's limit. Prints
//! memtrace's RSS each minute and fails when it grew by 10 % or more after the first minute,
//! when memtrace lost events, or when its trace file has fewer OOM kills than the kernel
//! counted; prints the trace file's size per hour.

use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use memtrace_common::cgroup::MemoryHierarchy;

use super::{
    memcgs::{Containers, Shape, memory},
    watched::{self, Watched},
};
use crate::{process, workspace::Workspace};

/// Containers running at any time, but the hogs.
const STEADY: usize = 100;
/// Containers stopped and as many started each second.
const CHURN_PER_SECOND: usize = 2;
/// A hog is started this often; its memcg's limit OOM-kills it.
const HOG_EVERY: Duration = Duration::from_secs(10);
const HOG_LIMIT: u64 = 32 << 20;
const HOG_MIB: &str = "256";
const GROWTH_LIMIT: f64 = 0.10;

#[derive(Args)]
pub struct Options {
    /// How long to soak
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..=1440))]
    minutes: u64,
}

/// What the churn did.
#[derive(Default)]
struct Churned {
    started: usize,
    stopped: usize,
    hogs: usize,
    /// OOM kills the kernel counted in the hogs' memcgs.
    oom_kills: u64,
    /// memtrace's RSS at the end of each minute, in bytes.
    rss: Vec<u64>,
    /// The page-cache files memtrace named, as its last interval before each RSS sample said:
    /// the table that grew with the RSS before deleted files were forgotten.
    files: Vec<u64>,
    /// The containers' base cgroup (`/memtrace-bench-soak-1234`).
    base: String,
}

pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    let memtrace = super::build_memtrace(workspace)?;
    let hierarchy = MemoryHierarchy::discover().context("the bench creates memory cgroups")?;
    let work = workspace.target_dir().join("bench").join("soak");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let trace = work.join("soak.mtrace");
    let trace_arg = trace.to_string_lossy().into_owned();

    let watched = Watched::start(&memtrace, &["record", "-o", &trace_arg])?;
    let started = Instant::now();
    let churned = churn(&hierarchy, &work, &watched, options.minutes)?;
    let log = workspace
        .target_dir()
        .join("bench")
        .join("soak-memtrace.log");
    watched.write_log(started, &log)?;
    let tables = watched.intervals().last().copied();
    let stderr = watched.stop()?;
    if let Some(last) = tables {
        println!(
            "  memtrace's tables at the end: {} memcgs named, {} cgroup paths, {} containers' \
             runtime names, {} page-cache files named, {} memcg pointers, {} MEMCG_IDS entries",
            last.names,
            last.paths,
            last.runtime_names,
            last.files,
            last.memcg_pointers,
            last.kernel_memcg_ids
        );
    }
    println!("  memtrace's stderr (debug): {}", log.display());
    let elapsed = started.elapsed();
    let lost = watched::lost(&stderr)?;
    let size = fs::metadata(&trace)
        .with_context(|| format!("reading {}", trace.display()))?
        .len();
    let replayed = process::output(Command::new(&memtrace).args([
        "replay", &trace_arg, "--format", "json", "--type", "oom_kill",
    ]))
    .context("replaying the trace file")?;
    // Only the bench's: others' OOM kills on the machine meanwhile are in the file too.
    let recorded_kills = replayed
        .lines()
        .filter(|l| l.contains(&format!("\"{}/", churned.base)))
        .count() as u64;
    let _ = fs::remove_dir_all(&work);

    report(&churned, lost, size, elapsed, recorded_kills)
}

/// Starts the steady containers, then churns for `minutes`, sampling memtrace's RSS each
/// minute; removes every container at the end.
fn churn(
    hierarchy: &MemoryHierarchy,
    work: &Path,
    watched: &Watched,
    minutes: u64,
) -> anyhow::Result<Churned> {
    let busy = work.join("busy");
    fs::write(&busy, "").context("writing the busy flag")?;
    let worker = |n: usize, hog: bool| {
        let mut command = Command::new(std::env::current_exe().unwrap_or_else(|_| "xtask".into()));
        command
            .args(["bench", "worker", "--dir"])
            .arg(work.join(n.to_string()));
        if hog {
            command.args(["--hog-mib", HOG_MIB]);
        } else if n.is_multiple_of(2) {
            command.arg("--busy-when").arg(&busy);
        }
        command
    };
    let mut containers = Containers::new(hierarchy, "soak", Shape::Node)?;
    let mut steady = Vec::new();
    let mut hogs = Vec::new();
    let mut churned = Churned {
        base: containers.path(),
        ..Churned::default()
    };
    for _ in 0..STEADY {
        steady.push(containers.start(worker(churned.started, false), None)?);
        churned.started += 1;
    }
    eprintln!(
        "bench soak: {STEADY} containers, {CHURN_PER_SECOND} stopped and started a second, a hog \
         OOM-killed every {} s, for {minutes} min",
        HOG_EVERY.as_secs()
    );
    let start = Instant::now();
    let mut next_hog = start;
    let mut next_minute = start + Duration::from_secs(60);
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        for _ in 0..CHURN_PER_SECOND {
            let old = steady.remove(0);
            containers.stop(old);
            churned.stopped += 1;
            steady.push(containers.start(worker(churned.started, false), None)?);
            churned.started += 1;
        }
        if Instant::now() >= next_hog {
            next_hog += HOG_EVERY;
            hogs.push(containers.start(worker(churned.started, true), Some(HOG_LIMIT))?);
            churned.started += 1;
            churned.hogs += 1;
        }
        let mut i = 0;
        while i < hogs.len() {
            if containers.exited(hogs[i]) {
                churned.oom_kills += containers.oom_kills(hogs[i]);
                containers.stop(hogs.remove(i));
            } else {
                i += 1;
            }
        }
        if Instant::now() >= next_minute {
            next_minute += Duration::from_secs(60);
            let (rss, _) = memory(watched.pid())?;
            churned.rss.push(rss);
            let files = watched.intervals().last().map_or(0, |i| i.files);
            churned.files.push(files);
            eprintln!(
                "bench soak: minute {}: memtrace RSS {:.1} MB, {files} page-cache files named, \
                 {} containers started",
                churned.rss.len(),
                mb(rss),
                churned.started
            );
        }
        thread::sleep(Duration::from_secs(1));
    }
    // The last minute's sample when the loop ended just before it.
    if churned.rss.len() < usize::try_from(minutes).unwrap_or(usize::MAX) {
        churned.rss.push(memory(watched.pid())?.0);
        churned
            .files
            .push(watched.intervals().last().map_or(0, |i| i.files));
    }
    for hog in hogs {
        churned.oom_kills += containers.oom_kills(hog);
    }
    containers.remove();
    let _ = fs::remove_file(&busy);
    // Let the last removals and the last OOM kills reach memtrace.
    thread::sleep(Duration::from_secs(3));
    Ok(churned)
}

fn report(
    churned: &Churned,
    lost: u64,
    size: u64,
    elapsed: Duration,
    recorded_kills: u64,
) -> anyhow::Result<()> {
    let Some(&first) = churned.rss.first() else {
        bail!("no RSS sample: the soak ended within a minute");
    };
    let peak_after = churned.rss.iter().skip(1).copied().max().unwrap_or(first);
    #[expect(clippy::cast_precision_loss, reason = "a ratio for people")]
    let growth = peak_after as f64 / first as f64 - 1.0;
    #[expect(clippy::cast_precision_loss, reason = "a figure for people")]
    let per_hour = size as f64 * 3600.0 / elapsed.as_secs_f64();
    println!(
        "soak: {:.1} min; {} containers started, {} stopped, {} hogs, {} OOM kills (kernel)",
        elapsed.as_secs_f64() / 60.0,
        churned.started,
        churned.stopped,
        churned.hogs,
        churned.oom_kills
    );
    let minutes: Vec<String> = churned
        .rss
        .iter()
        .map(|&r| format!("{:.1}", mb(r)))
        .collect();
    println!("  memtrace RSS each minute (MB): {}", minutes.join(" "));
    let files: Vec<String> = churned.files.iter().map(u64::to_string).collect();
    println!("  page-cache files named each minute: {}", files.join(" "));
    println!(
        "  growth after the first minute: {:+.1} % (limit {:.0} %)",
        growth * 100.0,
        GROWTH_LIMIT * 100.0
    );
    println!("  lost events: {lost}");
    println!(
        "  OOM kills in the trace file: {recorded_kills} (kernel: {})",
        churned.oom_kills
    );
    println!(
        "  trace file: {:.1} MB, {:.1} MB per hour",
        mb(size),
        per_hour / 1e6
    );
    let mut failed = Vec::new();
    if growth >= GROWTH_LIMIT {
        failed.push(format!(
            "RSS grew {:.1} % after the first minute",
            growth * 100.0
        ));
    }
    if lost > 0 {
        failed.push(format!("{lost} events lost"));
    }
    if recorded_kills < churned.oom_kills {
        failed.push(format!(
            "{recorded_kills} OOM kills recorded of {} the kernel counted",
            churned.oom_kills
        ));
    }
    if !failed.is_empty() {
        bail!("soak failed: {}", failed.join("; "));
    }
    Ok(())
}

#[expect(clippy::cast_precision_loss, reason = "a figure for people")]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
