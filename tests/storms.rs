//! Storms of cgroup churn and of limit reclaim, at a smaller size than `cargo xtask bench
//! storms` runs them (`memtrace_tests::storm`): every event the kernel says happened is
//! reported, and memtrace's lost counters stay at zero, also while its stdout is not read. When
//! a storm does overflow (a ring buffer made too small on purpose, or a stdout not read while
//! memtrace may hold only a few events), the user is told at once, in the stream itself (`lost`
//! events) as well as on stderr, and the counts add up: what was delivered plus what was counted
//! lost is what the kernel saw. (The OOM storm is `oom_storm.rs`.)

use std::time::Duration;

use memtrace_tests::storm::{self, Reader, Workloads};

/// Cgroups created and removed in a storm: a thousand on a real machine; a quarter of that in
/// an emulated guest (`MEMTRACE_TEST_SLOWDOWN` > 1), where each takes ~20 times as long and the
/// test is there for the kernel's paths, not the rate (still ~20 times what a 4 KiB ring holds).
fn cgroups() -> usize {
    if storm::slowdown() > 1 { 250 } else { 1000 }
}

fn workloads() -> Workloads {
    Workloads {
        memhog: env!("CARGO_BIN_EXE_memhog").into(),
        readloop: env!("CARGO_BIN_EXE_readloop").into(),
        disk_dir: env!("CARGO_TARGET_TMPDIR").into(),
    }
}

#[test]
fn a_storm_of_cgroup_churn_under_a_filter_loses_nothing() {
    let outcome = storm::cgroup_storm(cgroups(), Reader::Reading, &[]);
    eprintln!("{}", outcome.to_json());
    outcome.assert_clean();
}

/// A log shipper that stops reading memtrace's stdout for 3 s: memtrace's writes block, and
/// the ring buffer (a thousand cgroup events) must still be drained.
#[test]
fn a_cgroup_storm_while_stdout_is_not_read_loses_nothing() {
    let outcome = storm::cgroup_storm(
        cgroups(),
        Reader::StdoutStalled(Duration::from_secs(3)),
        &[],
    );
    eprintln!("{}", outcome.to_json());
    outcome.assert_clean();
}

#[test]
fn a_storm_that_overflows_the_ring_buffer_is_not_silent() {
    // 4 KiB holds a dozen cgroup records, and memtrace is stopped (SIGSTOP) while the storm
    // runs: nothing drains the ring buffer, so it overflows however fast memtrace's reader is
    // (at nice -5 in an emulated guest it could keep up with the storm, and nothing was lost).
    let outcome = storm::cgroup_storm(cgroups(), Reader::Stopped, &["--ring-buffer-size", "4096"]);
    eprintln!("{}", outcome.to_json());
    let lost = outcome
        .lost
        .unwrap_or_else(|| panic!("no summary line:\n{}", outcome.stderr));
    // The stream itself says it, with the kernel's own count: the `lost` events add up to the
    // kernel's counter of cgroup events that found the ring buffer full (all of the node's
    // cgroups share it, so that counter may hold other cgroups' events too).
    let kernel = outcome.lost_by_kind.get("cgroup").copied();
    let in_stream = outcome
        .lost_in_stream
        .get("cgroup/ring_buffer_full")
        .copied();
    assert!(
        kernel > Some(0) && in_stream == kernel,
        "the kernel lost {kernel:?} cgroup events, the stream's `lost` events say {in_stream:?} \
         ({:?}):\n{}",
        outcome.lost_in_stream,
        outcome.stderr
    );
    assert!(
        lost > 0 && outcome.seen < outcome.expected,
        "a 4 KiB ring buffer cannot hold a storm of {} cgroups: {} of {} seen, {lost} \
         lost",
        cgroups(),
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

/// A reclaim storm while stdout is not read and memtrace may hold only 20 events: past the
/// bound it drops what the ring buffer brings (its memory stays bounded), counts it, and says
/// so in the stream; the kernel's own count of the episodes is what memtrace delivered plus
/// what it counted lost, exactly.
#[test]
fn a_reclaim_storm_while_stdout_is_blocked_drops_past_the_bound_and_counts_it() {
    // The stall outlasts the storm; the pipe and memtrace's buffer take a few hundred lines.
    let outcome = storm::reclaim_storm_stalled(
        4,
        &workloads(),
        Duration::from_secs(6),
        &["--max-held-events", "20"],
    );
    eprintln!("{}", outcome.to_json());
    let in_stream = |key: &str| outcome.lost_in_stream.get(key).copied().unwrap_or(0);
    let dropped = in_stream("reclaim/output_blocked");
    let lost_in_kernel = in_stream("reclaim/ring_buffer_full");
    assert!(
        outcome.expected >= 100 && dropped > 0,
        "{} reclaim episodes, {dropped} dropped: the stall did not overflow 20 held events",
        outcome.expected
    );
    assert_eq!(
        outcome.seen + dropped + lost_in_kernel,
        outcome.expected,
        "delivered {} + dropped {dropped} + lost in the kernel {lost_in_kernel} must be the \
         kernel's count of episodes:\n{}",
        outcome.seen,
        outcome.stderr
    );
    assert_eq!(
        outcome.lost_by_kind.get("reclaim").copied(),
        Some(dropped + lost_in_kernel),
        "the summary must count what the stream said was lost:\n{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("dropped while the output was blocked (--max-held-events)"),
        "the summary must say what memtrace dropped itself:\n{}",
        outcome.stderr
    );
    assert!(
        outcome.problems.is_empty(),
        "{:#?}\n{}",
        outcome.problems,
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
