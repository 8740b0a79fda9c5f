//! Containers, pods and the memcg's own story, on cgroups shaped the way Kubernetes and Docker
//! shape them: which limit fired, names that outlive the cgroup, dying memcgs, stats.

use std::{fs, process::Command, thread, time::Duration};

use memtrace_tests::{
    Memtrace, TestCgroup, events_in, json_lines, kernel_oom_line, oom_kills_in, oom_line_field,
};

const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");
const LIMIT: u64 = 64 << 20;
const POD_UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const CONTAINER_ID: &str = "4c01db0b339c5c5ba5f8e1b2a9d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f";

/// `/memtrace-test-…/kubepods/burstable/pod<uid>/<container id>` with the limit on the pod, as
/// the kubelet's cgroupfs driver lays it out.
struct PodCgroups {
    container: TestCgroup,
    pod: TestCgroup,
    burstable: TestCgroup,
    kubepods: TestCgroup,
    _base: TestCgroup,
}

impl PodCgroups {
    fn new(name: &str, pod_limit: u64) -> Self {
        let base = TestCgroup::new(name, 1 << 30);
        let kubepods = base.child("kubepods", None);
        let burstable = kubepods.child("burstable", None);
        let pod = burstable.child(&format!("pod{POD_UID}"), Some(pod_limit));
        let container = pod.child(CONTAINER_ID, None);
        Self {
            container,
            pod,
            burstable,
            kubepods,
            _base: base,
        }
    }

    /// Removes the container and pod cgroups now (children first), as the kubelet does.
    fn remove(self) {
        let Self {
            container,
            pod,
            burstable,
            kubepods,
            _base,
        } = self;
        drop(container);
        drop(pod);
        drop(burstable);
        drop(kubepods);
    }
}

#[test]
fn oom_under_a_pod_limit_names_the_pod_as_the_limit_and_keeps_names_after_removal() {
    let pod = PodCgroups::new("podlimit", LIMIT);
    let memtrace = Memtrace::json(&[]);
    let pid = pod.container.oom_kill_memhog(MEMHOG, 1024);
    let container_path = pod.container.path.clone();
    let pod_path = pod.pod.path.clone();
    // Gone right after the kill, before memtrace may even have looked.
    pod.remove();
    let out = memtrace.stop_ok();

    let events = json_lines(&out.stdout);
    let kills = oom_kills_in(&events, &container_path);
    assert_eq!(
        kills.len(),
        1,
        "one oom_kill in {container_path}: {events:#?}"
    );
    let kill = kills[0];
    assert_eq!(kill["pid"], pid, "{kill}");
    assert_eq!(kill["container"]["container_id"], CONTAINER_ID, "{kill}");
    assert_eq!(kill["container"]["pod_uid"], POD_UID, "{kill}");
    assert_eq!(kill["container"]["qos_class"], "Burstable", "{kill}");
    assert_eq!(kill["constraint"], "CONSTRAINT_MEMCG", "{kill}");
    assert_eq!(
        kill["limit_cgroup"],
        pod_path.as_str(),
        "the pod's limit fired: {kill}"
    );
    assert_eq!(kill["limit_container"]["pod_uid"], POD_UID, "{kill}");
    assert!(
        kill["limit_container"]["container_id"].is_null(),
        "the limit is the pod's, not a container's: {kill}"
    );
    // The kernel agrees on both memcgs.
    let line = kernel_oom_line(pid).expect("kernel oom-kill line");
    assert_eq!(
        oom_line_field(&line, "oom_memcg"),
        Some(pod_path.as_str()),
        "{line}"
    );
    assert_eq!(
        oom_line_field(&line, "task_memcg"),
        Some(container_path.as_str()),
        "{line}"
    );

    // The container's own memcg has no limit; the pod's is what the operator must raise.
    assert!(kill["memcg_limit_bytes"].is_null(), "{kill}");
    // The pod's memory at the kill, from the kernel's report: the pod is gone by now.
    let memory = kill["memory"]
        .as_object()
        .unwrap_or_else(|| panic!("the pod's memory at the kill: {kill}"));
    assert_eq!(memory["limit_bytes"], LIMIT, "{kill}");
    let usage = memory["usage_bytes"].as_u64().expect("usage");
    let inactive = memory["inactive_file_bytes"]
        .as_u64()
        .expect("inactive_file");
    assert_eq!(
        memory["working_set_bytes"],
        usage.saturating_sub(inactive),
        "{kill}"
    );

    // The cgroups' names outlive them: their removal is reported with names and identity.
    let removed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "cgroup" && e["action"] == "removed")
        .filter(|e| e["cgroup"] == container_path.as_str() || e["cgroup"] == pod_path.as_str())
        .collect();
    assert_eq!(removed.len(), 2, "{events:#?}");
    assert!(
        removed.iter().all(|e| e["container"]["pod_uid"] == POD_UID),
        "{removed:#?}"
    );
}

