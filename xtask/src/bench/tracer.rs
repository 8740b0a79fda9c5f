//! The tracers: memtrace as it ships; bpftrace counting per cgroup on the tracepoints memtrace
//! uses for these workloads plus the slab ones, as the peer in shared/BENCHMARKING.md does; and
//! the floor, `memtrace bench-floor`: empty programs on the raw tracepoints memtrace's hot paths
//! use, what attaching anything there costs. Each is started, waited for until its probes are
//! attached, and stopped with SIGINT.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    bpf_stats::{self, ProgramKey},
    interrupt,
};
use crate::process::{self, Shown};

/// bpftrace's program: per-cgroup counts on the tracepoints memtrace's hot paths attach to for
/// these workloads: the page cache, the slab allocations and frees, and, where the kernel has it
/// (6.16+), the memcg stat update memtrace counts charges from when it cannot hook the charge
/// function.
const BPFTRACE_SCRIPT: &str = "\
tracepoint:filemap:mm_filemap_add_to_page_cache,
tracepoint:filemap:mm_filemap_delete_from_page_cache { @[cgroup] = count(); }
tracepoint:kmem:kmem_cache_alloc,
tracepoint:kmem:kmalloc,
tracepoint:kmem:kmem_cache_free,
tracepoint:kmem:kfree { @[cgroup] = count(); }";

const MEMCG_STAT_TRACEPOINT: &str = "memcg/mod_memcg_lruvec_state";

/// The script for this kernel: bpftrace refuses a tracepoint the kernel lacks.
pub fn bpftrace_script() -> String {
    let has_memcg_stat = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|events| Path::new(events).join(MEMCG_STAT_TRACEPOINT).exists());
    let mut script = BPFTRACE_SCRIPT.to_owned();
    if has_memcg_stat {
        script.push_str("\ntracepoint:memcg:mod_memcg_lruvec_state { @[cgroup] = count(); }");
    }
    script
}

/// How long a tracer may take to say it is attached (bpftrace compiles first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a tracer may take to exit after SIGINT (bpftrace prints its maps first).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Memtrace,
    Bpftrace,
    Floor,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memtrace => "memtrace",
            Self::Bpftrace => "bpftrace",
            Self::Floor => "floor",
        }
    }

    fn command(self, memtrace: &Path) -> Command {
        match self {
            Self::Memtrace => {
                let mut cmd = Command::new(memtrace);
                cmd.args([
                    "run",
                    "--format",
                    "json",
                    "--stats-interval",
                    "0",
                    "--interval",
                    "1s",
                ]);
                cmd
            }
            Self::Bpftrace => {
                let mut cmd = Command::new("bpftrace");
                cmd.arg("-e").arg(bpftrace_script());
                cmd
            }
            Self::Floor => {
                let mut cmd = Command::new(memtrace);
                cmd.arg("bench-floor");
                cmd
            }
        }
    }

    /// Whether `line` is the tracer saying it is attached.
    fn ready(self, line: &str) -> Option<Ready> {
        match self {
            Self::Memtrace | Self::Floor => line
                .starts_with("memtrace: attached ")
                .then_some(Ready { probes: None }),
            // "Attaching 4 probes..." (or "1 probe...")
            Self::Bpftrace => {
                let count = line.strip_prefix("Attaching ")?.split(' ').next()?;
                Some(Ready {
                    probes: count.parse().ok(),
                })
            }
        }
    }
}

/// A tracer's "attached" line.
#[derive(Debug, PartialEq, Eq)]
struct Ready {
    /// How many probes it says it attaches, when it says.
    probes: Option<usize>,
}

/// A line a tracer printed, and on which stream.
enum Line {
    Out(String),
    Err(String),
}

/// A running tracer, killed if dropped before it was stopped.
pub struct Tracer {
    pub tool: Tool,
    child: Child,
    shown: String,
    lines: Receiver<Line>,
    readers: Vec<JoinHandle<()>>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    reaped: bool,
    /// From spawning it to the line that says it is attached.
    pub startup: Duration,
    /// Its programs, by id.
    pub programs: BTreeMap<u32, ProgramKey>,
}

