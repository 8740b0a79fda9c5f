//! The probe points on memcg charging and kernel memory against the kernel's own counters:
//! charges, charges refused at the limit, and accounted slab.

use std::{fs, process::Command};

use memtrace_tests::{
    Finished, Memtrace, TestCgroup, assert_attached, assert_within_percent, events_in,
    files::Tmpfs, json_lines, required_strategies,
};

const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");
const MKFILES: &str = env!("CARGO_BIN_EXE_mkfiles");

/// `memtrace run` of `events` with `point` forced to `strategy`; with the kernel-side filter
/// (`--cgroup`) when a cgroup is given.
fn run_forced(events: &str, point: &str, strategy: &str, only: Option<&TestCgroup>) -> Memtrace {
    let forced = format!("{point}={strategy}");
    let mut args = vec!["--events", events, "--probe-strategy", &forced];
    if let Some(cgroup) = only {
        args.extend(["--cgroup", &cgroup.path]);
    }
    Memtrace::json(&args)
}

/// Stops a [`run_forced`] memtrace that must have attached `point` with `strategy`.
fn stop_forced(memtrace: Memtrace, point: &str, strategy: &str) -> Finished {
    let out = memtrace.stop();
    assert!(out.status.success(), "{strategy}: {out:?}");
    assert_attached(&out.stderr, point, strategy);
    out
}

/// Accounted slab bytes memtrace saw the memcg gain (net of frees), and per cache.
fn slab_net(stdout: &str, cgroup: &TestCgroup) -> (i64, Vec<(String, i64)>) {
    let events = json_lines(stdout);
    let slab = events_in(&events, "slab", &cgroup.path);
    let net: i64 = slab
        .iter()
        .map(|e| e["net_bytes"].as_i64().expect("net"))
        .sum();
    let mut by_cache = std::collections::HashMap::<String, i64>::new();
    for e in &slab {
        for c in e["caches"].as_array().expect("caches") {
            *by_cache
                .entry(c["cache"].as_str().expect("name").to_owned())
                .or_default() += c["net_bytes"].as_i64().expect("net");
        }
    }
    let mut top: Vec<_> = by_cache.into_iter().collect();
    top.sort_by_key(|(_, net)| std::cmp::Reverse(*net));
    (net, top)
}

fn mkfiles(cgroup: &TestCgroup, dir: &std::path::Path, files: usize) {
    let status = Command::new(MKFILES)
        .arg(cgroup.procs_file())
        .arg(dir)
        .arg(files.to_string())
        .status()
        .expect("run mkfiles");
    assert!(status.success(), "mkfiles failed: {status}");
}

/// Every slab strategy: `raw_tp` (each object's memcg read from its slab) and `tracked` (each
/// object remembered by address), forced one after the other, each with the kernel-side filter
/// (`--cgroup`, which makes the programs read the memcg on every event) and without (every
/// memcg counted, the memcg read once per key and interval).
#[test]
fn accounted_slab_growth_matches_kernel_memory_and_names_the_caches() {
    const FILES: usize = 100_000;
    let strategies = required_strategies("MEMTRACE_TEST_SLAB_STRATEGIES", "raw_tp,tracked");
    for (strategy, filtered) in strategies
        .iter()
        .flat_map(|s| [(s.clone(), true), (s.clone(), false)])
    {
        let tmpfs = Tmpfs::new("1g");
        let cgroup = TestCgroup::new(&format!("slab-{strategy}-{filtered}"), 2 << 30);
        let memtrace = run_forced("slab", "slab", &strategy, filtered.then_some(&cgroup));
        let before = cgroup.kernel_memory_bytes();
        mkfiles(&cgroup, tmpfs.0.path(), FILES);
        let after = cgroup.kernel_memory_bytes();
        let out = stop_forced(memtrace, "slab", &strategy);

        let (traced, top) = slab_net(&out.stdout, &cgroup);
        let kernel = i64::try_from(after - before).expect("delta");
        assert!(
            kernel > 50 << 20,
            "the kernel itself should count {FILES} inodes and dentries: {kernel}"
        );
        assert_within_percent(
            &format!("{strategy} (filtered: {filtered}): accounted slab growth"),
            traced,
            kernel,
            20,
        );
        // The caches that grew: each file is a tmpfs inode and a dentry.
        let names: Vec<&str> = top.iter().take(3).map(|(n, _)| n.as_str()).collect();
        for cache in ["shmem_inode_cache", "dentry"] {
            assert!(
                names.contains(&cache),
                "{strategy}: {cache} not in the top caches {top:?}"
            );
        }
        drop(tmpfs);
    }
}

