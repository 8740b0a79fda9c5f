//! A node with many containers, smaller than `cargo xtask bench node`: 200 memcgs shaped like
//! podman's (`machine.slice/libpod-<id>.scope`), each with a process that adds page cache and
//! slab, so memtrace names them and the kernel side keeps their memcg pointers. Once the
//! containers are gone both sides forget them: memtrace's tables and the kernel's `MEMCG_IDS`
//! map, as memtrace's debug log counts them after each interval's drain. memtrace's peak RSS
//! is printed, not asserted: its target (40 MB at 1 000 containers) is a performance goal,
//! measured by `cargo xtask bench node` (in the VM guests, where fentry is allowed and aya
//! parses the kernel's BTF, it is 57–88 MB at 200 containers: issue 14).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{Memtrace, TestCgroup};

const TENANT: &str = env!("CARGO_BIN_EXE_tenant");
const CONTAINERS: u64 = 200;
/// Others' cgroups on a shared machine come and go meanwhile.
const SLACK: u64 = 50;

fn slowdown() -> u32 {
    std::env::var("MEMTRACE_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The sizes memtrace's debug log gives after an interval's drain.
#[derive(Clone, Copy, Debug, Default)]
struct Sizes {
    kernel_memcg_ids: u64,
    memcg_pointers: u64,
    names: u64,
    paths: u64,
    runtime_names: u64,
}

impl Sizes {
    fn all(self) -> [(&'static str, u64); 5] {
        [
            ("kernel MEMCG_IDS entries", self.kernel_memcg_ids),
            ("memcg pointers", self.memcg_pointers),
            ("memcgs named", self.names),
            ("cgroup paths", self.paths),
            ("containers' runtime names", self.runtime_names),
        ]
    }
}

/// `name: 12` in a `Debug`-printed struct.
fn field(line: &str, name: &str) -> Option<u64> {
    let (_, rest) = line.split_once(&format!(" {name}: "))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads memtrace's new debug lines until an interval's sizes satisfy `done`, for up to
/// `timeout`; returns the last sizes seen and whether they did.
fn wait_sizes(
    memtrace: &mut Memtrace,
    timeout: Duration,
    done: impl Fn(&Sizes) -> bool,
) -> (Sizes, bool) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut sizes = Sizes::default();
    loop {
        for line in memtrace.new_stderr() {
            if line.contains("kernel maps drained in ") {
                sizes.kernel_memcg_ids = field(&line, "kernel_memcg_ids").expect("MEMCG_IDS");
                sizes.memcg_pointers = field(&line, "memcg_pointers").expect("pointers");
            } else if line.contains(" events made in ") {
                sizes.names = field(&line, "names").expect("names");
                sizes.paths = field(&line, "paths").expect("paths");
                sizes.runtime_names = field(&line, "runtime_names").expect("runtime_names");
                last = Some(sizes);
                if done(&sizes) {
                    return (sizes, true);
                }
            }
        }
        if Instant::now() > deadline {
            return (last.expect("memtrace drained no interval"), false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// A container: its memcg and its process.
fn start_tenant(machine: &TestCgroup, files: &std::path::Path, i: u64) -> (TestCgroup, Child) {
    let cgroup = machine.child(
        &format!("libpod-{:032x}{i:032x}.scope", std::process::id()),
        None,
    );
    let dir = files.join(i.to_string());
    fs::create_dir(&dir).expect("tenant's directory");
    let mut child = Command::new(TENANT)
        .arg(cgroup.procs_file())
        .arg(&dir)
        .arg("256")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tenant");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("tenant's ready line");
    assert_eq!(ready.trim(), "ready", "tenant {i} failed");
    (cgroup, child)
}

#[test]
fn released_containers_are_forgotten_on_both_sides() {
    let slow = slowdown();
    let mut memtrace = Memtrace::start_with_env(
        &["run", "--format", "json", "--stats-interval", "0"],
        &[("RUST_LOG", "memtrace::pipeline=debug")],
    );
    let (before, _) = wait_sizes(&mut memtrace, Duration::from_secs(30), |_| true);

    let base = TestCgroup::new("node", 4 << 30);
    let machine = base.child("machine.slice", None);
    let files = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut containers: Vec<(TestCgroup, Child)> = (0..CONTAINERS)
        .map(|i| start_tenant(&machine, files.path(), i))
        .collect();
    let (full, named) = wait_sizes(
        &mut memtrace,
        Duration::from_secs(60 * u64::from(slow)),
        |s| {
            s.names >= before.names + CONTAINERS - SLACK
                && s.kernel_memcg_ids >= before.kernel_memcg_ids + CONTAINERS - SLACK
        },
    );
    assert!(
        named,
        "memtrace did not name the {CONTAINERS} containers: before {before:?}, now {full:?}"
    );
    let rss = peak_rss(memtrace.pid());
    eprintln!(
        "memtrace's peak RSS with {CONTAINERS} containers: {} kB",
        rss / 1000
    );

    // Gone as a runtime removes them: processes killed, files deleted (their page cache with
    // them, so the kernel can free the memcgs), cgroups removed.
    for (cgroup, mut child) in containers.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
        drop(cgroup);
    }
    drop(files);
    drop(machine);
    base.reclaim_all();
    let (after, forgotten) = wait_sizes(
        &mut memtrace,
        Duration::from_secs(90 * u64::from(slow)),
        |s| {
            s.all()
                .iter()
                .zip(before.all())
                .all(|((_, now), (_, then))| *now <= then + SLACK)
        },
    );
    let finished = memtrace.stop_ok();
    assert!(
        forgotten,
        "memtrace still holds the removed containers: before {before:?}, with them {full:?}, \
         after {after:?}\n{}",
        finished
            .stderr
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
