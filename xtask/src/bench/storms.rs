//! `cargo xtask bench storms`: the storms where tools lose data (issue 14), at full size, each
//! under a fresh `memtrace run` with its default settings: 200 OOM kills across 20 memcgs,
//! 5 000 memcgs created and removed under a `--cgroup` filter (also while memtrace's stdout is
//! not read for 5 s), a pod held at its limit for 10 s.
//! For each: its rate, events the kernel says happened vs. those memtrace reported, memtrace's
//! lost counters, its CPU and peak RSS, and how late events were read from its stdout.
//!
//! The storms themselves are `memtrace_tests::storm`, shared with the integration tests (which
//! run them smaller), through the `storm` binary of memtrace-tests. With `--against BINARY`
//! each storm runs under that build of memtrace too (one of the commit before a fix, say),
//! right after this one's.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::interrupt;
use crate::{
    process,
    workspace::{MEMTRACE, Workspace},
};

/// Each storm as the `storm` binary takes it; the second cgroup storm happens while memtrace's
/// stdout is not read for 5 s (a log shipper that stalls: memtrace's writes block). The last
/// one holds back more than `--max-held-events` (32 768 by default): 20 000 cgroups (up to
/// 60 000 events with their frees) while stdout is not read for 15 s, where memtrace's memory
/// stays bounded and what it drops is counted as lost.
const STORMS: [&[&str]; 5] = [
    &["oom", "20", "10"],
    &["cgroup", "5000"],
    &["cgroup", "5000", "5"],
    &["reclaim", "10"],
    &["cgroup", "20000", "15"],
];

#[derive(clap::Args)]
pub struct Options {
    /// Another build of memtrace to run each storm under as well, e.g. one built from the
    /// commit before a change
    #[arg(long, value_name = "BINARY")]
    against: Option<PathBuf>,
}

/// Builds memtrace and the storm workloads (release), runs each storm, prints the table and
/// writes `<target>/bench/storms.json`. Losses are reported, not failed: only a storm that
/// could not run fails.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    let proc_self = fs::metadata("/proc/self").context("reading /proc/self")?;
    if proc_self.uid() != 0 {
        bail!("bench storms must run as root (it creates memory cgroups and loads BPF programs)");
    }
    process::run(workspace.cargo().args([
        "build",
        "--release",
        "-p",
        MEMTRACE,
        "-p",
        "memtrace-tests",
        "--bins",
    ]))
    .context("bench step `build memtrace and the storms` failed")?;
    let release = workspace.target_dir().join("release");
    let memtrace = release.join(MEMTRACE);
    interrupt::catch();

    let mut builds = vec![("this build", memtrace.clone())];
    if let Some(other) = &options.against {
        builds.push(("against", other.clone()));
    }
    let mut rows = Vec::new();
    for storm in STORMS {
        for (label, binary) in &builds {
            interrupt::check()?;
            eprintln!("bench storms: {} under {label}", storm.join(" "));
            let outcome = run_storm(&release.join("storm"), binary, storm)
                .with_context(|| format!("storm `{}` under {label} failed", storm.join(" ")))?;
            rows.push(((*label).to_owned(), outcome));
        }
    }
    println!("{}", render(&rows));
    let out_dir = workspace.target_dir().join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json = out_dir.join("storms.json");
    let all: Vec<Value> = rows
        .iter()
        .map(|(label, outcome)| serde_json::json!({ "memtrace": label, "outcome": outcome }))
        .collect();
    let text = serde_json::to_string_pretty(&all).context("serialising the storms")?;
    fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    println!("JSON: {}", json.display());
    Ok(())
}

/// Runs `storm ARGS` with `MEMTRACE_BIN=memtrace`: its outcome, one JSON object.
fn run_storm(storm: &Path, memtrace: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let stdout =
        process::run_for_stdout(Command::new(storm).args(args).env("MEMTRACE_BIN", memtrace))?;
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the storm printed {line:?}"))
}

/// The table: a row per storm and build.
fn render(rows: &[(String, Value)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<23} {:<12} {:>7} {:>9} {:>9} {:>5} {:>7} {:>9} {:>11} {:>9}  problems",
        "storm",
        "memtrace",
        "rate/s",
        "expected",
        "seen",
        "lost",
        "CPU s",
        "peak RSS",
        "lag median",
        "lag max",
    );
    for (label, o) in rows {
        let f = |key: &str| o[key].as_f64().unwrap_or(f64::NAN);
        let lost = o["lost"]
            .as_u64()
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let problems = o["problems"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "{:<23} {label:<12} {:>7.0} {:>9} {:>9} {lost:>5} {:>7.2} {:>6.1} MB {:>8.1} ms \
             {:>6.0} ms  {problems}",
            o["storm"].as_str().unwrap_or("?"),
            f("rate_per_s"),
            o["expected"].as_u64().unwrap_or_default(),
            o["seen"].as_u64().unwrap_or_default(),
            f("cpu_s"),
            f("peak_rss_kib") / 1024.0,
            f("lag_median_ms"),
            f("lag_max_ms"),
        );
        if let Some(first) = o["problems"].as_array().and_then(|p| p.first()) {
            let _ = writeln!(
                out,
                "          first problem: {}",
                first.as_str().unwrap_or("?")
            );
        }
    }
    out
}
