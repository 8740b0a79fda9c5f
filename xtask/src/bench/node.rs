//! `cargo xtask bench node`: memtrace on a node with many containers (root). Starts memtrace
//! (release, every event, JSON Lines to /dev/null, as a `DaemonSet` would run), then creates N
//! containers' memory cgroups shaped like a kubelet's (containerd, two per pod) and podman's, a
//! worker process in each; once the node has settled (see [`settle`]), measures memtrace's CPU
//! (`/proc/PID/stat`) while they idle, then
//! while half of them write, read and delete files and churn slab; each interval's drain and
//! memtrace's tables (its debug log); its memory (`VmRSS`, `VmHWM`). Then removes the
//! containers and shows that both sides forget them: memtrace's tables, and the kernel's
//! `MEMCG_IDS` map as memtrace and `bpftool` count it. Targets: RSS ≤ 40 MB, CPU ≤ 1 % of a
//! core idle and ≤ 10 % busy, drain ≤ 50 ms. Misses are reported, not failed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use memtrace_common::cgroup::{CgroupVersion, MemoryHierarchy};

use super::{
    memcgs::{Containers, Shape, clock_ticks, cpu_ticks, memory},
    stats::median,
    watched::{self, Deletes, Interval, Watched},
};
use crate::{process, vm::apt::Apt, workspace::Workspace};

const RSS_TARGET: u64 = 40_000_000;
const IDLE_CPU_TARGET: f64 = 1.0;
const BUSY_CPU_TARGET: f64 = 10.0;
const DRAIN_TARGET_MS: f64 = 50.0;
/// memtrace's `stats` interval (its default): the slower of its two passes over cgroupfs.
const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// The containers' dirty and writeback pages below which the node counts as settled.
const SETTLED_UNWRITTEN: u64 = 256 << 10;
/// At most this long for the kernel to write the containers' dirty pages back (it writes pages
/// dirty for 30 s, `vm.dirty_expire_centisecs`).
const WRITEBACK_WAIT: Duration = Duration::from_secs(60);
/// memtrace keeps a freed memcg's name this long (`RELEASED_GRACE`), then forgets it.
const FORGET_WAIT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct Options {
    /// Containers to create, a process in each (half of them busy in the busy phase)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    containers: usize,
    /// How long to measure each phase (idle, busy)
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    seconds: u64,
    /// A memtrace binary to measure instead of this workspace's release build: to compare two
    /// builds back to back (e.g. `--memtrace /tmp/memtrace-main`)
    #[arg(long, value_name = "PATH")]
    memtrace: Option<PathBuf>,
}

/// memtrace's CPU over a phase, and its memory at the end of it.
struct Phase {
    cpu_percent: f64,
    rss: u64,
    intervals: Vec<Interval>,
    /// The idle keys deleted after each interval's output (not part of the drain).
    deletes: Vec<Deletes>,
}

pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    let memtrace = match options.memtrace.clone() {
        Some(path) => path,
        None => super::build_memtrace(workspace)?,
    };
    Apt::system(&workspace.tools_dir().join("bench"))
        .for_task("bench")
        .ensure_installed(&["bpftool"])?;
    let hierarchy = MemoryHierarchy::discover().context("the bench creates memory cgroups")?;
    let work = workspace.target_dir().join("bench").join("node");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let busy_flag = work.join("busy");
    let ticks = clock_ticks()?;

    let launched = Instant::now();
    let watched = Watched::start(&memtrace, &["run", "--format", "json"])?;
    let before = watched.interval_after(Instant::now(), Duration::from_secs(10))?;
    let memcgs_before = kernel_memcgs()?;
    eprintln!(
        "bench node: creating {} containers ({} hierarchy), a process in each",
        options.containers, hierarchy.version
    );
    let created = Instant::now();
    let mut containers =
        Containers::create(&hierarchy, "node", Shape::Node, options.containers, |i| {
            worker(
                &work.join(i.to_string()),
                (i % 2 == 0).then_some(&busy_flag),
            )
        })?;
    let memcgs = containers.memcgs();
    eprintln!(
        "bench node: {memcgs} memcgs in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    settle(&hierarchy, &containers)?;
    eprintln!(
        "bench node: idle for {} s (from {:.1} s in memtrace's log)",
        options.seconds,
        launched.elapsed().as_secs_f64()
    );
    let idle = phase(&watched, options.seconds, ticks)?;
    start_busy(&busy_flag, options)?;
    let busy = phase(&watched, options.seconds, ticks)?;
    fs::remove_file(&busy_flag).context("ending the busy phase")?;
    let full = watched.interval_after(Instant::now(), Duration::from_secs(10))?;
    let full_bpftool = memcg_ids_entries(watched.pid())?;
    let memcgs_full = kernel_memcgs()?;

    eprintln!("bench node: removing the containers");
    let removed = Instant::now();
    containers.remove();
    // Their files' page cache would keep the memcgs dying (charged), not freed.
    let _ = fs::remove_dir_all(&work);
    let _ = fs::write("/proc/sys/vm/drop_caches", "1");
    let (after, forgotten_in) = forgotten(&watched, &before, removed)?;
    let after_bpftool = memcg_ids_entries(watched.pid())?;
    let memcgs_after = kernel_memcgs()?;
    let (_, hwm) = memory(watched.pid())?;
    let log = workspace
        .target_dir()
        .join("bench")
        .join("node-memtrace.log");
    watched.write_log(launched, &log)?;
    let spilled = watched.spilled_keys();
    let stderr = watched.stop()?;
    let lost = watched::lost(&stderr)?;

    println!(
        "memtrace on a node of {} containers ({memcgs} memcgs, {} hierarchy), {} s a phase:",
        options.containers, hierarchy.version, options.seconds
    );
    print_phases(&idle, &busy, hwm);
    println!("  tables (before containers → with them → {forgotten_in:.1} s after removing them):");
    for (name, get) in TABLES {
        println!(
            "    {name:<34} {:>6} → {:>6} → {:>6}",
            get(&before),
            get(&full),
            get(&after)
        );
    }
    println!(
        "    {:<34} {:>6} → {:>6} → {:>6}",
        "MEMCG_IDS entries (bpftool)", "", full_bpftool, after_bpftool
    );
    println!(
        "    {:<34} {:>6} → {:>6} → {:>6}",
        "memcgs in the kernel, dying too", memcgs_before, memcgs_full, memcgs_after
    );
    println!("  lost events: {lost} {}", verdict(lost == 0));
    println!(
        "  keys counted in spill maps (inserts into an aggregate that failed, not lost): {spilled}"
    );
    if let Some(line) = stderr.lines().find(|l| l.starts_with("memtrace: detached")) {
        println!("  {line}");
    }
    println!("  memtrace's stderr (debug): {}", log.display());
    Ok(())
}

