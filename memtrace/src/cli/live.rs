//! A live session: attach, stream until stopped, detach, report what was seen and lost.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use memtrace_common::LostKind;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    attribution::{LiveContext, MemcgResolver, MemoryHierarchy},
    clock,
    event::HostClock,
    pipeline,
    probes::{AttachedPoint, Probes},
    sinks::Sink,
};

/// Options shared by `run` and `record`.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// Stop after this long (e.g. 30s, 10m, 1h30m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

pub struct Session {
    runtime: tokio::runtime::Runtime,
    probes: Probes,
    ring: RingBuf<MapData>,
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    context: LiveContext,
    hierarchy: MemoryHierarchy,
    clock: HostClock,
    duration: Option<Duration>,
    interrupt: Signal,
    terminate: Signal,
}

/// What a session saw, printed on stderr when it ends.
pub struct Summary {
    pub events: u64,
    pub lost: Vec<(LostKind, u64)>,
    pub undecodable: u64,
    pub elapsed: Duration,
}

impl Session {
    /// Discovers the memory hierarchy, loads and attaches the programs, and says so on stderr
    /// (tests and people wait for that line before they trigger anything).
    pub fn start(args: &LiveArgs, started: Instant) -> anyhow::Result<Self> {
        let hierarchy = MemoryHierarchy::discover()?;
        let runtime = super::runtime()?;
        // Listen for Ctrl-C and SIGTERM before saying "attached": whoever waits for that line
        // may signal at once, and must get a clean detach, not the default kill.
        let (interrupt, terminate) = {
            let _in_runtime = runtime.enter();
            (
                signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
                signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            )
        };
        let mut probes = Probes::attach()?;
        let ring = probes.take_ring().context("ring buffer already taken")?;
        let logger = probes
            .take_logger()
            .context("log forwarder already taken")?;
        let attached: Vec<String> = probes.attached.iter().map(ToString::to_string).collect();
        eprintln!(
            "memtrace: attached {} in {} ms (memory cgroup {:?} at {}); Ctrl-C to stop",
            attached.join(" "),
            started.elapsed().as_millis(),
            hierarchy.version,
            hierarchy.root.display(),
        );
        let context = LiveContext::new(MemcgResolver::new(hierarchy.clone()));
        Ok(Self {
            runtime,
            probes,
            ring,
            logger,
            context,
            hierarchy,
            clock: HostClock {
                boot_time_wall_ns: clock::boot_time_wall_ns(),
                page_size: page_size(),
            },
            duration: args.duration,
            interrupt,
            terminate,
        })
    }

    #[must_use]
    pub fn attached(&self) -> &[AttachedPoint] {
        &self.probes.attached
    }

    #[must_use]
    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hierarchy
    }

    #[must_use]
    pub fn clock(&self) -> HostClock {
        self.clock
    }

    /// Streams into `sink` until Ctrl-C, SIGTERM or the duration; then detaches.
    pub fn stream(self, sink: &mut dyn Sink) -> anyhow::Result<Summary> {
        let Self {
            runtime,
            probes,
            ring,
            logger,
            context,
            clock,
            duration,
            interrupt,
            terminate,
            ..
        } = self;
        let begun = Instant::now();
        let stats = runtime
            .block_on(async {
                let forwarder = tokio::spawn(pipeline::forward_logs(logger));
                let stats = pipeline::run(
                    ring,
                    context,
                    clock,
                    sink,
                    stop(interrupt, terminate, duration),
                )
                .await;
                forwarder.abort();
                stats
            })
            .context("streaming events")?;
        let lost = probes.lost().context("reading lost-event counters")?;
        drop(probes);
        Ok(Summary {
            events: stats.events,
            lost,
            undecodable: stats.undecodable,
            elapsed: begun.elapsed(),
        })
    }
}

impl Summary {
    pub fn total_lost(&self) -> u64 {
        self.lost.iter().map(|(_, n)| n).sum()
    }

    pub fn print(&self) {
        let per_kind: Vec<String> = self
            .lost
            .iter()
            .map(|(kind, n)| format!("{}={n}", kind.name()))
            .collect();
        eprintln!(
            "memtrace: detached after {:.1}s: {} event{} seen, {} lost ({}){}",
            self.elapsed.as_secs_f64(),
            self.events,
            if self.events == 1 { "" } else { "s" },
            self.total_lost(),
            per_kind.join(" "),
            if self.undecodable > 0 {
                format!(", {} undecodable", self.undecodable)
            } else {
                String::new()
            }
        );
    }
}

/// Completes on Ctrl-C, SIGTERM or when `duration` has passed.
async fn stop(mut interrupt: Signal, mut terminate: Signal, duration: Option<Duration>) {
    let timeout = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        () = timeout => {}
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}
