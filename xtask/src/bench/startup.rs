//! `cargo xtask bench startup`: how long `memtrace run` takes from exec to its "attached" line
//! (every probe point attached, the filters and the attribution in place; events flow into the
//! kernel's buffers from then on), against the 150 ms target, with the phases memtrace logs at
//! `RUST_LOG=memtrace::startup=debug` (`memtrace/src/startup.rs`), on an idle machine and with a
//! busy loop on every CPU.
//!
//! Start-up is a few dozen milliseconds of mostly kernel work, so the machine's noise matters
//! as much as for the workloads (shared/BENCHMARKING.md): each launch is paired with a launch of
//! `memtrace --version` (exec, dynamic linking, argument parsing: what any start costs on this
//! machine at that moment), interleaved, and medians are reported with min and max. One launch
//! of each before the measured ones warms the page cache. With `--against BINARY` another build
//! of memtrace (one of the commit before a change, say) is launched in the same rounds,
//! alternately before and after this one, so that a change is judged on the same moments of
//! the same machine, not on two runs minutes apart.
//!
//! The load is one `sh` busy loop per CPU, in this process's session: with the scheduler's
//! autogroups (on in Debian's kernels) memtrace then competes with each loop alone, not with
//! them as a group, harsher than a build started from another terminal.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{interrupt, stats::median};
use crate::{process, workspace::Workspace};

/// The start-up memtrace must stay under (issue 14), idle and under load.
const TARGET_MS: f64 = 150.0;
/// How long a launch may take to say it is attached before the bench gives up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to detach and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line memtrace prints once everything is in place.
const ATTACHED: &str = "memtrace: attached ";
/// What memtrace's start-up phases are logged as.
const PHASE_PREFIX: &str = "start-up: ";

/// Builds memtrace (release), measures `runs` launches idle and `runs` under load, prints both
/// and writes `<target>/bench/startup.json`. A missed target is reported, not failed.
pub fn run(workspace: &Workspace, runs: usize, against: Option<&Path>) -> anyhow::Result<()> {
    let proc_self = fs::metadata("/proc/self").context("reading /proc/self")?;
    if proc_self.uid() != 0 {
        bail!("bench startup must run as root (memtrace loads BPF programs)");
    }
    let memtrace = super::build_memtrace(workspace)?;
    interrupt::catch();

    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let idle = Condition::measure("idle", &memtrace, against, runs)?;
    let loaded = {
        let _load = BusyLoops::start(cpus)?;
        Condition::measure(&format!("{cpus} busy loops"), &memtrace, against, runs)?
    };
    let report = Report {
        target_ms: TARGET_MS,
        runs,
        against: against.map(|path| path.display().to_string()),
        conditions: vec![idle, loaded],
    };
    println!("{}", report.render());
    let out_dir = workspace.target_dir().join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json = out_dir.join("startup.json");
    let text = serde_json::to_string_pretty(&report).context("serialising the report")?;
    fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    println!("JSON: {}", json.display());
    Ok(())
}

#[derive(Serialize)]
struct Report {
    target_ms: f64,
    runs: usize,
    /// The other build launched in the same rounds (`--against`).
    against: Option<String>,
    conditions: Vec<Condition>,
}

/// The launches measured under one load.
#[derive(Serialize)]
struct Condition {
    name: String,
    /// Exec of `memtrace run` to its "attached" line, per launch.
    attached_ms: Vec<f64>,
    /// Exec of `memtrace --version` to its exit, per launch.
    version_ms: Vec<f64>,
    /// Exec of the `--against` build's `run` to its "attached" line, per launch.
    against_ms: Vec<f64>,
    /// Each phase memtrace logged, in the order first seen, with its duration per launch.
    phases: Vec<(String, Vec<f64>)>,
}

