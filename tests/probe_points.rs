//! Each probe point against the kernel's own counters: page cache, reclaim, lifecycle, and
//! loss that is counted, never silent.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use memtrace_tests::{Memtrace, TestCgroup, assert_within_percent, events_in, files, json_lines};

/// Tests that drop caches or measure the page cache run one at a time: a `drop_caches` in one
/// would empty the cache another is counting.
static PAGE_CACHE: Mutex<()> = Mutex::new(());

fn page_cache_to_myself() -> std::sync::MutexGuard<'static, ()> {
    PAGE_CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cold file (see [`files::cold_file`]) in a directory of its own, removed with it.
fn cold_file(name: &str, mib: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let file = files::cold_file(dir.path(), name, mib);
    (dir, file)
}

fn read_in(cgroup: &TestCgroup, file: &Path) {
    let input = format!("if={}", file.display());
    let (_, status) = cgroup.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
    assert!(status.success(), "dd failed: {status}");
}

/// The page cache charged to a memcg, as its own `memory.stat` counts it.
fn stat_cache_bytes(cgroup: &TestCgroup) -> u64 {
    let stat = fs::read_to_string(cgroup.dir.join("memory.stat")).expect("memory.stat");
    stat.lines()
        .find_map(|l| {
            l.strip_prefix("total_cache ")
                .or_else(|| l.strip_prefix("file "))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no page cache line in memory.stat:\n{stat}"))
}

/// The kernel's `s_dev` encoding of a file's device, as `cache` events report it.
fn device_of(file: &Path) -> String {
    let dev = fs::metadata(file).expect("stat").dev();
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

#[test]
fn page_cache_growth_matches_memory_stat_and_names_the_file() {
    let _alone = page_cache_to_myself();
    let (_dir, file) = cold_file("cache-256m", 256);
    let cgroup = TestCgroup::new("pagecache", 1 << 30);
    let memtrace = Memtrace::json(&["--interval", "500ms", "--cgroup", &cgroup.path]);
    let before = stat_cache_bytes(&cgroup);
    read_in(&cgroup, &file);
    let after = stat_cache_bytes(&cgroup);
    let out = memtrace.stop_ok();

    let events = json_lines(&out.stdout);
    let cache = events_in(&events, "cache", &cgroup.path);
    assert!(
        !cache.is_empty(),
        "no cache events for {}: {events:#?}\nmemtrace said:\n{}",
        cgroup.path,
        out.stderr
    );
    let traced: i64 = cache
        .iter()
        .map(|e| e["net_bytes"].as_i64().expect("net"))
        .sum();
    let kernel = i64::try_from(after - before).expect("delta");
    assert!(
        kernel > 200 << 20,
        "the kernel itself should count the 256 MiB read: {kernel}"
    );
    assert_within_percent("cache growth against memory.stat", traced, kernel, 10);

    // The top file of the interval that grew most is the file that was read.
    let biggest = cache
        .iter()
        .max_by_key(|e| e["net_bytes"].as_i64())
        .expect("a cache event");
    let top = &biggest["top_files"][0];
    assert_eq!(
        top["inode"],
        fs::metadata(&file).expect("stat").ino(),
        "{biggest}"
    );
    assert_eq!(top["device"], device_of(&file).as_str(), "{biggest}");
    let path = fs::canonicalize(&file).expect("canonical");
    assert_eq!(
        top["name"]["path"],
        path.to_str().expect("utf-8"),
        "the file by its full path: {biggest}"
    );
}

#[test]
fn reclaim_under_a_limit_is_attributed_with_what_it_freed() {
    let _alone = page_cache_to_myself();
    let (_dir, file) = cold_file("reclaim-512m", 512);
    let cgroup = TestCgroup::new("reclaim", 64 << 20);
    let memtrace = Memtrace::json(&["--cgroup", &cgroup.path]);
    read_in(&cgroup, &file);
    let out = memtrace.stop_ok();
    let events = json_lines(&out.stdout);
    let reclaims = events_in(&events, "reclaim", &cgroup.path);
    assert!(
        reclaims
            .iter()
            .any(|e| e["reclaimed_bytes"].as_u64().is_some_and(|n| n > 0)),
        "reading 512 MiB under a 64 MiB limit must reclaim in {}: {events:#?}",
        cgroup.path
    );
    for e in &reclaims {
        assert_eq!(
            e["ineffective"],
            e["reclaimed_bytes"] == 0,
            "ineffective means nothing reclaimed: {e}"
        );
        assert!(e["duration_ns"].is_u64(), "{e}");
        assert!(e["gfp_flags"].is_u64(), "{e}");
    }
}

#[test]
fn mkdir_and_rmdir_appear_with_their_paths() {
    let memtrace = Memtrace::json(&[]);
    let cgroup = TestCgroup::new("lifecycle", 1 << 30);
    let path = cgroup.path.clone();
    drop(cgroup);
    let out = memtrace.stop();
    let events = json_lines(&out.stdout);
    for action in ["created", "removed"] {
        assert!(
            events.iter().any(|e| e["type"] == "cgroup"
                && e["action"] == action
                && e["cgroup"] == path.as_str()),
            "{action} {path} missing: {events:#?}"
        );
    }
}

#[test]
fn a_full_ring_buffer_is_counted_as_lost_not_dropped_silently() {
    // One page of ring buffer, and a consumer that stalls: its stdout is a pipe nobody reads
    // until the end, so after ~64 KiB of output memtrace blocks and the ring fills.
    const CGROUPS: usize = 1500;
    let memtrace = Memtrace::json(&["--ring-buffer-size", "4096"]);
    let base = TestCgroup::new("burst", 1 << 30);
    let children: Vec<_> = (0..CGROUPS)
        .map(|i| base.child(&format!("c{i}"), None))
        .collect();
    let prefix = format!("{}/", base.path);
    drop(children);
    let out = memtrace.stop_ok();

    let seen = json_lines(&out.stdout)
        .iter()
        .filter(|e| {
            e["type"] == "cgroup"
                && (e["action"] == "created" || e["action"] == "removed")
                && e["cgroup"].as_str().is_some_and(|p| p.starts_with(&prefix))
        })
        .count();
    let lost: u64 = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("memtrace: detached"))
        .flat_map(str::split_whitespace)
        .find_map(|w| w.strip_prefix("cgroup="))
        .and_then(|n| n.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no cgroup loss count in the summary:\n{}", out.stderr));
    assert!(
        lost > 0,
        "a 4 KiB ring buffer under a stalled reader must lose: {}",
        out.stderr
    );
    assert!(
        seen as u64 + lost >= 2 * CGROUPS as u64,
        "every created/removed event is either seen ({seen}) or counted lost ({lost})"
    );
}

#[test]
fn filters_are_applied_in_the_kernel_and_follow_new_cgroups() {
    let _alone = page_cache_to_myself();
    let (_dir, file) = cold_file("filtered-32m", 32);
    let watched = TestCgroup::new("filtered", 1 << 30);
    let other = TestCgroup::new("unfiltered", 1 << 30);
    let memtrace = Memtrace::json(&["--interval", "300ms", "--cgroup", &watched.path]);
    // Created after start: the kernel's filter learns it from the mkdir event.
    let child = watched.child("late", None);
    read_in(&other, &file);
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    read_in(&child, &file);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let out = memtrace.stop_ok();
    assert!(
        out.stderr
            .contains("memtrace: filtering in the kernel: 1 memory cgroup match now"),
        "{}",
        out.stderr
    );
    let events = json_lines(&out.stdout);
    let cache_of = |path: &str| {
        events
            .iter()
            .filter(|e| e["type"] == "cache" && e["cgroup"] == path)
            .map(|e| e["added_bytes"].as_u64().expect("added"))
            .sum::<u64>()
    };
    assert!(
        cache_of(&child.path) >= 30 << 20,
        "the new child {} of the watched cgroup is counted: {events:#?}\n{}",
        child.path,
        out.stderr
    );
    assert_eq!(cache_of(&other.path), 0, "the other cgroup is filtered out");
    drop(child);
}

/// The `charge` point's last strategy, for kernels before 6.16 that allow neither fexit nor
/// kprobes: the page cache added to a memcg is what it was charged for file pages.
#[test]
fn charge_derived_from_the_page_cache_counts_the_file_pages_read() {
    let _alone = page_cache_to_myself();
    let (_dir, file) = cold_file("charge-64m", 64);
    let cgroup = TestCgroup::new("charge-pagecache", 1 << 30);
    let memtrace = Memtrace::json(&[
        "--events",
        "page_cache,charge",
        "--probe-strategy",
        "charge=derived",
        "--cgroup",
        &cgroup.path,
    ]);
    let before = stat_cache_bytes(&cgroup);
    read_in(&cgroup, &file);
    let after = stat_cache_bytes(&cgroup);
    let out = memtrace.stop_ok();
    assert!(
        out.stderr.contains("charge=derived/page_cache"),
        "charge=derived must be the one attached: {}",
        out.stderr
    );

    let events = json_lines(&out.stdout);
    let samples = events_in(&events, "charge", &cgroup.path);
    for e in &samples {
        assert_eq!(e["derived"], "page_cache", "{e}");
        assert!(
            e.get("source").is_none(),
            "derived, not counted by the kernel: {e}"
        );
        assert!(e["charges"].is_null(), "{e}");
        assert!(e["interval_ns"].is_u64(), "{e}");
    }
    let charged: u64 = samples
        .iter()
        .map(|e| e["charged_bytes"].as_u64().expect("bytes"))
        .sum();
    let kernel = after - before;
    assert!(
        kernel > 50 << 20,
        "the kernel itself should count the 64 MiB read: {kernel}"
    );
    // Within 10%: |charged − kernel| × 10 ≤ kernel.
    assert!(
        charged.abs_diff(kernel) * 10 <= kernel,
        "memtrace saw {charged} bytes charged, memory.stat {kernel} of page cache added"
    );
}
