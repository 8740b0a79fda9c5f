//! The tracers: memtrace as it ships; bpftrace doing the same per-memcg aggregation on the
//! tracepoints memtrace's hot paths use for these workloads ([`bpftrace_script`]); and
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

/// bpftrace's program: the same aggregation as memtrace's on the tracepoints memtrace's hot
/// paths attach to for these workloads, one probe (one program) per tracepoint so that each is
/// measured on its own:
///
/// - page cache added and removed: counted per memcg and file (device, inode), as memtrace
///   counts per memcg and `address_space`;
/// - slab: accounted allocations counted per memcg and size (memtrace: per memcg and cache;
///   a size costs bpftrace less than the cache's name, which it would have to copy), frees per
///   memcg;
/// - where the kernel has it (6.16+), `count()` per memcg on the memcg stat update memtrace
///   counts charges from when it cannot hook the charge function.
///
/// bpftrace 0.17 has no raw tracepoints, so the folio or object is not at hand: the memcg is
/// the current task's (`task->cgroups->subsys[memory_cgrp_id]`), which is the one charged for
/// these workloads. `{memcg}` and `{account}` are filled in for this kernel. The maps are
/// cleared at exit rather than printed: tens of thousands of per-file keys take bpftrace longer
/// to print than the bench waits, and printing is no part of what is measured.
const BPFTRACE_SCRIPT: &str = "\
tracepoint:filemap:mm_filemap_add_to_page_cache {
  @cache_add[{memcg}, args->s_dev, args->i_ino] = count(); }
tracepoint:filemap:mm_filemap_delete_from_page_cache {
  @cache_delete[{memcg}, args->s_dev, args->i_ino] = count(); }
tracepoint:kmem:kmem_cache_alloc /args->accounted/ {
  @slab_alloc[{memcg}, args->bytes_alloc] = count(); }
tracepoint:kmem:kmalloc /args->gfp_flags & {account}/ {
  @slab_alloc[{memcg}, args->bytes_alloc] = count(); }
tracepoint:kmem:kmem_cache_free { @slab_free[{memcg}] = count(); }
tracepoint:kmem:kfree { @slab_free[{memcg}] = count(); }";

const MEMCG_STAT_TRACEPOINT: &str = "memcg/mod_memcg_lruvec_state";

/// `__GFP_ACCOUNT` on kernels whose BTF does not name its bit (before 6.10: a `#define`).
const GFP_ACCOUNT_DEFAULT: u64 = 0x40_0000;

/// The script for this kernel: bpftrace refuses a tracepoint the kernel lacks, and the memory
/// controller's index and `__GFP_ACCOUNT` are the kernel's.
pub fn bpftrace_script() -> String {
    let has_memcg_stat = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|events| Path::new(events).join(MEMCG_STAT_TRACEPOINT).exists());
    let enums = btf_enum_values();
    let memory_id = enums
        .get("memory_cgrp_id")
        .copied()
        .or_else(memory_subsys_from_proc)
        .unwrap_or(4);
    let account = enums
        .get("___GFP_ACCOUNT_BIT")
        .map_or(GFP_ACCOUNT_DEFAULT, |bit| 1 << bit);
    let memcg = format!("curtask->cgroups->subsys[{memory_id}]");
    let mut script = BPFTRACE_SCRIPT
        .replace("{memcg}", &memcg)
        .replace("{account}", &format!("{account:#x}"));
    let mut maps = vec!["@cache_add", "@cache_delete", "@slab_alloc", "@slab_free"];
    if has_memcg_stat {
        script.push_str(
            "\ntracepoint:memcg:mod_memcg_lruvec_state { @memcg_stat[args->id] = count(); }",
        );
        maps.push("@memcg_stat");
    }
    let clears: Vec<String> = maps.iter().map(|map| format!("clear({map});")).collect();
    script.push_str("\nEND { ");
    script.push_str(&clears.join(" "));
    script.push_str(" }");
    script
}

/// The enum constants bpftrace's script needs, from the kernel's BTF (`bpftool btf dump`).
fn btf_enum_values() -> BTreeMap<String, u64> {
    let Ok(dump) = process::output(Command::new("bpftool").args([
        "btf",
        "dump",
        "file",
        "/sys/kernel/btf/vmlinux",
        "format",
        "raw",
    ])) else {
        return BTreeMap::new();
    };
    parse_enum_values(&dump, &["memory_cgrp_id", "___GFP_ACCOUNT_BIT"])
}

/// `'NAME' val=N` lines of a raw BTF dump, for `names`.
fn parse_enum_values(dump: &str, names: &[&str]) -> BTreeMap<String, u64> {
    dump.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().strip_prefix('\'')?.split_once("' val=")?;
            names
                .contains(&name)
                .then(|| Some((name.to_owned(), value.trim().parse().ok()?)))?
        })
        .collect()
}

/// The memory controller's index: its line in `/proc/cgroups`, which lists the controllers in
/// id order.
fn memory_subsys_from_proc() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    let index = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .position(|line| line.split_whitespace().next() == Some("memory"))?;
    u64::try_from(index).ok()
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
    /// One per-CPU hash count per event (`memtrace bench-floor --count`): what the map work of
    /// any per-key aggregation costs on each tracepoint. Measured per event only.
    CountFloor,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memtrace => "memtrace",
            Self::Bpftrace => "bpftrace",
            Self::Floor => "floor",
            Self::CountFloor => "count floor",
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
            Self::CountFloor => {
                let mut cmd = Command::new(memtrace);
                cmd.args(["bench-floor", "--count"]);
                cmd
            }
        }
    }

    /// Whether `line` is the tracer saying it is attached.
    fn ready(self, line: &str) -> Option<Ready> {
        match self {
            Self::Memtrace | Self::Floor | Self::CountFloor => line
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
        // bpftrace counts its END block, which is no attachment bpftool lists.
        let probes = tracer
            .wait_ready()?
            .map(|probes| probes.saturating_sub(usize::from(tool == Tool::Bpftrace)));
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
    use super::{Ready, Tool, attributed_cache_bytes, parse_enum_values};

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
    fn reads_enum_values_from_a_raw_btf_dump() {
        let dump = "[12] ENUM 'cgroup_subsys_id' encoding=UNSIGNED size=4 vlen=14\n\
                    \t'cpuset_cgrp_id' val=0\n\t'memory_cgrp_id' val=4\n\
                    [99] ENUM '(anon)' encoding=UNSIGNED size=4 vlen=27\n\
                    \t'___GFP_ACCOUNT_BIT' val=22\n\t'___GFP_ACCOUNT_BITS' val=x\n";
        let values = parse_enum_values(dump, &["memory_cgrp_id", "___GFP_ACCOUNT_BIT"]);
        assert_eq!(values.get("memory_cgrp_id"), Some(&4));
        assert_eq!(values.get("___GFP_ACCOUNT_BIT"), Some(&22));
        assert_eq!(values.len(), 2);
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