impl Condition {
    fn measure(
        name: &str,
        memtrace: &Path,
        against: Option<&Path>,
        runs: usize,
    ) -> anyhow::Result<Self> {
        let mut condition = Self {
            name: name.to_owned(),
            attached_ms: Vec::new(),
            version_ms: Vec::new(),
            against_ms: Vec::new(),
            phases: Vec::new(),
        };
        // Warm-up: the binaries and their libraries into the page cache.
        version(memtrace)?;
        launch(memtrace).context("the warm-up launch of memtrace run failed")?;
        if let Some(other) = against {
            launch(other).context("the warm-up launch of the --against build failed")?;
        }
        for run in 1..=runs {
            interrupt::check()?;
            let floor = version(memtrace)?;
            // The other build first in every other round: neither always gets the quieter slot.
            let other_first = run % 2 == 0;
            let other = |condition: &mut Self| -> anyhow::Result<()> {
                if let Some(other) = against {
                    let launched = launch(other)
                        .with_context(|| format!("{name}: launch {run} of the --against build"))?;
                    condition.against_ms.push(launched.attached_ms);
                }
                Ok(())
            };
            if other_first {
                other(&mut condition)?;
            }
            let launched = launch(memtrace).with_context(|| format!("{name}: launch {run}"))?;
            if !other_first {
                other(&mut condition)?;
            }
            eprintln!(
                "bench startup: {name} {run}/{runs}: attached after {:.1} ms (--version {:.1} ms)",
                launched.attached_ms, floor
            );
            condition.version_ms.push(floor);
            condition.attached_ms.push(launched.attached_ms);
            for (phase, ms) in launched.phases {
                match condition.phases.iter_mut().find(|(p, _)| *p == phase) {
                    Some((_, all)) => all.push(ms),
                    None => condition.phases.push((phase, vec![ms])),
                }
            }
        }
        Ok(condition)
    }
}

/// One launch of `memtrace run`: when it said it was attached, and what its phases took.
struct Launch {
    attached_ms: f64,
    phases: Vec<(String, f64)>,
}

