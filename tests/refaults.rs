//! Refaults per container and per file: a memcg whose limit is half the size of a file it
//! re-reads in a loop evicts the file's pages and reads them back, again and again. The
//! refaults memtrace counts for the memcg must be within 20 % of what the kernel counted
//! (`memory.stat`'s `workingset_refault_file`, in pages), and the file must be the memcg's
//! top refaulting file, by path; a file read once before the loop (evicted, never read again)
//! must have (almost) no refaults: they are counted against the file re-read, not smeared. Run with each `page_cache` strategy this kernel must support
//! (`MEMTRACE_TEST_PAGE_CACHE_STRATEGIES`; on this host: `raw_tp`, the memcg stat updates).

use std::{
    collections::HashMap,
    fs, thread,
    time::{Duration, Instant},
};

use memtrace_tests::{
    Memtrace, TestCgroup, assert_attached, assert_within_percent, events_in, files::cold_file,
    json_lines, required_strategies,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const LIMIT_MIB: u64 = 64;
const FILE_MIB: usize = 128;
const PASSES: usize = 4;
const ONCE_MIB: usize = 32;

/// `memory.stat`'s own (not hierarchical) `workingset_refault_file`: pages, on v2 and on v1
/// where its `memory.stat` has it (not 5.10's); else the node's count in `/proc/vmstat`, which
/// in a guest running nothing but this test is the memcg's.
fn refault_pages(cgroup: &TestCgroup) -> i64 {
    let stat = fs::read_to_string(cgroup.dir.join("memory.stat")).expect("memory.stat");
    let key = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("workingset_refault_file "))
            .and_then(|v| v.trim().parse().ok())
    };
    key(&stat).unwrap_or_else(|| {
        let vmstat = fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
        eprintln!("memory.stat has no workingset_refault_file: the node's, from /proc/vmstat");
        key(&vmstat).unwrap_or_else(|| {
            panic!("no workingset_refault_file in memory.stat nor /proc/vmstat:\n{stat}")
        })
    })
}

/// What says whether the reads were charged to the memcg and evicted by its limit, for the
/// message of a run that did not thrash.
fn memcg_state(cgroup: &TestCgroup) -> String {
    let read = |name: &str| {
        fs::read_to_string(cgroup.dir.join(name))
            .map_or_else(|e| format!("({e})"), |v| v.trim().to_owned())
    };
    let (usage, limit) = if cgroup.dir.join("memory.max").exists() {
        (read("memory.current"), read("memory.max"))
    } else {
        (read("memory.usage_in_bytes"), read("memory.limit_in_bytes"))
    };
    let stat = read("memory.stat");
    let wanted = [
        "file ",
        "cache ",
        "active_file",
        "inactive_file",
        "workingset_",
        "pgscan ",
        "pgsteal ",
        "pgmajfault",
        "total_pgmajfault",
    ];
    let lines: Vec<&str> = stat
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .collect();
    let zone = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = zone
        .lines()
        .find(|l| l.starts_with("MemAvailable"))
        .unwrap_or("");
    format!(
        "usage {usage}, limit {limit}; {}; node {free}",
        lines.join(", ")
    )
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    i64::from(i32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size"))
}

#[test]
fn refaults_are_counted_per_memcg_and_file() {
    let strategies = required_strategies("MEMTRACE_TEST_PAGE_CACHE_STRATEGIES", "raw_tp");
    for strategy in &strategies {
        // The kernel's own refault detection varies (MGLRU's generations, writeback): a run
        // in which the kernel itself saw no thrashing is run again, up to three times.
        let mut misses = Vec::new();
        while let Err(why) = refaults_with(strategy) {
            eprintln!("{strategy}: {why}");
            misses.push(why);
            assert!(misses.len() < 3, "{strategy}: {misses:?}");
        }
    }
}

/// `Err`: the scenario did not thrash by the kernel's own count; a disagreement panics.
fn refaults_with(strategy: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let dir = fs::canonicalize(tmp.path()).expect("canonical");
    let file = cold_file(&dir, "reread", FILE_MIB);
    let path = file.to_str().expect("utf-8").to_owned();
    let once = cold_file(&dir, "once", ONCE_MIB);
    let once_path = once.to_str().expect("utf-8").to_owned();
    // `cold_file`'s fadvise leaves pages still being written back in the cache (charged to
    // the test, not the memcg): the memcg would read them without a fault. Drop them all.
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    let cgroup = TestCgroup::new(&format!("refaults-{strategy}"), LIMIT_MIB * MIB);
    let forced = format!("page_cache={strategy}");
    let memtrace = Memtrace::json(&["--events", "page_cache", "--probe-strategy", &forced]);
    assert_attached(
        &memtrace.stderr_at_start().join("\n"),
        "page_cache",
        strategy,
    );

    let before = refault_pages(&cgroup);
    let script = format!(
        "cat '{once_path}' >/dev/null; for i in $(seq {PASSES}); do cat '{path}' >/dev/null; done"
    );
    let started = Instant::now();
    let (_, status) = cgroup.run_inside("sh", &["-c", &script]);
    assert!(status.success(), "{script}: {status}");
    let took = started.elapsed();
    let kernel = (refault_pages(&cgroup) - before) * page_size();
    let state = memcg_state(&cgroup);
    // Two intervals: the last counts are drained.
    thread::sleep(Duration::from_millis(2500));
    let finished = memtrace.stop_ok();

    if kernel < i64::try_from(FILE_MIB as u64 * MIB).expect("size") {
        return Err(format!(
            "the kernel counted only {kernel} bytes of refaults: the scenario did not thrash \
             (the reads took {took:?}; the memcg then: {state})"
        ));
    }
    let events = json_lines(&finished.stdout);
    let cache = events_in(&events, "cache", &cgroup.path);
    let traced: i64 = cache
        .iter()
        .map(|e| {
            e["refault_bytes"]
                .as_i64()
                .unwrap_or_else(|| panic!("{strategy} counts refaults: {e}"))
        })
        .sum();
    let mut by_file: HashMap<String, i64> = HashMap::new();
    for row in cache
        .iter()
        .flat_map(|e| e["top_files"].as_array().expect("rows"))
    {
        let name = match &row["name"]["path"] {
            Value::String(p) => p.clone(),
            other => other.to_string(),
        };
        *by_file.entry(name).or_default() += row["refault_bytes"].as_i64().expect("row refaults");
    }
    let top = by_file.iter().max_by_key(|(_, b)| **b);
    eprintln!(
        "{strategy}: memtrace {traced} bytes of refaults ({} MiB), kernel {kernel} ({} MiB); \
         by file: {by_file:?}",
        traced >> 20,
        kernel >> 20
    );
    assert_eq!(
        top.map(|(p, _)| p.as_str()),
        Some(path.as_str()),
        "the re-read file is the top refaulting file: {by_file:?}"
    );
    let once_refaults = by_file.get(&once_path).copied().unwrap_or(0);
    assert!(
        once_refaults < 1 << 20,
        "the file read once has {once_refaults} bytes of refaults: {by_file:?}"
    );
    assert_within_percent("refaults", traced, kernel, 20);
    Ok(())
}
