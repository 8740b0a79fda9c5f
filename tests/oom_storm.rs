//! An OOM storm: 20 memcgs, each OOM-killed 5 times within 20 s. The kernel rate-limits its OOM
//! report (ten a burst), so most kills come without the `oom-kill:` line memtrace waits for:
//! every kill must still be reported, none lost, each within a second of the kill (times the
//! slowdown of an emulated VM guest, `MEMTRACE_TEST_SLOWDOWN`). The storm itself is shared with
//! `cargo xtask bench storms` (`memtrace_tests::storm`), which runs it at 20 × 10.

use std::time::Duration;

use memtrace_tests::storm::{self, Workloads, slowdown};

const MEMCGS: usize = 20;
const KILLS_EACH: usize = 5;

#[test]
fn every_kill_of_an_oom_storm_is_reported_within_a_second() {
    let workloads = Workloads {
        memhog: env!("CARGO_BIN_EXE_memhog").into(),
        readloop: env!("CARGO_BIN_EXE_readloop").into(),
        disk_dir: env!("CARGO_TARGET_TMPDIR").into(),
    };
    let outcome = storm::oom_storm(MEMCGS, KILLS_EACH, &workloads);
    assert!(
        outcome.took < Duration::from_secs(20) * slowdown(),
        "the storm took {:?}, not a storm: the test cannot show what it is for",
        outcome.took
    );
    outcome.assert_clean();
    assert_eq!(outcome.seen, (MEMCGS * KILLS_EACH) as u64);
    let bound = Duration::from_secs(1) * slowdown();
    assert!(
        outcome.lag_max < bound,
        "a kill was reported {:?} after it (bound {bound:?})",
        outcome.lag_max
    );
    eprintln!("{}", outcome.to_json());
}
