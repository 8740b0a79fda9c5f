//! A container's own kernel counters (`counters` events and the counters in `stats` samples)
//! against the cgroupfs files they come from: a memcg that reads a file larger than its limit
//! twice (charges refused, refaults), is OOM-killed, writes tmpfs (shmem) and a file it does not
//! sync (dirty).

use std::{collections::BTreeMap, fs, thread, time::Duration};

use memtrace::attribution::CgroupVersion;
use memtrace_tests::{Memtrace, OOM_CONTAINER_ID, TestCgroup, events_in, json_lines};

const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");
const LIMIT: u64 = 64 << 20;

/// The counters this test makes move, as memtrace names them, and where the kernel says them
/// (file, key) on this hierarchy.
fn sources(version: CgroupVersion) -> Vec<(&'static str, &'static str, &'static str)> {
    match version {
        CgroupVersion::V1 => vec![
            ("failcnt", "memory.failcnt", ""),
            ("oom_kill", "memory.oom_control", "oom_kill"),
            (
                "workingset_refault_file",
                "memory.stat",
                "total_workingset_refault_file",
            ),
            ("shmem_bytes", "memory.stat", "total_shmem"),
            ("dirty_bytes", "memory.stat", "total_dirty"),
        ],
        CgroupVersion::V2 => vec![
            ("max", "memory.events", "max"),
            ("oom_kill", "memory.events", "oom_kill"),
            (
                "workingset_refault_file",
                "memory.stat",
                "workingset_refault_file",
            ),
            ("shmem_bytes", "memory.stat", "shmem"),
            ("dirty_bytes", "memory.stat", "file_dirty"),
        ],
    }
}

/// What the kernel's files say now, by memtrace's names.
fn read_kernel(cgroup: &TestCgroup, version: CgroupVersion) -> BTreeMap<&'static str, u64> {
    sources(version)
        .into_iter()
        .map(|(name, file, key)| {
            let text = fs::read_to_string(cgroup.dir.join(file))
                .unwrap_or_else(|e| panic!("read {file}: {e}"));
            let value = if key.is_empty() {
                text.trim().parse().ok()
            } else {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok())?
                })
            };
            (name, value)
        })
        // A counter this kernel's file lacks (5.10's v1 `memory.stat` has no refaults) is
        // checked absent from memtrace's output instead.
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
}

/// A file of `mib` MiB on disk, not in the page cache.
fn cold_file(dir: &std::path::Path, name: &str, mib: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    let chunk = vec![0x5au8; 1 << 20];
    let mut out = fs::File::create(&path).expect("create");
    for _ in 0..mib {
        std::io::Write::write_all(&mut out, &chunk).expect("write");
    }
    out.sync_all().expect("sync");
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    path
}

/// `stats` samples carry the counters too; the last one agrees with the files around it.
fn check_stats_samples(
    events: &[serde_json::Value],
    cgroup: &str,
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) {
    let samples = events_in(events, "stats", cgroup);
    let last = samples.last().expect("stats samples");
    for name in before.keys() {
        let v = last["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} not in the stats sample: {last}"));
        let (lo, hi) = (before[name].min(after[name]), before[name].max(after[name]));
        assert!((lo..=hi).contains(&v), "{name}: {v} in {last}");
    }
}

