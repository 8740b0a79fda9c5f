//! What a container's own counters and page-cache events say about trouble, gathered once per
//! container for the verdicts (`verdict`): refaults against the page cache added (thrashing),
//! shmem/tmpfs and dirty page cache (memory reclaim cannot drop), `memory.high` throttling with
//! its stall time, and a pod limit below the sum of its containers' limits.
//!
//! Kept apart from the rules so a rule reads numbers, not events, and is unit-tested with
//! hand-made [`Signals`].

use serde::Serialize;

use super::model::{CounterTotal, FileGrowth};
use crate::event::Counter;

/// The evidence a container's events and counters give, kill or no kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    /// Page cache the container added during the recording (`cache` events), and the file
    /// that added most (its name as the report shows it, and how much).
    pub cache_added_bytes: u64,
    pub most_added_file: Option<(String, u64)>,
    /// The file memtrace counted most refaults for (`cache` rows' `refault_bytes`): the one
    /// re-read after eviction, which is not always the one added most. Absent where the probe
    /// strategy does not count refaults, or none were counted.
    pub most_refaulted_file: Option<RefaultedFile>,
    /// The tmpfs/shmem file whose page cache grew most (`cache` rows marked shmem).
    pub shmem_file: Option<ShmemFile>,
    /// Workingset refaults of file pages during the recording, in bytes (counters; absent when
    /// the kernel does not count them or no `counters` events were recorded).
    pub refault_file_bytes: Option<u64>,
    /// The last value of these levels (counters).
    pub shmem_bytes: Option<u64>,
    pub dirty_bytes: Option<u64>,
    pub writeback_bytes: Option<u64>,
    pub throttling: Option<Throttling>,
    pub pod_limit: Option<PodLimit>,
}

/// The file re-read most after reclaim evicted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefaultedFile {
    pub name: String,
    pub refault_bytes: u64,
    /// Its page cache added during the recording, refaults included.
    pub added_bytes: u64,
}

/// A tmpfs/shmem file holding a container's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShmemFile {
    pub name: String,
    /// Where the tmpfs is mounted, when the path says it (see [`tmpfs_mount`]).
    pub mount: Option<String>,
    pub peak_bytes: u64,
}

/// A container held at `memory.high` (cgroup v2): the kernel throttled (reclaimed and slept)
/// its allocating tasks instead of letting usage pass the threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Throttling {
    /// `memory.events` `high` during the recording: how many times usage went over.
    pub high_events: u64,
    /// From the start of the first counters interval in which `high` rose to the end of the
    /// last one: how long it was held there.
    pub first_ns: u64,
    pub last_ns: u64,
    pub seconds: f64,
    /// PSI stall time during the recording (`memory.pressure` `some` / `full` totals): how
    /// much its tasks waited on memory; absent without PSI.
    pub stall_some_seconds: Option<f64>,
    pub stall_full_seconds: Option<f64>,
    /// Limit reclaims run by its own tasks during the recording.
    pub reclaims: u64,
}

/// A pod (or any cgroup) whose own limit is below the sum of its children's limits: a child
/// can be OOM-killed by the pod's limit while under its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodLimit {
    pub cgroup: String,
    /// Who the cgroup belongs to, for people.
    pub owner: String,
    pub limit_bytes: u64,
    /// The sum of its children's own limits, and how many children have one.
    pub children_limit_bytes: u64,
    pub children: u64,
}

/// The mount point of a tmpfs file, from the shapes people and Kubernetes give them. A trace
/// file keeps paths, not the recording host's mount table, so this reads the path: `/dev/shm`,
/// `/run`, `/tmp`, a Kubernetes memory-backed `emptyDir`; else `None`.
#[must_use]
pub fn tmpfs_mount(path: &str) -> Option<String> {
    for mount in ["/dev/shm", "/run", "/tmp"] {
        if path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Some(mount.to_owned());
        }
    }
    // /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>/…
    let marker = "/volumes/kubernetes.io~empty-dir/";
    let at = path.find(marker)? + marker.len();
    let volume_end = path[at..].find('/').map_or(path.len(), |i| at + i);
    Some(path[..volume_end].to_owned())
}

