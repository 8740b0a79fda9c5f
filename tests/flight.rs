//! The flight recorder (`memtrace record --flight DURATION --out DIR`) on the real kernel: a
//! container is busy for a while (page cache written and read), then OOM-killed; exactly one
//! file comes out, named for the container, mode 0600, holding the activity from well before
//! the kill, and `memtrace report` on it tells the kill and its verdict.
//!
//! The scenario is two minutes of activity before a kill, with `--flight 2m`; the test
//! shortens the activity to [`activity`] (20 s by default, `MEMTRACE_FLIGHT_ACTIVITY_SECS` to
//! change it, e.g. 150 for the issue's own) and the window to three quarters of it, so that CI
//! stays fast and the file must both start well before the kill and leave out what came before
//! its window.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use memtrace_tests::{
    Memtrace, OOM_CONTAINER_ID, TestCgroup, assert_oom_killed, json_lines, memtrace_output,
};

const LIMIT: u64 = 64 << 20;
const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");
/// `--flight-after` in the test.
const AFTER_SECS: u64 = 3;

/// How long the container is busy before it is killed.
fn activity() -> Duration {
    let secs = std::env::var("MEMTRACE_FLIGHT_ACTIVITY_SECS")
        .ok()
        .map_or(20, |s| {
            s.parse()
                .unwrap_or_else(|_| panic!("MEMTRACE_FLIGHT_ACTIVITY_SECS={s}: not a number"))
        });
    Duration::from_secs(secs)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("ns in u64")
}

