//! Page-cache files by name, and complete per-file accounting, in every output: a file read
//! from disk is its full path, a tmpfs file is marked shmem and its adds are counted (against
//! `memory.stat`'s `shmem`), a deleted file says so, a file read and then dropped
//! (`posix_fadvise(DONTNEED)`) ends at about zero, and each `cache` event's rows (with "other
//! files") add up to its memcg's totals: live JSON and text, a trace file's replay, `report`
//! (text, JSON, HTML) and the Perfetto export.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use memtrace_tests::{
    Finished, Memtrace, TestCgroup, events_in,
    files::{cold_file, drop_file_cache},
    json_lines, memtrace_output,
};
use serde_json::Value;

const MIB: i64 = 1 << 20;
const READ_MIB: usize = 64;
const SHM_MIB: usize = 16;

/// `memory.stat`'s own (not hierarchical) shmem bytes.
fn stat_shmem(cgroup: &TestCgroup) -> i64 {
    let stat = fs::read_to_string(cgroup.dir.join("memory.stat")).expect("memory.stat");
    stat.lines()
        .find_map(|l| l.strip_prefix("shmem "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shmem line in memory.stat:\n{stat}"))
}

fn run_in(cgroup: &TestCgroup, program: &str, args: &[&str]) {
    let (_, status) = cgroup.run_inside(program, args);
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Every file row of the cgroup's `cache` events: (event, row).
fn rows<'a>(cache: &[&'a Value]) -> Vec<(&'a Value, &'a Value)> {
    cache
        .iter()
        .flat_map(|e| {
            e["top_files"]
                .as_array()
                .expect("top_files")
                .iter()
                .map(move |f| (*e, f))
        })
        .collect()
}

fn sum(rows: &[&Value], field: &str) -> i64 {
    rows.iter()
        .map(|f| {
            f[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{field} in {f}"))
        })
        .sum()
}

fn named<'a>(rows: &[(&'a Value, &'a Value)], path: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|(_, f)| f["name"]["path"] == path)
        .map(|(_, f)| *f)
        .collect()
}

fn output_ok(args: &[&str]) -> String {
    let out = memtrace_output(args);
    assert!(
        out.status.success(),
        "memtrace {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A filesystem mounted for a test, unmounted when dropped (also when the test fails).
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    fn new(args: &[&str], point: &Path) -> Self {
        fs::create_dir_all(point).expect("mkdir");
        let status = std::process::Command::new("mount")
            .args(args)
            .arg(point)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount {args:?} {}: {status}",
            point.display()
        );
        Self {
            point: point.to_owned(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.point)
            .status();
    }
}

/// What the scenario did and what the live outputs printed.
struct Scenario {
    /// Dropped before the directory it is in.
    _shm: Mounted,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    cgroup: TestCgroup,
    read_path: String,
    shm_path: String,
    trace_path: String,
    /// `memory.stat`'s shmem growth while the tmpfs file was written.
    shmem_written: i64,
    json: Finished,
    text: Finished,
}

/// Under three memtraces (live JSON, live text, a recording): reads a cold file in a memcg,
/// writes a tmpfs file there, then drops the first from the cache and deletes the second.
fn run_scenario() -> Scenario {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let dir = fs::canonicalize(tmp.path()).expect("canonical");
    let read = cold_file(&dir, "read-then-dropped", READ_MIB);
    let read_path = read.to_str().expect("utf-8").to_owned();
    // A tmpfs of its own, as `/dev/shm` or a memory-backed `emptyDir` is.
    let shm = Mounted::new(
        &["-t", "tmpfs", "-o", "size=64m", "memtrace-test"],
        &dir.join("shm"),
    );
    let shm_path = shm.point.join("cache").to_str().expect("utf-8").to_owned();
    let cgroup = TestCgroup::new("filenames", 1 << 30);
    let trace_path = dir.join("names.mtrace").to_str().expect("utf-8").to_owned();
    let mut args = vec!["--interval", "300ms", "--events", "page_cache,cgroup"];
    args.extend(["--cgroup", &cgroup.path]);
    let json = Memtrace::json(&args);
    let text = Memtrace::start(&[&["run"], &args[..]].concat());
    let record = Memtrace::start(&[&["record", "-o", &trace_path], &args[..]].concat());

    let input = format!("if={read_path}");
    run_in(
        &cgroup,
        "dd",
        &[&input, "of=/dev/null", "bs=1M", "status=none"],
    );
    // Past the interval, so that the tmpfs file is the top file of one of its own.
    thread::sleep(Duration::from_millis(700));
    let shmem_before = stat_shmem(&cgroup);
    let output = format!("of={shm_path}");
    let count = format!("count={SHM_MIB}");
    run_in(
        &cgroup,
        "dd",
        &["if=/dev/zero", &output, "bs=1M", &count, "status=none"],
    );
    let shmem_written = stat_shmem(&cgroup) - shmem_before;
    thread::sleep(Duration::from_millis(700));
    drop_file_cache(&read);
    fs::remove_file(&shm_path).expect("rm the tmpfs file");
    thread::sleep(Duration::from_millis(900));
    let json = json.stop_ok();
    let text = text.stop_ok();
    let _ = record.stop_ok();
    Scenario {
        _shm: shm,
        _dir: tmp,
        dir,
        cgroup,
        read_path,
        shm_path,
        trace_path,
        shmem_written,
        json,
        text,
    }
}

#[test]
fn files_are_named_and_accounted_completely_in_every_output() {
    let s = run_scenario();
    let (added, removed) = live_json(&s);
    live_text(&s);
    replay(&s, (added, removed));
    report(&s);
    perfetto(&s);
}

/// Returns the bytes the read file added and removed.
fn live_json(s: &Scenario) -> (i64, i64) {
    let (read_path, shm_path) = (&s.read_path, &s.shm_path);
    let events = json_lines(&s.json.stdout);
    let cache = events_in(&events, "cache", &s.cgroup.path);
    let all = rows(&cache);
    let read_rows = named(&all, read_path);
    assert!(
        !read_rows.is_empty(),
        "no row names {read_path}: {cache:#?}\nmemtrace said:\n{}",
        s.json.stderr
    );
    let added = sum(&read_rows, "added_bytes");
    assert!(
        added >= 60 * MIB,
        "{read_path}: {added} bytes added: {read_rows:#?}"
    );
    let net = sum(&read_rows, "net_bytes");
    assert!(
        net.abs() <= MIB,
        "{read_path} was dropped, so it ends at about zero: {net}: {read_rows:#?}"
    );
    let shm_rows = named(&all, shm_path);
    assert!(
        shm_rows.iter().all(|f| f["name"]["shmem"] == true),
        "tmpfs is shmem: {shm_rows:#?}"
    );
    let shm_added = sum(&shm_rows, "added_bytes");
    let written = s.shmem_written;
    assert!(written >= 15 * MIB, "memory.stat's shmem grew {written}");
    assert!(
        (shm_added - written).abs() <= written / 20,
        "tmpfs adds {shm_added} against memory.stat's shmem delta {written}: {shm_rows:#?}"
    );
    assert!(
        shm_rows.iter().any(|f| f["name"]["deleted"] == true),
        "its removal says deleted: {shm_rows:#?}"
    );
    assert!(
        sum(&shm_rows, "net_bytes").abs() <= MIB,
        "{shm_path} was deleted: {shm_rows:#?}"
    );
    eprintln!(
        "{read_path}: {added} bytes added, {net} at the end; {shm_path}: {shm_added} bytes \
         added, memory.stat shmem +{written}"
    );
    for e in &cache {
        let files: Vec<&Value> = e["top_files"].as_array().expect("files").iter().collect();
        for field in ["added_bytes", "removed_bytes"] {
            assert_eq!(
                sum(&files, field),
                e[field].as_i64().expect("total"),
                "{field}: {e}"
            );
        }
    }
    (added, sum(&read_rows, "removed_bytes"))
}

/// The top file of an interval, by name.
fn live_text(s: &Scenario) {
    let (read_path, shm_path, out) = (&s.read_path, &s.shm_path, &s.text.stdout);
    assert!(
        out.contains(&format!("top file {read_path} +"))
            || out.contains(&format!("top file {read_path} -")),
        "{out}"
    );
    assert!(
        out.contains(&format!("top file {shm_path} (shmem")),
        "{out}"
    );
}

/// The trace replays with the same names and rows.
fn replay(s: &Scenario, (added, removed): (i64, i64)) {
    let replayed = json_lines(&output_ok(&["replay", "--format", "json", &s.trace_path]));
    let cache = events_in(&replayed, "cache", &s.cgroup.path);
    let all = rows(&cache);
    let read = named(&all, &s.read_path);
    assert_eq!(
        (sum(&read, "added_bytes"), sum(&read, "removed_bytes")),
        (added, removed),
        "recorded and live saw the same"
    );
    assert!(
        named(&all, &s.shm_path)
            .iter()
            .any(|f| f["name"]["deleted"] == true)
    );
    let text = output_ok(&["replay", &s.trace_path]);
    assert!(
        text.contains(&format!("top file {}", s.read_path)),
        "{text}"
    );
}

/// The dropped file at its peak and at about zero at the end; the rows add up.
fn report(s: &Scenario) {
    let read_path = &s.read_path;
    let report: Value =
        serde_json::from_str(&output_ok(&["report", "--format", "json", &s.trace_path]))
            .expect("report json");
    let container = report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| {
            c["cgroups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|p| p == &s.cgroup.path))
        })
        .unwrap_or_else(|| panic!("no section for {}: {report:#}", s.cgroup.path));
    let cache = &container["page_cache"];
    let files: Vec<&Value> = cache["top_files"]
        .as_array()
        .expect("files")
        .iter()
        .collect();
    let file = files
        .iter()
        .find(|f| f["name"] == read_path.as_str())
        .unwrap_or_else(|| panic!("report lists no {read_path}: {files:#?}"));
    assert!(
        file["peak_net_bytes"].as_i64() >= Some(60 * MIB),
        "{file:#}"
    );
    assert!(
        file["net_bytes"].as_i64().is_some_and(|n| n.abs() <= MIB),
        "{file:#}"
    );
    for field in ["added_bytes", "removed_bytes"] {
        assert_eq!(
            sum(&files, field),
            cache[field].as_i64().expect(field),
            "{field}: {cache:#}"
        );
    }
    let text = output_ok(&["report", &s.trace_path]);
    assert!(text.contains(read_path.as_str()), "{text}");
    let html = s.dir.join("report.html");
    let _ = output_ok(&[
        "report",
        "--html",
        html.to_str().expect("utf-8"),
        &s.trace_path,
    ]);
    assert!(
        fs::read_to_string(&html)
            .expect("html")
            .contains(read_path.as_str()),
        "the HTML report names {read_path}"
    );
}

/// The file's track ends at about zero.
fn perfetto(s: &Scenario) {
    let exported = s.dir.join("perfetto.json");
    let out = exported.to_str().expect("utf-8");
    let _ = output_ok(&["export", "--perfetto", "-o", out, &s.trace_path]);
    let doc: Value =
        serde_json::from_str(&fs::read_to_string(&exported).expect("export")).expect("json");
    let counter = format!("file: {}", s.read_path);
    let last = doc["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .rfind(|e| e["ph"] == "C" && e["name"] == counter.as_str())
        .unwrap_or_else(|| panic!("no {counter} counter"));
    assert!(
        last["args"]["bytes"]
            .as_i64()
            .is_some_and(|b| b.abs() <= MIB),
        "{last}"
    );
}

/// A file read through an overlay (as a container reads its image) is cached as the lower
/// layer's file: named by its host path, with the path the container sees.
#[test]
fn overlay_files_show_the_path_the_container_sees() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let dir = fs::canonicalize(tmp.path()).expect("canonical");
    // The lower layer where podman and CRI-O keep one (`overlay/<64 hex digits>/diff`): a name
    // of 64 bytes, which the kernel side once cut to 63, and the path with it.
    let layer = "5cc0a2b8d4e1f7a93b6c0d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a";
    let (lower, upper, work, merged) = (
        dir.join("overlay").join(layer).join("diff"),
        dir.join("upper"),
        dir.join("work"),
        dir.join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir_all(d).expect("mkdir");
    }
    fs::create_dir_all(lower.join("usr/lib")).expect("mkdir");
    let host = cold_file(&lower.join("usr/lib"), "libimage.so", 8);
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let overlay = Mounted::new(&["-t", "overlay", "overlay", "-o", &options], &merged);
    let cgroup = TestCgroup::new("overlayfile", 1 << 30);
    let memtrace = Memtrace::json(&["--interval", "300ms", "--cgroup", &cgroup.path]);
    let input = format!("if={}", overlay.point.join("usr/lib/libimage.so").display());
    run_in(
        &cgroup,
        "dd",
        &[&input, "of=/dev/null", "bs=1M", "status=none"],
    );
    thread::sleep(Duration::from_millis(700));
    let out = memtrace.stop_ok();
    let events = json_lines(&out.stdout);
    let cache = events_in(&events, "cache", &cgroup.path);
    let all = rows(&cache);
    let host_path = host.to_str().expect("utf-8");
    let file = named(&all, host_path);
    assert!(
        !file.is_empty(),
        "no row names {host_path}: {cache:#?}\nmemtrace said:\n{}",
        out.stderr
    );
    assert!(
        file.iter()
            .all(|f| f["name"]["container_path"] == "/usr/lib/libimage.so"),
        "{file:#?}"
    );
    assert!(sum(&file, "added_bytes") >= 8 * MIB, "{file:#?}");
    drop(overlay);
}
