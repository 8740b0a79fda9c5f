//! Helpers for integration tests that run the real memtrace binary on the real kernel: memory
//! cgroups that clean up after themselves, a memtrace process that is stopped like a user stops
//! it, and the kernel's own counters to compare with.
//!
//! Nothing here skips: a scenario that cannot be set up panics with the reason.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic, with the reason, when a scenario cannot run"
)]

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use memtrace::attribution::{CgroupVersion, MemoryHierarchy};

pub mod files;
pub mod prometheus;
pub mod report;
pub mod runtimes;
pub mod storm;
pub mod tmux;

/// The memtrace binary under test: `MEMTRACE_BIN` (set by `cargo xtask test`), else the debug
/// build next to this test binary.
#[must_use]
pub fn memtrace_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MEMTRACE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/oom_kill-HASH → target/debug/memtrace
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("memtrace"))
        .expect("test binary has no target dir");
    assert!(
        candidate.is_file(),
        "memtrace binary not found at {}: run the tests with `cargo xtask test`, or set MEMTRACE_BIN",
        candidate.display()
    );
    candidate
}

/// A memory cgroup created for one test, with a limit; removed on drop (its processes killed
/// first), also when the test fails.
pub struct TestCgroup {
    hierarchy: MemoryHierarchy,
    /// Path relative to the hierarchy root, as memtrace prints it (`/memtrace-test-…`).
    pub path: String,
    pub dir: PathBuf,
}

impl TestCgroup {
    /// # Panics
    ///
    /// When there is no memory controller or the cgroup cannot be created: the test cannot run.
    #[must_use]
    pub fn new(name: &str, limit_bytes: u64) -> Self {
        let hierarchy = MemoryHierarchy::discover().expect("a memory cgroup hierarchy");
        let path = format!("/memtrace-test-{name}-{}", std::process::id());
        Self::create(hierarchy, path, Some(limit_bytes))
    }

    /// A cgroup for one test without a limit of its own (`memory.max` stays `max`).
    ///
    /// # Panics
    ///
    /// As [`Self::new`].
    #[must_use]
    pub fn unlimited(name: &str) -> Self {
        let hierarchy = MemoryHierarchy::discover().expect("a memory cgroup hierarchy");
        let path = format!("/memtrace-test-{name}-{}", std::process::id());
        Self::create(hierarchy, path, None)
    }

    /// A cgroup below this one (`name` may hold several levels, e.g. `kubepods/burstable`: each
    /// must be created with its own `child` call so that each is removed).
    #[must_use]
    pub fn child(&self, name: &str, limit_bytes: Option<u64>) -> Self {
        self.delegate_memory();
        Self::create(
            self.hierarchy.clone(),
            format!("{}/{name}", self.path),
            limit_bytes,
        )
    }

    /// On cgroup v2, gives children made below this cgroup a memcg of their own (a v2 child has
    /// one only when its parent delegates the controller); v1 children always have one.
    pub fn delegate_memory(&self) {
        if self.hierarchy.version == CgroupVersion::V2 {
            self.write("cgroup.subtree_control", "+memory");
        }
    }

