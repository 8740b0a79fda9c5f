//! A version 2 trace recorded by main before the one event model (b63de0b: OOM kills in a docker
//! and a pod container, page cache, reclaim, derived charge failures, charges, slab, stats,
//! cgroup lifecycle) replays with today's memtrace as the same events that build printed
//! (`fixtures/v2-main-b63de0b.json` is its `replay --format json`), and `report` reads it.
//! Needs no root and no kernel: the fixture is the input, built into the test (which also runs
//! in VMs without the source tree); a missing fixture fails the build.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use memtrace::trace::{TraceItem, TraceReader, TraceWriter};
use memtrace_tests::{TextLine, json_lines, memtrace_bin};
use serde_json::{Map, Value};

/// Fields of the old JSON whose value today's is the same number in other units (ns, not µs or
/// seconds): (old name, new name, old units in ns).
const RENAMED: &[(&str, &str, f64)] = &[
    ("duration_us", "duration_ns", 1e3),
    ("reclaim_us", "reclaim_ns", 1e3),
    ("interval_seconds", "interval_ns", 1e9),
    ("dying_seconds", "dying_ns", 1e9),
];

/// Fields compared as they are: what an event is about and who it names.
const SAME: &[&str] = &[
    "type",
    "time",
    "timestamp_ns",
    "pid",
    "memcg_id",
    "cgroup",
    "container",
    "limit_cgroup",
    "action",
];

/// The recording, and its replay by the build that recorded it.
const TRACE: &[u8] = include_bytes!("fixtures/v2-main-b63de0b.mtrace");
const REPLAYED_THEN: &str = include_str!("fixtures/v2-main-b63de0b.json");

/// The recording as a file, in a directory removed with the returned guard.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2-main-b63de0b.mtrace");
    std::fs::write(&path, TRACE).expect("write the fixture");
    (dir, path)
}

fn memtrace(args: &[&str], file: &Path) -> Output {
    let out = Command::new(memtrace_bin())
        .args(args)
        .arg(file)
        .output()
        .expect("run memtrace");
    assert!(
        out.status.success(),
        "memtrace {args:?} {} exited with {}: {}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn expected() -> Vec<Value> {
    json_lines(REPLAYED_THEN)
}

/// `null` for a field an event does not have (the old `stats` had no `memcg_id`).
fn field<'a>(event: &'a Map<String, Value>, name: &str) -> &'a Value {
    event.get(name).unwrap_or(&Value::Null)
}

/// Every `*_bytes` field present in both, at any depth (`top_files`, `memory`, `caches`).
fn compare_bytes(old: &Value, new: &Value, at: &str, compared: &mut usize) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                let Some(now) = new.get(key) else { continue };
                if key.ends_with("_bytes") {
                    assert_eq!(value, now, "{at}.{key}");
                    *compared += 1;
                } else {
                    compare_bytes(value, now, &format!("{at}.{key}"), compared);
                }
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            assert_eq!(old.len(), new.len(), "{at}: list length");
            for (i, (o, n)) in old.iter().zip(new).enumerate() {
                compare_bytes(o, n, &format!("{at}[{i}]"), compared);
            }
        }
        _ => {}
    }
}

fn compare_event(i: usize, old: &Map<String, Value>, new: &Map<String, Value>) -> usize {
    let at = format!("event {i} ({})", field(old, "type"));
    for name in SAME {
        assert_eq!(field(old, name), field(new, name), "{at}: {name}");
    }
    for &(old_name, new_name, ns) in RENAMED {
        let Some(value) = old.get(old_name) else {
            continue;
        };
        let now = new
            .get(new_name)
            .unwrap_or_else(|| panic!("{at}: {old_name} became no {new_name}: {new:?}"));
        match (value.as_f64(), now.as_u64()) {
            (None, None) => assert!(value.is_null() && now.is_null(), "{at}: {new_name}"),
            (Some(was), Some(is)) => {
                #[expect(clippy::cast_precision_loss, reason = "within a microsecond")]
                let off = (was * ns - is as f64).abs();
                assert!(off <= 1e3, "{at}: {old_name} {was} but {new_name} {is}");
            }
            _ => panic!("{at}: {old_name} {value} but {new_name} {now}"),
        }
    }
    // A charge failure inferred from reclaim said `derived: true, source: "reclaim"`; it says
    // `derived: "reclaim"` now.
    match field(old, "derived") {
        Value::Bool(true) => assert_eq!(field(new, "derived"), field(old, "source"), "{at}"),
        _ => assert!(new.get("derived").is_none(), "{at}: derived"),
    }
    let mut compared = 0;
    compare_bytes(
        &Value::Object(old.clone()),
        &Value::Object(new.clone()),
        &at,
        &mut compared,
    );
    compared
}

#[test]
fn the_v2_fixture_replays_as_the_same_events() {
    let expected = expected();
    let (_dir, file) = fixture();
    let out = memtrace(&["replay", "--format", "json"], &file);
    let replayed = json_lines(&String::from_utf8(out.stdout).expect("UTF-8"));
    assert_eq!(replayed.len(), expected.len(), "events replayed");
    let types = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().expect("type").to_owned())
            .collect()
    };
    assert_eq!(types(&replayed), types(&expected), "sequence of types");
    let mut bytes_fields = 0;
    for (i, (old, new)) in expected.iter().zip(&replayed).enumerate() {
        let (Value::Object(old), Value::Object(new)) = (old, new) else {
            panic!("event {i} is not an object");
        };
        bytes_fields += compare_event(i, old, new);
    }
    // The fixture is not trivial: every kind, and their sizes. (`counters` and `lost` came
    // after format 2.)
    for kind in memtrace::event::What::TYPES
        .iter()
        .filter(|&&kind| kind != "counters" && kind != "lost")
    {
        assert!(
            types(&expected).iter().any(|t| t == kind),
            "the fixture has no {kind}"
        );
    }
    assert!(bytes_fields > 1000, "only {bytes_fields} *_bytes compared");
}

