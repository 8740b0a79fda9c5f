//! A live session: attach, stream until stopped, detach, report what was seen and lost.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use memtrace_common::LostKind;

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
    context: LiveContext,
    hierarchy: MemoryHierarchy,
    clock: HostClock,
    duration: Option<Duration>,
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
        let mut probes = Probes::attach()?;
        let ring = probes
            .take_ring()
            .context("ring buffer already taken")?;
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
            runtime: super::runtime()?,
            probes,
            ring,
            context,
            hierarchy,
            clock: HostClock {
                boot_time_wall_ns: clock::boot_time_wall_ns(),
                page_size: page_size(),
            },
            duration: args.duration,
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
            context,
            clock,
            duration,
            ..
        } = self;
        let begun = Instant::now();
        let stats = runtime
            .block_on(pipeline::run(ring, context, clock, sink, stop_signal(duration)))
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
            "memtrace: detached after {:.1}s: {} events seen, {} lost ({}){}",
            self.elapsed.as_secs_f64(),
            self.events,
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

async fn stop_signal(duration: Option<Duration>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot listen for SIGTERM: {e}");
            None
        }
    };
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let timeout = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                log::warn!("cannot listen for Ctrl-C: {e}");
                std::future::pending::<()>().await;
            }
        }
        () = term => {}
        () = timeout => {}
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}
