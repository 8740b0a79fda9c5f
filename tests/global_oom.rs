//! A global OOM (`CONSTRAINT_NONE`: the node ran out of memory, no memcg limit fired): three
//! "containers" (memcgs with Docker-shaped paths, no limits) hold anon and shmem memory, then
//! one process outside them allocates until the kernel kills it. The stream, the trace file and
//! `memtrace report` (JSON and text) must name the victim, `CONSTRAINT_NONE`, and each
//! container's memory at the kill.
//!
//! This exhausts the memory of the machine it runs on, so it never runs on the host: the test
//! is `#[ignore]`d (the host's `cargo test` lists it as ignored), refuses to run outside the
//! global OOM guest of `cargo xtask vm-test` (a guest with 768 MiB of RAM that runs it alone,
//! with `--ignored`: xtask/src/vm), and protects the test and memtrace from the OOM killer
//! (`oom_score_adj` -1000) while the hog volunteers (+1000).

use std::{
    fs,
    process::{Child, Command, Stdio},
};

use memtrace_tests::{
    Memtrace, TestCgroup, assert_oom_killed, json_lines, kernel_oom_line, oom_line_field,
    report::{docker_name, run_ok},
    spawn_held,
};
use serde_json::Value;

/// The containers: Docker id, how they hold their memory, MiB.
const HOLDERS: [(&str, Hold, u64); 3] = [
    (
        "a1a1a1a1a1a10000000000000000000000000000000000000000000000000000",
        Hold::Anon,
        96,
    ),
    (
        "b2b2b2b2b2b20000000000000000000000000000000000000000000000000000",
        Hold::Anon,
        48,
    ),
    (
        "c3c3c3c3c3c30000000000000000000000000000000000000000000000000000",
        Hold::Shmem,
        64,
    ),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// memhold: touched anonymous memory.
    Anon,
    /// A file in /dev/shm written from inside the container: shmem charged to it.
    Shmem,
}

const MIB: u64 = 1 << 20;

/// Fails unless this is the global OOM guest: anywhere else the hog would take the machine.
fn refuse_outside_the_guest() {
    let guest = std::env::var("MEMTRACE_VM_EXPECT").is_ok_and(|v| v == "global_oom");
    let total = meminfo_kib("MemTotal");
    assert!(
        guest && total <= 2 << 20,
        "refusing to run: this test exhausts the memory of the machine it runs on (a global \
         OOM). It runs only in `cargo xtask vm-test`'s global OOM guest (MEMTRACE_VM_EXPECT=\
         global_oom, at most 2 GiB of RAM); here MEMTRACE_VM_EXPECT={:?}, MemTotal {total} KiB",
        std::env::var("MEMTRACE_VM_EXPECT").ok()
    );
}

fn meminfo_kib(field: &str) -> u64 {
    let text = fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/meminfo:\n{text}"))
}

/// `sh -c` that sets its `oom_score_adj`, joins nothing, and runs `script` or execs the rest.
fn sh_with_score(score: i32, script: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        &format!("echo {score} > /proc/self/oom_score_adj && {script}"),
    ]);
    sh
}

/// A memhold holding `mib` MiB in `cgroup`, started and done touching.
fn hold_anon(cgroup: &TestCgroup, mib: u64) -> Child {
    let mut command = sh_with_score(0, "exec \"$@\"");
    command
        .args(["sh", env!("CARGO_BIN_EXE_memhold")])
        .arg(cgroup.procs_file())
        .arg(mib.to_string());
    spawn_held(command)
}

/// Writes `mib` MiB into /dev/shm from inside `cgroup`: shmem charged to it, after the writer
/// has exited.
fn hold_shmem(cgroup: &TestCgroup, file: &str, mib: u64) {
    let script = format!(
        "echo $$ > '{}' && dd if=/dev/zero of='{file}' bs=1M count={mib} 2>/dev/null",
        cgroup.procs_file().display()
    );
    let status = sh_with_score(0, &script).status().expect("run dd");
    assert!(
        status.success(),
        "writing {mib} MiB to {file} failed: {status}"
    );
}

/// Removes the /dev/shm file at the end, also when the test fails.
struct ShmFile(String);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Runs the hog (memhog, capped at twice the RAM so only the kernel stops it) in `cgroup` with
/// `oom_score_adj` 1000, until the kernel kills it; returns its pid.
fn exhaust_the_node(cgroup: &TestCgroup) -> u32 {
    let cap_mib = 2 * meminfo_kib("MemTotal") / 1024;
    let mut hog = sh_with_score(1000, "exec \"$@\"")
        .args(["sh", env!("CARGO_BIN_EXE_memhog")])
        .arg(cgroup.procs_file())
        .arg(cap_mib.to_string())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn memhog");
    let pid = hog.id();
    let status = hog.wait().expect("wait for memhog");
    assert_oom_killed(pid, status);
    pid
}

#[test]
#[ignore = "exhausts the node's memory (a global OOM): runs only in `cargo xtask vm-test`'s \
            small-RAM guest (xtask/src/vm, Mode::GlobalOom), with --ignored"]