/// Starts `memtrace run` with its start-up phases logged, waits for its "attached" line, stops
/// it with SIGINT and waits for it to exit cleanly.
fn launch(memtrace: &Path) -> anyhow::Result<Launch> {
    let mut cmd = Command::new(memtrace);
    cmd.args(["run", "--format", "json", "--stats-interval", "0"])
        .env("RUST_LOG", "memtrace::startup=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|error| process::spawn_error(&cmd, error))?;
    let mut child = Stopped(child);
    let stderr = child.0.stderr.take().context("memtrace's stderr")?;
    let (tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((line, started.elapsed())).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    let mut phases = Vec::new();
    let attached = loop {
        interrupt::check()?;
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok((line, at)) => {
                if line.starts_with(ATTACHED) {
                    break at;
                }
                if let Some(phase) = parse_phase(&line) {
                    phases.push(phase);
                } else {
                    said.push(line);
                }
            }
            Err(RecvTimeoutError::Timeout) if started.elapsed() < READY_TIMEOUT => {}
            Err(RecvTimeoutError::Timeout) => bail!(
                "memtrace run did not say it was attached within {} s; it said:\n{}",
                READY_TIMEOUT.as_secs(),
                said.join("\n")
            ),
            Err(RecvTimeoutError::Disconnected) => {
                bail!(
                    "memtrace run exited before it was attached; it said:\n{}",
                    said.join("\n")
                )
            }
        }
    };
    child.interrupt()?;
    let _ = reader.join();
    Ok(Launch {
        attached_ms: attached.as_secs_f64() * 1e3,
        phases,
    })
}

/// A child stopped with SIGINT, or killed when dropped before.
struct Stopped(Child);

impl Stopped {
    fn interrupt(&mut self) -> anyhow::Result<()> {
        let pid = self.0.id().to_string();
        process::output(Command::new("kill").args(["-s", "INT", &pid]))
            .context("stopping memtrace run")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().context("waiting for memtrace run")? {
                if !status.success() {
                    bail!("memtrace run exited with {status} on SIGINT");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "memtrace run did not exit within {} s of SIGINT",
                    STOP_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Exec of `memtrace --version` to its exit, in milliseconds.
fn version(memtrace: &Path) -> anyhow::Result<f64> {
    let mut cmd = Command::new(memtrace);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|error| process::spawn_error(&cmd, error))?;
    let took = started.elapsed();
    if !status.success() {
        bail!("`memtrace --version` exited with {status}");
    }
    Ok(took.as_secs_f64() * 1e3)
}

/// `start-up: btf offsets 32.5 ms` → `("btf offsets", 32.5)`; a part names its place:
/// `start-up: aya btf 14.1 ms (within fentry f)` → `("aya btf (within fentry f)", 14.1)`; the
/// total is `("total", ms)`.
fn parse_phase(line: &str) -> Option<(String, f64)> {
    let rest = &line[line.find(PHASE_PREFIX)? + PHASE_PREFIX.len()..];
    let (head, tail) = rest.split_once(" ms")?;
    let (name, ms) = head.rsplit_once(' ')?;
    let ms: f64 = ms.parse().ok()?;
    let tail = tail.trim();
    let name = if name == "total" || !tail.starts_with('(') {
        name.to_owned()
    } else {
        format!("{name} {tail}")
    };
    Some((name, ms))
}

/// One busy loop per CPU, stopped when dropped.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start(count: usize) -> anyhow::Result<Self> {
        let mut loops = Self(Vec::new());
        for _ in 0..count {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            loops.0.push(
                cmd.spawn()
                    .map_err(|error| process::spawn_error(&cmd, error))?,
            );
        }
        // Let the scheduler see them as the hogs they are before the first launch.
        thread::sleep(Duration::from_millis(500));
        Ok(loops)
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nStart-up of `memtrace run`: exec to its \"attached\" line (release build, {} \
             launches each, interleaved with `memtrace --version`{})",
            self.runs,
            self.against
                .as_ref()
                .map_or_else(String::new, |other| format!(" and {other} run"))
        );
        for c in &self.conditions {
            let attached = Spread::of(&c.attached_ms);
            let version = Spread::of(&c.version_ms);
            let verdict = if attached.median <= self.target_ms {
                "met"
            } else {
                "MISSED"
            };
            let _ = writeln!(
                out,
                "\n{}:\n  attached        median {:6.1} ms   min {:6.1}   max {:6.1}   target ≤ \
                 {:.0} ms: {verdict}\n  --version       median {:6.1} ms   min {:6.1}   max \
                 {:6.1}   (exec and arguments alone)",
                c.name,
                attached.median,
                attached.min,
                attached.max,
                self.target_ms,
                version.median,
                version.min,
                version.max,
            );
            if !c.against_ms.is_empty() {
                let other = Spread::of(&c.against_ms);
                let faster = c
                    .attached_ms
                    .iter()
                    .zip(&c.against_ms)
                    .filter(|(this, other)| this < other)
                    .count();
                let _ = writeln!(
                    out,
                    "  --against       median {:6.1} ms   min {:6.1}   max {:6.1}   this build \
                     faster in {faster} of {} rounds, median ×{:.2} of it",
                    other.median,
                    other.min,
                    other.max,
                    c.attached_ms.len(),
                    attached.median / other.median,
                );
            }
            let _ = writeln!(
                out,
                "  phases (median ms; memtrace's own clock, from main):"
            );
            for (phase, ms) in &c.phases {
                let s = Spread::of(ms);
                let _ = writeln!(
                    out,
                    "    {phase:<52} {:6.1}   (min {:.1}, max {:.1})",
                    s.median, s.min, s.max
                );
            }
        }
        out
    }
}

/// Median, min and max of some milliseconds.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        Self {
            median: median(values).unwrap_or(f64::NAN),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memtrace_s_phase_lines() {
        let line = "[2026-11-29T11:00:27Z DEBUG memtrace::startup] start-up: btf offsets 32.5 ms";
        assert_eq!(parse_phase(line), Some(("btf offsets".into(), 32.5)));
        let part = "[…] start-up: aya btf 14.1 ms (within fentry oom_kill_process)";
        assert_eq!(
            parse_phase(part),
            Some(("aya btf (within fentry oom_kill_process)".into(), 14.1))
        );
        let total =
            "[…] start-up: total 110.7 ms to attached (btf offsets 32.5, attach oom_kill 23.7)";
        assert_eq!(parse_phase(total), Some(("total".into(), 110.7)));
        assert_eq!(
            parse_phase("memtrace: 71 dying memory cgroups at start-up"),
            None
        );
    }

    #[test]
    fn renders_each_condition_against_the_target() {
        let condition = |name: &str, attached: Vec<f64>| Condition {
            name: name.into(),
            attached_ms: attached,
            version_ms: vec![2.0, 3.0, 2.5],
            against_ms: vec![200.0, 180.0, 190.0],
            phases: vec![("btf offsets".into(), vec![5.0, 7.0, 6.0])],
        };
        let report = Report {
            target_ms: TARGET_MS,
            runs: 3,
            against: Some("old/memtrace".into()),
            conditions: vec![
                condition("idle", vec![90.0, 110.0, 100.0]),
                condition("2 busy loops", vec![140.0, 170.0, 160.0]),
            ],
        };
        let text = report.render();
        assert!(
            text.contains("idle:\n  attached        median  100.0 ms"),
            "{text}"
        );
        assert!(text.contains("target ≤ 150 ms: met"), "{text}");
        assert!(text.contains("target ≤ 150 ms: MISSED"), "{text}");
        assert!(
            text.contains("faster in 3 of 3 rounds, median ×0.53"),
            "{text}"
        );
        assert!(text.contains("btf offsets"), "{text}");
        assert!(
            text.contains("btf offsets                                             6.0"),
            "{text}"
        );
    }
}
