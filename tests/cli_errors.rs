//! Errors a user can hit give one line on stderr and a non-zero exit, never a panic.

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::{Command, Output},
};

use memtrace_tests::{Memtrace, memtrace_bin};

fn assert_one_line_error(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.starts_with("memtrace: error: "), "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn replay(path: &std::path::Path) -> Output {
    Command::new(memtrace_bin())
        .arg("replay")
        .arg(path)
        .output()
        .expect("run replay")
}

#[test]
fn replaying_garbage_missing_or_truncated_files_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage");
    fs::write(&garbage, b"this is not a trace file at all").expect("write");
    assert_one_line_error(&replay(&garbage), "is not a memtrace trace file");

    assert_one_line_error(
        &replay(&dir.path().join("missing")),
        "No such file or directory",
    );

    // A real recording, cut short like a recorder killed mid-write.
    let file = dir.path().join("real.mtrace");
    let recorder = Memtrace::start(&["record", "-o", file.to_str().expect("utf-8")]);
    let _ = recorder.stop_ok();
    let full = replay(&file);
    assert!(full.status.success(), "intact file must replay: {full:?}");
    let bytes = fs::read(&file).expect("read");
    let cut = dir.path().join("cut.mtrace");
    // Cut inside the header: nothing to replay.
    fs::write(&cut, &bytes[..20]).expect("write");
    assert_one_line_error(&replay(&cut), "is truncated");
    // Cut after the header (the end marker lost): a warning and exit status 3.
    fs::write(&cut, &bytes[..bytes.len() - 3]).expect("write");
    let out = replay(&cut);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.contains("is cut short at byte"), "{stderr}");
    // A damaged byte inside the header.
    let mut flipped = bytes.clone();
    flipped[30] ^= 0x20;
    fs::write(&cut, &flipped).expect("write");
    assert_one_line_error(
        &replay(&cut),
        "is corrupt at byte 16: header checksum mismatch",
    );

    let mut future = bytes.clone();
    future[8] = 0xff;
    fs::write(&cut, &future).expect("write");
    assert_one_line_error(&replay(&cut), "use a newer memtrace");
}

#[test]
fn not_root_is_one_line_saying_so() {
    // The binary must be reachable by an unprivileged user; copy it somewhere world-readable.
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin = dir.path().join("memtrace");
    fs::copy(memtrace_bin(), &bin).expect("copy memtrace");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod bin");
    for args in [
        &["run"][..],
        &["record", "-o", "/tmp/never-written.mtrace"],
        &["probes"],
    ] {
        let out = Command::new(&bin)
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run as nobody");
        assert_one_line_error(&out, "must run as root");
    }
}

#[test]
fn probes_reports_what_this_kernel_allows() {
    let out = Command::new(memtrace_bin())
        .arg("probes")
        .output()
        .expect("run probes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Shown with --nocapture: what each kernel chose (`cargo xtask vm-test -- probes_reports
    // --nocapture`).
    println!("{stdout}");
    assert!(out.status.success(), "probes failed: {out:?}");
    assert!(stdout.contains("BTF:             present"), "{stdout}");
    for program_type in ["tracepoint", "raw_tracepoint", "kprobe", "fentry"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(program_type)
                    && (l.contains(" yes ") || l.contains(" no "))),
            "{program_type} verdict missing:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("oom_kill")),
        "probe points must list oom_kill:\n{stdout}"
    );
}

#[test]
fn probes_mounts_tracefs_when_it_is_missing() {
    // In a private mount namespace, so the host's tracefs is untouched.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
         test ! -d /sys/kernel/tracing/events || exit 99; exec {} probes",
        memtrace_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not unmount tracefs for the test"
    );
    assert!(out.status.success(), "probes failed: {out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("tracepoint ") && l.contains(" yes ")),
        "tracepoints must work after memtrace mounted tracefs:\n{stdout}"
    );
}
