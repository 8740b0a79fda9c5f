//! `memtrace run --format json` for a storm: each line of its stdout stamped with when it was
//! read (how late an event is, is that minus its timestamp), and what the session cost memtrace
//! itself (CPU from "attached" to the stop, peak RSS), read from `/proc` before it is stopped.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{boot_ns, memtrace_bin};

/// A running `memtrace run --format json --stats-interval 0 EXTRA…`.
pub struct Streaming {
    child: Child,
    lines: mpsc::Receiver<(u64, String)>,
    /// Lines taken from `lines` by [`Self::wait_for`].
    read: Vec<(u64, String)>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    readers: [thread::JoinHandle<()>; 2],
    /// memtrace's CPU time (user + system) when it said "attached".
    cpu_at_attach: Duration,
}

/// What a stopped session printed and cost.
pub struct Streamed {
    pub status: ExitStatus,
    /// Stdout lines, each with `CLOCK_BOOTTIME` when it was read.
    pub lines: Vec<(u64, String)>,
    pub stderr: String,
    /// memtrace's CPU time (user + system) from "attached" to the stop.
    pub cpu: Duration,
    /// memtrace's peak resident set (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
}

impl Streamed {
    /// The total of the lost-event counters that memtrace's summary line printed
    /// (`… N lost (oom_kill=0 cgroup=0 …)`); `None` when there is no such line.
    #[must_use]
    pub fn lost(&self) -> Option<u64> {
        self.stderr.lines().find_map(|line| {
            let (before, _) = line.split_once(" lost (")?;
            before.rsplit(' ').next()?.parse().ok()
        })
    }

    /// One kind's lost count in memtrace's summary line (`… lost (oom_kill=0 cgroup=12 …)`).
    #[must_use]
    pub fn lost_of(&self, kind: &str) -> Option<u64> {
        self.stderr.lines().find_map(|line| {
            let (_, per_kind) = line.split_once(" lost (")?;
            per_kind
                .split([' ', ')'])
                .find_map(|pair| pair.strip_prefix(kind)?.strip_prefix('=')?.parse().ok())
        })
    }

    /// What the stream's own `lost` events counted, per `"kind/cause"`.
    ///
    /// # Panics
    ///
    /// On a line that is not JSON, or a `lost` event without its fields.
    #[must_use]
    pub fn lost_in_stream(&self) -> BTreeMap<String, u64> {
        let mut counted = BTreeMap::new();
        for (_, event) in self.events() {
            if event["type"] != "lost" {
                continue;
            }
            let key = format!(
                "{}/{}",
                event["kind"].as_str().expect("kind"),
                event["cause"].as_str().expect("cause")
            );
            *counted.entry(key).or_default() += event["count"].as_u64().expect("count");
        }
        counted
    }

    /// The stdout lines as JSON events, each with when it was read.
    ///
    /// # Panics
    ///
    /// On a line that is not JSON.
    #[must_use]
    pub fn events(&self) -> Vec<(u64, serde_json::Value)> {
        self.lines
            .iter()
            .map(|(read, line)| {
                let event =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                (*read, event)
            })
            .collect()
    }
}

impl Streaming {
    /// Starts memtrace and waits for its "attached" line.
    ///
    /// # Panics
    ///
    /// When it cannot be started or does not attach within 30 s (× `MEMTRACE_TEST_SLOWDOWN`).
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        Self::start_stalled(extra, Duration::ZERO)
    }

    /// As [`Self::start`], and its stdout is not read for `stall` after it attached: a log
    /// shipper that stops reading for a while (the pipe fills, memtrace's writes block).
    ///
    /// # Panics
    ///
    /// As [`Self::start`].
    #[must_use]
    pub fn start_stalled(extra: &[&str], stall: Duration) -> Self {
        let mut child = Command::new(memtrace_bin())
            .args(["run", "--format", "json", "--stats-interval", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let (lines_tx, lines) = mpsc::channel::<(u64, String)>();
        let stdout = child.stdout.take().expect("stdout");
        let (attached_tx, attached_rx) = mpsc::channel::<()>();
        let out_reader = thread::spawn(move || {
            if !stall.is_zero() && attached_rx.recv().is_ok() {
                thread::sleep(stall);
            }
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
            read: Vec::new(),
            stderr_lines,
            stderr_seen: Vec::new(),
            readers: [out_reader, err_reader],
            cpu_at_attach: Duration::ZERO,
        };
        // Several sessions attach side by side in one test process: slow under emulation.
        let deadline = Instant::now() + Duration::from_secs(30) * super::slowdown();
        loop {
            let line = me
                .stderr_lines
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            let attached = line.starts_with("memtrace: attached");
            me.stderr_seen.push(line);
            if attached {
                me.cpu_at_attach = cpu_time(me.child.id());
                let _ = attached_tx.send(());
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "memtrace did not attach within 30 s × slowdown:\n{}",
                me.stderr_seen.join("\n")
            );
        }
    }

    /// Reads stdout lines as they come until `enough` says so of a line, or `timeout` passes;
    /// whether it did.
    pub fn wait_for(&mut self, timeout: Duration, mut enough: impl FnMut(&str) -> bool) -> bool {
        read_until(&self.lines, &mut self.read, timeout, |line| enough(&line.1))
    }

    /// Reads stderr lines as they come until `enough` says so of a line, or `timeout` passes;
    /// whether it did.
    pub fn wait_for_stderr(
        &mut self,
        timeout: Duration,
        mut enough: impl FnMut(&str) -> bool,
    ) -> bool {
        read_until(&self.stderr_lines, &mut self.stderr_seen, timeout, |line| {
            enough(line)
        })
    }

    /// Stops memtrace (SIGSTOP) until the returned guard is dropped (SIGCONT): a reader that
    /// gets no CPU for a while, as on a node whose CPUs are all taken, while the kernel side
    /// goes on writing to the ring buffer.
    #[must_use]
    pub fn frozen(&self) -> Frozen {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Frozen { pid }
    }

    /// Stops it with Ctrl-C: its exit status, stamped stdout lines, stderr and cost.
    ///
    /// # Panics
    ///
    /// When it cannot be waited for.
    #[must_use]
    pub fn stop(mut self) -> Streamed {
        let pid = self.child.id();
        let cpu = cpu_time(pid).saturating_sub(self.cpu_at_attach);
        let peak_rss_kib = peak_rss_kib(pid);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGINT) };
        let status = self.child.wait().expect("wait for memtrace");
        for reader in self.readers {
            reader.join().expect("reader");
        }
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        self.read.extend(self.lines.try_iter());
        Streamed {
            status,
            lines: self.read,
            stderr: self.stderr_seen.join("\n"),
            cpu,
            peak_rss_kib,
        }
    }
}

/// Takes lines from `from` into `kept` as they come until `enough` says so of one, or `timeout`
/// passes; whether it did.
fn read_until<T>(
    from: &mpsc::Receiver<T>,
    kept: &mut Vec<T>,
    timeout: Duration,
    mut enough: impl FnMut(&T) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Ok(line) = from.recv_timeout(left.min(Duration::from_millis(100))) {
            let done = enough(&line);
            kept.push(line);
            if done {
                return true;
            }
        }
    }
}

/// A memtrace stopped by [`Streaming::frozen`]; dropping it lets memtrace go on.
pub struct Frozen {
    pid: i32,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

/// User + system CPU time of a process, from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// `VmHWM` from `/proc/PID/status`, in KiB (0 when unreadable).
fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