    fn create(hierarchy: MemoryHierarchy, path: String, limit_bytes: Option<u64>) -> Self {
        let dir = hierarchy.dir(&path);
        if dir.exists() {
            // Left over by a crashed earlier run with the same pid.
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cgroup = Self {
            hierarchy,
            path,
            dir,
        };
        if let Some(limit) = limit_bytes {
            let limit_file = match cgroup.hierarchy.version {
                CgroupVersion::V1 => "memory.limit_in_bytes",
                CgroupVersion::V2 => "memory.max",
            };
            cgroup.write(limit_file, &limit.to_string());
            if cgroup.hierarchy.version == CgroupVersion::V2 {
                // No swap for the workload: the limit must end in an OOM kill, not in swapping.
                cgroup.write("memory.swap.max", "0");
            }
        }
        cgroup
    }

    /// Reclaims everything charged to this cgroup and its descendants, dying ones included
    /// (v1 `memory.force_empty`, v2 `memory.reclaim`, or `memory.high` before 5.19).
    pub fn reclaim_all(&self) {
        match self.hierarchy.version {
            CgroupVersion::V1 => self.write("memory.force_empty", "0"),
            CgroupVersion::V2 => {
                // memory.reclaim fails with EAGAIN when it cannot reclaim all it was asked for;
                // what it did reclaim is what matters here.
                let reclaim = self.dir.join("memory.reclaim");
                if reclaim.exists() {
                    let _ = fs::write(reclaim, "1G");
                    return;
                }
                // Before 5.19 there is no memory.reclaim. A write to memory.high reclaims the
                // subtree (dying children too) down to it and drains the CPUs' charge stocks
                // before it returns, without the OOM kill a lower memory.max could bring.
                let high = self.dir.join("memory.high");
                let was = fs::read_to_string(&high).unwrap_or_else(|_| "max".to_owned());
                let _ = fs::write(&high, "0");
                let _ = fs::write(&high, was.trim());
            }
        }
    }

    /// Waits until the kernel has freed every removed child memcg, up to `timeout`; returns
    /// whether it did, as v2's `cgroup.stat` counts them (`nr_dying_descendants`). v1 has no
    /// such count: it gets a fixed two seconds and `None`.
    ///
    /// Freeing is asynchronous: besides charged pages, a CPU's charge stock keeps the last
    /// memcg that charged on it until another memcg charges there. Each round drops caches,
    /// reclaims, and charges this cgroup (a short process inside it) to move the stocks on.
    #[must_use]
    pub fn wait_for_dying_children(&self, timeout: Duration) -> Option<bool> {
        let stat = self.dir.join("cgroup.stat");
        if self.hierarchy.version == CgroupVersion::V1 || !stat.exists() {
            thread::sleep(Duration::from_secs(2));
            return None;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let text = fs::read_to_string(&stat).unwrap_or_default();
            let dying = text.lines().find_map(|l| {
                l.strip_prefix("nr_dying_descendants ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
            if dying == Some(0) {
                return Some(true);
            }
            if Instant::now() >= deadline {
                return Some(false);
            }
            fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
            self.reclaim_all();
            let _ = self.run_inside("true", &[]);
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `program ARGS` inside this cgroup to completion; returns its pid and status.
    #[must_use]
    pub fn run_inside(&self, program: &str, args: &[&str]) -> (u32, ExitStatus) {
        // `sh` moves itself in, then becomes the program, so the program is charged here from
        // its first page.
        let script = format!("echo $$ > '{}' && exec \"$@\"", self.procs_file().display());
        run_to_end(
            Command::new("sh")
                .args(["-c", &script, "sh", program])
                .args(args),
            program,
        )
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        fs::write(&path, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
    }

    #[must_use]
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The memcg's kernel memory as the kernel counts it: v1 `memory.kmem.usage_in_bytes`, v2
    /// `memory.stat`'s `kernel` (5.18+), or its `slab` before.
    ///
    /// # Panics
    ///
    /// When neither file says it.
    #[must_use]
    pub fn kernel_memory_bytes(&self) -> u64 {
        if let Ok(v1) = fs::read_to_string(self.dir.join("memory.kmem.usage_in_bytes")) {
            return v1.trim().parse().expect("kmem usage");
        }
        let stat = fs::read_to_string(self.dir.join("memory.stat")).expect("memory.stat");
        let line = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        line("kernel")
            .or_else(|| line("slab"))
            .unwrap_or_else(|| panic!("no kernel memory in memory.stat:\n{stat}"))
    }

    /// The kernel's own OOM-kill count for this memcg (v1 `memory.oom_control`, v2
    /// `memory.events`).
    #[must_use]
    pub fn kernel_oom_kills(&self) -> u64 {
        let file = match self.hierarchy.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        let text = fs::read_to_string(self.dir.join(file)).expect("read oom counters");
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill line in {file}: {text}"))
    }

    /// Runs memhog (pass `env!("CARGO_BIN_EXE_memhog")`: cargo gives it to test targets only)
    /// inside this cgroup until it exits; returns its pid and exit status.
    #[must_use]
    pub fn run_memhog(&self, memhog: &str, cap_mib: u64) -> (u32, ExitStatus) {
        run_to_end(
            Command::new(memhog)
                .arg(self.procs_file())
                .arg(cap_mib.to_string()),
            "memhog",
        )
    }

    /// Starts memhold (its path is `memhold`) in this cgroup, holding `mib` MiB, and waits
    /// until it has touched all of it; kill the child to free it.
    #[must_use]
    pub fn hold(&self, memhold: &str, mib: u64) -> Child {
        let mut command = Command::new(memhold);
        command.arg(self.procs_file()).arg(mib.to_string());
        spawn_held(command)
    }

    /// [`Self::oom_kill_memhog`] with memory advised as transparent huge pages (memhog's
    /// `huge`): every huge-page charge at the limit is refused with `-ENOMEM` before the fault
    /// falls back to small pages.
    ///
    /// # Panics
    ///
    /// When memhog was not OOM-killed, or transparent huge pages are off (`never`).
    #[must_use]
    pub fn oom_kill_huge_memhog(&self, memhog: &str, cap_mib: u64) -> u32 {
        let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
        let enabled = fs::read_to_string(thp).unwrap_or_else(|e| panic!("{thp}: {e}"));
        assert!(
            !enabled.contains("[never]"),
            "transparent huge pages are off ({thp}: {enabled}): no huge-page charge to refuse"
        );
        let (pid, status) = run_to_end(
            Command::new(memhog)
                .arg(self.procs_file())
                .arg(cap_mib.to_string())
                .arg("huge"),
            "memhog",
        );
        assert_oom_killed(pid, status);
        pid
    }

    /// Runs memhog (see [`Self::run_memhog`]) until the kernel OOM-kills it; returns its pid.
    ///
    /// # Panics
    ///
    /// When memhog was not OOM-killed.
    #[must_use]
    pub fn oom_kill_memhog(&self, memhog: &str, cap_mib: u64) -> u32 {
        let (pid, status) = self.run_memhog(memhog, cap_mib);
        assert_oom_killed(pid, status);
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let procs = fs::read_to_string(self.procs_file()).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.dir.display()
        );
    }
}

/// Asserts that a process was killed by SIGKILL (what the OOM killer sends).
///
/// # Panics
///
/// When it was not.
pub fn assert_oom_killed(pid: u32, status: ExitStatus) {
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "memhog (pid {pid}) was not OOM-killed: {status}"
    );
}

/// A running memtrace, started like a user starts it and stopped with Ctrl-C (SIGINT).
pub struct Memtrace {
    child: Child,
    /// Read as it comes: a stream that waited for the test to read it would fill the pipe, and
    /// memtrace, blocked on it, would lose events.
    stdout: Option<thread::JoinHandle<String>>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    /// Lines of `stderr_seen` that [`Memtrace::new_stderr`] returned already.
    stderr_read: usize,
}

/// What a stopped memtrace printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Memtrace {
    /// Starts `memtrace ARGS` and waits for its "attached" line.
    ///
    /// # Panics
    ///
    /// When it exits or does not attach within 30 s.
    #[must_use]
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Memtrace::start`] with these environment variables set (e.g. `RUST_LOG`).
    ///
    /// # Panics
    ///
    /// When it exits or does not attach within 30 s.
    #[must_use]
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(memtrace_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let mut stdout = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).expect("read stdout");
            text
        });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self {
            child,
            stdout: Some(stdout),
            stderr: rx,
            stderr_seen: Vec::new(),
            stderr_read: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match me.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let attached = line.starts_with("memtrace: attached");
                    me.stderr_seen.push(line);
                    if attached {
                        return me;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = me.child.wait().expect("wait");
                    panic!(
                        "memtrace {args:?} exited ({status}) before attaching:\n{}",
                        me.stderr_seen.join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(
                Instant::now() < deadline,
                "memtrace {args:?} did not attach within 30 s:\n{}",
                me.stderr_seen.join("\n")
            );
        }
    }

    /// Starts `memtrace run --format json --stats-interval 0 EXTRA…`, the shape most tests want:
    /// JSON to check, and no periodic samples in the way.
    #[must_use]
    pub fn json(extra: &[&str]) -> Self {
        let mut args = vec!["run", "--format", "json", "--stats-interval", "0"];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// The process id, e.g. to read its memory from `/proc`.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What memtrace printed on stderr since the last call (its "attached" line and those
    /// before it the first time), without waiting.
    pub fn new_stderr(&mut self) -> Vec<String> {
        let from = self.stderr_read;
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        self.stderr_read = self.stderr_seen.len();
        self.stderr_seen[from..].to_vec()
    }

    /// What memtrace printed on stderr up to its "attached" line.
    #[must_use]
    pub fn stderr_at_start(&self) -> &[String] {
        &self.stderr_seen
    }

    /// Sends SIGINT (Ctrl-C) and collects the output.
    #[must_use]
    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// Sends SIGINT (Ctrl-C), collects the output, and asserts that memtrace exited with
    /// success.
    ///
    /// # Panics
    ///
    /// When it did not.
    #[must_use]
    pub fn stop_ok(self) -> Finished {
        let out = self.stop();
        assert!(out.status.success(), "memtrace failed: {out:?}");
        out
    }

    /// Sends `signal` (SIGINT, SIGTERM, …) and collects the output.
    ///
    /// # Panics
    ///
    /// When it does not exit within 10 s.
    #[must_use]
    pub fn stop_with(self, signal: i32) -> Finished {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
        self.collect(Duration::from_secs(10), "of the signal")
    }

    /// Waits for memtrace to exit by itself (e.g. `--duration`) and collects the output.
    ///
    /// # Panics
    ///
    /// When it does not exit within 60 s.
    #[must_use]
    pub fn finish(self) -> Finished {
        self.collect(Duration::from_secs(60), "of waiting for it to end")
    }

    fn collect(mut self, timeout: Duration, after: &str) -> Finished {
        // The exit first: the stdout reader ends only when memtrace does, so joining it first
        // would wait forever for a memtrace that does not exit.
        let Some(status) = wait_timeout(&mut self.child, timeout) else {
            panic!(
                "memtrace did not exit within {timeout:?} {after} (killed); its stderr:\n{}",
                self.new_stderr().join("\n")
            );
        };
        let stdout = self
            .stdout
            .take()
            .expect("stdout")
            .join()
            .expect("stdout reader");
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            self.stderr_seen.push(line);
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
        }
    }
}

impl Drop for Memtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` (stdin from /dev/null) to completion, up to 60 s; returns its pid and status.
fn run_to_end(command: &mut Command, what: &str) -> (u32, ExitStatus) {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id();
    let status = wait_timeout(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{what} (pid {pid}) still running after 60 s"));
    (pid, status)
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Parses JSON Lines output.
///
/// # Panics
///
/// On a line that is not a JSON object with a `"type"`.
#[must_use]
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["type"].is_string(), "no \"type\": {l}");
            v
        })
        .collect()
}

/// The events of one `type` memtrace reported for one cgroup (other tests run in cgroups of
/// their own at the same time).
#[must_use]
pub fn events_in<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
    cgroup: &str,
) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["cgroup"] == cgroup)
        .collect()
}