type Table = (&'static str, fn(&Interval) -> u64);

const TABLES: [Table; 5] = [
    ("memcgs named (names)", |i| i.names),
    ("cgroup paths (paths)", |i| i.paths),
    ("containers' runtime names", |i| i.runtime_names),
    ("memcg pointers (userspace)", |i| i.memcg_pointers),
    ("MEMCG_IDS entries (memtrace)", |i| i.kernel_memcg_ids),
];

/// memtrace's CPU, drains and memory in the idle and the busy phase, against the targets.
fn print_phases(idle: &Phase, busy: &Phase, hwm: u64) {
    println!(
        "  CPU idle: {:.2} % of a core (target ≤ {IDLE_CPU_TARGET} %) {}",
        idle.cpu_percent,
        verdict(idle.cpu_percent <= IDLE_CPU_TARGET)
    );
    println!(
        "  CPU busy: {:.2} % of a core (target ≤ {BUSY_CPU_TARGET} %) {}",
        busy.cpu_percent,
        verdict(busy.cpu_percent <= BUSY_CPU_TARGET)
    );
    for (name, p) in [("idle", &idle), ("busy", &busy)] {
        let drain: Vec<f64> = p
            .intervals
            .iter()
            .map(|i| i.kernel_ms + i.events_ms)
            .collect();
        let max = drain.iter().copied().fold(0.0, f64::max);
        let kernel: Vec<f64> = p.intervals.iter().map(|i| i.kernel_ms).collect();
        let events: Vec<f64> = p.intervals.iter().map(|i| i.events_ms).collect();
        let cpu: Vec<f64> = p.intervals.iter().map(|i| i.cpu_ms).collect();
        let cpu_max = cpu.iter().copied().fold(0.0, f64::max);
        println!(
            "  drain {name}: {} intervals, median {:.1} ms, max {max:.1} ms (kernel maps median \
             {:.1} ms, events median {:.1} ms); its CPU time median {:.1} ms, max {cpu_max:.1} ms \
             (target ≤ {DRAIN_TARGET_MS} ms) {}",
            drain.len(),
            median(&drain).unwrap_or(f64::NAN),
            median(&kernel).unwrap_or(f64::NAN),
            median(&events).unwrap_or(f64::NAN),
            median(&cpu).unwrap_or(f64::NAN),
            verdict(max <= DRAIN_TARGET_MS)
        );
        let ms: Vec<f64> = p.deletes.iter().map(|d| d.ms).collect();
        let cpu: Vec<f64> = p.deletes.iter().map(|d| d.cpu_ms).collect();
        #[expect(clippy::cast_precision_loss, reason = "a figure for people")]
        let keys: Vec<f64> = p.deletes.iter().map(|d| d.keys as f64).collect();
        println!(
            "  idle-key deletes {name}, after the interval's output (not in the drain): {} \
             intervals of {}, median {:.1} ms, max {:.1} ms; CPU median {:.1} ms, max {:.1} ms; \
             keys median {:.0}, max {:.0}",
            p.deletes.len(),
            p.intervals.len(),
            median(&ms).unwrap_or(0.0),
            ms.iter().copied().fold(0.0, f64::max),
            median(&cpu).unwrap_or(0.0),
            cpu.iter().copied().fold(0.0, f64::max),
            median(&keys).unwrap_or(0.0),
            keys.iter().copied().fold(0.0, f64::max),
        );
    }
    println!(
        "  RSS: idle {:.1} MB, busy {:.1} MB, peak (VmHWM) {:.1} MB (target ≤ {:.0} MB) {}",
        mb(idle.rss),
        mb(busy.rss),
        mb(hwm),
        mb(RSS_TARGET),
        verdict(hwm <= RSS_TARGET)
    );
    print_node_activity(idle);
}

/// Makes half of the containers busy (their flag file), and says so once they are.
fn start_busy(busy_flag: &Path, options: &Options) -> anyhow::Result<()> {
    fs::write(busy_flag, "").context("starting the busy phase")?;
    thread::sleep(Duration::from_secs(3));
    eprintln!(
        "bench node: {} containers busy for {} s",
        options.containers.div_ceil(2),
        options.seconds
    );
    Ok(())
}

/// What the node did while the containers idled: memtrace traces the whole node, so another
/// workload on the machine costs it CPU in the idle phase too.
fn print_node_activity(idle: &Phase) {
    #[expect(clippy::cast_precision_loss, reason = "a figure for people")]
    let keys: Vec<f64> = idle.intervals.iter().map(|i| i.keys as f64).collect();
    println!(
        "  the node while idle: aggregate keys drained a second median {:.0}, max {:.0} (memtrace \
         traces the whole node: another workload on the machine shows here, and costs it CPU; \
         idle containers alone were 8–118 here)",
        median(&keys).unwrap_or(f64::NAN),
        keys.iter().copied().fold(0.0, f64::max)
    );
}

/// Waits until the node has settled after the containers' start, so that the idle phase measures
/// a node whose containers do nothing, not their start: the kernel wrote back the pages their
/// start dirtied (their work directories), and then a `stats` interval passed, so that each of
/// memtrace's passes over cgroupfs has read each new memcg once (the cost of a container's
/// start). Says what it waited for.
fn settle(hierarchy: &MemoryHierarchy, containers: &Containers) -> anyhow::Result<()> {
    let stat = hierarchy.dir(&containers.path()).join("memory.stat");
    let keys: [&str; 2] = match hierarchy.version {
        CgroupVersion::V1 => ["total_dirty", "total_writeback"],
        CgroupVersion::V2 => ["file_dirty", "file_writeback"],
    };
    let unwritten = || -> anyhow::Result<u64> {
        let text =
            fs::read_to_string(&stat).with_context(|| format!("reading {}", stat.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| keys.contains(k))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    };
    let started = Instant::now();
    let first = unwritten()?;
    let mut last = first;
    while last > SETTLED_UNWRITTEN && started.elapsed() < WRITEBACK_WAIT {
        thread::sleep(Duration::from_secs(1));
        last = unwritten()?;
    }
    eprintln!(
        "bench node: settling: the containers' dirty+writeback pages {} → {} KiB in {:.1} s \
         (waits for ≤ {} KiB, at most {} s); then a stats interval ({} s), so that memtrace's \
         passes have read each new memcg once",
        first >> 10,
        last >> 10,
        started.elapsed().as_secs_f64(),
        SETTLED_UNWRITTEN >> 10,
        WRITEBACK_WAIT.as_secs(),
        STATS_INTERVAL.as_secs()
    );
    thread::sleep(STATS_INTERVAL + Duration::from_secs(2));
    Ok(())
}

/// A container's process: idle, or busy while `busy` exists.
fn worker(dir: &Path, busy: Option<&PathBuf>) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap_or_else(|_| "xtask".into()));
    command.args(["bench", "worker", "--dir"]).arg(dir);
    if let Some(flag) = busy {
        command.arg("--busy-when").arg(flag);
    }
    command
}