#[test]
fn memory_of_the_limit_that_fired_is_captured_at_the_kill() {
    let pod = PodCgroups::new("podmemory", LIMIT);
    let memtrace = Memtrace::json(&[]);
    let _ = pod.container.oom_kill_memhog(MEMHOG, 1024);
    let out = memtrace.stop();
    let events = json_lines(&out.stdout);
    let kills = oom_kills_in(&events, &pod.container.path);
    assert_eq!(kills.len(), 1, "{events:#?}");
    let memory = &kills[0]["memory"];
    assert_eq!(
        kills[0]["memory_source"], "kernel_oom_report",
        "captured at the kill, not after: {}",
        kills[0]
    );
    assert_eq!(memory["limit_bytes"], LIMIT, "{memory}");
    let usage = memory["usage_bytes"].as_u64().expect("usage");
    assert!(
        usage > LIMIT / 2 && usage <= LIMIT,
        "pod usage at the kill: {memory}"
    );
    let anon = memory["anon_bytes"].as_u64().expect("anon");
    assert!(anon > LIMIT / 2, "the pod's memory was anon: {memory}");
    // Kernel memory as the kernel counts it: v2's memory.stat `kernel` line (5.18+), its
    // parts before 5.18 (`slab`, `kernel_stack`, ...), or v1's kmem counter. A kernel with none
    // of them gives none, and memtrace makes none up.
    let stat = fs::read_to_string(pod.pod.dir.join("memory.stat")).expect("the pod's memory.stat");
    let kernel_counts_it = stat
        .lines()
        .any(|line| line.starts_with("kernel ") || line.starts_with("slab "))
        || pod.pod.dir.join("memory.kmem.usage_in_bytes").exists();
    assert_eq!(
        memory["kernel_bytes"].as_u64().is_some(),
        kernel_counts_it,
        "kernel memory when the kernel counts it: {memory}"
    );
}

#[test]
fn a_removed_memcg_with_page_cache_is_dying_until_caches_are_dropped() {
    // A file on a disk filesystem (not tmpfs: shmem cannot be dropped), cached from inside the
    // memcg so its pages are charged there.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let file = dir.path().join("cached");
    fs::write(&file, vec![0x42u8; 16 << 20]).expect("write file");
    // Written back first: drop_caches leaves dirty pages alone.
    fs::File::open(&file)
        .and_then(|f| f.sync_all())
        .expect("sync file");
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");

    let parent = TestCgroup::new("dying", 1 << 30);
    let cgroup = parent.child("app", None);
    let memtrace = Memtrace::json(&[]);
    let input = format!("if={}", file.display());
    let (_, status) = cgroup.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
    assert!(status.success(), "dd failed: {status}");
    let path = cgroup.path.clone();
    drop(cgroup);
    thread::sleep(Duration::from_millis(300));
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    // What is left charged to the dying memcg counts in its parent: reclaiming the parent frees
    // it for good (drop_caches alone skips pages that are briefly busy).
    parent.reclaim_all();
    thread::sleep(Duration::from_secs(2));
    let out = memtrace.stop_ok();

    let events = json_lines(&out.stdout);
    let ours = events_in(&events, "cgroup", &path);
    let removed = ours
        .iter()
        .find(|e| e["action"] == "removed")
        .unwrap_or_else(|| panic!("no removal of {path}: {events:#?}"));
    assert_eq!(removed["dying"], true, "{removed}");
    let charged = removed["charged_bytes"].as_u64().expect("charged bytes");
    assert!(
        charged >= 12 << 20,
        "the 16 MiB of page cache should pin it: {removed}"
    );
    let freed = ours
        .iter()
        .find(|e| e["action"] == "freed")
        .unwrap_or_else(|| panic!("{path} not freed after drop_caches: {ours:#?}"));
    assert_eq!(freed["memcg_id"], removed["memcg_id"]);
    assert!(
        freed["dying_ns"].as_u64().is_some_and(|ns| ns > 0),
        "{freed}"
    );
}

