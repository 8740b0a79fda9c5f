//! A live session: attach, stream until stopped, detach, report what was seen and lost.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use memtrace_common::LostKind;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    attribution::{
        Filter, KmsgOomLines, LiveContext, MEMCG_ID_LIMIT, MemcgCensus, MemcgResolver,
        MemoryHierarchy, PodDirectory, Removed, RuntimeLookups, RuntimeState, count_dying,
    },
    backlog::{Backlog, DEFAULT_MAX_HELD, added},
    clock,
    event::HostClock,
    event::{LossCause, LossTally},
    metrics::{self, Endpoint, Tap},
    pipeline::{self, Intervals, Losses, Settings},
    probes::{
        Aggregates, AttachOptions, AttachedPoint, DEFAULT_RING_BUFFER_BYTES, ProbePoint, Probes,
        Sources, Strategy, parse_ring_buffer_size,
        point::{events_help, parse_forced, parse_point},
    },
    sinks::Sink,
    startup::Timeline,
};

/// Options shared by `run` and `record`.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// Stop after this long (e.g. 30s, 10m, 1h30m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Report page cache, charges and slab per container (counted in the kernel) this often;
    /// the text stream counts reclaim episodes and charge failures over the same interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Sample each active container's memory (usage, limit, working set, anon, file, kernel)
    /// from cgroupfs this often, as `stats` events; 0 turns it off. (With --metrics, gauges
    /// are sampled every second regardless; this is how often the output gets them.)
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub stats_interval: Duration,
    /// Read the same containers' kernel counters (`memory.events`, or `memory.failcnt` and
    /// `memory.oom_control`; PSI stall time, refaults, scans, dirty, writeback, shmem, mapped
    /// file) this often, and emit a `counters` event for each container whose counters changed;
    /// `stats` samples carry them too. On cgroup v2 a change of `memory.events` (high, max, OOM)
    /// is read at once, as the kernel notifies it. 0 turns counters off. (A pass costs about
    /// 0.1 ms per container on cgroup v1: `cargo xtask bench counters`.)
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub counters_interval: Duration,
    /// Warn at start-up when this many memory cgroups are dying (removed but still pinned by
    /// charged memory); the kernel runs out of memcg ids at 65535.
    #[arg(long, default_value_t = 50_000, value_name = "COUNT")]
    pub dying_warn: u64,
    /// Ring buffer for one-by-one events (OOM kills, reclaim, cgroup lifecycle), in bytes: a
    /// power of two of at least 4096. Events that do not fit are counted, per kind, and said
    /// in the stream as `lost` events (and on stderr, in the summary and in metrics). E.g.
    /// `--ring-buffer-size 4M` for a node where thousands of containers start at once.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES,
          value_parser = parse_ring_buffer_size)]
    pub ring_buffer_size: u32,
    /// At most this many one-by-one events held in memory while the output is blocked (stdout
    /// piped to a reader that stopped reading); past it, new ones are dropped (OOM kills never)
    /// and counted, and a `lost` event (cause `output_blocked`) says how many once the output
    /// moves again. Bounds memtrace's memory: about 300 bytes an event. E.g.
    /// `--max-held-events 200000` to ride out a log shipper that stalls for a minute.
    #[arg(long, value_name = "COUNT", default_value_t = DEFAULT_MAX_HELD,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_held_events: u64,
    // The help lists each point with the event types it produces (`ProbePoint::events`).
    #[arg(long, value_name = "POINT,...", value_delimiter = ',', value_parser = parse_point,
          help = events_help())]
    pub events: Option<Vec<ProbePoint>>,
    /// Use this strategy for a probe point instead of the best the kernel allows, e.g.
    /// `oom_kill=kprobe`, `try_charge=fexit`; `memtrace probes` lists them. Repeat for several
    /// points.
    #[arg(long, value_name = "POINT=STRATEGY", value_parser = parse_forced)]
    pub probe_strategy: Vec<(ProbePoint, Strategy)>,
    /// Where the host's root directory is: container names and images are read from the
    /// runtimes' state under it (podman, CRI-O, Docker, containerd), pod names also from the
    /// kubelet's `var/log/pods`. In a container, mount the host's `/` (or those directories)
    /// there, e.g. `/host`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Prometheus metrics of the session.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on ADDR, path /metrics: a bare PORT or :PORT listens on
    /// 127.0.0.1 only; give an address (0.0.0.0:PORT) to be scraped from the network.
    #[arg(long, value_name = "ADDR", value_parser = metrics::parse_listen_address)]
    pub metrics: Option<SocketAddr>,
    /// With --metrics: how long the series of a removed container stay, so that scrapes see
    /// its final counts; then they go.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "2m")]
    pub metrics_grace: Duration,
}

