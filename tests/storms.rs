//! Storms of cgroup churn and of limit reclaim, at a smaller size than `cargo xtask bench
//! storms` runs them (`memtrace_tests::storm`): every event the kernel says happened is
//! reported, and memtrace's lost counters stay at zero. (The OOM storm is `oom_storm.rs`.)

use memtrace_tests::storm::{self, Workloads};

fn workloads() -> Workloads {
    Workloads {
        memhog: env!("CARGO_BIN_EXE_memhog").into(),
        readloop: env!("CARGO_BIN_EXE_readloop").into(),
        disk_dir: env!("CARGO_TARGET_TMPDIR").into(),
    }
}

#[test]
fn a_storm_of_cgroup_churn_under_a_filter_loses_nothing() {
    let outcome = storm::cgroup_storm(1000);
    eprintln!("{}", outcome.to_json());
    outcome.assert_clean();
}

#[test]
fn a_reclaim_storm_at_the_limit_loses_nothing() {
    let outcome = storm::reclaim_storm(3, &workloads());
    eprintln!("{}", outcome.to_json());
    assert!(
        outcome.expected >= 100,
        "only {} reclaim episodes in 3 s: not a storm",
        outcome.expected
    );
    outcome.assert_clean();
}
