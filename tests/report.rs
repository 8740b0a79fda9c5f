//! `memtrace report` and `memtrace export --perfetto` on a recorded real incident: an OOM kill
//! in one container, page cache grown and reclaimed in another, a dying memcg.

use std::{thread, time::Duration};

use memtrace_tests::{
    CACHE_CONTAINER_ID, Incident, OOM_CONTAINER_ID, TestCgroup, assert_oom_killed, kernel_oom_line,
    memtrace_output, oom_line_field, record_incident,
};
use serde_json::Value;

const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");

use memtrace_tests::report::{container, docker_name, record, run_ok};

fn check_text(incident: &Incident, trace: &str) {
    let text = run_ok(&["report", trace]);
    let oom_name = docker_name(OOM_CONTAINER_ID);
    // The OOM-killed container comes first.
    let first = text
        .lines()
        .find(|l| l.starts_with("== "))
        .expect("a container section");
    assert_eq!(
        first,
        format!("== {oom_name} (cgroup {})", incident.oom_cgroup),
        "{text}"
    );
    for needle in [
        "OOM kills: 1".to_owned(),
        // The section's heading names its only cgroup: the kill's line need not repeat it.
        format!(
            "pid {} (memhog); limit of {} fired",
            incident.victim_pid, incident.oom_cgroup
        ),
        "usage 64.0MiB of 64.0MiB".to_owned(),
        "verdict: anon growth: anon memory grew by".to_owned(),
        "  charge failures: ".to_owned(),
        "== top page-cache growers\n  1. ".to_owned() + &docker_name(CACHE_CONTAINER_ID),
        "== dying memory cgroups".to_owned(),
    ] {
        assert!(
            text.contains(&needle),
            "no {needle:?} in:\n{text}\nrecorder's stderr:\n{}",
            incident.recorder_stderr
        );
    }
}

fn check_json(incident: &Incident, trace: &str) {
    let report: Value =
        serde_json::from_str(&run_ok(&["report", trace, "--format", "json"])).expect("JSON");
    assert!(
        report["trace"]["cut_short"].is_null(),
        "{:#}",
        report["trace"]
    );
    assert_eq!(report["trace"]["lost_events"], 0);

    let oom = container(&report, &docker_name(OOM_CONTAINER_ID));
    assert_eq!(oom["container"]["container_id"], OOM_CONTAINER_ID);
    let kills = oom["oom_kills"].as_array().expect("oom_kills");
    assert_eq!(kills.len(), 1, "{oom:#}");
    let kill = &kills[0];
    assert_eq!(kill["pid"], incident.victim_pid, "{kill:#}");
    assert_eq!(kill["verdict"]["kind"], "anon_growth", "{kill:#}");
    assert_eq!(kill["limit_bytes"], incident.limit_bytes, "{kill:#}");
    let line = kernel_oom_line(incident.victim_pid).expect("the kernel's oom-kill line");
    assert_eq!(
        kill["limit_cgroup"].as_str(),
        oom_line_field(&line, "oom_memcg"),
        "{line}"
    );
    let anon = kill["memory"]["anon_bytes"]
        .as_u64()
        .expect("anon at the kill");
    assert!(anon > incident.limit_bytes / 2, "{kill:#}");
    let samples = oom["memory"].as_array().expect("timeline");
    assert!(
        samples.len() >= 3,
        "200 ms samples for seconds of recording: {oom:#}"
    );
    let before: Vec<&Value> = samples
        .iter()
        .filter(|s| s["timestamp_ns"].as_u64() < kill["timestamp_ns"].as_u64())
        .collect();
    assert!(
        !before.is_empty(),
        "samples before the kill, for the verdict: {oom:#}"
    );
    assert!(
        oom["reclaim"]["episodes"].as_u64() > Some(0),
        "an OOM kill follows limit reclaim: {oom:#}"
    );
    assert!(
        oom["charge_failures"]["count"].as_u64() > Some(0),
        "and charges the limit refused: {oom:#}"
    );

    let cache = container(&report, &docker_name(CACHE_CONTAINER_ID));
    let added = cache["page_cache"]["added_bytes"].as_u64().expect("added");
    assert!(
        added >= 64 << 20,
        "reading 128 MiB adds page cache: {cache:#}"
    );
    let top = &report["page_cache_growers"][0];
    assert_eq!(
        top["name"],
        docker_name(CACHE_CONTAINER_ID).as_str(),
        "{report:#}"
    );
    assert_eq!(
        top["top_files"][0]["inode"], incident.cache_file_inode,
        "{top:#}"
    );
    assert_eq!(
        top["top_files"][0]["device"],
        incident.cache_file_device.as_str(),
        "{top:#}"
    );
    assert!(
        cache["reclaim"]["reclaimed_bytes"].as_u64() > Some(0),
        "128 MiB read under a 64 MiB limit is reclaimed: {cache:#}"
    );

    let dying = &report["dying"];
    assert!(
        dying["removed_while_charged"].as_u64() >= Some(1),
        "the reader's cgroup was removed with its cache charged: {dying:#}"
    );
    // What the report says of the end matches the kernel's own count of dying memcgs.
    if incident.children_freed == Some(false) {
        assert!(
            dying["still_dying"].as_array().is_some_and(|d| d
                .iter()
                .any(|m| m["cgroup"] == incident.cache_cgroup.as_str())),
            "the kernel still had the reader's memcg dying at the end: {dying:#}"
        );
    } else {
        assert!(
            dying["freed_after_dying"].as_u64() >= Some(1),
            "and freed once reclaimed: {dying:#}"
        );
    }
}