/// Which containers to report on; all given must match.
#[derive(Debug, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this cgroup and the cgroups below it (path in the memory hierarchy, e.g.
    /// /kubepods.slice/kubepods-burstable.slice).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Only the container whose id starts with this (12 characters, as `docker ps` shows).
    #[arg(long, value_name = "ID-PREFIX")]
    pub container: Option<String>,
    /// Only this pod: its UID, its name, or NAMESPACE/NAME.
    #[arg(long, value_name = "NAME|UID")]
    pub pod: Option<String>,
}

impl FilterArgs {
    #[must_use]
    pub fn filter(&self) -> Filter {
        Filter {
            cgroup: self.cgroup.clone(),
            container: self.container.clone(),
            pod: self.pod.clone(),
        }
    }
}

pub struct Session {
    runtime: tokio::runtime::Runtime,
    probes: Probes,
    /// What the programs hand to userspace, taken from `probes`.
    outputs: ProgramOutputs,
    context: LiveContext,
    hierarchy: MemoryHierarchy,
    /// The host's memcgs when the session started; `None` when they could not be counted.
    memcgs_at_start: Option<MemcgCensus>,
    clock: HostClock,
    duration: Option<Duration>,
    intervals: Intervals,
    interrupt: Signal,
    terminate: Signal,
    metrics: Option<SessionMetrics>,
    lost_watch: Option<LostWatch>,
    /// Events held while the output is blocked, and what was dropped past the bound.
    backlog: Backlog,
}

/// The kernel side's lost-event counters, read every second while a session streams, for a
/// sink that needs them before the session ends (the flight recorder says what a window lost).
#[derive(Clone, Debug, Default)]
pub struct LostWatch(Arc<[AtomicU64; LostKind::COUNT as usize]>);