/// The `oom_kill` events memtrace reported for one cgroup.
#[must_use]
pub fn oom_kills_in<'a>(
    events: &'a [serde_json::Value],
    cgroup: &str,
) -> Vec<&'a serde_json::Value> {
    events_in(events, "oom_kill", cgroup)
}

/// `CLOCK_BOOTTIME`, the clock of event timestamps, in nanoseconds.
#[must_use]
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME)");
    u64::try_from(ts.tv_sec).expect("secs") * 1_000_000_000 + u64::try_from(ts.tv_nsec).expect("ns")
}

/// Asserts that memtrace's count (`traced`) is within `percent` % of the kernel's own count of
/// the same change (`kernel`, either sign).
pub fn assert_within_percent(what: &str, traced: i64, kernel: i64, percent: i64) {
    // |traced − kernel| × 100 ≤ |kernel| × percent, in integers.
    assert!(
        (traced - kernel).abs() * 100 <= kernel.abs() * percent,
        "{what}: memtrace saw {traced} bytes, the kernel {kernel} (more than {percent}% apart)"
    );
}

/// Strategies a test must see work for a probe point: from `var` (the VM tests set the ones
/// Debian's kernels allow), else `host`: what this host's kernel (no kprobes, no fentry) allows.
#[must_use]
pub fn required_strategies(var: &str, host: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| host.to_owned())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Asserts that memtrace's stderr says `point` was attached with `strategy`.
pub fn assert_attached(stderr: &str, point: &str, strategy: &str) {
    assert!(
        stderr.contains(&format!("{point}={strategy}/")),
        "{point}={strategy} must be the one attached: {stderr}"
    );
}