/// memtrace's CPU over `seconds`, and its memory and drains then.
fn phase(watched: &Watched, seconds: u64, ticks: f64) -> anyhow::Result<Phase> {
    let start_ticks = cpu_ticks(watched.pid())?;
    let start = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    let used = cpu_ticks(watched.pid())? - start_ticks;
    let wall = start.elapsed().as_secs_f64();
    let (rss, _) = memory(watched.pid())?;
    #[expect(clippy::cast_precision_loss, reason = "a figure for people")]
    let cpu_percent = used as f64 / ticks / wall * 100.0;
    Ok(Phase {
        cpu_percent,
        rss,
        intervals: watched
            .intervals()
            .into_iter()
            .filter(|i| i.at > start)
            .collect(),
        deletes: watched
            .deletes()
            .into_iter()
            .filter(|d| d.at > start)
            .collect(),
    })
}

/// Waits until memtrace's tables are back to (at most) what they were `before` the
/// containers, or [`FORGET_WAIT`]; returns the last interval and the seconds it took.
fn forgotten(
    watched: &Watched,
    before: &Interval,
    removed: Instant,
) -> anyhow::Result<(Interval, f64)> {
    // Others' cgroups may come and go meanwhile: a little slack.
    let back = |i: &Interval| TABLES.iter().all(|(_, get)| get(i) <= get(before) + 10);
    loop {
        let last = watched.interval_after(removed, Duration::from_secs(10))?;
        if back(&last) || removed.elapsed() > FORGET_WAIT {
            return Ok((last, last.at.duration_since(removed).as_secs_f64()));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Entries of the `MEMCG_IDS` map of memtrace `pid`, counted by `bpftool`.
fn memcg_ids_entries(pid: u32) -> anyhow::Result<usize> {
    let ids = map_ids(pid)?;
    let maps: serde_json::Value = serde_json::from_str(&process::output(
        Command::new("bpftool").args(["map", "show", "-j"]),
    )?)
    .context("bpftool map show -j")?;
    let id = maps
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "MEMCG_IDS" && m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .and_then(|m| m["id"].as_u64())
        .with_context(|| format!("bpftool shows no MEMCG_IDS map of memtrace (pid {pid})"))?;
    let dump: serde_json::Value =
        serde_json::from_str(&process::output(Command::new("bpftool").args([
            "map",
            "dump",
            "id",
            &id.to_string(),
            "-j",
        ]))?)
        .context("bpftool map dump -j")?;
    let Some(entries) = dump.as_array() else {
        bail!("bpftool map dump -j gave no list");
    };
    Ok(entries.len())
}

/// The ids of the BPF maps process `pid` holds open (`map_id` in each map fd's fdinfo): this
/// machine's bpftool cannot tell which process holds a map.
fn map_ids(pid: u32) -> anyhow::Result<Vec<u64>> {
    let fds = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut ids = Vec::new();
    for fd in fs::read_dir(&fds).with_context(|| format!("reading {}", fds.display()))? {
        let fd = fd.context("reading /proc/PID/fd")?;
        if fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-map") {
            let info =
                fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()))
                    .unwrap_or_default();
            ids.extend(
                info.lines()
                    .find_map(|l| l.strip_prefix("map_id:"))
                    .and_then(|id| id.trim().parse::<u64>().ok()),
            );
        }
    }
    Ok(ids)
}

/// Memory cgroups the kernel has, dying ones included (`num_cgroups` in `/proc/cgroups`).
fn kernel_memcgs() -> anyhow::Result<u64> {
    fs::read_to_string("/proc/cgroups")
        .context("reading /proc/cgroups")?
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.first() == Some(&"memory")).then(|| fields.get(2)?.parse().ok())?
        })
        .context("/proc/cgroups has no memory line")
}

fn verdict(met: bool) -> &'static str {
    if met { "ok" } else { "MISSED" }
}

#[expect(clippy::cast_precision_loss, reason = "a figure for people")]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
