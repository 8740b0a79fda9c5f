//! The OOM storm: `memcgs` memory cgroups, each OOM-killed `kills_each` times, all at once. The
//! kernel rate-limits its OOM report (ten a burst), so most kills come without the `oom-kill:`
//! line memtrace waits for: every kill must still be reported, once, in its memcg.

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use super::{Outcome, Streaming, Workloads, lag, slowdown};
use crate::TestCgroup;

/// Small, so a kill is quick also under emulation in the VM tests.
const LIMIT: u64 = 16 << 20;
const CAP_MIB: u64 = 1024;

/// Runs the storm under `memtrace run`; expected are the kills the kernel counted in each
/// memcg (`oom_kill` of `memory.events` or `memory.oom_control`).
///
/// # Panics
///
/// When the cgroups cannot be made or a memhog is not OOM-killed: the storm cannot run.
#[must_use]
pub fn oom_storm(memcgs: usize, kills_each: usize, workloads: &Workloads) -> Outcome {
    let cgroups: Vec<TestCgroup> = (0..memcgs)
        .map(|i| TestCgroup::new(&format!("storm{i}"), LIMIT))
        .collect();
    let memhog = workloads.memhog.to_str().expect("UTF-8 path");

    let mut memtrace = Streaming::start(&[]);
    let started = Instant::now();
    let killed: Vec<(String, u32)> = thread::scope(|s| {
        let workers: Vec<_> = cgroups
            .iter()
            .map(|cgroup| {
                s.spawn(move || {
                    (0..kills_each)
                        .map(|_| (cgroup.path.clone(), cgroup.oom_kill_memhog(memhog, CAP_MIB)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let took = started.elapsed();
    let kernel_kills: u64 = cgroups.iter().map(TestCgroup::kernel_oom_kills).sum();
    // Until every kill's event is out (a kill held for the kernel's line waits 500 ms at most;
    // how late each was is measured, and bounded by the test, separately), then a moment for
    // any reported twice.
    let mut kills = 0;
    memtrace.wait_for(Duration::from_secs(10) * slowdown(), |line| {
        kills += usize::from(line.contains("\"type\":\"oom_kill\""));
        kills >= killed.len()
    });
    thread::sleep(Duration::from_millis(300) * slowdown());
    let streamed = memtrace.stop();

    let mut reported: HashMap<u32, String> = HashMap::new();
    let mut lags = Vec::new();
    let mut twice = Vec::new();
    for (read_ns, event) in streamed.events() {
        if event["type"] != "oom_kill" {
            continue;
        }
        let pid = u32::try_from(event["pid"].as_u64().unwrap_or_default()).unwrap_or_default();
        lags.push(lag(read_ns, &event));
        let cgroup = event["cgroup"].as_str().unwrap_or_default().to_owned();
        if reported.insert(pid, cgroup).is_some() {
            twice.push(pid);
        }
    }
    let mut outcome = Outcome::new("oom", took, &streamed, &mut lags);
    outcome.expected = kernel_kills;
    if kernel_kills != killed.len() as u64 {
        outcome.problem(format!(
            "the kernel counted {kernel_kills} OOM kills, memhog was killed {} times",
            killed.len()
        ));
    }
    for pid in twice {
        outcome.problem(format!("pid {pid} reported twice"));
    }
    for (cgroup, pid) in &killed {
        match reported.get(pid) {
            Some(seen) if seen == cgroup => outcome.seen += 1,
            Some(seen) => outcome.problem(format!("pid {pid} reported in {seen}, not {cgroup}")),
            None => outcome.problem(format!(
                "the kill of pid {pid} in {cgroup} was not reported"
            )),
        }
    }
    outcome
}