#[test]
fn the_v2_fixture_replays_as_text_and_reports() {
    let (_dir, file) = fixture();
    let expected = expected();
    let text = memtrace(&["replay", "--each"], &file);
    let lines = String::from_utf8(text.stdout).expect("UTF-8");
    assert_eq!(lines.lines().count(), expected.len(), "a line per event");
    // Summarised (the default): fewer lines, every reclaim episode counted, the kills apart.
    let text = memtrace(&["replay"], &file);
    let summarised = String::from_utf8(text.stdout).expect("UTF-8");
    let lines: Vec<TextLine> = summarised.lines().filter_map(TextLine::parse).collect();
    let episodes: usize = lines.iter().map(TextLine::reclaim_episodes).sum();
    let reclaims = expected.iter().filter(|e| e["type"] == "reclaim").count();
    assert_eq!(
        episodes, reclaims,
        "every reclaim episode counted:\n{summarised}"
    );
    let kills = expected.iter().filter(|e| e["type"] == "oom_kill").count();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.alarm && l.kind == "oom_kill")
            .count(),
        kills,
        "each OOM kill on its own line:\n{summarised}"
    );
    assert!(
        summarised.lines().count() * 2 < expected.len(),
        "{} lines for {} events",
        summarised.lines().count(),
        expected.len()
    );

    memtrace(&["report"], &file);
    let report = memtrace(&["report", "--format", "json"], &file);
    let report: Value = serde_json::from_slice(&report.stdout).expect("report JSON");
    assert_eq!(report["events"], expected.len(), "events in the report");
    let kills = report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["oom_kills"].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    let recorded = expected.iter().filter(|e| e["type"] == "oom_kill").count();
    assert_eq!(kills, recorded, "OOM kills in the report");
}

/// The same recording as written by memtrace's trace format 3 (the fuzz seed, made by this
/// file's next test before format 4): still read, as the same events.
const TRACE_V3: &[u8] = include_bytes!("../fuzz/seeds/trace_reader/v3-from-v2-main-b63de0b.mtrace");

/// Every event of a trace file.
fn events_of(file: &Path) -> Vec<memtrace::event::Event> {
    let mut reader = TraceReader::open(file).expect("open");
    let mut events = Vec::new();
    while let Some(item) = reader.next_item().expect("read") {
        match item {
            TraceItem::Event(event) => events.push(event),
            TraceItem::End { .. } => {}
            TraceItem::TailCut { .. } => panic!("{} is whole", file.display()),
        }
    }
    events
}

#[test]
fn the_same_recording_in_format_3_reads_back_as_the_same_events() {
    let (_dir, v2) = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let v3 = dir.path().join("v3.mtrace");
    std::fs::write(&v3, TRACE_V3).expect("write");
    assert_eq!(&TRACE_V3[8..10], &3u16.to_le_bytes(), "a version 3 file");
    let (old, new) = (events_of(&v3), events_of(&v2));
    assert_eq!(old.len(), expected().len());
    assert!(
        old.iter().any(|e| matches!(
            &e.what,
            memtrace::event::What::OomKill(k) if k.limit_container.is_some()
        )),
        "an identity inside an event, in format 3's layout"
    );
    assert_eq!(old, new);
}

/// Version 2 in, the current version out: the events read back unchanged. With
/// `MEMTRACE_WRITE_FUZZ_SEED=FILE` the file is kept there (the fuzz seeds
/// `fuzz/seeds/trace_reader/v3-from-v2-main-b63de0b.mtrace` and `v4-…` were made so).
#[test]
fn the_v2_fixture_rewritten_in_the_current_version_reads_back_the_same() {
    let (_dir, file) = fixture();
    let mut reader = TraceReader::open(&file).expect("open");
    let header = reader.header().clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let v3 = dir.path().join("v3.mtrace");
    let mut writer = TraceWriter::create(&v3, &header).expect("create");
    let mut events = Vec::new();
    while let Some(item) = reader.next_item().expect("read the fixture") {
        match item {
            TraceItem::Event(event) => {
                writer.append(&event).expect("write");
                events.push(event);
            }
            TraceItem::End { .. } => {}
            TraceItem::TailCut { .. } => panic!("the fixture is whole"),
        }
    }
    assert_eq!(events.len(), expected().len(), "events in the fixture");
    writer.finish(&[]).expect("finish");

    let mut reader = TraceReader::open(&v3).expect("open the v3 file");
    let mut read = Vec::new();
    while let Some(item) = reader.next_item().expect("read the v3 file") {
        if let TraceItem::Event(event) = item {
            read.push(event);
        }
    }
    assert_eq!(read, events);
    if let Some(keep) = std::env::var_os("MEMTRACE_WRITE_FUZZ_SEED") {
        std::fs::copy(&v3, &keep).expect("keep the v3 file");
    }
}
