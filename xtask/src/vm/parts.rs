//! How a kernel's boots share its test binaries (`--parts`): /init keeps every nth binary of
//! its list from the ith ([`super::initramfs`]), so the list is ordered here for the parts to
//! take about as long each. In the order cargo lists them, part 2 of 2 took 1.5 times as long
//! as part 1 (6.1/v2: 496 s against 328 s), and every kernel waited for its longer half.

/// Seconds each test binary took in an emulated guest (6.1, cgroup v2, `cargo xtask vm-test
/// --kernel 6.1 --cgroup v2`, 2026-11-30, the mean of two runs), to balance the parts by. A binary not listed counts
/// as [`UNKNOWN_SECONDS`]; the table needs to be only roughly right.
const GUEST_SECONDS: &[(&str, u32)] = &[
    ("kernel_memory", 96),
    ("probe_points", 88),
    ("verdicts", 73),
    ("trace_files", 70),
    ("storms", 51),
    ("node", 48),
    ("flight", 48),
    ("report", 47),
    ("refaults", 43),
    ("oom_storm", 37),
    ("counters", 34),
    ("oom_kill", 32),
    ("containers", 32),
    ("file_names", 21),
    ("cli_errors", 20),
    ("throttling", 18),
    ("session", 10),
    ("trace_v2_fixture", 5),
    ("trace_v3_fixture", 1),
];

/// What a test binary missing from [`GUEST_SECONDS`] is taken to cost.
const UNKNOWN_SECONDS: u32 = 40;

fn seconds(test: &str) -> u32 {
    GUEST_SECONDS
        .iter()
        .find_map(|&(name, s)| (name == test).then_some(s))
        .unwrap_or(UNKNOWN_SECONDS)
}

/// `tests` ordered so that taking every `parts`th from the ith gives parts of about equal
/// time: the longest first, `parts` at a time, each round's longest to the part with the least
/// so far (every part gets one binary a round, so their counts differ by one at most).
pub fn balanced(tests: &[&str], parts: u8) -> Vec<String> {
    let parts = usize::from(parts.max(1));
    let mut by_cost: Vec<&str> = tests.to_vec();
    by_cost.sort_by_key(|test| (std::cmp::Reverse(seconds(test)), *test));
    let mut totals = vec![0u32; parts];
    let mut ordered = Vec::with_capacity(tests.len());
    for round in by_cost.chunks(parts) {
        // The parts, least loaded first: the round's binaries (longest first) go to them in
        // that order. A short last round can only fill the first parts (/init counts
        // positions), least loaded of those first.
        let mut lightest: Vec<usize> = (0..round.len()).collect();
        lightest.sort_by_key(|&part| (totals[part], part));
        let mut slots: Vec<Option<&str>> = vec![None; parts];
        for (&test, &part) in round.iter().zip(&lightest) {
            totals[part] += seconds(test);
            slots[part] = Some(test);
        }
        // Position k·parts + i is part i's.
        ordered.extend(slots.into_iter().flatten().map(str::to_owned));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part's names as /init's filter picks them: every `parts`th from the ith.
    fn part(ordered: &[String], index: usize, parts: usize) -> Vec<&str> {
        ordered
            .iter()
            .skip(index)
            .step_by(parts)
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn two_parts_of_the_suite_take_about_as_long() {
        let all: Vec<&str> = GUEST_SECONDS.iter().map(|&(name, _)| name).collect();
        let ordered = balanced(&all, 2);
        assert_eq!(ordered.len(), all.len(), "each once: {ordered:?}");
        let time = |names: &[&str]| names.iter().map(|t| seconds(t)).sum::<u32>();
        let (a, b) = (part(&ordered, 0, 2), part(&ordered, 1, 2));
        let (ta, tb) = (time(&a), time(&b));
        assert!(ta.abs_diff(tb) <= 20, "{ta} s {a:?} against {tb} s {b:?}");
        let mut both: Vec<&str> = a.iter().chain(&b).copied().collect();
        both.sort_unstable();
        let mut expected = all.clone();
        expected.sort_unstable();
        assert_eq!(both, expected, "disjoint, and they cover the list");
    }

    #[test]
    fn one_part_keeps_everything_and_unknown_binaries_are_placed_too() {
        let ordered = balanced(&["new_test", "storms", "session"], 1);
        assert_eq!(ordered, ["storms", "new_test", "session"]);
        let ordered = balanced(&["a", "b", "c"], 3);
        assert_eq!(ordered.len(), 3);
    }
}