/// The finished flight files in `dir` (not the hidden ones being written).
fn flight_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read --out dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn an_oom_kill_writes_one_file_with_the_minutes_before_it() {
    let activity = activity();
    let window = activity * 3 / 4;
    let out_dir = tempfile::tempdir().expect("tempdir");
    // On disk (the VMs' /tmp is a tmpfs, whose files would stay charged as shmem).
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let base = TestCgroup::new("flight", 1 << 30);
    let docker = base.child("docker", None);
    let container = docker.child(OOM_CONTAINER_ID, Some(LIMIT));
    let after = format!("{AFTER_SECS}s");
    let flight = format!("{}s", window.as_secs());
    // Only the test's cgroups: other tests on this machine OOM-kill their own.
    let recorder = Memtrace::start(&[
        "record",
        "--flight",
        &flight,
        "--flight-after",
        &after,
        "--out",
        out_dir.path().to_str().expect("utf-8 path"),
        "--cgroup",
        &base.path,
        "--interval",
        "500ms",
        "--stats-interval",
        "1s",
    ]);

    // The container works: it writes files (page cache charged to it, reclaimed at its limit
    // once they pass it) and reads them back.
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < activity {
        let file = work.path().join(format!("f{}", round % 24));
        let of = format!("of={}", file.display());
        let (_, status) = container.run_inside(
            "dd",
            &["if=/dev/zero", &of, "bs=1M", "count=4", "status=none"],
        );
        assert!(status.success(), "dd write failed: {status}");
        let input = format!("if={}", file.display());
        let (_, status) =
            container.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
        assert!(status.success(), "dd read failed: {status}");
        round += 1;
        thread::sleep(Duration::from_millis(500));
    }
    let (victim, status) = container.run_memhog(MEMHOG, 1024);
    assert_oom_killed(victim, status);
    assert_eq!(container.kernel_oom_kills(), 1, "the kernel's own count");

    // The file is written once --flight-after has passed (and a moment for late events).
    let deadline = Instant::now() + Duration::from_secs(AFTER_SECS + 20);
    while flight_files(out_dir.path()).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    // Long enough for a second file, if one were (wrongly) coming.
    thread::sleep(Duration::from_secs(AFTER_SECS + 2));
    let out = recorder.stop_ok();
    let files = flight_files(out_dir.path());
    assert_eq!(
        files.len(),
        1,
        "exactly one file for one kill: {files:?}\n{}",
        out.stderr
    );
    let file = &files[0];
    let name = file.file_name().and_then(|n| n.to_str()).expect("name");
    let short_id = &OOM_CONTAINER_ID[..12];
    assert!(
        name.starts_with(&format!("oom-docker_{short_id}-")) && name.ends_with("Z.mtrace"),
        "named for the container and the time: {name}"
    );
    let mode = fs::metadata(file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{name} mode {mode:o}");
    assert!(
        out.stderr.contains("flight recorder: wrote") && out.stderr.contains("0 lost"),
        "stderr says which file and that nothing was lost: {}",
        out.stderr
    );
    assert!(out.stderr.contains("1 file written"), "{}", out.stderr);

    check_window(file, &container.path, victim, window);

    // `report` tells the kill, its verdict, and the window.
    let report = memtrace_output(&["report", file.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "report: {report:?}");
    assert!(
        text.contains("OOM kill at") && text.contains(&format!("(pid {victim})")),
        "{text}"
    );
    assert!(text.contains("verdict: anon growth"), "{text}");
    assert!(
        text.contains(&format!(
            "flight recording: the {}s before the OOM kill at",
            window.as_secs()
        )) && text.contains(&format!("and {AFTER_SECS}s after")),
        "{text}"
    );
    assert!(text.contains(", 0 lost"), "{text}");
    assert!(!text.contains("CUT SHORT"), "{text}");
}

#[test]
fn no_kill_no_file() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let base = TestCgroup::new("flight-quiet", 64 << 20);
    let recorder = Memtrace::start(&[
        "record",
        "--flight",
        "30s",
        "--out",
        out_dir.path().to_str().expect("utf-8 path"),
        "--cgroup",
        &base.path,
        "--duration",
        "3s",
    ]);
    let out = recorder.finish();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("no OOM kill, no file written"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = fs::read_dir(out_dir.path()).expect("dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_flight_options_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8");
    let cases: [(&[&str], &str); 4] = [
        (
            &["record", "--flight", "0", "--out", dir_arg],
            "must be longer than 0",
        ),
        (&["record", "--flight", "2m"], "--out <DIR>"),
        (
            &[
                "record",
                "--flight",
                "2m",
                "--out",
                dir_arg,
                "--flight-bytes",
                "10K",
            ],
            "below the minimum",
        ),
        (
            &[
                "record", "--flight", "2m", "-o", "x.mtrace", "--out", dir_arg,
            ],
            "cannot be used with",
        ),
    ];
    for (args, expect) in cases {
        let out = memtrace_output(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
    }
    // A file where the directory should be: an error before anything is attached.
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, b"x").expect("write");
    let out = memtrace_output(&[
        "record",
        "--flight",
        "2m",
        "--out",
        not_a_dir.join("sub").to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("memtrace: error: --out ") && stderr.contains("give a directory"),
        "{stderr}"
    );
}

/// The file holds the activity from well before the kill, the kill, and nothing outside the
/// window.
fn check_window(file: &Path, container_path: &str, victim: u32, window: Duration) {
    let replay = memtrace_output(&["replay", file.to_str().expect("utf-8"), "--format", "json"]);
    assert!(replay.status.success(), "replay: {replay:?}");
    let events = json_lines(&String::from_utf8_lossy(&replay.stdout));
    let ours = |e: &&serde_json::Value| e["cgroup"] == container_path;
    let kills: Vec<&serde_json::Value> = events
        .iter()
        .filter(ours)
        .filter(|e| e["type"] == "oom_kill")
        .collect();
    assert_eq!(kills.len(), 1, "one kill in the file");
    assert_eq!(kills[0]["pid"], victim);
    let kill_ns = kills[0]["timestamp_ns"].as_u64().expect("timestamp");
    let first_cache_ns = events
        .iter()
        .filter(ours)
        .filter(|e| matches!(e["type"].as_str(), Some("cache" | "charge")))
        .filter_map(|e| e["timestamp_ns"].as_u64())
        .min()
        .expect("page-cache or charge events of the container");
    let before = Duration::from_nanos(kill_ns.saturating_sub(first_cache_ns));
    // The container was busy all along: its page cache is there from the window's start (give
    // or take an --interval and a round of its work).
    assert!(
        before <= window && before + Duration::from_secs(2) >= window,
        "the file's first page-cache event is {before:?} before the kill; --flight {window:?}"
    );
    let first_ns = events
        .iter()
        .filter_map(|e| e["timestamp_ns"].as_u64())
        .min()
        .expect("events");
    assert!(
        kill_ns.saturating_sub(first_ns) <= ns(window),
        "nothing from before the window: first event {:?} before the kill",
        Duration::from_nanos(kill_ns.saturating_sub(first_ns))
    );
    let last_ns = events
        .iter()
        .filter_map(|e| e["timestamp_ns"].as_u64())
        .max()
        .expect("events");
    assert!(
        last_ns <= kill_ns + ns(Duration::from_secs(AFTER_SECS + 1)),
        "nothing after --flight-after: last event {}s after the kill",
        last_ns.saturating_sub(kill_ns) / 1_000_000_000
    );
}