/// Counts whose key an aggregate cannot take go to its spill map and are not lost: with the
/// aggregates made one entry small (`MEMTRACE_AGGREGATE_ENTRIES=1`, so that every insert but
/// one fails), the slab a memcg gains is still counted in full, the drains say they found keys
/// in the spill maps, and nothing is lost. Filtered to the test's memcg, so that other
/// memcgs' keys do not fill the spill map too.
#[test]
fn slab_counts_an_aggregate_cannot_take_are_spilled_not_lost() {
    const FILES: usize = 20_000;
    let tmpfs = Tmpfs::new("1g");
    let cgroup = TestCgroup::new("slab-spill", 2 << 30);
    let memtrace = Memtrace::start_with_env(
        &[
            "run",
            "--format",
            "json",
            "--stats-interval",
            "0",
            "--events",
            "slab",
            "--cgroup",
            &cgroup.path,
        ],
        &[
            ("MEMTRACE_AGGREGATE_ENTRIES", "1"),
            ("RUST_LOG", "memtrace::pipeline=debug"),
        ],
    );
    let before = cgroup.kernel_memory_bytes();
    mkfiles(&cgroup, tmpfs.0.path(), FILES);
    let after = cgroup.kernel_memory_bytes();
    let out = memtrace.stop();
    assert!(out.status.success(), "{out:?}");

    let (traced, _) = slab_net(&out.stdout, &cgroup);
    let kernel = i64::try_from(after - before).expect("delta");
    assert!(
        kernel > 10 << 20,
        "the kernel itself should count {FILES} inodes and dentries: {kernel}"
    );
    assert_within_percent("accounted slab growth, spilled", traced, kernel, 20);
    let spilled: u64 = out
        .stderr
        .lines()
        .filter_map(|line| line.split(" spilled_keys: ").nth(1))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        spilled > 0,
        "no drain found keys in the spill maps:\n{}",
        out.stderr
    );
    let lost: Vec<_> = json_lines(&out.stdout)
        .into_iter()
        .filter(|e| e["type"] == "lost")
        .collect();
    assert!(lost.is_empty(), "lost events: {lost:?}");
    drop(tmpfs);
}

/// The slab strategies that read each freed object's memcg from its slab (`raw_tp`, or
/// `fexit` where the tracepoints do not pass the cache), so the frees of objects allocated
/// before memtrace started count too: files made before it starts and removed while it runs
/// show as the memcg's slab shrinking, as the kernel's own count does.
#[test]
fn slab_frees_of_objects_older_than_memtrace_are_counted() {
    for strategy in required_strategies("MEMTRACE_TEST_SLAB_CHARGED_STRATEGIES", "raw_tp") {
        slab_frees_are_counted(&strategy);
    }
}

fn slab_frees_are_counted(strategy: &str) {
    const FILES: usize = 50_000;
    let tmpfs = Tmpfs::new("1g");
    let cgroup = TestCgroup::new("slab-frees", 2 << 30);
    mkfiles(&cgroup, tmpfs.0.path(), FILES);
    let memtrace = run_forced("slab", "slab", strategy, Some(&cgroup));
    let before = cgroup.kernel_memory_bytes();
    // Unmounting frees every inode and dentry of the tmpfs (after an RCU grace period).
    drop(tmpfs);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = cgroup.kernel_memory_bytes();
    let out = stop_forced(memtrace, "slab", strategy);

    let (traced, top) = slab_net(&out.stdout, &cgroup);
    let kernel = i64::try_from(after).expect("bytes") - i64::try_from(before).expect("bytes");
    assert!(
        kernel < -(20 << 20),
        "unmounting should free {FILES} inodes and dentries: the kernel counts {kernel}"
    );
    assert_within_percent("accounted slab change", traced, kernel, 20);
    let shrunk: Vec<&str> = top.iter().rev().take(3).map(|(n, _)| n.as_str()).collect();
    assert!(
        shrunk.contains(&"shmem_inode_cache"),
        "shmem_inode_cache not among the caches that shrank most: {top:?}"
    );
}