impl Signals {
    /// Gathers the signals of a container from its page-cache rows (all of them, before the
    /// report cuts the list: the file re-read most may not be among the largest), the page cache
    /// added and the refaults memtrace counted in the kernel, and its counters; `page_size`
    /// turns the counters' refaults (pages) into bytes.
    #[must_use]
    pub fn gather(
        files: &[FileGrowth],
        (cache_added_bytes, counted_refaults): (u64, Option<u64>),
        counters: &[CounterTotal],
        page_size: u64,
    ) -> Self {
        let counter = |c: Counter| counters.iter().find(|t| t.counter == c);
        let most_added_file = files
            .iter()
            .filter(|f| !f.file.is_other() && f.added_bytes > 0)
            .max_by_key(|f| f.added_bytes)
            .map(|f| (f.name.clone(), f.added_bytes));
        let most_refaulted_file = files
            .iter()
            .filter(|f| !f.file.is_other())
            .filter_map(|f| Some((f, f.refault_bytes.filter(|&r| r > 0)?)))
            .max_by_key(|&(f, refaults)| (refaults, std::cmp::Reverse(&f.name)))
            .map(|(f, refault_bytes)| RefaultedFile {
                name: f.name.clone(),
                refault_bytes,
                added_bytes: f.added_bytes,
            });
        let shmem_file = files
            .iter()
            .filter(|f| f.file.shmem && f.peak_net_bytes > 0)
            .max_by_key(|f| f.peak_net_bytes)
            .map(|f| ShmemFile {
                name: f.name.clone(),
                mount: f.file.path.as_deref().and_then(tmpfs_mount),
                peak_bytes: f.peak_net_bytes.unsigned_abs(),
            });
        // Kernels before 5.9 count file and anon refaults together; v1's `memory.stat` of
        // older kernels (5.10) has none: then memtrace's own count.
        let refaults = counter(Counter::WorkingsetRefaultFile)
            .or_else(|| counter(Counter::WorkingsetRefault))
            .map(|t| t.delta.unsigned_abs().saturating_mul(page_size))
            .or(counted_refaults);
        Self {
            cache_added_bytes,
            most_added_file,
            most_refaulted_file,
            shmem_file,
            refault_file_bytes: refaults,
            shmem_bytes: counter(Counter::ShmemBytes).map(|t| t.last),
            dirty_bytes: counter(Counter::DirtyBytes).map(|t| t.last),
            writeback_bytes: counter(Counter::WritebackBytes).map(|t| t.last),
            throttling: None,
            pod_limit: None,
        }
    }
}

/// Folds `counters` events into a container's [`Throttling`], one change at a time.
#[derive(Clone, Debug, Default)]
pub struct ThrottlingAcc {
    high_events: u64,
    window: Option<(u64, u64)>,
}

impl ThrottlingAcc {
    /// `memory.events` `high` rose by `delta` in the interval of `interval_ns` ending at `at`.
    pub fn high(&mut self, at: u64, interval_ns: u64, delta: i64) {
        let Ok(delta) = u64::try_from(delta) else {
            return;
        };
        if delta == 0 {
            return;
        }
        self.high_events += delta;
        let start = at.saturating_sub(interval_ns);
        self.window = Some(
            self.window
                .map_or((start, at), |(a, b)| (a.min(start), b.max(at))),
        );
    }

