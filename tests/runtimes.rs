//! Real container runtimes name their containers: podman and containerd (Debian's packages)
//! run a container named `hog` with a 64 MiB limit until the kernel OOM-kills it, and every
//! output — the live stream (JSON and text), the trace file, its replay and the report — names
//! it from the runtime's own state, also after the container is gone.

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use memtrace_tests::{
    Finished, Memtrace, TestCgroup, json_lines, memtrace_output, oom_kills_in,
    runtimes::{Containerd, IMAGE, Podman, RuntimeCgroups},
};

const LIMIT: &str = "67108864";
/// `tail` of an endless line grows until the limit: the container's OOM-kill.
const HOG: [&str; 3] = ["sh", "-c", "tail /dev/zero"];

/// A memtrace recording (and printing JSON) and another streaming text, both on the test's
/// cgroups and reading the runtimes' state under `host_root`.
struct Watchers {
    trace: std::path::PathBuf,
    recorder: Memtrace,
    text: Memtrace,
}

impl Watchers {
    /// `stats_interval`: how often containers and pods are sampled (`0`: never).
    fn start(host_root: &Path, cgroup: &str, stats_interval: &str) -> Self {
        let trace = host_root.join("hog.mtrace");
        let host = host_root.to_str().expect("utf-8 path");
        // OOM kills and cgroup lifecycles only: the limit's thousands of reclaim events would
        // fill the output pipe, which is read only at the end.
        let common = [
            "--cgroup",
            cgroup,
            "--host-root",
            host,
            "--stats-interval",
            stats_interval,
            "--events",
            "oom_kill,cgroup",
        ];
        let mut record = vec![
            "record",
            "-o",
            trace.to_str().expect("utf-8"),
            "--print",
            "json",
        ];
        record.extend_from_slice(&common);
        let mut run = vec!["run"];
        run.extend_from_slice(&common);
        Self {
            recorder: Memtrace::start(&record),
            text: Memtrace::start(&run),
            trace,
        }
    }

    /// Stops both once the recorder has written what it saw (at least every second).
    fn stop(self) -> (Finished, Finished, std::path::PathBuf) {
        thread::sleep(Duration::from_millis(1500));
        (self.recorder.stop_ok(), self.text.stop_ok(), self.trace)
    }
}

/// Frees what still pins the removed container's memcg in `cgroup` (page cache, per-CPU charge
/// stocks) until the kernel frees it, as the trace being recorded shows (the recorder writes
/// what it saw every second; a file still being written replays up to its last whole chunk).
fn free_until_released(parent: &TestCgroup, trace: &Path, cgroup: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
        parent.reclaim_all();
        // Each CPU's charge stock keeps the last memcg that charged there, until another
        // charges: a short process charges the parent on every CPU.
        let cpus = thread::available_parallelism().map_or(1, usize::from);
        for cpu in 0..cpus {
            let (_, status) = parent.run_inside("taskset", &["-c", &cpu.to_string(), "true"]);
            assert!(status.success(), "taskset -c {cpu} true: {status}");
        }
        thread::sleep(Duration::from_millis(1200));
        let replay = memtrace_output(&[
            "replay",
            "--format",
            "json",
            "--type",
            "cgroup",
            trace.to_str().expect("utf-8 path"),
        ]);
        let events = json_lines(&String::from_utf8_lossy(&replay.stdout));
        let ours: Vec<_> = events.iter().filter(|e| e["cgroup"] == cgroup).collect();
        if ours.iter().any(|e| e["action"] == "freed") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel did not free {cgroup} within 20 s of reclaim: {ours:#?}\n{}",
            String::from_utf8_lossy(&replay.stderr)
        );
    }
}