fn a_global_oom_names_constraint_none_the_victim_and_the_containers_memory() {
    refuse_outside_the_guest();
    // The harness (and memtrace, its child) must outlive the OOM killer's choice.
    fs::write("/proc/self/oom_score_adj", "-1000").expect("protect the test from the OOM killer");
    let needed = HOLDERS.iter().map(|h| h.2).sum::<u64>() + 128;
    let available = meminfo_kib("MemAvailable") / 1024;
    assert!(
        available >= needed,
        "the guest has {available} MiB available; the containers and memtrace need {needed} MiB"
    );

    let top = TestCgroup::unlimited("global-oom");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let trace = dir.path().join("global-oom.mtrace");
    let trace = trace.to_str().expect("UTF-8 path");
    // Samples every 10 s: the containers' memory at the kill is the census memtrace takes when
    // it sees a global OOM, not a periodic sample that happened to be near.
    let memtrace = Memtrace::start(&[
        "record",
        "-o",
        trace,
        "--print",
        "json",
        "--stats-interval",
        "10s",
    ]);

    let containers: Vec<TestCgroup> = HOLDERS
        .iter()
        .map(|(id, ..)| top.child(&format!("docker-{id}.scope"), None))
        .collect();
    let shm = ShmFile(format!(
        "/dev/shm/memtrace-global-oom-{}",
        std::process::id()
    ));
    let mut holders = Vec::new();
    for ((_, hold, mib), cgroup) in HOLDERS.iter().zip(&containers) {
        match hold {
            Hold::Anon => holders.push(hold_anon(cgroup, *mib)),
            Hold::Shmem => hold_shmem(cgroup, &shm.0, *mib),
        }
    }
    let hog_cgroup = top.child("hog", None);
    let pid = exhaust_the_node(&hog_cgroup);
    let line = kernel_oom_line(pid).unwrap_or_else(|| panic!("no oom-kill line for pid {pid}"));
    assert_eq!(
        oom_line_field(&line, "constraint"),
        Some("CONSTRAINT_NONE"),
        "the kernel itself must call it a global OOM: {line}"
    );
    // Time for the census to be written (stretched under emulation); the holders survived.
    let slowdown: u64 = std::env::var("MEMTRACE_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    std::thread::sleep(std::time::Duration::from_secs((2 * slowdown.max(1)).min(8)));
    let out = memtrace.stop_ok();
    for mut holder in holders {
        assert!(
            holder.try_wait().expect("memhold").is_none(),
            "the OOM killer took a container's memhold, not the hog"
        );
        let _ = holder.kill();
        let _ = holder.wait();
    }

    check_stream(&json_lines(&out.stdout), pid, &containers);
    check_report(trace, pid, &containers);
}

/// The stream: the kill with `CONSTRAINT_NONE` and no limit memcg, then a `stats` sample of
/// every container (the census).
fn check_stream(events: &[Value], pid: u32, containers: &[TestCgroup]) {
    let kill = events
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill of pid {pid} in the stream"));
    assert_eq!(kill["constraint"], "CONSTRAINT_NONE", "{kill:#}");
    assert!(kill["limit_cgroup"].is_null(), "{kill:#}");
    let kill_ns = kill["timestamp_ns"].as_u64().expect("timestamp_ns");
    for cgroup in containers {
        assert!(
            events.iter().any(|e| e["type"] == "stats"
                && e["cgroup"] == cgroup.path.as_str()
                && e["timestamp_ns"].as_u64() >= Some(kill_ns)),
            "no stats sample of {} after the kill at {kill_ns}",
            cgroup.path
        );
    }
}

/// The report, JSON and text: the kill's verdict is the node running out, and it lists each
/// container with its memory.
fn check_report(trace: &str, pid: u32, containers: &[TestCgroup]) {
    let json: Value =
        serde_json::from_str(&run_ok(&["report", trace, "--format", "json"])).expect("JSON");
    let kill = json["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .flat_map(|c| c["oom_kills"].as_array().into_iter().flatten())
        .find(|k| k["pid"] == pid)
        .unwrap_or_else(|| panic!("no OOM kill of pid {pid} in the report: {json:#}"));
    assert_eq!(kill["constraint"], "CONSTRAINT_NONE", "{kill:#}");
    assert_eq!(kill["comm"], "memhog", "{kill:#}");
    assert_eq!(kill["verdict"]["kind"], "node_out_of_memory", "{kill:#}");
    eprintln!("global OOM verdict: {}", kill["verdict"]["reason"]);
    let listed = kill["node_holders"].as_array().expect("node_holders");
    for ((id, hold, mib), cgroup) in HOLDERS.iter().zip(containers) {
        let holder = listed
            .iter()
            .find(|h| h["cgroup"] == cgroup.path.as_str())
            .unwrap_or_else(|| panic!("{} not among the holders: {kill:#}", cgroup.path));
        assert_eq!(holder["name"], docker_name(id), "{holder:#}");
        assert_eq!(holder["source"], "census_after_kill", "{holder:#}");
        let at_least = |field: &str| {
            let bytes = holder[field].as_u64().unwrap_or(0);
            assert!(
                bytes >= mib * MIB * 9 / 10,
                "{} held {mib} MiB ({field}), the report says {bytes} B: {holder:#}",
                cgroup.path
            );
        };
        at_least("usage_bytes");
        at_least(match hold {
            Hold::Anon => "anon_bytes",
            Hold::Shmem => "shmem_bytes",
        });
    }
    let summary = &json["summary"]["kill_groups"];
    assert!(
        summary
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["constraint"] == "CONSTRAINT_NONE")),
        "{summary:#}"
    );

    let text = run_ok(&["report", trace]);
    for needle in [
        "no memcg limit fired: the node itself ran out of memory (global OOM)".to_owned(),
        "node out of memory: no memcg limit fired: the node ran out of memory".to_owned(),
        format!("killed memhog (pid {pid})"),
        "at the kill the containers held:".to_owned(),
    ]
    .iter()
    .chain(
        HOLDERS
            .iter()
            .map(|(id, ..)| docker_name(id))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert!(
            text.contains(needle.as_str()),
            "{needle:?} not in the report:\n{text}"
        );
    }
}