/// Each counter the kernel changed is in the events: its last value between the kernel's two
/// readings around memtrace's last pass, the deltas adding up from the baseline.
fn check_changes(
    counters: &[&serde_json::Value],
    version: CgroupVersion,
    before: &BTreeMap<&'static str, u64>,
    after_1: &BTreeMap<&'static str, u64>,
    after_2: &BTreeMap<&'static str, u64>,
) {
    for (name, _, _) in sources(version) {
        let Some(&b) = before.get(name) else {
            // Not in this kernel's files: never in memtrace's output either.
            assert!(
                counters.iter().all(|e| e["changed"].get(name).is_none()),
                "{name} is absent from the kernel's files but memtrace reports it"
            );
            continue;
        };
        let (a1, a2) = (after_1[name], after_2[name]);
        assert!(a1 != b, "{name} did not change in the kernel: {b} → {a1}");
        let changes: Vec<(u64, i64)> = counters
            .iter()
            .filter_map(|e| {
                let c = &e["changed"][name];
                Some((c["value"].as_u64()?, c["delta"].as_i64()?))
            })
            .collect();
        let &(last, _) = changes
            .last()
            .unwrap_or_else(|| panic!("{name} never in a counters event: {counters:?}"));
        let (lo, hi) = (a1.min(a2), a1.max(a2));
        assert!(
            (lo..=hi).contains(&last),
            "{name}: memtrace's last value {last}, the kernel's {a1} then {a2}"
        );
        let moved: i64 = changes.iter().map(|&(_, d)| d).sum();
        assert_eq!(
            i128::from(moved),
            i128::from(last) - i128::from(b),
            "{name}: the deltas add up to the change since the baseline ({b})"
        );
        // Each event says the value after its change.
        for pair in changes.windows(2) {
            assert_eq!(
                i128::from(pair[1].0) - i128::from(pair[0].0),
                i128::from(pair[1].1),
                "{name}: {changes:?}"
            );
        }
    }
}

#[test]
fn counters_agree_with_cgroupfs_and_absent_ones_are_not_zero() {
    let base = TestCgroup::new("counters", 1 << 30);
    let docker = base.child("docker", None);
    let c = docker.child(OOM_CONTAINER_ID, Some(LIMIT));
    let version = memtrace::attribution::MemoryHierarchy::discover()
        .expect("memory hierarchy")
        .version;
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let big = cold_file(tmp.path(), "cold-128m", 128);
    let dirty = tmp.path().join("dirty-4m");
    let shm = tempfile::tempdir_in("/dev/shm").expect("tmpfs dir");

    let memtrace = Memtrace::start(&[
        "run",
        "--format",
        "json",
        "--events",
        "cgroup,oom_kill",
        "--cgroup",
        &base.path,
        "--counters-interval",
        "200ms",
        "--stats-interval",
        "500ms",
    ]);
    // Attached: memtrace's baseline is read; nothing has happened in the cgroup yet.
    let before = read_kernel(&c, version);

    // Read twice through a 64 MiB limit: the second read refaults what the first evicted,
    // and each charge over the limit is refused first (failcnt / max).
    let input = format!("if={}", big.display());
    for _ in 0..2 {
        let (_, status) = c.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
        assert!(status.success(), "dd: {status}");
    }
    let _ = c.oom_kill_memhog(MEMHOG, 1024);
    let shm_file = format!("of={}", shm.path().join("f").display());
    let (_, status) = c.run_inside(
        "dd",
        &["if=/dev/zero", &shm_file, "bs=1M", "count=8", "status=none"],
    );
    assert!(status.success(), "dd to tmpfs: {status}");
    // 4 MiB: below the memcg's background writeback threshold on v2 (10 % of its 64 MiB, the
    // cgroup's own writeback domain), so the pages stay dirty for the rest of the test. 16 MiB
    // is past its dirty threshold: once, on 6.12/v2, they were all written back before the
    // kernel was read (`file_dirty` 0 → 0).
    let dirty_file = format!("of={}", dirty.display());
    let (_, status) = c.run_inside(
        "dd",
        &[
            "if=/dev/zero",
            &dirty_file,
            "bs=1M",
            "count=4",
            "status=none",
        ],
    );
    assert!(status.success(), "dd to a file: {status}");

    // Let a few passes see it, then read the kernel's values around memtrace's last pass.
    thread::sleep(Duration::from_millis(800));
    let after_1 = read_kernel(&c, version);
    thread::sleep(Duration::from_millis(600));
    let after_2 = read_kernel(&c, version);
    let out = memtrace.stop_ok();
    let events = json_lines(&out.stdout);
    let counters = events_in(&events, "counters", &c.path);
    assert!(!counters.is_empty(), "no counters events: {}", out.stdout);

    check_changes(&counters, version, &before, &after_1, &after_2);

    check_stats_samples(&events, &c.path, &before, &after_2);

    // What the kernel does not have on this hierarchy is absent, never zero.
    let absent: &[&str] = match version {
        CgroupVersion::V1 => &[
            "high",
            "max",
            "low",
            "oom_group_kill",
            "pgscan",
            "pressure_some_ns",
        ],
        CgroupVersion::V2 => &["failcnt", "under_oom"],
    };
    for e in counters
        .iter()
        .chain(events_in(&events, "stats", &c.path).iter())
    {
        for name in absent {
            assert!(
                e["changed"].get(name).is_none() && e["counters"].get(name).is_none(),
                "{name} is not a counter of this kernel's {version:?} hierarchy: {e}"
            );
        }
    }
    let _ = fs::remove_file(&dirty);
}