/// What every output must say about the container in `cgroup`: `expect` is the identity's
/// JSON fields, `shown` how people see it (text stream and report).
fn assert_named_everywhere(
    cgroup: &str,
    expect: &[(&str, &str)],
    shown: &str,
    (recorded, text, trace): (Finished, Finished, std::path::PathBuf),
) {
    let named = |e: &serde_json::Value, what: &str| {
        for (field, value) in expect {
            assert_eq!(e["container"][field], *value, "{what}: {e}");
        }
    };

    // Live, JSON: the kill, and the removal and release after the container is gone.
    let live = json_lines(&recorded.stdout);
    let kills = oom_kills_in(&live, cgroup);
    assert_eq!(kills.len(), 1, "one oom_kill in {cgroup}: {live:#?}");
    named(kills[0], "live oom_kill");
    for (field, value) in expect {
        assert_eq!(kills[0]["limit_container"][field], *value, "{}", kills[0]);
    }
    assert_eq!(kills[0]["comm"], "tail", "{}", kills[0]);
    // From the kernel's report: the cgroup itself may be gone before memtrace reads it.
    assert_eq!(kills[0]["memory"]["limit_bytes"], 64 << 20, "{}", kills[0]);
    let lifecycle = |events: &[serde_json::Value], action: &str| -> serde_json::Value {
        events
            .iter()
            .find(|e| e["type"] == "cgroup" && e["cgroup"] == cgroup && e["action"] == action)
            .unwrap_or_else(|| panic!("no `{action}` of {cgroup}: {events:#?}"))
            .clone()
    };
    for action in ["removed", "freed"] {
        named(&lifecycle(&live, action), &format!("live {action}"));
    }

    // Live, text.
    let kill_line = text
        .stdout
        .lines()
        .find(|l| l.contains("oom_kill") && l.contains(cgroup))
        .unwrap_or_else(|| panic!("no oom_kill line for {cgroup}:\n{}", text.stdout));
    assert!(kill_line.contains(&format!("[{shown}]")), "{kill_line}");

    // The trace file, replayed.
    let trace = trace.to_str().expect("utf-8 path");
    let replay = memtrace_output(&["replay", "--format", "json", trace]);
    assert!(replay.status.success(), "replay: {replay:?}");
    let replayed = json_lines(&String::from_utf8_lossy(&replay.stdout));
    let kills = oom_kills_in(&replayed, cgroup);
    assert_eq!(kills.len(), 1, "{replayed:#?}");
    named(kills[0], "replayed oom_kill");
    for action in ["removed", "freed"] {
        named(&lifecycle(&replayed, action), &format!("replayed {action}"));
    }

    // The report: one section for the container (not one before its names came and one
    // after), under its name.
    let report = memtrace_output(&["report", trace]);
    assert!(report.status.success(), "report: {report:?}");
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains(&format!("== {shown}")),
        "the report names {shown}:\n{report}"
    );
    let json = memtrace_output(&["report", "--format", "json", trace]);
    assert!(json.status.success(), "report: {json:?}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("report JSON");
    let sections: Vec<_> = json["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter(|c| {
            c["cgroups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == cgroup))
        })
        .collect();
    assert_eq!(sections.len(), 1, "{sections:#?}");
    assert_eq!(sections[0]["name"], shown, "{}", sections[0]);
    named(sections[0], "report");

    // The Perfetto export: the container's track is named so.
    let perfetto = Path::new(trace).with_extension("json");
    let export = memtrace_output(&[
        "export",
        "--perfetto",
        trace,
        "-o",
        perfetto.to_str().expect("utf-8 path"),
    ]);
    assert!(export.status.success(), "export: {export:?}");
    let perfetto: serde_json::Value =
        serde_json::from_slice(&fs::read(&perfetto).expect("read export")).expect("JSON");
    let processes: Vec<_> = perfetto["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["args"]["name"].as_str().unwrap_or_default())
        .collect();
    assert!(processes.contains(&shown), "{processes:?}");
}

#[test]
fn podman_names_an_oom_killed_container_and_its_image_everywhere() {
    // Short: podman refuses a run root of more than 50 characters.
    let host = tempfile::tempdir().expect("tempdir");
    let podman = Podman::with_image(host.path());
    // The container's cgroup goes below one of ours, capped at 1 GiB, so that nothing can
    // go wrong outside it.
    let parent = TestCgroup::new("podman", 1 << 30);
    let _others = RuntimeCgroups::new(&parent.path);
    let watchers = Watchers::start(host.path(), &parent.path, "0");

    let mut args = vec![
        "--name",
        "hog",
        "--memory",
        "64m",
        "--memory-swap",
        "64m",
        "--cgroup-parent",
        &parent.path,
        IMAGE,
    ];
    args.extend_from_slice(&HOG);
    let out = podman.run_container(&args);
    assert_eq!(
        out.status.code(),
        Some(137),
        "hog was not OOM-killed: {out:?}"
    );
    let id = podman.ok(&["inspect", "--format", "{{.Id}}", "hog"]);
    let cgroup = format!("{}/libpod-{id}", parent.path);
    // Gone: its state with it.
    podman.ok(&["rm", "hog"]);
    free_until_released(&parent, &watchers.trace, &cgroup);
    let outputs = watchers.stop();

    assert_named_everywhere(
        &cgroup,
        &[
            ("runtime", "podman"),
            ("container_id", &id),
            ("container_name", "hog"),
            ("image", IMAGE),
        ],
        &format!("hog ({IMAGE})"),
        outputs,
    );
}

#[test]
fn containerd_names_a_pod_container_from_its_cri_labels() {
    const POD_UID: &str = "7d3c1a52-9b8e-4f60-a1d2-3e4f5a6b7c8d";
    const ID: &str = "5be0cf3e2c58f1b6d0a9e8c7b6a5f4e3d2c1b0a99887766554433221100ffeed";
    // Short: podman refuses a run root of more than 50 characters.
    let host = tempfile::tempdir().expect("tempdir");
    // The image, built by podman from busybox and imported into containerd.
    let archive = Podman::with_image(host.path()).save_oci_archive();
    let containerd = Containerd::start(host.path());
    containerd.ctr_ok(&["images", "import", archive.to_str().expect("utf-8")]);

    // The kubelet's cgroupfs layout, below one of ours capped at 1 GiB.
    let base = TestCgroup::new("containerd", 1 << 30);
    let _others = RuntimeCgroups::new(&base.path);
    let kubepods = base.child("kubepods", None);
    let burstable = kubepods.child("burstable", None);
    let pod = burstable.child(&format!("pod{POD_UID}"), None);
    let cgroup = format!("{}/{ID}", pod.path);
    let uid_label = format!("io.kubernetes.pod.uid={POD_UID}");
    // Samples every second: the pod's own memcg shows up in them, named by its container's
    // labels.
    let watchers = Watchers::start(host.path(), &base.path, "1s");

    let mut args = vec![
        "run",
        "--rm",
        "--cgroup",
        &cgroup,
        "--memory-limit",
        LIMIT,
        "--label",
        "io.kubernetes.pod.namespace=shop",
        "--label",
        "io.kubernetes.pod.name=hog-7f9c6d5b4-x2v8q",
        "--label",
        "io.kubernetes.container.name=hog",
        "--label",
        &uid_label,
        IMAGE,
        ID,
    ];
    args.extend_from_slice(&HOG);
    let out = containerd.ctr(&args);
    assert_eq!(
        out.status.code(),
        Some(137),
        "hog was not OOM-killed: {out:?}"
    );
    // `--rm`: the container and its metadata are gone.
    let left = containerd.ctr_ok(&["containers", "list", "--quiet"]);
    assert!(!left.contains(ID), "{left}");
    free_until_released(&burstable, &watchers.trace, &cgroup);
    let outputs = watchers.stop();
    drop(containerd);

    // The pod's own memcg, which no runtime knows, is named by its container's labels in the
    // samples taken once they were read.
    let live = json_lines(&outputs.0.stdout);
    let pod_samples: Vec<_> = live
        .iter()
        .filter(|e| e["type"] == "stats" && e["cgroup"] == pod.path.as_str())
        .collect();
    let last = pod_samples
        .last()
        .unwrap_or_else(|| panic!("no sample of the pod {}: {live:#?}", pod.path));
    assert_eq!(last["container"]["pod_uid"], POD_UID, "{last}");
    assert_eq!(last["container"]["pod_namespace"], "shop", "{last}");
    assert_eq!(
        last["container"]["pod_name"], "hog-7f9c6d5b4-x2v8q",
        "{last}"
    );

    assert_named_everywhere(
        &cgroup,
        &[
            ("runtime", "containerd"),
            ("container_id", ID),
            ("pod_uid", POD_UID),
            ("pod_namespace", "shop"),
            ("pod_name", "hog-7f9c6d5b4-x2v8q"),
            ("container_name", "hog"),
            ("image", IMAGE),
        ],
        &format!("shop/hog-7f9c6d5b4-x2v8q/hog ({IMAGE})"),
        outputs,
    );
}