/// The start of a test workload (`memhog`, `mkfiles`): `parse` reads its arguments after
/// `CGROUP_PROCS_FILE`, then it joins that cgroup. A bad usage or a failure to join is printed,
/// and the workload exits with status 2.
///
/// # Errors
///
/// The exit code for a bad usage or a cgroup it cannot join.
pub fn join_cgroup<T>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&[String]) -> Option<T>,
) -> Result<T, std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(procs), Some(parsed)) = (args.get(1), args.get(2..).and_then(parse)) else {
        eprintln!("usage: {name} CGROUP_PROCS_FILE {usage}");
        return Err(std::process::ExitCode::from(2));
    };
    if let Err(e) = fs::write(procs, std::process::id().to_string()) {
        eprintln!("{name}: cannot join {procs}: {e}");
        return Err(std::process::ExitCode::from(2));
    }
    Ok(parsed)
}

/// The kernel log's `oom-kill:` line for a victim pid, e.g.
/// `oom-kill:constraint=CONSTRAINT_MEMCG,…,oom_memcg=/x,task_memcg=/x,task=memhog,pid=42,uid=0`.
///
/// # Panics
///
/// When the kernel log cannot be read.
#[must_use]
pub fn kernel_oom_line(pid: u32) -> Option<String> {
    let out = Command::new("dmesg").output().expect("run dmesg");
    assert!(out.status.success(), "dmesg failed: {out:?}");
    let needle = format!(",pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("oom-kill:") && l.contains(&needle))
        .map(str::to_owned)
}

/// A field of an `oom-kill:` line (`task_memcg`, `task`, …).
#[must_use]
pub fn oom_line_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let start = line.find("oom-kill:")? + "oom-kill:".len();
    line[start..].split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == field).then_some(v)
    })
}

