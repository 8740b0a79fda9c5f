//! How a live session ends: by itself after `--duration`, or on SIGTERM, always detaching
//! cleanly and reporting what it saw and lost.

use std::time::{Duration, Instant};

use memtrace_tests::{Memtrace, memtrace_bin};

#[test]
fn run_stops_by_itself_after_duration() {
    let begun = Instant::now();
    let memtrace = Memtrace::start(&["run", "--duration", "1s"]);
    let out = memtrace.finish();
    let elapsed = begun.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(20),
        "stopped after {elapsed:?}"
    );
    let summary = out
        .stderr
        .lines()
        .find(|l| l.starts_with("memtrace: detached after "))
        .unwrap_or_else(|| panic!("no summary: {}", out.stderr));
    let seconds: f64 = summary
        .trim_start_matches("memtrace: detached after ")
        .split('s')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {summary}"));
    // Streaming starts after attaching; slow machines (emulated VMs) stop a little late.
    assert!((1.0..5.0).contains(&seconds), "{summary}");
    assert!(
        summary.contains(" seen, ") && summary.contains(" lost ("),
        "the summary must say what was seen and lost: {summary}"
    );
}

#[test]
fn sigterm_detaches_cleanly_and_finishes_the_trace_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("term.mtrace");
    let file_arg = file.to_str().expect("utf-8 path");
    let recorder = Memtrace::start(&["record", "-o", file_arg]);
    let out = recorder.stop_with(libc::SIGTERM);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("memtrace: detached after"),
        "{}",
        out.stderr
    );

    // A finished file has its end marker: replay succeeds and reports the recorder's totals.
    let replay = std::process::Command::new(memtrace_bin())
        .args(["replay", file_arg])
        .output()
        .expect("run replay");
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        stderr.contains(" lost"),
        "replay must report the recorder's totals: {stderr}"
    );
}
