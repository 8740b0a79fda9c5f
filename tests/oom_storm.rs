//! An OOM storm: 20 memcgs, each OOM-killed 5 times within 20 s. The kernel rate-limits its OOM
//! report (ten a burst), so most kills come without the `oom-kill:` line memtrace waits for:
//! every kill must still be reported, none lost, each within a second of the kill (times the
//! slowdown of an emulated VM guest, `MEMTRACE_TEST_SLOWDOWN`).

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use memtrace_tests::{TestCgroup, boot_ns, memtrace_bin};

const MEMCGS: usize = 20;
const KILLS_EACH: usize = 5;
/// Small, so a kill is quick also under emulation in the VM tests.
const LIMIT: u64 = 16 << 20;
const CAP_MIB: u64 = 1024;
const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");

/// How much slower than a real machine this one runs: `cargo xtask vm-test` sets it for guests
/// under emulation (TCG), where every wall-clock bound here stretches by as much.
fn slowdown() -> u32 {
    std::env::var("MEMTRACE_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// `memtrace run --format json`, each line of its stdout stamped with when it was read: how late
/// an event is, is that minus its timestamp.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<(u64, String)>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    readers: [thread::JoinHandle<()>; 2],
}

impl Streaming {
    /// Starts memtrace and waits for its "attached" line.
    fn start() -> Self {
        let mut child = Command::new(memtrace_bin())
            .args(["run", "--format", "json", "--stats-interval", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let (lines_tx, lines) = mpsc::channel::<(u64, String)>();
        let stdout = child.stdout.take().expect("stdout");
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send((boot_ns(), line)).is_err() {
                    break;
                }
            }
        });
        let (err_tx, stderr_lines) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("stderr");
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self {
            child,
            lines,
            stderr_lines,
            stderr_seen: Vec::new(),
            readers: [out_reader, err_reader],
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = me
                .stderr_lines
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            let attached = line.starts_with("memtrace: attached");
            me.stderr_seen.push(line);
            if attached {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "memtrace did not attach within 30 s:\n{}",
                me.stderr_seen.join("\n")
            );
        }
    }

    /// Stops it with Ctrl-C: its exit status, stamped stdout lines and stderr.
    fn stop(mut self) -> (ExitStatus, Vec<(u64, String)>, String) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(i32::try_from(self.child.id()).expect("pid"), libc::SIGINT) };
        let status = self.child.wait().expect("wait for memtrace");
        for reader in self.readers {
            reader.join().expect("reader");
        }
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        (
            status,
            self.lines.try_iter().collect(),
            self.stderr_seen.join("\n"),
        )
    }
}

#[test]
fn every_kill_of_an_oom_storm_is_reported_within_a_second() {
    let cgroups: Vec<TestCgroup> = (0..MEMCGS)
        .map(|i| TestCgroup::new(&format!("storm{i}"), LIMIT))
        .collect();

    let memtrace = Streaming::start();
    let started = Instant::now();
    let killed: Vec<(String, u32)> = thread::scope(|s| {
        let workers: Vec<_> = cgroups
            .iter()
            .map(|cgroup| {
                s.spawn(move || {
                    (0..KILLS_EACH)
                        .map(|_| {
                            let pid = cgroup.oom_kill_memhog(MEMHOG, CAP_MIB);
                            (cgroup.path.clone(), pid)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let storm = started.elapsed();
    let bound = Duration::from_secs(1) * slowdown();
    assert!(
        storm < Duration::from_secs(20) * slowdown(),
        "the storm took {storm:?}, not a storm: the test cannot show what it is for"
    );
    for cgroup in &cgroups {
        assert_eq!(
            cgroup.kernel_oom_kills(),
            KILLS_EACH as u64,
            "kernel's own oom_kill count of {}",
            cgroup.path
        );
    }
    // Every kill's event comes within a second (a held kill waits 150 ms at most for the
    // kernel's line); give the last ones that second, then stop.
    thread::sleep(bound + Duration::from_millis(500));
    let (status, lines, stderr) = memtrace.stop();
    assert!(status.success(), "memtrace failed ({status}):\n{stderr}");

    let mut reported: HashMap<u32, (String, u64)> = HashMap::new();
    let mut lateness = Vec::new();
    let events = lines.len();
    for (read_ns, line) in lines {
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["type"] != "oom_kill" {
            continue;
        }
        let pid = u32::try_from(event["pid"].as_u64().expect("pid")).expect("pid");
        let at = event["timestamp_ns"].as_u64().expect("timestamp_ns");
        let late = Duration::from_nanos(read_ns.saturating_sub(at));
        lateness.push(late);
        assert!(
            late < bound,
            "the kill of pid {pid} was reported {late:?} after it: {event}"
        );
        let cgroup = event["cgroup"].as_str().unwrap_or_default().to_owned();
        assert!(
            reported.insert(pid, (cgroup, at)).is_none(),
            "pid {pid} reported twice"
        );
    }
    for (cgroup, pid) in &killed {
        let (seen, _) = reported
            .get(pid)
            .unwrap_or_else(|| panic!("the kill of pid {pid} in {cgroup} was not reported"));
        assert_eq!(seen, cgroup, "pid {pid}");
    }
    assert!(
        stderr.contains(" 0 lost"),
        "the summary must say nothing was lost:\n{stderr}"
    );
    lateness.sort();
    eprintln!(
        "{} kills in {storm:?} among {events} events, all reported; after the kill: median \
         {:?}, 90th percentile {:?}, latest {:?}",
        killed.len(),
        lateness[lateness.len() / 2],
        lateness[lateness.len() * 9 / 10],
        lateness[lateness.len() - 1],
    );
}