/// A container id as Docker's cgroupfs driver names its cgroups (`/docker/<id>`).
pub const OOM_CONTAINER_ID: &str =
    "0ad1c0ffee5eed5a1ad0b5e55ed0d00d2bad1dea5c0de5ca1ab1e0ddba11f00d";
/// Another, that only reads a file.
pub const CACHE_CONTAINER_ID: &str =
    "ca5cade0fca5cade0fca5cade0fca5cade0fca5cade0fca5cade0fca5cade00f";

/// What [`record_incident`] recorded, with what the kernel says happened.
pub struct Incident {
    /// Holds the trace file and the file that was read; removed on drop.
    pub dir: tempfile::TempDir,
    pub trace: PathBuf,
    /// The OOM-killed container's cgroup path and limit, and its victim.
    pub oom_cgroup: String,
    pub limit_bytes: u64,
    pub victim_pid: u32,
    /// The container that read a cold file, and that file's device (`major:minor`) and inode.
    pub cache_cgroup: String,
    pub cache_file_device: String,
    pub cache_file_inode: u64,
    /// What the recorder said on stderr (probe points it ran without, losses), for failure
    /// messages.
    pub recorder_stderr: String,
    /// Whether the kernel had freed the removed containers' memcgs before the recording
    /// stopped (`None`: cgroup v1 cannot tell).
    pub children_freed: Option<bool>,
    /// Kept until the end of the test: the base of both containers.
    _base: TestCgroup,
}

/// Records a small node incident with `memtrace record --stats-interval 200ms` on cgroups
/// shaped like Docker's (`/memtrace-test-…/docker/<id>`):
///
/// 1. a container with a 64 MiB limit runs memhog until the kernel OOM-kills it (anon growth);
/// 2. another (64 MiB) reads a 128 MiB cold file, growing and reclaiming its page cache, and is
///    removed while the cache is still charged (a dying memcg), then reclaimed (freed).
///
/// Samples are taken before and after each step so the report has a history.
///
/// # Panics
///
/// When any step cannot be set up or does not happen as the kernel should make it happen.
#[must_use]
pub fn record_incident(name: &str, memhog: &str, tmp_dir: &str) -> Incident {
    use std::os::unix::fs::MetadataExt as _;

    const LIMIT: u64 = 64 << 20;
    let dir = tempfile::tempdir_in(tmp_dir).expect("tempdir");
    let trace = dir.path().join("incident.mtrace");
    let file = dir.path().join("cold-128m");
    {
        let chunk = vec![0x5au8; 1 << 20];
        let mut out = fs::File::create(&file).expect("create file");
        for _ in 0..128 {
            std::io::Write::write_all(&mut out, &chunk).expect("write file");
        }
        out.sync_all().expect("sync file");
    }
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    let meta = fs::metadata(&file).expect("stat");

    let base = TestCgroup::new(name, 1 << 30);
    let docker = base.child("docker", None);
    let oom = docker.child(OOM_CONTAINER_ID, Some(LIMIT));
    let cache = docker.child(CACHE_CONTAINER_ID, Some(LIMIT));
    let recorder = Memtrace::start(&[
        "record",
        "-o",
        trace.to_str().expect("utf-8 path"),
        "--cgroup",
        &base.path,
        "--stats-interval",
        "200ms",
        "--interval",
        "200ms",
    ]);
    thread::sleep(Duration::from_millis(700));
    // Huge pages: their charges at the limit are refused with -ENOMEM on every kernel, so
    // the recording has the charge failures the reports show (4 KiB faults of a task being
    // killed are often forced through instead).
    let victim_pid = oom.oom_kill_huge_memhog(memhog, 1024);
    thread::sleep(Duration::from_millis(500));

    let input = format!("if={}", file.display());
    let (_, status) = cache.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
    assert!(status.success(), "dd failed: {status}");
    thread::sleep(Duration::from_millis(500));
    let (oom_cgroup, cache_cgroup) = (oom.path.clone(), cache.path.clone());
    drop(cache);
    drop(oom);
    thread::sleep(Duration::from_millis(300));
    // Reclaiming the parent frees what pins the removed reader, so it is released (freed) too
    // (drop_caches alone skips pages that are briefly busy; reclaim alone may leave some).
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    docker.reclaim_all();
    let children_freed = docker.wait_for_dying_children(Duration::from_secs(15));
    drop(docker);
    // The recorder writes what it saw at least every second.
    thread::sleep(Duration::from_millis(1500));
    let out = recorder.stop();
    assert!(out.status.success(), "record failed: {out:?}");

    Incident {
        dir,
        trace,
        oom_cgroup,
        limit_bytes: LIMIT,
        victim_pid,
        cache_cgroup,
        cache_file_device: format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev())),
        cache_file_inode: meta.ino(),
        recorder_stderr: out.stderr,
        children_freed,
        _base: base,
    }
}