#[test]
fn every_charge_strategy_counts_the_pages_a_memcg_was_charged() {
    const CAP_MIB: u64 = 96;
    for strategy in required_strategies("MEMTRACE_TEST_CHARGE_STRATEGIES", "raw_tp") {
        let cgroup = TestCgroup::new(&format!("charge-{strategy}"), 1 << 30);
        let memtrace = run_forced("charge", "charge", &strategy, Some(&cgroup));
        let (_, status) = cgroup.run_memhog(MEMHOG, CAP_MIB);
        // Exit 3: memhog touched its whole cap and was not killed.
        assert_eq!(status.code(), Some(3), "{strategy}: memhog {status}");
        let out = stop_forced(memtrace, "charge", &strategy);
        let events = json_lines(&out.stdout);
        let charged: u64 = events
            .iter()
            .filter(|e| e["type"] == "charge" && e["cgroup"] == cgroup.path.as_str())
            .map(|e| e["charged_bytes"].as_u64().expect("bytes"))
            .sum();
        // memhog's anon memory, its binary's and libraries' pages, page tables aside: at least
        // what it touched, and not wildly more.
        let touched = CAP_MIB << 20;
        assert!(
            charged >= touched * 9 / 10 && charged <= touched * 2,
            "{strategy}: memtrace saw {charged} bytes charged to {}, memhog touched {touched}: \
             {events:#?}",
            cgroup.path
        );
        let derived = strategy == "raw_tp";
        for e in events.iter().filter(|e| e["type"] == "charge") {
            assert_eq!(
                e["source"],
                if derived { "stat_updates" } else { "charge" },
                "{e}"
            );
            assert!(e.get("derived").is_none(), "counted by the kernel: {e}");
        }
    }
}

#[test]
fn every_try_charge_strategy_reports_the_charges_a_limit_refused() {
    for strategy in required_strategies("MEMTRACE_TEST_TRY_CHARGE_STRATEGIES", "derived") {
        let cgroup = TestCgroup::new(&format!("trycharge-{strategy}"), 64 << 20);
        let memtrace = run_forced("reclaim,try_charge", "try_charge", &strategy, Some(&cgroup));
        let _ = cgroup.oom_kill_huge_memhog(MEMHOG, 512);
        let failcnt = cgroup_failures(&cgroup);
        let out = stop_forced(memtrace, "try_charge", &strategy);
        let events = json_lines(&out.stdout);
        let failures = events_in(&events, "charge_fail", &cgroup.path);
        assert!(
            !failures.is_empty(),
            "{strategy}: memhog hit the 64 MiB limit ({failcnt} failures by the kernel's count) \
             but no charge_fail: {events:#?}"
        );
        for e in &failures {
            if strategy == "derived" {
                // Inferred from a limit reclaim episode: what reclaim freed and how long it took.
                assert_eq!(e["derived"], "reclaim", "{e}");
                assert!(e["charge_failures"].as_u64().is_some_and(|n| n > 0), "{e}");
                assert!(e["reclaimed_bytes"].is_u64(), "{e}");
                assert!(e["reclaim_ns"].is_u64(), "{e}");
                assert!(e.get("errno").is_none(), "{e}");
            } else {
                assert!(e.get("derived").is_none(), "{e}");
                assert_eq!(e["probe"], strategy.as_str(), "{e}");
                assert_eq!(e["errno"], 12, "ENOMEM: {e}");
                assert!(e["nr_pages"].as_u64().is_some_and(|n| n > 0), "{e}");
                assert!(e["gfp_flags"].is_u64(), "{e}");
            }
        }
    }
}

/// The kernel's own count of charges the memcg's limits refused (v1: the memory limit's and the
/// memory+swap limit's).
fn cgroup_failures(cgroup: &TestCgroup) -> u64 {
    let read = |file: &str| -> Option<u64> {
        let text = fs::read_to_string(cgroup.dir.join(file)).ok()?;
        Some(text.trim().parse().expect("a count"))
    };
    if let Some(memory) = read("memory.failcnt") {
        return memory + read("memory.memsw.failcnt").unwrap_or(0);
    }
    let events = fs::read_to_string(cgroup.dir.join("memory.events")).expect("memory.events");
    events
        .lines()
        .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
        .expect("max in memory.events")
}