    /// The throttling seen, if `high` ever rose; the stall times and reclaims come from the
    /// container's totals.
    #[must_use]
    pub fn finish(&self, counters: &[CounterTotal], reclaims: u64) -> Option<Throttling> {
        let (first_ns, last_ns) = self.window?;
        let stall = |c: Counter| {
            counters
                .iter()
                .find(|t| t.counter == c)
                .map(|t| crate::units::seconds(t.delta.unsigned_abs()))
        };
        Some(Throttling {
            high_events: self.high_events,
            first_ns,
            last_ns,
            seconds: crate::units::seconds(last_ns - first_ns),
            stall_some_seconds: stall(Counter::PressureSomeNs),
            stall_full_seconds: stall(Counter::PressureFullNs),
            reclaims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memcg's own refault counter when the kernel has it; memtrace's count where its
    /// `memory.stat` has none (5.10 on v1); unknown when neither.
    #[test]
    fn refaults_come_from_the_counter_or_else_from_memtraces_count() {
        let counted = Signals::gather(&[], (100, Some(64)), &[], 4096);
        assert_eq!(counted.refault_file_bytes, Some(64));
        let neither = Signals::gather(&[], (100, None), &[], 4096);
        assert_eq!(neither.refault_file_bytes, None);
    }

    fn row(name: &str, added_bytes: u64, refault_bytes: Option<u64>) -> FileGrowth {
        FileGrowth {
            name: name.into(),
            file: crate::event::FileName::default(),
            device: "8:1".into(),
            inode: 1,
            added_bytes,
            removed_bytes: 0,
            net_bytes: 0,
            peak_net_bytes: 0,
            refault_bytes,
        }
    }

    /// The file re-read most, not the one added most; the "other files" row is no file.
    #[test]
    fn the_refaulted_file_is_the_one_with_most_refaults() {
        let mut other = row("other files", 900, Some(800));
        other.file = crate::event::FileName::other(3);
        let files = [
            row("/data/big", 500, Some(10)),
            row("/data/hot", 200, Some(150)),
            row("/data/new", 300, None),
            other,
        ];
        let s = Signals::gather(&files, (1900, Some(960)), &[], 4096);
        assert_eq!(s.most_added_file, Some(("/data/big".into(), 500)));
        assert_eq!(
            s.most_refaulted_file,
            Some(RefaultedFile {
                name: "/data/hot".into(),
                refault_bytes: 150,
                added_bytes: 200,
            })
        );
        let none = Signals::gather(&[row("/data/big", 500, None)], (500, None), &[], 4096);
        assert_eq!(none.most_refaulted_file, None, "not counted: absent");
    }

    #[test]
    fn tmpfs_mounts_are_named_from_the_path() {
        assert_eq!(tmpfs_mount("/dev/shm/x/f").as_deref(), Some("/dev/shm"));
        assert_eq!(tmpfs_mount("/dev/shmem/f"), None);
        assert_eq!(
            tmpfs_mount("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache/a/b")
                .as_deref(),
            Some("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(tmpfs_mount("/data/f"), None);
    }

    #[test]
    fn throttling_spans_the_intervals_where_high_rose() {
        let mut acc = ThrottlingAcc::default();
        assert!(acc.finish(&[], 0).is_none(), "never over memory.high");
        acc.high(2_000_000_000, 1_000_000_000, 3);
        acc.high(3_000_000_000, 1_000_000_000, 0);
        acc.high(5_000_000_000, 1_000_000_000, 4);
        let totals = [CounterTotal {
            counter: Counter::PressureSomeNs,
            delta: 1_500_000_000,
            last: 9_000_000_000,
            changes: 3,
        }];
        let t = acc.finish(&totals, 12).expect("throttled");
        assert_eq!(
            (t.high_events, t.first_ns, t.last_ns),
            (7, 1_000_000_000, 5_000_000_000)
        );
        assert!((t.seconds - 4.0).abs() < 1e-9);
        assert_eq!(t.stall_some_seconds, Some(1.5));
        assert_eq!(t.stall_full_seconds, None, "no PSI full total: absent");
        assert_eq!(t.reclaims, 12);
    }
}