fn check_perfetto(incident: &Incident, trace: &str) {
    let out = incident.dir.path().join("incident.json");
    let out_arg = out.to_str().expect("utf-8 path");
    let _ = run_ok(&["export", "--perfetto", trace, "-o", out_arg]);
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("read export")).expect("JSON");
    let events = doc["traceEvents"].as_array().expect("traceEvents");
    let pid_of = |name: &str| {
        events
            .iter()
            .find(|e| e["ph"] == "M" && e["name"] == "process_name" && e["args"]["name"] == name)
            .unwrap_or_else(|| panic!("no track for {name}"))["pid"]
            .clone()
    };
    let oom_pid = pid_of(&docker_name(OOM_CONTAINER_ID));
    let cache_pid = pid_of(&docker_name(CACHE_CONTAINER_ID));
    let on = |pid: &Value, ph: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| &e["pid"] == pid && e["ph"] == ph)
            .collect()
    };
    let instants: Vec<&Value> = on(&oom_pid, "i")
        .into_iter()
        .filter(|e| e["cat"] == "oom")
        .collect();
    assert_eq!(instants.len(), 1, "{instants:#?}");
    assert!(
        on(&oom_pid, "i").iter().any(|e| e["cat"] == "charge_fail"),
        "the limit refused charges before the kill"
    );
    assert_eq!(instants[0]["args"]["pid"], incident.victim_pid);
    assert!(instants[0]["ts"].as_f64().is_some());
    let counters = on(&oom_pid, "C");
    for name in ["usage", "limit", "anon", "page cache"] {
        assert!(
            counters
                .iter()
                .any(|c| c["name"] == name && c["args"]["bytes"].is_u64()),
            "no {name} counter: {counters:#?}"
        );
    }
    let slices = on(&cache_pid, "X");
    assert!(!slices.is_empty(), "reclaim slices for the reader");
    for s in slices {
        assert!(s["dur"].as_f64().is_some_and(|d| d >= 0.0), "{s}");
    }
    assert!(
        doc["otherData"]["recorded_events"].is_u64(),
        "the end marker's count: {:#}",
        doc["otherData"]
    );
}

