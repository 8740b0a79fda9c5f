//! The reclaim storm: a pod held at its memory limit for a while, by one process reading a file
//! larger than the limit again and again; every page it reads is charged at the limit, so the
//! kernel reclaims in it thousands of times. The ground truth is the kernel's own tracing ring
//! (ftrace, not BPF): an instance of its own that records `vmscan:mm_vmscan_memcg_reclaim_begin`
//! for that process only, and says whether it overran.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use super::{Outcome, Streaming, Workloads, lag, slowdown};
use crate::{TestCgroup, files};

/// The pod's limit, and the file it reads (four times larger).
const LIMIT_MIB: u64 = 32;
const FILE_MIB: usize = 128;
const EVENT: &str = "events/vmscan/mm_vmscan_memcg_reclaim_begin";

/// Runs the storm for `seconds` under `memtrace run --cgroup POD`; expected are the reclaim
/// episodes the kernel's tracing counted for the reading process.
///
/// # Panics
///
/// When the pod, the file or the tracing instance cannot be set up: the storm cannot run.
#[must_use]
pub fn reclaim_storm(seconds: u64, workloads: &Workloads) -> Outcome {
    reclaim_storm_stalled(seconds, workloads, Duration::ZERO, &[])
}

/// As [`reclaim_storm`], under `memtrace run --cgroup POD EXTRA…` whose stdout is not read for
/// `stall` after it attached (a log shipper that stops reading).
///
/// # Panics
///
/// As [`reclaim_storm`].
#[must_use]
pub fn reclaim_storm_stalled(
    seconds: u64,
    workloads: &Workloads,
    stall: Duration,
    extra: &[&str],
) -> Outcome {
    // Storms run side by side in one test process: each its own pod and tracing instance.
    static STORMS: AtomicUsize = AtomicUsize::new(0);
    let dir = tempfile::tempdir_in(&workloads.disk_dir).expect("tempdir on disk");
    let file = files::cold_file(dir.path(), "reclaim-storm", FILE_MIB);
    let storm = STORMS.fetch_add(1, Ordering::Relaxed);
    let pod = TestCgroup::new(&format!("reclaim-storm{storm}"), LIMIT_MIB << 20);
    let mut args = vec!["--cgroup", pod.path.as_str()];
    args.extend_from_slice(extra);
    let mut memtrace = Streaming::start_stalled(&args, stall);

    let mut reader = Command::new(&workloads.readloop)
        .arg(pod.procs_file())
        .arg(&file)
        .arg(seconds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn readloop");
    let tracing = KernelCount::start(reader.id(), storm);
    let started = Instant::now();
    writeln!(reader.stdin.take().expect("stdin"), "go").expect("start readloop");
    let output = reader.wait_with_output().expect("wait for readloop");
    let took = started.elapsed();
    assert!(output.status.success(), "readloop failed: {output:?}");
    let (episodes, overrun) = tracing.stop();
    // What the stall held back comes out once it ends; then up to a second (× the slowdown)
    // for the last events: until every episode is reported or counted lost in the stream.
    let wait = stall.saturating_sub(started.elapsed()) + Duration::from_secs(1) * slowdown();
    let mut accounted = 0;
    memtrace.wait_for(wait, |line| {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if event["type"] == "reclaim" && event["cgroup"] == pod.path.as_str() {
            accounted += 1;
        } else if event["type"] == "lost" && event["kind"] == "reclaim" {
            accounted += event["count"].as_u64().unwrap_or(0);
        }
        accounted >= episodes
    });
    let streamed = memtrace.stop();

    let mut lags = Vec::new();
    let mut seen = 0;
    for (read_ns, event) in streamed.events() {
        if event["type"] == "reclaim" && event["cgroup"] == pod.path.as_str() {
            seen += 1;
            lags.push(lag(read_ns, &event));
        }
    }
    let mut outcome = Outcome::new("reclaim", took, &streamed, &mut lags);
    outcome.expected = episodes;
    outcome.seen = seen;
    if overrun > 0 {
        outcome.problem(format!(
            "the kernel's tracing ring overran by {overrun}: no ground truth"
        ));
    }
    if episodes == 0 {
        outcome.problem("the pod was never reclaimed: not a storm".into());
    }
    outcome
}

/// A tracefs instance that records one process's memcg reclaim episodes; removed on drop.
struct KernelCount {
    dir: PathBuf,
}

impl KernelCount {
    fn start(pid: u32, storm: usize) -> Self {
        let root = tracefs();
        let dir = root.join(format!(
            "instances/memtrace-storm-{}-{storm}",
            std::process::id()
        ));
        if dir.exists() {
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let me = Self { dir };
        // Per CPU; an episode's entry is about 32 bytes.
        me.write("buffer_size_kb", "8192");
        me.write(&format!("{EVENT}/filter"), &format!("common_pid == {pid}"));
        me.write(&format!("{EVENT}/enable"), "1");
        me
    }

    /// Stops recording: (entries recorded, entries overrun) summed over the CPUs.
    fn stop(self) -> (u64, u64) {
        self.write(&format!("{EVENT}/enable"), "0");
        let mut totals = (0, 0);
        let cpus = fs::read_dir(self.dir.join("per_cpu")).expect("per_cpu");
        for cpu in cpus.filter_map(Result::ok) {
            let stats = fs::read_to_string(cpu.path().join("stats")).unwrap_or_default();
            for line in stats.lines() {
                let number = |prefix: &str| {
                    line.strip_prefix(prefix)
                        .and_then(|n| n.trim().parse::<u64>().ok())
                };
                totals.0 += number("entries:").unwrap_or(0);
                totals.1 += number("overrun:").unwrap_or(0);
            }
        }
        totals
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        fs::write(&path, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
    }
}

impl Drop for KernelCount {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join(format!("{EVENT}/enable")), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Where tracefs is mounted (memtrace mounts it when it is not; so does this).
fn tracefs() -> PathBuf {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("instances").is_dir() {
            return PathBuf::from(dir);
        }
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status()
        .expect("run mount");
    assert!(status.success(), "cannot mount tracefs: {status}");
    PathBuf::from("/sys/kernel/tracing")
}