impl LostWatch {
    /// The counts as last read, per kind (totals since the programs were loaded).
    #[must_use]
    pub fn totals(&self) -> Vec<(LostKind, u64)> {
        LostKind::ALL
            .iter()
            .zip(self.0.iter())
            .map(|(&kind, n)| (kind, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn set(&self, lost: &[(LostKind, u64)]) {
        for &(kind, n) in lost {
            if let Some(slot) = self.0.get(kind as usize) {
                slot.store(n, Ordering::Relaxed);
            }
        }
    }
}

/// `--metrics`: the endpoint, and how often the session's own sink wants `stats` samples.
struct SessionMetrics {
    endpoint: Endpoint,
    stats_every: Option<Duration>,
}

/// The ring buffer, the per-interval aggregates and the programs' log.
struct ProgramOutputs {
    ring: RingBuf<MapData>,
    aggregates: Aggregates,
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
}

/// What a session saw, printed on stderr when it ends.
pub struct Summary {
    pub events: u64,
    /// Memcgs removed during the session that were still dying when it ended.
    pub still_dying: Vec<Removed>,
    /// Per kind: lost in the kernel and dropped while the output was blocked.
    pub lost: Vec<(LostKind, u64)>,
    /// Of `lost`, what memtrace dropped itself (`--max-held-events`).
    pub dropped: u64,
    pub undecodable: u64,
    pub elapsed: Duration,
}

impl Session {
    /// Discovers the memory hierarchy, loads and attaches the programs, and says so on stderr
    /// (tests and people wait for that line before they trigger anything).
    pub fn start(args: &LiveArgs, started: Instant) -> anyhow::Result<Self> {
        let mut timeline = Timeline::new(started);
        timeline.phase("arguments");
        let hierarchy = MemoryHierarchy::discover()?;
        let page_size = page_size();
        let clock = HostClock {
            boot_time_wall_ns: clock::boot_time_wall_ns(),
            page_size,
        };
        timeline.phase("memory hierarchy");
        // Before attaching: an address in use fails the start, not the session.
        let metrics = args
            .metrics
            .metrics
            .map(|addr| Endpoint::bind(addr, args.metrics.metrics_grace, hierarchy.clone(), clock))
            .transpose()?;
        timeline.phase("metrics endpoint");
        let runtime = super::runtime()?;
        let (interrupt, terminate) = listen_for_stop(&runtime)?;
        timeline.phase("runtime, signals");
        let mut probes = Probes::attach(
            &AttachOptions {
                ring_buffer_bytes: args.ring_buffer_size,
                forced: args.probe_strategy.clone(),
                points: args.events.clone(),
                kernel_filter: !args.filter.filter().is_empty(),
            },
            &mut timeline,
        )?;
        let ring = probes.take_ring().context("ring buffer already taken")?;
        let logger = probes
            .take_logger()
            .context("log forwarder already taken")?;
        let aggregates = probes
            .take_aggregates()
            .context("aggregates already taken")?;
        let resolver = MemcgResolver::new(hierarchy.clone());
        timeline.phase("cgroup walk");
        let memcgs_at_start = report_dying(&hierarchy, &resolver, args.dying_warn);
        timeline.phase("dying census");
        let mut context = live_context(args, resolver, page_size, &probes);
        timeline.phase("kmsg, context");
        if let Some(kernel) = probes.take_kernel_filter() {
            let matching = context.filter_in_kernel(kernel)?;
            eprintln!(
                "memtrace: filtering in the kernel: {matching} memory cgroup{} match now",
                if matching == 1 { "" } else { "s" }
            );
            timeline.phase("kernel filter");
        }
        // Last: once this line is out, everything is in place (filters included).
        let attached: Vec<String> = probes.attached.iter().map(ToString::to_string).collect();
        timeline.summary();
        eprintln!(
            "memtrace: attached {} in {} ms (memory cgroup {:?} at {}); Ctrl-C to stop",
            attached.join(" "),
            timeline.elapsed().as_millis(),
            hierarchy.version,
            hierarchy.root.display(),
        );
        Ok(Self {
            runtime,
            probes,
            outputs: ProgramOutputs {
                ring,
                aggregates,
                logger,
            },
            context,
            hierarchy,
            memcgs_at_start,
            clock,
            duration: args.duration,
            intervals: Intervals {
                aggregate: args.interval,
                stats: stats_interval(args.stats_interval, metrics.is_some()),
                counters: Some(args.counters_interval).filter(|d| !d.is_zero()),
            },
            interrupt,
            terminate,
            metrics: metrics.map(|endpoint| SessionMetrics {
                endpoint,
                stats_every: Some(args.stats_interval).filter(|d| !d.is_zero()),
            }),
            lost_watch: None,
            backlog: Backlog::new(args.max_held_events),
        })
    }

    /// Lost-event counters kept up to date (every second) while the session streams.
    pub fn watch_lost(&mut self) -> LostWatch {
        self.lost_watch
            .get_or_insert_with(LostWatch::default)
            .clone()
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
    pub fn memcgs_at_start(&self) -> Option<MemcgCensus> {
        self.memcgs_at_start
    }

    #[must_use]
    pub fn clock(&self) -> HostClock {
        self.clock
    }

    /// Streams into `sink` until Ctrl-C, SIGTERM or the duration; then detaches.
    pub fn stream(self, sink: &mut dyn Sink) -> anyhow::Result<Summary> {
        self.stream_until(sink, std::future::pending())
    }

    /// As [`Session::stream`], and also stops when `until` completes (`top`: the user quit).
    pub fn stream_until(
        self,
        sink: &mut dyn Sink,
        until: impl Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let Self {
            runtime,
            probes,
            outputs:
                ProgramOutputs {
                    ring,
                    aggregates,
                    logger,
                },
            context,
            duration,
            intervals,
            interrupt,
            terminate,
            metrics,
            lost_watch,
            backlog,
            ..
        } = self;
        let counted = Counted {
            probes: &probes,
            backlog: &backlog,
            watch: lost_watch.as_ref(),
        };
        let kernel_lost = || counted.kernel();
        let losses = || Losses {
            kernel: &kernel_lost,
            backlog: backlog.clone(),
        };
        let sources = Sources::of(&probes.attached);
        let begun = Instant::now();
        let stats = runtime
            .block_on(async {
                let forwarder = tokio::spawn(pipeline::forward_logs(logger));
                let settings = Settings { intervals, sources };
                let stop = async {
                    tokio::select! {
                        () = stop(interrupt, terminate, duration) => {}
                        () = until => {}
                    }
                };
                let stats = match metrics {
                    None => {
                        let run = pipeline::run(
                            ring,
                            aggregates,
                            context,
                            settings,
                            (sink, losses()),
                            stop,
                        );
                        tokio::select! {
                            stats = run => stats,
                            () = count_lost(&counted, None) => {
                                unreachable!("never ends")
                            }
                        }
                    }
                    Some(SessionMetrics {
                        endpoint,
                        stats_every,
                    }) => {
                        let exporter = Arc::clone(&endpoint.exporter);
                        let server = endpoint.spawn();
                        let sampled = intervals.stats.unwrap_or(metrics::STATS_INTERVAL);
                        let mut tap = Tap::new(&exporter, sink, stats_every, sampled);
                        let run = pipeline::run(
                            ring,
                            aggregates,
                            context,
                            settings,
                            (&mut tap, losses()),
                            stop,
                        );
                        let stats = tokio::select! {
                            stats = run => stats,
                            () = count_lost(&counted, Some(&exporter)) => {
                                unreachable!("never ends")
                            }
                        };
                        server.abort();
                        stats
                    }
                };
                forwarder.abort();
                stats
            })
            .context("streaming events")?;
        // What the stream's last `lost` events said, which the reader's last drain ended.
        let dropped = backlog.dropped();
        let lost = added(&stats.kernel_lost, &dropped);
        drop(probes);
        Ok(Summary {
            still_dying: stats.still_dying,
            events: stats.events,
            lost,
            dropped: dropped.iter().map(|(_, n)| n).sum(),
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
            "memtrace: detached after {:.1}s: {} event{} seen, {} lost ({}){}{}",
            self.elapsed.as_secs_f64(),
            self.events,
            if self.events == 1 { "" } else { "s" },
            self.total_lost(),
            per_kind.join(" "),
            if self.dropped > 0 {
                format!(
                    ", of which {} dropped while the output was blocked (--max-held-events)",
                    self.dropped
                )
            } else {
                String::new()
            },
            if self.undecodable > 0 {
                format!(", {} undecodable", self.undecodable)
            } else {
                String::new()
            }
        );
        let now = clock::boot_ns();
        for d in &self.still_dying {
            #[expect(clippy::cast_precision_loss, reason = "seconds for people")]
            let age = now.saturating_sub(d.removed_ns) as f64 / 1e9;
            eprintln!(
                "memtrace: still dying: {} (removed {age:.1}s ago, {} charged at removal)",
                d.cgroup.as_deref().unwrap_or("?"),
                d.charged_bytes
                    .map_or_else(|| "?".to_owned(), crate::units::human_bytes),
            );
        }
    }
}

/// The pipeline's stats interval: the user's, or with `--metrics` at least every
/// [`metrics::STATS_INTERVAL`]; `None`: no samples.
fn stats_interval(user: Duration, metrics: bool) -> Option<Duration> {
    let user = Some(user).filter(|d| !d.is_zero());
    if metrics {
        Some(user.map_or(metrics::STATS_INTERVAL, |u| u.min(metrics::STATS_INTERVAL)))
    } else {
        user
    }
}

/// Where the session's losses are counted.
struct Counted<'a> {
    probes: &'a Probes,
    backlog: &'a Backlog,
    watch: Option<&'a LostWatch>,
}

impl Counted<'_> {
    /// The kernel side's lost counters (none when they cannot be read, with a warning).
    fn kernel(&self) -> Vec<(LostKind, u64)> {
        self.probes.lost().unwrap_or_else(|e| {
            log::warn!("reading lost-event counters: {e}");
            Vec::new()
        })
    }
}

/// Reads the lost-event counters (the kernel side's and the backlog's) every second: says on
/// stderr, at once, what a second lost (a loss is never silent, also before the summary), and
/// hands the totals to the exporter and the watch; never ends.
async fn count_lost(counted: &Counted<'_>, exporter: Option<&metrics::Exporter>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut kernel = LossTally::kernel();
    let mut blocked = LossTally::of(LossCause::OutputBlocked);
    loop {
        every.tick().await;
        match counted.probes.lost() {
            Ok(lost) => {
                let dropped = counted.backlog.dropped();
                warn_of_losses(&mut kernel, &lost);
                warn_of_losses(&mut blocked, &dropped);
                let lost = added(&lost, &dropped);
                if let Some(exporter) = exporter {
                    exporter.set_lost(&lost);
                }
                if let Some(watch) = counted.watch {
                    watch.set(&lost);
                }
            }
            Err(e) => log::warn!("reading lost-event counters: {e}"),
        }
    }
}

/// One stderr line per kind whose lost counter grew since the tally's last reading.
fn warn_of_losses(tally: &mut LossTally, totals: &[(LostKind, u64)]) {
    for lost in tally.grown(totals) {
        eprintln!(
            "memtrace: lost {} {} event{} ({} in all): {}",
            lost.count,
            lost.kind,
            if lost.count == 1 { "" } else { "s" },
            lost.total,
            lost.advice,
        );
    }
}

/// Listens for Ctrl-C and SIGTERM, before saying "attached": whoever waits for that line may
/// signal at once, and must get a clean detach, not the default kill.
fn listen_for_stop(runtime: &tokio::runtime::Runtime) -> anyhow::Result<(Signal, Signal)> {
    let _in_runtime = runtime.enter();
    Ok((
        signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
        signal(SignalKind::terminate()).context("listening for SIGTERM")?,
    ))
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

/// Says how many memcgs are dying now, and warns when that nears the kernel's id limit: the
/// slow leak behind "cannot create cgroup" failures on long-lived nodes. Returns the count, for
/// a recording's header.
fn report_dying(
    hierarchy: &MemoryHierarchy,
    resolver: &MemcgResolver,
    warn_at: u64,
) -> Option<MemcgCensus> {
    // The resolver has just walked the hierarchy.
    let live = resolver.known();
    match count_dying(hierarchy, live) {
        Ok(dying) => {
            if dying >= warn_at {
                eprintln!(
                    "memtrace: WARNING: {dying} memory cgroups are dying (removed, still pinned \
                     by charged page cache or slab); the kernel cannot create more than \
                     {MEMCG_ID_LIMIT}"
                );
            } else {
                eprintln!("memtrace: {dying} dying memory cgroups at start-up");
            }
            Some(MemcgCensus { live, dying })
        }
        Err(e) => {
            eprintln!("memtrace: cannot count dying memory cgroups: {e}");
            None
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Attribution for a live session: cgroups, pods, runtimes, the kernel's OOM lines and, unless
/// turned off, the containers' kernel counters.
fn live_context(
    args: &LiveArgs,
    resolver: MemcgResolver,
    page_size: u64,
    probes: &Probes,
) -> LiveContext {
    let kmsg = KmsgOomLines::follow()
        .inspect_err(|e| {
            eprintln!(
                "memtrace: cannot read /dev/kmsg ({e}): OOM kills will not say which limit fired"
            );
        })
        .ok();
    let mut context = LiveContext::new(
        resolver,
        PodDirectory::new(args.host_root.join("var/log")),
        kmsg,
        args.filter.filter(),
        page_size,
        probes.oom_constraints.clone(),
    )
    .with_runtime_lookups(RuntimeLookups::new(RuntimeState::new(&args.host_root)));
    if !args.counters_interval.is_zero() {
        context.follow_counters();
    }
    context
}