/// A recording cut short (a recorder killed with `kill -9`) is still reported, up to the cut,
/// with a warning.
fn check_cut(incident: &Incident) {
    let whole = std::fs::read(&incident.trace).expect("read trace");
    let cut = incident.dir.path().join("cut.mtrace");
    std::fs::write(&cut, &whole[..whole.len() - 7]).expect("write cut trace");
    let out = memtrace_output(&["report", cut.to_str().expect("utf-8"), "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a cut trace is still reported: {stderr}"
    );
    assert!(
        stderr.starts_with("memtrace: warning: ") && stderr.contains("cut short"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        report["trace"]["cut_short"].is_string(),
        "{:#}",
        report["trace"]
    );
    assert!(report["trace"]["recorded_events"].is_null());
    assert!(report["events"].as_u64() > Some(0), "{:#}", report["trace"]);
}

#[test]
fn report_and_perfetto_export_explain_a_recorded_incident() {
    let incident = record_incident("report", MEMHOG, env!("CARGO_TARGET_TMPDIR"));
    let trace = incident.trace.to_str().expect("utf-8 path").to_owned();
    check_text(&incident, &trace);
    check_json(&incident, &trace);
    check_perfetto(&incident, &trace);
    check_cut(&incident);
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_trace = dir.path().join("notes.txt");
    std::fs::write(&not_a_trace, "not a trace\n").expect("write");
    let path = not_a_trace.to_str().expect("utf-8");
    let out_json = dir.path().join("out.json");
    for args in [
        vec!["report", path],
        vec!["report", "/nonexistent/x.mtrace"],
        vec![
            "export",
            "--perfetto",
            path,
            "-o",
            out_json.to_str().expect("utf-8"),
        ],
    ] {
        let out = memtrace_output(&args);
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("memtrace: error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        !out_json.exists(),
        "no export is left behind for a bad input"
    );
}

const POD_UID: &str = "5e1ec7ed-0f0f-4a4a-9b9b-c0ffee000001";
/// A container without a limit of its own in the pod: the pod's limit is the one that fires.
const HOG_ID: &str = "4077a1c0ffee4077a1c0ffee4077a1c0ffee4077a1c0ffee4077a1c0ffee4077";
const POD_LIMIT: u64 = 128 << 20;

/// Sections of a text report, by their `== ` headings (the trailing lists are not sections).
fn sections(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("== ") && !l.starts_with("== top page-cache growers"))
        .filter(|l| !l.starts_with("== dying memory cgroups"))
        .collect()
}

/// What [`record_pod_oom`] recorded.
struct PodOom {
    dir: tempfile::TempDir,
    trace: String,
    victim: u32,
    pod_cgroup: String,
    recorder_stderr: String,
}

/// Records, under `memtrace record`, a pod with a 128 MiB limit whose container (no limit of
/// its own) allocates until the pod's limit fires, next to a host service that reads a file.
fn record_pod_oom() -> PodOom {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let trace = dir.path().join("pod.mtrace");
    let trace_arg = trace.to_str().expect("utf-8 path").to_owned();
    let file = dir.path().join("host-read-32m");
    std::fs::write(&file, vec![0x5a_u8; 32 << 20]).expect("write file");
    std::fs::File::open(&file)
        .and_then(|f| f.sync_all())
        .expect("sync file");
    std::fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");

    let base = TestCgroup::new("report-answer", 1 << 30);
    let kubepods = base.child("kubepods", None);
    let burstable = kubepods.child("burstable", None);
    let pod = burstable.child(&format!("pod{POD_UID}"), Some(POD_LIMIT));
    let hog = pod.child(HOG_ID, None);
    let host = base.child("worker.service", None);
    let memtrace = record(&trace_arg, &base.path, &[]);
    thread::sleep(Duration::from_millis(500));
    let input = format!("if={}", file.display());
    let (_, status) = host.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
    assert!(status.success(), "dd failed: {status}");
    let (victim, status) = hog.run_memhog(MEMHOG, 1024);
    assert_oom_killed(victim, status);
    thread::sleep(Duration::from_millis(1500));
    let out = memtrace.stop();
    assert!(out.status.success(), "record failed: {out:?}");
    let line = kernel_oom_line(victim).expect("the kernel's oom-kill line");
    assert_eq!(
        oom_line_field(&line, "oom_memcg"),
        Some(pod.path.as_str()),
        "the pod's limit fired: {line}"
    );
    PodOom {
        dir,
        trace: trace_arg,
        victim,
        pod_cgroup: pod.path.clone(),
        recorder_stderr: out.stderr,
    }
}

/// The first 10 lines name the killed container, the limit that fired and the verdict;
/// containers and pods come before host cgroups. Returns the first 10 lines and the sections.
fn check_answer_text(oom: &PodOom) -> (String, Vec<String>) {
    let text = run_ok(&["report", &oom.trace]);
    let head = text.lines().take(10).collect::<Vec<_>>().join("\n");
    let hog_name = format!("container:{}", &HOG_ID[..12]);
    let pod_name = format!("pod:{POD_UID}");
    for needle in [
        "OOM kill at ".to_owned(),
        format!("memhog (pid {}) in {hog_name}; ", oom.victim),
        format!("the limit that fired: {pod_name}'s, 128.0MiB"),
        format!("cgroup {}", oom.pod_cgroup),
        "  verdict: anon growth: ".to_owned(),
        format!("grew most: {hog_name} anon +"),
        "of the kernel's 65535 memcg ids in use".to_owned(),
    ] {
        assert!(
            head.contains(&needle),
            "no {needle:?} in the first 10 lines:\n{head}\n\nwhole report:\n{text}\nrecorder: {}",
            oom.recorder_stderr
        );
    }
    let all = sections(&text);
    let at = |heading: &str| {
        all.iter()
            .position(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("no section {heading:?} in {all:#?}"))
    };
    let host_at = at("== worker.service");
    assert!(at(&format!("== {hog_name}")) < host_at, "{all:#?}");
    assert!(at(&format!("== {pod_name}")) < host_at, "{all:#?}");
    assert!(
        text.find("\n-- host and system cgroups") < text.find("\n== worker.service"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "of 128.0MiB limit (none of its own: {pod_name}'s applies)"
        )),
        "the container's memory is set against the pod's limit:\n{text}"
    );
    (head, all.into_iter().map(str::to_owned).collect())
}

/// `--top 1` keeps the first section and says how many were left out; the answer stays.
fn check_top(oom: &PodOom, head: &str, all: &[String]) {
    let top = run_ok(&["report", &oom.trace, "--top", "1"]);
    assert_eq!(sections(&top), [all[0].as_str()], "{top}");
    assert!(
        top.contains(&format!(
            "\n… {} more sections left out by --top",
            all.len() - 1
        )),
        "{top}"
    );
    assert!(
        top.starts_with(head),
        "the answer is the same with --top:\n{top}"
    );

    let json: Value = serde_json::from_str(&run_ok(&[
        "report", &oom.trace, "--format", "json", "--top", "1",
    ]))
    .expect("JSON");
    let kill = &json["summary"]["kill_groups"][0];
    assert_eq!(kill["pid"], oom.victim, "{kill:#}");
    assert_eq!(kill["limit_cgroup"], oom.pod_cgroup.as_str(), "{kill:#}");
    assert_eq!(
        kill["limit_owner"],
        format!("pod:{POD_UID}").as_str(),
        "{kill:#}"
    );
    assert_eq!(kill["limit_bytes"], POD_LIMIT, "{kill:#}");
    assert_eq!(kill["verdict"]["kind"], "anon_growth", "{kill:#}");
    assert_eq!(json["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["containers_left_out"], all.len() - 1);
    let first = &json["containers"][0];
    assert_eq!(first["kind"], "container", "{first:#}");
    assert_eq!(
        first["applied_limit"]["cgroup"],
        oom.pod_cgroup.as_str(),
        "{first:#}"
    );
    assert!(
        json["summary"]["dying"]["headroom_at_start"].as_u64() > Some(0),
        "{:#}",
        json["summary"]
    );
}

/// The same answer leads the HTML report.
fn check_answer_html(oom: &PodOom) {
    let out = oom.dir.path().join("pod.html");
    let _ = run_ok(&[
        "report",
        &oom.trace,
        "--html",
        out.to_str().expect("utf-8 path"),
    ]);
    let html = std::fs::read_to_string(&out).expect("read html");
    let start = html
        .find("<section class=\"answer\">")
        .expect("answer section");
    let answer = &html[start..];
    let answer = &answer[..answer.find("</section>").expect("its end")];
    let kill = format!(
        "memhog (pid {}) in container:{}; the limit that fired",
        oom.victim,
        &HOG_ID[..12]
    );
    assert!(answer.contains(&kill), "{answer}");
    assert!(
        Some(start) < html.find("<section class=\"container\""),
        "the answer leads the HTML report"
    );
}

/// A pod's OOM kill recorded and reported: the report opens with the answer.
#[test]
fn report_opens_with_the_answer() {
    let oom = record_pod_oom();
    let (head, all) = check_answer_text(&oom);
    check_top(&oom, &head, &all);
    check_answer_html(&oom);
}
