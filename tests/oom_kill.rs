//! A real memory-cgroup OOM kill, seen by memtrace live and through record + replay, checked
//! against the kernel's own counters and log.

use memtrace_tests::{
    Memtrace, TestCgroup, assert_attached, json_lines, kernel_oom_line, memtrace_output,
    oom_kills_in, oom_line_field, required_strategies,
};

const LIMIT: u64 = 64 << 20;
/// memhog stops here if the limit does not hold, long before the machine is in danger.
const CAP_MIB: u64 = 1024;
const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");

/// Checks one reported OOM kill against what the kernel says happened.
fn assert_matches_kernel(event: &serde_json::Value, cgroup: &TestCgroup, pid: u32) {
    assert_eq!(event["pid"], pid, "{event}");
    assert_eq!(event["tgid"], pid, "{event}");
    assert_eq!(event["comm"], "memhog", "{event}");
    assert_eq!(event["cgroup"], cgroup.path.as_str(), "{event}");
    assert_eq!(event["memcg_limit_bytes"], LIMIT, "{event}");
    let anon = event["anon_rss_bytes"].as_u64().expect("anon rss");
    assert!(
        anon > LIMIT / 2 && anon <= LIMIT,
        "victim's anon rss {anon} should be most of the {LIMIT}-byte limit: {event}"
    );

    assert_eq!(cgroup.kernel_oom_kills(), 1, "kernel's own oom_kill count");
    let line = kernel_oom_line(pid).unwrap_or_else(|| panic!("no oom-kill line for pid {pid}"));
    assert_eq!(
        oom_line_field(&line, "task_memcg"),
        Some(cgroup.path.as_str()),
        "{line}"
    );
    assert_eq!(oom_line_field(&line, "task"), Some("memhog"), "{line}");
    assert_eq!(
        oom_line_field(&line, "constraint"),
        Some("CONSTRAINT_MEMCG"),
        "{line}"
    );
}

/// The one OOM kill memtrace reported for `cgroup`, checked against what the kernel says.
fn the_kill_in<'a>(
    events: &'a [serde_json::Value],
    cgroup: &TestCgroup,
    pid: u32,
) -> &'a serde_json::Value {
    let ours = oom_kills_in(events, &cgroup.path);
    assert_eq!(
        ours.len(),
        1,
        "exactly one oom_kill in {}: {events:#?}",
        cgroup.path
    );
    assert_matches_kernel(ours[0], cgroup, pid);
    ours[0]
}

#[test]
fn oom_kill_is_streamed_live_with_pid_and_cgroup() {
    let cgroup = TestCgroup::new("live", LIMIT);
    let memtrace = Memtrace::start(&["run", "--format", "json"]);
    let pid = cgroup.oom_kill_memhog(MEMHOG, CAP_MIB);
    let out = memtrace.stop_ok();

    let _ = the_kill_in(&json_lines(&out.stdout), &cgroup, pid);
    assert!(
        out.stderr.contains(" 0 lost"),
        "the summary must say nothing was lost: {}",
        out.stderr
    );
}

#[test]
fn oom_kill_is_recorded_and_replayed_as_run_printed_it() {
    let cgroup = TestCgroup::new("record", LIMIT);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("oom.mtrace");
    let file_arg = file.to_str().expect("utf-8 path");
    let live = Memtrace::start(&["run", "--format", "json"]);
    let recorder = Memtrace::start(&["record", "-o", file_arg]);
    let pid = cgroup.oom_kill_memhog(MEMHOG, CAP_MIB);
    let _ = recorder.stop_ok();
    let live = live.stop_ok();

    let replay = memtrace_output(&["replay", file_arg, "--format", "json"]);
    assert!(replay.status.success(), "replay failed: {replay:?}");
    let replayed = json_lines(&String::from_utf8_lossy(&replay.stdout));
    let replayed_kill = the_kill_in(&replayed, &cgroup, pid);

    // The same event as `run` printed it. Each memtrace has its own program instance on the
    // tracepoint, so each stamps its own time (microseconds apart), and each reads the usage on
    // its own while the victim exits; everything else is identical.
    let live_events = json_lines(&live.stdout);
    let mut live_event = oom_kills_in(&live_events, &cgroup.path)[0].clone();
    let mut replayed_event = replayed_kill.clone();
    let stamp = |e: &serde_json::Value| e["timestamp_ns"].as_u64().expect("timestamp");
    assert!(
        stamp(&live_event).abs_diff(stamp(&replayed_event)) < 1_000_000_000,
        "{live_event} vs {replayed_event}"
    );
    for e in [&mut live_event, &mut replayed_event] {
        let e = e.as_object_mut().expect("object");
        for field in ["memcg_usage_bytes", "timestamp_ns", "time"] {
            e.remove(field);
        }
    }
    assert_eq!(replayed_event, live_event);

    // Text replay prints the human line.
    let text = memtrace_output(&["replay", file_arg]);
    assert!(text.status.success(), "text replay failed: {text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    let victim_line = text
        .lines()
        .find(|l| l.contains(" oom_kill ") && l.contains(&format!(" {} pid={pid} ", cgroup.path)))
        .unwrap_or_else(|| panic!("no text line for pid {pid}:\n{text}"));
    assert!(
        victim_line.contains(" oom_kill ") && victim_line.contains("comm=memhog"),
        "{victim_line}"
    );
    assert!(victim_line.contains("memcg_limit=64.0MiB"), "{victim_line}");
}

#[test]
fn every_oom_strategy_reports_the_kill_and_the_limit_that_fired() {
    // The VM tests set all three (Debian's kernels allow them).
    for strategy in required_strategies("MEMTRACE_TEST_OOM_STRATEGIES", "raw_tp") {
        let cgroup = TestCgroup::new(&format!("strategy-{strategy}"), LIMIT);
        let forced = format!("oom_kill={strategy}");
        let memtrace = Memtrace::json(&["--probe-strategy", &forced]);
        let pid = cgroup.oom_kill_memhog(MEMHOG, CAP_MIB);
        let out = memtrace.stop_ok();
        assert_attached(&out.stderr, "oom_kill", &strategy);
        let events = json_lines(&out.stdout);
        let kill = the_kill_in(&events, &cgroup, pid);
        assert_eq!(kill["probe"], strategy.as_str(), "{kill}");
        assert_eq!(kill["constraint"], "CONSTRAINT_MEMCG", "{strategy}: {kill}");
        assert_eq!(
            kill["limit_cgroup"],
            cgroup.path.as_str(),
            "{strategy}: {kill}"
        );
        assert_eq!(kill["memory"]["limit_bytes"], LIMIT, "{strategy}: {kill}");
    }
}
