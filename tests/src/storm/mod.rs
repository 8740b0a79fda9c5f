//! Storms: many rare events in a short time, where tools lose data. Each storm runs the real
//! memtrace on the real kernel, counts what happened from the kernel's own side (the ground
//! truth), and returns what memtrace saw, lost, cost and how late it was. Shared by the
//! integration tests (small sizes) and `cargo xtask bench storms` (full sizes, through the
//! `storm` binary).

mod churn;
mod oom;
mod reclaim;
mod streaming;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

pub use self::{
    churn::{Reader, cgroup_storm},
    oom::oom_storm,
    reclaim::{reclaim_storm, reclaim_storm_stalled},
    streaming::{Streamed, Streaming},
};

/// How much slower than a real machine this one runs: `cargo xtask vm-test` sets it for guests
/// under emulation (TCG), where every wall-clock bound stretches by as much.
#[must_use]
pub fn slowdown() -> u32 {
    std::env::var("MEMTRACE_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The test workloads a storm runs (cargo gives their paths to test targets only: a test passes
/// `env!("CARGO_BIN_EXE_…")`, the `storm` binary the files beside itself).
#[derive(Clone, Debug)]
pub struct Workloads {
    pub memhog: PathBuf,
    pub readloop: PathBuf,
    /// A directory on a disk filesystem (not tmpfs) for the reclaim storm's file.
    pub disk_dir: PathBuf,
}

/// What a storm did and what memtrace made of it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub storm: &'static str,
    /// From the first event's cause to the last's.
    pub took: Duration,
    /// Events that the kernel's own side says happened.
    pub expected: u64,
    /// Of those, the events memtrace reported.
    pub seen: u64,
    /// memtrace's own lost-event counters, all kinds (from its summary line).
    pub lost: Option<u64>,
    /// The same per kind (`cgroup`, `reclaim`, …).
    pub lost_by_kind: BTreeMap<&'static str, u64>,
    /// What the stream's `lost` events counted, per `"kind/cause"`.
    pub lost_in_stream: BTreeMap<String, u64>,
    /// memtrace's CPU time (user + system) from "attached" to the stop.
    pub cpu: Duration,
    pub peak_rss_kib: u64,
    /// How long after its kernel timestamp each event was read from memtrace's stdout.
    pub lag_median: Duration,
    pub lag_max: Duration,
    /// What did not match (an event missing, twice, in the wrong place), a few at most.
    pub problems: Vec<String>,
    /// memtrace's stderr, for a failure message.
    pub stderr: String,
}

impl Outcome {
    fn new(
        storm: &'static str,
        took: Duration,
        streamed: &Streamed,
        lags: &mut [Duration],
    ) -> Self {
        lags.sort();
        let mut problems = Vec::new();
        if !streamed.status.success() {
            problems.push(format!("memtrace failed: {}", streamed.status));
        }
        Self {
            storm,
            took,
            expected: 0,
            seen: 0,
            lost: streamed.lost(),
            lost_by_kind: KINDS
                .iter()
                .filter_map(|&kind| Some((kind, streamed.lost_of(kind)?)))
                .collect(),
            lost_in_stream: streamed.lost_in_stream(),
            cpu: streamed.cpu,
            peak_rss_kib: streamed.peak_rss_kib,
            lag_median: lags.get(lags.len() / 2).copied().unwrap_or_default(),
            lag_max: lags.last().copied().unwrap_or_default(),
            problems,
            stderr: streamed.stderr.clone(),
        }
    }

    /// Expected events per second of the storm.
    #[must_use]
    pub fn rate(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "a rate for people")]
        let expected = self.expected as f64;
        expected / self.took.as_secs_f64().max(1e-3)
    }

    /// Nothing lost, nothing missing, nothing wrong.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.lost == Some(0) && self.seen == self.expected && self.problems.is_empty()
    }

    /// Panics with the whole story unless [`Self::clean`].
    ///
    /// # Panics
    ///
    /// When something was lost, missing or wrong.
    pub fn assert_clean(&self) {
        assert!(
            self.clean(),
            "{} storm: {} expected, {} seen, lost {:?}; problems: {:#?}\nmemtrace's stderr:\n{}",
            self.storm,
            self.expected,
            self.seen,
            self.lost,
            self.problems,
            self.stderr
        );
    }

    /// One JSON object, as the `storm` binary prints it for the benchmark.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "storm": self.storm,
            "took_s": self.took.as_secs_f64(),
            "rate_per_s": self.rate(),
            "expected": self.expected,
            "seen": self.seen,
            "lost": self.lost,
            "lost_in_stream": self.lost_in_stream,
            "cpu_s": self.cpu.as_secs_f64(),
            "peak_rss_kib": self.peak_rss_kib,
            "lag_median_ms": self.lag_median.as_secs_f64() * 1e3,
            "lag_max_ms": self.lag_max.as_secs_f64() * 1e3,
            "problems": self.problems,
        })
    }

    /// Notes a problem, keeping the first few.
    fn problem(&mut self, what: String) {
        if self.problems.len() < 10 {
            self.problems.push(what);
        }
    }
}

/// The kinds memtrace counts losses of, as its summary line names them.
const KINDS: &[&str] = &[
    "oom_kill",
    "cgroup",
    "reclaim",
    "cache",
    "charge",
    "charge_fail",
    "slab",
];

/// How long after `timestamp_ns` (`CLOCK_BOOTTIME`) an event was read at `read_ns`.
fn lag(read_ns: u64, event: &serde_json::Value) -> Duration {
    let at = event["timestamp_ns"].as_u64().unwrap_or(read_ns);
    Duration::from_nanos(read_ns.saturating_sub(at))
}
