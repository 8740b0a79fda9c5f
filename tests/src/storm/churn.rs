//! The cgroup storm: `count` memory cgroups created and removed as fast as the kernel allows,
//! in waves of [`WAVE`] (containers come and go in bursts), below a parent that memtrace is
//! filtered to (`--cgroup`). Every creation and every removal must be reported, with its path.

use std::{
    collections::HashMap,
    fs,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use super::{Outcome, Streaming, lag, slowdown};
use crate::TestCgroup;

/// Cgroups that exist at once.
const WAVE: usize = 100;

/// What memtrace's side does while the storm runs.
#[derive(Clone, Copy, Debug)]
pub enum Reader {
    /// Its stdout is read as it comes.
    Reading,
    /// Its stdout is not read for this long after it attached (a log shipper that stops
    /// reading): its writes block, and the ring buffer must still be drained.
    StdoutStalled(Duration),
    /// memtrace itself is stopped (SIGSTOP) from the first `mkdir` to the last `rmdir`: nothing
    /// drains the ring buffer, so a storm larger than it overflows it whatever the machine's
    /// speed.
    Stopped,
}

/// Runs the storm under `memtrace run --cgroup PARENT EXTRA…` with its `reader`; expected are
/// the `mkdir`s and `rmdir`s that succeeded.
///
/// # Panics
///
/// When a cgroup cannot be created or removed: the storm cannot run.
#[must_use]
pub fn cgroup_storm(count: usize, reader: Reader, extra: &[&str]) -> Outcome {
    // Storms run side by side in one test process: each its own parent.
    static STORMS: AtomicUsize = AtomicUsize::new(0);
    let parent = TestCgroup::new(
        &format!("churn{}", STORMS.fetch_add(1, Ordering::Relaxed)),
        1 << 30,
    );
    parent.delegate_memory();
    let stall = match reader {
        Reader::StdoutStalled(stall) => stall,
        Reader::Reading | Reader::Stopped => Duration::ZERO,
    };
    let mut args = vec!["--cgroup", &parent.path];
    args.extend_from_slice(extra);
    let mut memtrace = Streaming::start_stalled(&args, stall);
    let started = Instant::now();
    let frozen = matches!(reader, Reader::Stopped).then(|| memtrace.frozen());
    let mut done = 0;
    while done < count {
        let wave: Vec<usize> = (done..count.min(done + WAVE)).collect();
        for i in &wave {
            let dir = parent.dir.join(format!("c{i}"));
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        for i in &wave {
            let dir = parent.dir.join(format!("c{i}"));
            fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
        done += wave.len();
    }
    let took = started.elapsed();
    drop(frozen);
    // What the stall held back comes out once it ends; then up to a second (× the slowdown)
    // for the last events: until every creation and removal is reported or, with memtrace
    // stopped, until it says what it lost.
    let wait = stall.saturating_sub(started.elapsed()) + Duration::from_secs(1) * slowdown();
    if matches!(reader, Reader::Stopped) {
        memtrace.wait_for_stderr(wait, |line| line.starts_with("memtrace: lost "));
    } else {
        let below = format!("{}/c", parent.path);
        let mut reported = 0;
        memtrace.wait_for(wait, |line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            if event["type"] == "cgroup"
                && event["cgroup"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&below))
                && (event["action"] == "created" || event["action"] == "removed")
            {
                reported += 1;
            }
            reported >= 2 * count
        });
    }
    let streamed = memtrace.stop();

    // Per path: (created, removed) events seen.
    let mut seen: HashMap<String, (u32, u32)> = HashMap::new();
    let mut lags = Vec::new();
    for (read_ns, event) in streamed.events() {
        if event["type"] != "cgroup" {
            continue;
        }
        let path = event["cgroup"].as_str().unwrap_or_default().to_owned();
        let slot = seen.entry(path).or_default();
        match event["action"].as_str() {
            Some("created") => slot.0 += 1,
            Some("removed") => slot.1 += 1,
            _ => continue,
        }
        lags.push(lag(read_ns, &event));
    }
    let name = match reader {
        Reader::Reading => "cgroup",
        Reader::StdoutStalled(_) => "cgroup, stdout stalled",
        Reader::Stopped => "cgroup, memtrace stopped",
    };
    let mut outcome = Outcome::new(name, took, &streamed, &mut lags);
    outcome.expected = 2 * count as u64;
    for i in 0..count {
        let path = format!("{}/c{i}", parent.path);
        let (created, removed) = seen.get(&path).copied().unwrap_or_default();
        outcome.seen += u64::from(created.min(1) + removed.min(1));
        if (created, removed) != (1, 1) {
            outcome.problem(format!(
                "{path}: {created} creation(s) and {removed} removal(s) reported, not one each"
            ));
        }
    }
    outcome
}