#[test]
fn stats_are_sampled_per_container_and_pod_and_filters_select_them() {
    let pod = PodCgroups::new("stats", LIMIT);
    let memtrace = Memtrace::start(&[
        "run",
        "--format",
        "json",
        "--stats-interval",
        "500ms",
        "--pod",
        POD_UID,
    ]);
    thread::sleep(Duration::from_millis(1800));
    let out = memtrace.stop_ok();
    let events = json_lines(&out.stdout);
    assert!(
        events
            .iter()
            .all(|e| e["container"]["pod_uid"] == POD_UID || e["type"] == "oom_kill"),
        "--pod shows only that pod: {events:#?}"
    );
    let pod_stats = events_in(&events, "stats", &pod.pod.path);
    assert!(pod_stats.len() >= 2, "sampled every 500 ms: {events:#?}");
    assert_eq!(pod_stats[0]["limit_bytes"], LIMIT);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "stats" && e["cgroup"] == pod.container.path.as_str()),
        "the container is sampled too: {events:#?}"
    );
    drop(pod);
}

#[test]
fn docker_and_systemd_shaped_cgroups_are_named_from_creation_on() {
    let base = TestCgroup::new("docker", 1 << 30);
    let memtrace = Memtrace::json(&[]);
    let docker = base.child("docker", None);
    let container = docker.child(CONTAINER_ID, None);
    let slice = base.child("system.slice", None);
    let scope = slice.child(&format!("docker-{CONTAINER_ID}.scope"), None);
    let service = slice.child("nginx.service", None);
    let paths = [
        container.path.clone(),
        scope.path.clone(),
        service.path.clone(),
    ];
    drop((service, scope, slice, container, docker));
    let out = memtrace.stop_ok();
    let events = json_lines(&out.stdout);
    let created = |path: &str| {
        events
            .iter()
            .find(|e| e["type"] == "cgroup" && e["action"] == "created" && e["cgroup"] == path)
            .unwrap_or_else(|| panic!("no creation of {path}: {events:#?}"))
    };
    for path in &paths[..2] {
        let e = created(path);
        assert_eq!(e["container"]["runtime"], "docker", "{e}");
        assert_eq!(e["container"]["container_id"], CONTAINER_ID, "{e}");
    }
    assert_eq!(
        created(&paths[2])["container"]["systemd_unit"],
        "nginx.service"
    );
}

#[test]
fn dying_memcgs_are_counted_at_start_up_and_listed_at_the_end() {
    // Files on tmpfs are shmem: no drop_caches (another test may run one) can free them, so the
    // memcg they are charged to stays dying until they are deleted.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mount = dir.path().to_str().expect("utf-8");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "memtrace-test", mount])
        .status()
        .expect("run mount");
    assert!(status.success(), "mount tmpfs on {mount}: {status}");
    let _unmount = Unmount(mount.to_owned());

    // Threshold 0: whatever the count on this machine, the warning must be printed.
    let memtrace = Memtrace::start(&["run", "--stats-interval", "0", "--dying-warn", "0"]);
    let cgroup = TestCgroup::new("stilldying", 1 << 30);
    let output = format!("of={mount}/pinned");
    let (_, status) = cgroup.run_inside(
        "dd",
        &["if=/dev/zero", &output, "bs=1M", "count=8", "status=none"],
    );
    assert!(status.success(), "dd failed: {status}");
    let path = cgroup.path.clone();
    drop(cgroup);
    thread::sleep(Duration::from_millis(300));
    let out = memtrace.stop_ok();
    assert!(
        out.stderr.contains("memtrace: WARNING: ")
            && out.stderr.contains("memory cgroups are dying"),
        "{}",
        out.stderr
    );
    let still = out
        .stderr
        .lines()
        .find(|l| l.starts_with("memtrace: still dying: ") && l.contains(&path))
        .unwrap_or_else(|| panic!("{path} must still be dying:\n{}", out.stderr));
    // The 8 MiB of shmem pin it, plus a few pages of its own.
    let mib: f64 = still
        .split(", ")
        .nth(1)
        .and_then(|s| s.strip_suffix("MiB charged at removal)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no charged size in {still}"));
    assert!((8.0..9.0).contains(&mib), "{still}");
}

/// Unmounts a test tmpfs, also when the test fails.
struct Unmount(String);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