/// Runs `memtrace ARGS` to completion.
///
/// # Panics
///
/// When it cannot be started.
#[must_use]
pub fn memtrace_output(args: &[&str]) -> std::process::Output {
    Command::new(memtrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running memtrace {args:?}: {e}"))
}

/// A line of `memtrace run`'s text stream: `TIME TYPE CGROUP …`, an OOM kill's after `!!! `.
#[derive(Clone, Copy, Debug)]
pub struct TextLine<'a> {
    pub line: &'a str,
    /// `reclaim`, `oom_kill`, `cgroup`, …
    pub kind: &'a str,
    pub cgroup: &'a str,
    /// The line began with `!!! `.
    pub alarm: bool,
}

impl<'a> TextLine<'a> {
    /// `None` for a line that is not `TIME TYPE CGROUP …`.
    #[must_use]
    pub fn parse(line: &'a str) -> Option<Self> {
        let (alarm, rest) = match line.strip_prefix("!!! ") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut fields = rest.split_whitespace();
        fields.next()?;
        Some(Self {
            line,
            kind: fields.next()?,
            cgroup: fields.next()?,
            alarm,
        })
    }

    /// How many reclaim episodes a `reclaim` line stands for: `N episodes` on a summary, 1 on
    /// a single episode's line.
    ///
    /// # Panics
    ///
    /// When the count is not a number.
    #[must_use]
    pub fn reclaim_episodes(&self) -> usize {
        if self.kind != "reclaim" {
            return 0;
        }
        let words: Vec<&str> = self.line.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == "episodes" || *w == "episode")
            .map_or(1, |i| {
                words[i - 1]
                    .parse()
                    .unwrap_or_else(|_| panic!("no count in {}", self.line))
            })
    }
}

/// A `cache` event of a trace file older than version 5 as the memtrace that wrote it printed
/// it: without `refault_bytes`, which such files cannot have (asserted `null`), on the event and
/// its file rows. Other events unchanged.
///
/// # Panics
///
/// When such a file's event says it counted refaults.
pub fn without_refaults(event: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    if event.get("type").and_then(Value::as_str) != Some("cache") {
        return;
    }
    assert_eq!(
        event.remove("refault_bytes"),
        Some(Value::Null),
        "{event:?}"
    );
    for file in event
        .get_mut("top_files")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let file = file.as_object_mut().expect("file row");
        assert_eq!(file.remove("refault_bytes"), Some(Value::Null), "{file:?}");
    }
}

/// Starts `memhold` (`command`, with its arguments: a cgroup's procs file and MiB) and waits
/// until it says it has touched all its memory; kill the child to free it.
///
/// # Panics
///
/// When it cannot be started or does not say `held`.
#[must_use]
pub fn spawn_held(mut command: Command) -> Child {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn memhold");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read memhold's output");
    assert_eq!(line.trim(), "held", "memhold did not hold its memory");
    child
}
