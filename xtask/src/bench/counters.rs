//! `cargo xtask bench counters`: what following containers' kernel counters costs on a node with
//! many of them. Creates N memory cgroups shaped like Docker containers
//! (`/memtrace-bench-counters-<pid>/docker/<id>`), a sleeping process in each, runs memtrace
//! (release) on them with counters off and then on, and prints memtrace's CPU use in each
//! (from `/proc/PID/stat`) and the time of each counters pass (memtrace's own debug log).
//! The cgroups and their processes are removed at the end, also on failure.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use memtrace_common::cgroup::MemoryHierarchy;

use super::{
    memcgs::{Containers, Shape, clock_ticks, cpu_ticks},
    stats::median,
};
use crate::workspace::Workspace;

#[derive(Args)]
pub struct Options {
    /// Memory cgroups to create, a process in each
    #[arg(long, value_name = "N", default_value_t = 1000)]
    memcgs: usize,
    /// How long to measure memtrace in each configuration
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    seconds: u64,
    /// memtrace's --counters-interval
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    interval: String,
}

/// What one configuration measured.
struct Measured {
    cpu_percent: f64,
    /// Milliseconds per counters pass, and memcgs read per pass.
    passes: Vec<(f64, usize)>,
}

fn run_memtrace(
    memtrace: &Path,
    cgroup: &str,
    counters_interval: &str,
    seconds: u64,
    clock_ticks: f64,
) -> anyhow::Result<Measured> {
    let mut child = Command::new(memtrace)
        .args([
            "run",
            "--format",
            "json",
            "--events",
            "cgroup",
            "--stats-interval",
            "0",
            "--cgroup",
            cgroup,
            "--counters-interval",
            counters_interval,
        ])
        .env("RUST_LOG", "memtrace::pipeline=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace")?;
    let stderr = child.stderr.take().context("memtrace's stderr")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.starts_with("memtrace: attached") => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("memtrace exited before attaching"),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("memtrace did not attach within 60 s");
        }
    }
    // Settle after start-up, then measure.
    thread::sleep(Duration::from_secs(2));
    while rx.try_recv().is_ok() {}
    let start_ticks = cpu_ticks(child.id())?;
    let start = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    let ticks = cpu_ticks(child.id())? - start_ticks;
    let wall = start.elapsed().as_secs_f64();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut passes = Vec::new();
    while let Ok(line) = rx.try_recv() {
        // `… counters: 1000 memcgs read in 41.20 ms (of 1000 followed; …)`
        if let Some(rest) = line.split_once("counters: ").map(|(_, r)| r)
            && let Some((n, ms)) = rest.split_once(" memcgs read in ")
            && let Some((ms, _)) = ms.split_once(" ms")
            && let (Ok(n), Ok(ms)) = (n.parse(), ms.parse())
        {
            passes.push((ms, n));
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "a figure for people")]
    let cpu_percent = ticks as f64 / clock_ticks / wall * 100.0;
    Ok(Measured {
        cpu_percent,
        passes,
    })
}

pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    let memtrace = super::build_memtrace(workspace)?;
    let hierarchy = MemoryHierarchy::discover().context("the bench creates memory cgroups")?;
    let clock_ticks = clock_ticks()?;
    eprintln!(
        "bench counters: creating {} memory cgroups ({} hierarchy), a process in each",
        options.memcgs, hierarchy.version
    );
    let node = Containers::create(
        &hierarchy,
        "counters",
        Shape::Docker,
        options.memcgs,
        |_| {
            let mut sleep = Command::new("sleep");
            sleep.arg("3600");
            sleep
        },
    )?;
    let cgroup = node.path();
    let off = run_memtrace(&memtrace, &cgroup, "0", options.seconds, clock_ticks)?;
    let on = run_memtrace(
        &memtrace,
        &cgroup,
        &options.interval,
        options.seconds,
        clock_ticks,
    )?;
    drop(node);
    let ms: Vec<f64> = on.passes.iter().map(|&(ms, _)| ms).collect();
    let memcgs = on.passes.iter().map(|&(_, n)| n).max().unwrap_or(0);
    let per_memcg_us = median(&ms).unwrap_or(f64::NAN) * 1000.0
        / f64::from(u32::try_from(memcgs.max(1)).unwrap_or(u32::MAX));
    println!(
        "counters on {} memcgs ({} hierarchy), {} s each:",
        options.memcgs, hierarchy.version, options.seconds
    );
    println!(
        "  memtrace CPU, counters off:                 {:.2} %",
        off.cpu_percent
    );
    println!(
        "  memtrace CPU, --counters-interval {:<8} {:.2} %",
        options.interval, on.cpu_percent
    );
    println!(
        "  counters pass ({} passes, {memcgs} memcgs read): median {:.1} ms, max {:.1} ms, \
         {:.1} µs per memcg",
        ms.len(),
        median(&ms).unwrap_or(f64::NAN),
        ms.iter().copied().fold(f64::NAN, f64::max),
        per_memcg_us,
    );
    Ok(())
}