impl Tracer {
    /// Starts `tool`, waits for its "attached" line, then until its programs are loaded and
    /// (bpftrace's) attached, and notes which programs are its own.
    pub fn launch(tool: Tool, memtrace: &Path) -> anyhow::Result<Self> {
        let before = bpf_stats::programs()?;
        let mut cmd = tool.command(memtrace);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = Shown(&cmd).to_string();
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|error| process::spawn_error(&cmd, error))?;
        let (tx, lines) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(forward(out, tx.clone(), Line::Out));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(forward(err, tx, Line::Err));
        }
        let mut tracer = Self {
            tool,
            child,
            shown,
            lines,
            readers,
            stdout: Vec::new(),
            stderr: Vec::new(),
            reaped: false,
            startup: Duration::ZERO,
            programs: BTreeMap::new(),
        };
        let probes = tracer.wait_ready()?;
        tracer.startup = started.elapsed();
        tracer.programs = tracer.find_programs(&before, probes)?;
        Ok(tracer)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until the "attached" one; returns the probe count it names, if any.
    fn wait_ready(&mut self) -> anyhow::Result<Option<usize>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            interrupt::check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "`{}` did not say it was attached within {} s{}",
                    self.shown,
                    READY_TIMEOUT.as_secs(),
                    self.stderr_tail()
                );
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    let text = match &line {
                        Line::Out(text) | Line::Err(text) => text.clone(),
                    };
                    self.keep(line);
                    if let Some(ready) = self.tool.ready(&text) {
                        return Ok(ready.probes);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().context("waiting for the tracer")?;
                    self.reaped = true;
                    bail!(
                        "`{}` exited with {status} before it was attached{}",
                        self.shown,
                        self.stderr_tail()
                    );
                }
            }
        }
    }

    /// The programs this tracer loaded; for bpftrace, once all `probes` are attached (it says
    /// "Attaching" before it attaches).
    fn find_programs(
        &mut self,
        before: &[bpf_stats::Program],
        probes: Option<usize>,
    ) -> anyhow::Result<BTreeMap<u32, ProgramKey>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            interrupt::check()?;
            let attachments = bpf_stats::attachments()?;
            let attached = attachments.iter().filter(|a| a.pid == self.pid()).count();
            if probes.is_none_or(|probes| attached >= probes) {
                let now = bpf_stats::programs()?;
                let held = bpf_stats::held_by(self.pid())?;
                let programs = bpf_stats::programs_of(&held, before, &now, &attachments);
                if !programs.is_empty() {
                    return Ok(programs);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "`{}` said it was attached but {} s later bpftool shows {attached} of its \
                     probes attached{}",
                    self.shown,
                    READY_TIMEOUT.as_secs(),
                    probes.map_or_else(String::new, |n| format!(" (of {n})")),
                );
            }
            if let Some(status) = self.child.try_wait().context("polling the tracer")? {
                self.reaped = true;
                bail!(
                    "`{}` exited with {status} just after it was attached{}",
                    self.shown,
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn keep(&mut self, line: Line) {
        match line {
            Line::Out(text) => self.stdout.push(text),
            Line::Err(text) => self.stderr.push(text),
        }
    }

    fn stderr_tail(&self) -> String {
        let tail: Vec<&str> = self
            .stderr
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(String::as_str)
            .collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; it said:\n{}", tail.join("\n"))
        }
    }

    /// Sends SIGINT, waits for a clean exit and returns what the tracer printed on stdout.
    pub fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let pid = self.pid().to_string();
        process::output(Command::new("kill").args(["-s", "INT", &pid]))
            .with_context(|| format!("stopping `{}`", self.shown))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().context("waiting for the tracer")? {
                self.reaped = true;
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "`{}` did not exit within {} s of SIGINT",
                    self.shown,
                    STOP_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // Both pipes are closed now: the readers end, and the channel holds the rest.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        while let Ok(line) = self.lines.try_recv() {
            self.keep(line);
        }
        if !status.success() {
            bail!(
                "`{}` exited with {status} on SIGINT{}",
                self.shown,
                self.stderr_tail()
            );
        }
        Ok(std::mem::take(&mut self.stdout))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends each line of `stream` down `tx` from a thread of its own, so that neither pipe fills
/// while the other is read.
fn forward(
    stream: impl Read + Send + 'static,
    tx: Sender<Line>,
    wrap: fn(String) -> Line,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    })
}

/// The page cache memtrace attributed to `cgroup`: the `added_bytes` of its `cache` events.
pub fn attributed_cache_bytes(stdout: &[String], cgroup: &str) -> u64 {
    stdout
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "cache" && event["cgroup"].as_str() == Some(cgroup))
        .filter_map(|event| event["added_bytes"].as_u64())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{Ready, Tool, attributed_cache_bytes};

    #[test]
    fn recognises_each_tracer_s_attached_line() {
        let memtrace = "memtrace: attached oom_kill=raw_tp/mark_victim page_cache=raw_tp/\
                        mm_filemap_add_to_page_cache in 262 ms (memory cgroup V1 at \
                        /sys/fs/cgroup/memory); Ctrl-C to stop";
        let probes = |probes| Some(Ready { probes });
        assert_eq!(Tool::Memtrace.ready(memtrace), probes(None));
        assert_eq!(
            Tool::Floor.ready("memtrace: attached 7 empty programs: kmem_cache_alloc, kfree"),
            probes(None)
        );
        assert_eq!(
            Tool::Memtrace.ready("memtrace: 8 dying memory cgroups"),
            None
        );
        assert_eq!(
            Tool::Bpftrace.ready("Attaching 4 probes..."),
            probes(Some(4))
        );
        assert_eq!(
            Tool::Bpftrace.ready("Attaching 1 probe..."),
            probes(Some(1))
        );
        assert_eq!(Tool::Bpftrace.ready("@[1234]: 5"), None);
    }

    #[test]
    fn sums_the_page_cache_memtrace_attributed_to_a_cgroup() {
        let stdout = [
            r#"{"type":"cache","cgroup":"/memtrace-bench-7","added_bytes":4096}"#,
            r#"{"type":"cache","cgroup":"/other","added_bytes":8192}"#,
            r#"{"type":"cache","cgroup":"/memtrace-bench-7","added_bytes":1048576}"#,
            r#"{"type":"cgroup","cgroup":"/memtrace-bench-7","added_bytes":1}"#,
            "not json",
        ]
        .map(String::from);
        assert_eq!(
            attributed_cache_bytes(&stdout, "/memtrace-bench-7"),
            1_052_672
        );
        assert_eq!(attributed_cache_bytes(&stdout, "/nothing"), 0);
    }
}
