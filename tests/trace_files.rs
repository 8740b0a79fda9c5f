//! Trace files from real recordings: a real OOM kill replays exactly as it was streamed, a
//! recorder killed with SIGKILL leaves a file that replays up to its last second, files are
//! private, and rotation keeps at most N files.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use memtrace_tests::{Memtrace, TestCgroup, boot_ns, json_lines, memtrace_bin, oom_kills_in};

const LIMIT: u64 = 64 << 20;
const CAP_MIB: u64 = 1024;
const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");

fn replay(file: &Path, extra: &[&str]) -> Output {
    Command::new(memtrace_bin())
        .arg("replay")
        .arg(file)
        .args(["--format", "json"])
        .args(extra)
        .output()
        .expect("run replay")
}

/// `memtrace record -o FILE EXTRA…`, once attached.
fn record(file: &Path, extra: &[&str]) -> Memtrace {
    let mut args = vec!["record", "-o", file.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    Memtrace::start(&args)
}

/// [`record`] of `cgroup`'s events only, with no periodic samples.
fn record_cgroup(file: &Path, cgroup: &TestCgroup, extra: &[&str]) -> Memtrace {
    let only = ["--stats-interval", "0", "--cgroup", cgroup.path.as_str()];
    record(file, &[extra, &only].concat())
}

/// Creates and removes `n` child cgroups: real kernel events (cgroup created/removed/freed).
fn churn_cgroups(parent: &TestCgroup, n: usize) {
    for i in 0..n {
        let child = parent.child(&format!("churn{i}"), None);
        drop(child);
    }
}

#[test]
fn a_recorded_oom_kill_replays_exactly_as_record_streamed_it() {
    let cgroup = TestCgroup::new("trace-oom", LIMIT);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("oom.mtrace");
    // A file left readable by someone else is replaced by a private one.
    fs::write(&file, b"old").expect("write");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let recorder = record(&file, &["--print", "json", "--stats-interval", "1s"]);
    let pid = cgroup.oom_kill_memhog(MEMHOG, CAP_MIB);
    churn_cgroups(&cgroup, 3);
    // Let a stats interval pass with the cgroup's memory in it.
    thread::sleep(Duration::from_millis(1500));
    let out = recorder.stop_ok();
    assert_eq!(
        fs::metadata(&file).expect("stat").permissions().mode() & 0o777,
        0o600,
        "trace files are private"
    );

    let live = json_lines(&out.stdout);
    assert_eq!(
        oom_kills_in(&live, &cgroup.path).len(),
        1,
        "the kill was streamed: {live:#?}"
    );
    for kind in ["oom_kill", "cgroup", "cache"] {
        assert!(
            live.iter().any(|e| e["type"] == kind),
            "a real run streams {kind} events: {live:#?}"
        );
    }
    let replayed = replay(&file, &[]);
    assert!(replayed.status.success(), "replay failed: {replayed:?}");
    let replayed_stdout = String::from_utf8_lossy(&replayed.stdout);
    // Byte for byte: every event, every field, in the same order.
    assert_eq!(replayed_stdout, out.stdout);

    // The same filters as live: only this cgroup's OOM kill.
    let filtered = replay(
        &file,
        &["--type", "oom_kill", "--cgroup", cgroup.path.as_str()],
    );
    assert!(filtered.status.success(), "{filtered:?}");
    let filtered = json_lines(&String::from_utf8_lossy(&filtered.stdout));
    assert_eq!(filtered.len(), 1, "{filtered:#?}");
    assert_eq!(filtered[0]["pid"], pid);
    // A window after the recording holds nothing; one from its start holds everything.
    let late = replay(&file, &["--since", "1h"]);
    assert!(late.status.success(), "{late:?}");
    assert!(late.stdout.is_empty(), "{late:?}");
    let all = replay(&file, &["--since", "0s", "--until", "1h"]);
    assert_eq!(String::from_utf8_lossy(&all.stdout), out.stdout);
}

#[test]
fn a_recorder_killed_with_sigkill_loses_at_most_its_last_second() {
    let cgroup = TestCgroup::new("trace-kill9", LIMIT);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("killed.mtrace");
    let recorder = record_cgroup(&file, &cgroup, &["--print", "json"]);
    churn_cgroups(&cgroup, 20);
    // Past the one second the format may lose, with nothing new happening in our cgroup.
    thread::sleep(Duration::from_millis(1200));
    let killed_at = boot_ns();
    let out = recorder.stop_with(libc::SIGKILL);
    assert_eq!(out.status.code(), None, "killed by a signal: {out:?}");

    let live = json_lines(&out.stdout);
    let ours = |events: &[serde_json::Value]| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|e| {
                e["type"] == "cgroup"
                    && e["timestamp_ns"].as_u64().expect("timestamp") + 1_000_000_000 <= killed_at
            })
            .cloned()
            .collect()
    };
    let streamed = ours(&live);
    assert!(
        streamed.len() >= 40,
        "20 cgroups created and removed must give at least 40 events: {live:#?}"
    );

    let replayed = replay(&file, &[]);
    let stderr = String::from_utf8_lossy(&replayed.stderr);
    assert_eq!(
        replayed.status.code(),
        Some(3),
        "tail cut: exit 3; {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one warning line: {stderr}");
    assert!(
        stderr.starts_with("memtrace: warning: ") && stderr.contains("is cut short at byte"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let replayed = json_lines(&String::from_utf8_lossy(&replayed.stdout));
    assert_eq!(
        ours(&replayed),
        streamed,
        "every event older than a second was on disk"
    );
}

#[test]
fn rotation_keeps_at_most_n_files_each_readable_alone() {
    let cgroup = TestCgroup::new("trace-rotate", LIMIT);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("rot.mtrace");
    let recorder = record_cgroup(&base, &cgroup, &["--max-size", "64K", "--rotate", "2"]);
    // Real cgroup events until the recording is in its fourth file (how many that takes
    // depends on how well they compress, and how fast this machine makes them).
    let sequence_in_dir = || {
        fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| {
                let name = e.expect("entry").file_name();
                name.to_str()?
                    .strip_prefix("rot.mtrace.")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sequence_in_dir() < 4 {
        assert!(
            Instant::now() < deadline,
            "no rotation to a fourth file within 2 minutes of cgroup churn"
        );
        churn_cgroups(&cgroup, 50);
    }
    thread::sleep(Duration::from_millis(1000));
    let _ = recorder.stop_ok();

    let mut files: Vec<String> = fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "at most 2 files kept: {files:?}");
    let sequence = |name: &str| -> u32 {
        name.strip_prefix("rot.mtrace.")
            .and_then(|n| (n.len() == 6).then(|| n.parse().ok()).flatten())
            .unwrap_or_else(|| panic!("{name} is not rot.mtrace.NNNNNN"))
    };
    let (older, newer) = (sequence(&files[0]), sequence(&files[1]));
    assert!(
        older >= 2,
        "the recording rotated past its first file: {files:?}"
    );
    assert_eq!(newer, older + 1, "{files:?}");
    for name in &files {
        let path = dir.path().join(name);
        assert!(
            fs::metadata(&path).expect("stat").len() <= 64 << 10,
            "{name}"
        );
        let out = replay(&path, &[]);
        assert!(out.status.success(), "{name} replays on its own: {out:?}");
        let events = json_lines(&String::from_utf8_lossy(&out.stdout));
        assert!(
            events.iter().any(|e| e["type"] == "cgroup"),
            "{name} holds cgroup events"
        );
    }
}

/// Version 2 files, recorded before the one event model, still replay with the same events:
/// the fixture's replay by the memtrace that recorded it, with the fields that changed on
/// purpose (base units, numeric gfp flags, derived events named by their source) mapped.
/// The fixture is built into the test, which also runs in VMs without the source tree.
#[test]
fn a_version_2_recording_replays_with_the_same_events() {
    const TRACE: &[u8] = include_bytes!("fixtures/v2-main-b63de0b.mtrace");
    const REPLAYED_THEN: &str = include_str!("fixtures/v2-main-b63de0b.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("v2.mtrace");
    fs::write(&file, TRACE).expect("write fixture");
    let out = replay(&file, &[]);
    assert!(out.status.success(), "{out:?}");
    let replayed = json_lines(&String::from_utf8_lossy(&out.stdout));
    let then = json_lines(REPLAYED_THEN);
    assert_eq!(replayed.len(), then.len(), "as many events");
    for (now, old) in replayed.iter().zip(&then) {
        assert_eq!(version_2_json(now), *old, "{now}");
    }
}

/// An event as version 2's `replay --format json` printed it.
fn version_2_json(event: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut e = event.as_object().expect("object").clone();
    let ns = |e: &serde_json::Map<String, Value>, k: &str| e.get(k).and_then(Value::as_u64);
    #[expect(clippy::cast_precision_loss, reason = "as version 2 printed them")]
    let scaled = |ns: Option<u64>, per: f64| ns.map(|n| n as f64 / per);
    let kind = e["type"].as_str().expect("type").to_owned();
    if let Some(gfp) = e.get("gfp_flags").and_then(Value::as_u64) {
        e.insert("gfp_flags".into(), json!(format!("{gfp:#x}")));
    }
    if let Some(interval) = e.remove("interval_ns") {
        e.insert(
            "interval_seconds".into(),
            json!(scaled(interval.as_u64(), 1e9)),
        );
    }
    if kind == "stats" {
        assert_eq!(e.remove("memcg_id"), Some(Value::Null), "{event}");
    }
    if kind == "oom_kill" {
        // New in the model: what the OOM killer weighed against, known with `oom_control`
        // only (not on this raw-tracepoint recording).
        assert_eq!(e.remove("oom_total_bytes"), Some(Value::Null), "{event}");
    }
    // New in version 5: refaults, unknown for older files.
    memtrace_tests::without_refaults(&mut e);
    match (kind.as_str(), e.get("derived").and_then(Value::as_str)) {
        ("reclaim", _) => {
            let duration = ns(&e, "duration_ns");
            e.remove("duration_ns");
            e.insert("duration_us".into(), json!(scaled(duration, 1e3)));
            let bytes = e["reclaimed_bytes"].as_u64().expect("reclaimed_bytes");
            e.insert("nr_reclaimed".into(), json!(bytes / 4096));
        }
        ("cgroup", _) => {
            let dying = ns(&e, "dying_ns");
            e.remove("dying_ns");
            e.insert("dying_seconds".into(), json!(scaled(dying, 1e9)));
        }
        ("charge", None) => {
            let bytes = e["charged_bytes"].as_u64().expect("charged_bytes");
            e.insert("charged_pages".into(), json!(bytes / 4096));
        }
        ("charge_fail", Some("reclaim")) => {
            let reclaim = ns(&e, "reclaim_ns");
            e.remove("reclaim_ns");
            e.insert("reclaim_us".into(), json!(scaled(reclaim, 1e3)));
            let freed = e["reclaimed_bytes"].as_u64().expect("reclaimed_bytes");
            let outcome = if freed == 0 {
                "limit_reclaim_freed_nothing"
            } else {
                "limit_reclaim"
            };
            for (k, v) in [
                ("derived", json!(true)),
                ("source", json!("reclaim")),
                ("outcome", json!(outcome)),
                ("comm", Value::Null),
                ("tgid", Value::Null),
                ("nr_pages", Value::Null),
            ] {
                e.insert(k.into(), v);
            }
        }
        _ => {}
    }
    Value::Object(e)
}