/// The counters interval of the notification test: long, so that only the kernel's
/// notification can bring the kill's count in time.
const SLOW_INTERVAL: Duration = Duration::from_secs(10);

/// An OOM kill's count arrives at once, from the kernel's notification (v2 `memory.events`
/// through inotify, v1 `memory.oom_control` through an eventfd on `cgroup.event_control`),
/// not at the next counters interval: a `notified` counters event carries the kernel's
/// `oom_kill` count within a few seconds of the kill, long before the interval ends.
#[test]
fn an_oom_kill_is_notified_at_once_not_at_the_next_interval() {
    let base = TestCgroup::new("notified", 1 << 30);
    let docker = base.child("docker", None);
    let c = docker.child(OOM_CONTAINER_ID, Some(LIMIT));
    let version = memtrace::attribution::MemoryHierarchy::discover()
        .expect("memory hierarchy")
        .version;
    let interval = format!("{}s", SLOW_INTERVAL.as_secs());
    let memtrace = Memtrace::start(&[
        "run",
        "--format",
        "json",
        "--events",
        "oom_kill",
        "--cgroup",
        &base.path,
        "--counters-interval",
        &interval,
    ]);
    // The first counters pass (one interval in) follows the memcg and registers the
    // notification; the kill comes half an interval after it (time for a slow guest's pass to
    // finish), half an interval before the next pass.
    thread::sleep(SLOW_INTERVAL * 3 / 2);
    let victim = c.oom_kill_memhog(MEMHOG, 1024);
    let kernel = read_kernel(&c, version)["oom_kill"];
    thread::sleep(Duration::from_secs(3));
    let out = memtrace.stop_ok();
    let events = json_lines(&out.stdout);
    let kill = events
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["pid"] == victim)
        .unwrap_or_else(|| panic!("no oom_kill of {victim}: {}", out.stdout));
    let kill_ns = kill["timestamp_ns"].as_u64().expect("timestamp");
    let counters = events_in(&events, "counters", &c.path);
    let notified = counters
        .iter()
        .find(|e| e["source"] == "notified" && e["changed"]["oom_kill"]["value"] == kernel)
        .unwrap_or_else(|| {
            panic!(
                "no notified counters event with the kernel's oom_kill {kernel} ({version:?}): \
                 {counters:#?}\nstderr:\n{}",
                out.stderr
            )
        });
    let after = Duration::from_nanos(
        notified["timestamp_ns"]
            .as_u64()
            .expect("timestamp")
            .saturating_sub(kill_ns),
    );
    eprintln!("{version:?}: the kill's count came {after:?} after the kill");
    // `notified` says where it came from; the bound says "at once", well before the next
    // pass (the last re-read after a v1 notification is 2 s after it).
    assert!(
        after < SLOW_INTERVAL / 2,
        "notified {after:?} after the kill: not at once"
    );
}
