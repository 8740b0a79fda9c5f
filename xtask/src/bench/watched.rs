//! A memtrace the `node` and `soak` benches run and watch: its stderr kept with the time of each
//! line, and what its debug log says of each interval's drain and of its tables' sizes
//! (`memtrace::pipeline` at debug level).

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A running memtrace; stopped (SIGINT, then waited for) when dropped.
pub struct Watched {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

/// One interval's drain, from the debug log.
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub at: Instant,
    /// Reading and emptying the kernel's maps (the drain thread).
    pub kernel_ms: f64,
    /// Making and writing the interval's events (the consumer).
    pub events_ms: f64,
    /// The CPU time of both (apart from waiting for a CPU on a busy machine).
    pub cpu_ms: f64,
    /// Keys the drain found: what the node did in the interval (memtrace traces all of it).
    pub keys: u64,
    /// The kernel's `MEMCG_IDS` entries after it.
    pub kernel_memcg_ids: u64,
    /// memtrace's own tables after it: memcgs named, cgroup paths, containers' runtime names.
    pub names: u64,
    pub paths: u64,
    pub runtime_names: u64,
    pub memcg_pointers: u64,
    /// Page-cache files named.
    pub files: u64,
}

/// The idle keys one drain deleted after its interval's events went out, from the debug log.
#[derive(Clone, Copy, Debug)]
pub struct Deletes {
    pub at: Instant,
    pub keys: u64,
    pub ms: f64,
    pub cpu_ms: f64,
}

