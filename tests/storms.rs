//! Storms of cgroup churn and of limit reclaim, at a smaller size than `cargo xtask bench
//! storms` runs them (`memtrace_tests::storm`): every event the kernel says happened is
//! reported, and memtrace's lost counters stay at zero, also while its stdout is not read. When
//! a storm does overflow (a ring buffer made too small on purpose), the user is told at once,
//! and every event missing is one counted as lost. (The OOM storm is `oom_storm.rs`.)

use std::time::Duration;

use memtrace_tests::storm::{self, Workloads};

const CGROUPS: usize = 1000;

fn workloads() -> Workloads {
    Workloads {
        memhog: env!("CARGO_BIN_EXE_memhog").into(),
        readloop: env!("CARGO_BIN_EXE_readloop").into(),
        disk_dir: env!("CARGO_TARGET_TMPDIR").into(),
    }
}

#[test]
fn a_storm_of_cgroup_churn_under_a_filter_loses_nothing() {
    let outcome = storm::cgroup_storm(CGROUPS, Duration::ZERO, &[]);
    eprintln!("{}", outcome.to_json());
    outcome.assert_clean();
}

/// A log shipper that stops reading memtrace's stdout for 3 s: memtrace's writes block, and
/// the ring buffer (a thousand cgroup events) must still be drained.
#[test]
fn a_cgroup_storm_while_stdout_is_not_read_loses_nothing() {
    let outcome = storm::cgroup_storm(CGROUPS, Duration::from_secs(3), &[]);
    eprintln!("{}", outcome.to_json());
    outcome.assert_clean();
}

#[test]
fn a_storm_that_overflows_the_ring_buffer_is_not_silent() {
    // 4 KiB holds a dozen cgroup records: a storm of a thousand cgroups must overflow it.
    let outcome = storm::cgroup_storm(CGROUPS, Duration::ZERO, &["--ring-buffer-size", "4096"]);
    eprintln!("{}", outcome.to_json());
    let lost = outcome
        .lost
        .unwrap_or_else(|| panic!("no summary line:\n{}", outcome.stderr));
    assert!(
        lost > 0 && outcome.seen < outcome.expected,
        "a 4 KiB ring buffer cannot hold a storm of {CGROUPS} cgroups: {} of {} seen, {lost} \
         lost",
        outcome.seen,
        outcome.expected
    );
    // Lost counts creations, removals and frees alike: it covers every one missing.
    assert!(
        outcome.expected - outcome.seen <= lost,
        "{} events missing, only {lost} counted as lost:\n{}",
        outcome.expected - outcome.seen,
        outcome.stderr
    );
    let said = outcome
        .stderr
        .lines()
        .position(|l| l.starts_with("memtrace: lost ") && l.contains(" cgroup event"));
    let summary = outcome.stderr.lines().position(|l| l.contains(" lost ("));
    assert!(
        said.is_some() && said < summary,
        "the loss must be said while it happens, before the summary:\n{}",
        outcome.stderr
    );
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
