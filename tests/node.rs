//! A node with many containers, smaller than `cargo xtask bench node`: 200 memcgs shaped like
//! podman's (`machine.slice/libpod-<id>.scope`), each with a process that adds page cache and
//! slab and keeps its memcg in use, so memtrace names them and the kernel side keeps their
//! memcg pointers (memtrace drops one no interval counted for 30 intervals). Once the
//! containers are gone both sides forget them: memtrace's tables and the kernel's `MEMCG_IDS`
//! map, as memtrace's debug log counts them after each interval's drain. memtrace's peak RSS
//! is printed, not asserted: its target (40 MB at 1 000 containers) is a performance goal,
//! measured by `cargo xtask bench node` (in the VM guests, where fentry is allowed, it was
//! 57–88 MB at 200 containers with two whole parses of the kernel's BTF, 30–34 MB without:
//! issue 14). memtrace's `kernel offsets` and strategy lines are printed beside its start-up
//! memory, to compare runs.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
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
/// `timeout`, calling `meanwhile` about every five seconds; returns the last sizes seen and
/// whether they did.
fn wait_sizes(
    memtrace: &mut Memtrace,
    timeout: Duration,
    done: impl Fn(&Sizes) -> bool,
    mut meanwhile: impl FnMut(),
) -> (Sizes, bool) {
    let begun = Instant::now();
    let mut last = None;
    let mut sizes = Sizes::default();
    let mut nudged = Instant::now();
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
        if begun.elapsed() > timeout {
            let last = last.unwrap_or_else(|| {
                panic!("memtrace drained no interval within {timeout:?} (no debug line)")
            });
            return (last, false);
        }
        if nudged.elapsed() >= Duration::from_secs(5) {
            meanwhile();
            nudged = Instant::now();
            eprintln!("node: waiting, last interval: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Progress on stderr (seen with `--nocapture`), so a slow guest shows which step it is in.
fn step(begun: Instant, what: &str) {
    eprintln!("node: {:6.1} s  {what}", begun.elapsed().as_secs_f64());
}

/// `nr_dying_descendants` of a v2 cgroup, for the failure message.
fn dying(cgroup: &TestCgroup) -> String {
    fs::read_to_string(cgroup.dir.join("cgroup.stat"))
        .ok()
        .and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("nr_dying_descendants ").map(str::to_owned))
        })
        .map_or_else(|| "not counted (v1)".to_owned(), |n| n.trim().to_owned())
}

/// Where a process's resident memory is, from `/proc/PID/smaps`: the resident kB of each kind
/// of mapping (heap and anonymous, the executable, BPF maps such as ring buffers, the rest),
/// with `smaps_rollup`'s totals, for the peak RSS line.
fn rss_breakdown(pid: u32) -> String {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let exe = exe.to_string_lossy();
    let mut kinds: Vec<(String, u64)> = Vec::new();
    let mut kind = String::new();
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, total)) => *total += kb,
                None => kinds.push((kind.clone(), kb)),
            }
        } else if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|perms| perms.len() == 4)
            && line.contains('-')
        {
            let name = line.split_whitespace().nth(5).unwrap_or("");
            kind = match name {
                "" | "[heap]" => "heap and anonymous".to_owned(),
                n if n == exe => "memtrace's executable".to_owned(),
                n if n.contains("bpf") => format!("{n} (BPF maps: ring buffers, arrays)"),
                n => n.to_owned(),
            };
        }
    }
    kinds.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let totals: Vec<String> = status
        .lines()
        .filter(|l| l.starts_with("Rss"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let kinds: Vec<String> = kinds
        .iter()
        .filter(|(_, kb)| *kb > 0)
        .map(|(k, kb)| format!("  {kb:>8} kB  {k}"))
        .collect();
    format!("{}\n{}", totals.join("; "), kinds.join("\n"))
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
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = String::new();
        let read = BufReader::new(stdout).read_line(&mut ready);
        let _ = tx.send(read.map(|_| ready));
    });
    let timeout = Duration::from_secs(30 * u64::from(slowdown()));
    match rx.recv_timeout(timeout) {
        Ok(Ok(ready)) => assert_eq!(ready.trim(), "ready", "tenant {i} failed"),
        Ok(Err(e)) => panic!("tenant {i}'s ready line: {e}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("tenant {i} was not ready within {timeout:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("tenant {i}'s reader ended"),
    }
    (cgroup, child)
}

#[test]
fn released_containers_are_forgotten_on_both_sides() {
    let slow = u64::from(slowdown());
    let begun = Instant::now();
    let mut memtrace = Memtrace::start_with_env(
        &["run", "--format", "json", "--stats-interval", "0"],
        &[(
            "RUST_LOG",
            "memtrace::pipeline=debug,memtrace::startup=debug,memtrace::probes=debug",
        )],
    );
    // Where the memory went while starting (it differs with what the kernel allows).
    for line in memtrace.stderr_at_start() {
        if line.contains("start-up memory:")
            || line.contains("aya btf")
            || line.contains("kernel offsets:")
            || line.contains("memtrace::probes::plan")
        {
            eprintln!("node: {line}");
        }
    }
    let (before, _) = wait_sizes(&mut memtrace, Duration::from_secs(30), |_| true, || {});
    step(begun, &format!("memtrace attached, before: {before:?}"));

    let base = TestCgroup::new("node", 4 << 30);
    let machine = base.child("machine.slice", None);
    let files = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut containers: Vec<(TestCgroup, Child)> = (0..CONTAINERS)
        .map(|i| start_tenant(&machine, files.path(), i))
        .collect();
    step(begun, &format!("{CONTAINERS} tenants ready"));
    let (full, named) = wait_sizes(
        &mut memtrace,
        Duration::from_secs(30 * slow).max(Duration::from_secs(60)),
        |s| {
            s.names >= before.names + CONTAINERS - SLACK
                && s.kernel_memcg_ids >= before.kernel_memcg_ids + CONTAINERS - SLACK
        },
        || {},
    );
    step(begun, &format!("with the tenants: {full:?}"));
    assert!(
        named,
        "memtrace did not name the {CONTAINERS} containers: before {before:?}, now {full:?}"
    );
    let rss = peak_rss(memtrace.pid());
    eprintln!(
        "memtrace's peak RSS with {CONTAINERS} containers: {} kB; resident now:\n{}",
        rss / 1000,
        rss_breakdown(memtrace.pid())
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
    step(begun, "tenants and their cgroups removed");
    // What stays charged to a removed memcg (the file system's metadata it read first, a
    // CPU's charge stock) keeps it dying: reclaiming the parent again and again frees them.
    // Not dropping caches again and again: each time frees slab objects that charged the
    // removed memcgs' (reparented) obj_cgroups, whose MEMCG_IDS entries that keeps in use.
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    let reclaim = || base.reclaim_all();
    reclaim();
    let (after, forgotten) = wait_sizes(
        &mut memtrace,
        Duration::from_secs(30 * slow).max(Duration::from_secs(90)),
        |s| {
            s.all()
                .iter()
                .zip(before.all())
                .all(|((_, now), (_, then))| *now <= then + SLACK)
        },
        reclaim,
    );
    step(begun, &format!("after: {after:?}"));
    let dying = dying(&base);
    let finished = memtrace.stop_ok();
    assert!(
        forgotten,
        "memtrace still holds the removed containers: before {before:?}, with them {full:?}, \
         after {after:?}; dying memcgs below the test's cgroup: {dying}\n{}",
        finished
            .stderr
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