impl Watched {
    /// Starts `memtrace ARGS` (stdout to /dev/null unless `args` say otherwise) and waits
    /// until it is attached.
    pub fn start(memtrace: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(memtrace)
            .args(args)
            .env("RUST_LOG", "memtrace::pipeline=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting memtrace")?;
        let stderr = child.stderr.take().context("memtrace's stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock()
                    .expect("not poisoned")
                    .push((Instant::now(), line));
            }
        });
        let watched = Self { child, lines };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !watched.said("memtrace: attached") {
            if Instant::now() > deadline {
                bail!("memtrace did not attach within 60 s:\n{}", watched.stderr());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(watched)
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn said(&self, start: &str) -> bool {
        self.lines
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(_, l)| l.starts_with(start))
    }

    /// Its stderr so far, but the debug lines.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.lines
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, l)| !l.contains("DEBUG"))
            .fold(String::new(), |mut text, (_, l)| {
                text.push_str(l);
                text.push('\n');
                text
            })
    }

    /// Writes everything it printed on stderr so far, debug lines with the seconds since
    /// `since`, to `path`.
    pub fn write_log(&self, since: Instant, path: &Path) -> anyhow::Result<()> {
        let mut text = String::new();
        for (at, l) in self.lines.lock().expect("not poisoned").iter() {
            let seconds = at.saturating_duration_since(since).as_secs_f64();
            let _ = writeln!(text, "{seconds:9.3} {l}");
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The intervals drained so far, oldest first.
    #[must_use]
    pub fn intervals(&self) -> Vec<Interval> {
        let lines = self.lines.lock().expect("not poisoned");
        let mut intervals = Vec::new();
        let mut kernel: Option<(f64, f64, u64, u64, u64)> = None;
        for (at, line) in lines.iter() {
            // `aggregates: kernel maps drained in 1.23 ms (…); MapSizes { kernel_memcg_ids: 5, memcg_pointers: 5 }`
            if let Some(rest) = after(line, "kernel maps drained in ") {
                kernel = Some((
                    number_before(rest, " ms").unwrap_or(f64::NAN),
                    cpu_ms(rest),
                    field(rest, "kernel_memcg_ids").unwrap_or(0),
                    field(rest, "memcg_pointers").unwrap_or(0),
                    after(rest, " ms; ")
                        .and_then(|r| r.split_once(" keys"))
                        .and_then(|(n, _)| n.trim().parse().ok())
                        .unwrap_or(0),
                ));
            } else if let Some(rest) = after(line, " events made in ")
                && let Some((kernel_ms, kernel_cpu_ms, kernel_memcg_ids, memcg_pointers, keys)) =
                    kernel.take()
            {
                intervals.push(Interval {
                    at: *at,
                    kernel_ms,
                    events_ms: number_before(rest, " ms").unwrap_or(f64::NAN),
                    cpu_ms: kernel_cpu_ms + cpu_ms(rest),
                    keys,
                    kernel_memcg_ids,
                    names: field(rest, "names").unwrap_or(0),
                    paths: field(rest, "paths").unwrap_or(0),
                    runtime_names: field(rest, "runtime_names").unwrap_or(0),
                    memcg_pointers,
                    files: field(rest, "files").unwrap_or(0),
                });
            }
        }
        intervals
    }

    /// The idle-key deletes so far, oldest first.
    #[must_use]
    pub fn deletes(&self) -> Vec<Deletes> {
        let lines = self.lines.lock().expect("not poisoned");
        lines
            .iter()
            .filter_map(|(at, line)| {
                // `aggregates: 812 idle keys deleted in 8.10 ms (CPU 7.90 ms), after …`
                let rest = after(line, "aggregates: ")?;
                let (keys, rest) = rest.split_once(" idle keys deleted in ")?;
                Some(Deletes {
                    at: *at,
                    keys: keys.trim().parse().ok()?,
                    ms: number_before(rest, " ms")?,
                    cpu_ms: cpu_ms(rest),
                })
            })
            .collect()
    }

    /// Keys the drains so far found in memtrace's spill maps: counts whose key the programs could
    /// not insert into its aggregate map (`spilled_keys` of each drain's `MapSizes`).
    #[must_use]
    pub fn spilled_keys(&self) -> u64 {
        let lines = self.lines.lock().expect("not poisoned");
        lines
            .iter()
            .filter_map(|(_, line)| {
                after(line, "kernel maps drained in ").and_then(|rest| field(rest, "spilled_keys"))
            })
            .sum()
    }

    /// The latest interval drained after `since`, waiting up to `wait` for one.
    pub fn interval_after(&self, since: Instant, wait: Duration) -> anyhow::Result<Interval> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(last) = self.intervals().into_iter().rev().find(|i| i.at > since) {
                return Ok(last);
            }
            if Instant::now() > deadline {
                bail!(
                    "memtrace drained no interval in {wait:?}:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it (SIGINT) and returns its stderr but the debug lines, which ends with what it
    /// saw and lost.
    pub fn stop(mut self) -> anyhow::Result<String> {
        self.interrupt();
        let status = self.child.wait().context("waiting for memtrace")?;
        thread::sleep(Duration::from_millis(200));
        let stderr = self.stderr();
        if !status.success() {
            bail!("memtrace exited with {status}:\n{stderr}");
        }
        Ok(stderr)
    }

    fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            self.interrupt();
            let _ = self.child.wait();
        }
    }
}

/// The total of the `lost` counts memtrace printed when it detached
/// (`memtrace: detached after 1.0s: 5 events seen, 0 lost (…)`).
pub fn lost(stderr: &str) -> anyhow::Result<u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("memtrace: detached"))
        .with_context(|| format!("memtrace did not say what it lost:\n{stderr}"))?;
    let (seen, _) = line
        .split_once(" lost")
        .context("no `lost` in memtrace's last line")?;
    seen.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("malformed: {line}"))
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.split_once(marker).map(|(_, rest)| rest)
}

/// `(CPU 1.23 ms` in a debug line.
fn cpu_ms(text: &str) -> f64 {
    after(text, "(CPU ")
        .and_then(|rest| number_before(rest, " ms"))
        .unwrap_or(f64::NAN)
}

fn number_before(text: &str, unit: &str) -> Option<f64> {
    text.split_once(unit)?.0.trim().parse().ok()
}

/// `name: 12` in a `Debug`-printed struct.
fn field(text: &str, name: &str) -> Option<u64> {
    let rest = after(text, &format!(" {name}: "))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
