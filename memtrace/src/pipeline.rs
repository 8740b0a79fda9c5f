//! Ring buffer → decoded records → events → sinks, without ever blocking.
//!
//! - The reader drains the ring buffer into owned records and hands them over a channel: it
//!   never waits for the consumer, and never awaits while it holds a ring-buffer item. It runs
//!   on a thread of its own: a consumer blocked on its output (a stdout pipe that a log shipper
//!   stopped reading) would otherwise stop the draining too, and the kernel would drop what no
//!   longer fits in the ring buffer. Back-pressure is held in memory instead, up to
//!   `--max-held-events` ([`Backlog`]); past that the reader drops new records and counts them.
//! - Losses are said in the stream: at each interval (and at the end) a `lost` event per kind
//!   whose count grew, from the kernel's counters (a full ring buffer or map) and the
//!   backlog's (a blocked output), and at once after a batch the backlog had to cut.
//! - The consumer turns records into events and writes them to the sink. What would make it
//!   wait runs elsewhere: an OOM kill whose kernel report line has not arrived is held with a
//!   deadline ([`KMSG_WAIT`]) while the events behind it go on; draining the kernel's
//!   aggregates (which waits for the programs to leave the old half) and walking the cgroup
//!   hierarchy (to name a memcg not seen yet, or to sample containers' memory) run on blocking
//!   threads, and the records that need their result wait in order, not the consumer.
//! - On stop, the reader drains once more so that nothing the kernel already submitted is
//!   lost, then closes the channel; the consumer finishes what is queued, held OOM kills
//!   included.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use memtrace_common::{InodeId, LostKind, event::Record};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::{
    attribution::{
        CounterScan, CounterWatch, KMSG_WAIT, LiveContext, MemoryScan, OomArrival, OomKillLine,
        Removed,
    },
    backlog::Backlog,
    clock,
    event::{Event, LossCause, LossTally, Memcg, OomConstraint, What},
    priority,
    probes::{
        Aggregates, Drain, ProbeError, Sources,
        derived::{ChargesFrom, charges_from_page_cache},
    },
    sinks::Sink,
};

/// What went through the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    /// Ring-buffer records that could not be decoded (a kernel/user ABI mismatch).
    pub undecodable: u64,
    /// Memcgs removed during the session and still dying at its end.
    pub still_dying: Vec<Removed>,
    /// The kernel side's lost counters as the stream's last `lost` events said them, after
    /// the reader's last drain: what the session lost in the kernel.
    pub kernel_lost: Vec<(LostKind, u64)>,
}

/// The sink is flushed at least this often, also when no event arrives: a trace writer writes
/// its open chunk then, if it is old enough, so a killed recorder loses under a second.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How often held OOM kills look for their kernel report line.
const OOM_POLL: Duration = Duration::from_millis(10);

/// The kernel rate-limits its OOM report (`oom_rs`: ten per five seconds). Once a kill's line
/// did not come, kills in the next five seconds are held for theirs only [`KMSG_QUIET_WAIT`]:
/// in an OOM storm the whole wait would be paid by every kill.
const KMSG_QUIET: Duration = Duration::from_secs(5);

/// The wait for a kill's line while the kernel rate-limits its report. Not none: a report the
/// kernel did print comes before the kill it reports, but the thread reading `/dev/kmsg` may not
/// have read it yet when the kill's record arrives (two memtraces on one node, one waiting and
/// one not, disagreed on a kill's constraint).
const KMSG_QUIET_WAIT: Duration = Duration::from_millis(30);

/// How often the pipeline samples what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Drain the kernel's aggregates (page cache) into `cache` events.
    pub aggregate: Duration,
    /// Sample active containers' memory from cgroupfs into `stats` events; `None`: never.
    pub stats: Option<Duration>,
    /// Read the same memcgs' counters into `counters` events (what changed); `None`: never.
    pub counters: Option<Duration>,
}

/// How the pipeline turns what it reads into events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub intervals: Intervals,
    pub sources: Sources,
}

/// Where the pipeline learns what was lost, to say it in the stream.
pub struct Losses<'a> {
    /// The kernel side's lost counters, totals per kind.
    pub kernel: &'a dyn Fn() -> Vec<(LostKind, u64)>,
    /// What the reader hands on and the consumer has not taken; what it dropped.
    pub backlog: Backlog,
}

/// The `lost` events said so far, per source.
struct Said<'a> {
    losses: Losses<'a>,
    kernel: LossTally,
    blocked: LossTally,
    /// The kernel's counters as last read.
    kernel_totals: Vec<(LostKind, u64)>,
    /// When the backlog's drops were last said: while the consumer stays slower than the
    /// kernel, not after every batch.
    drops_told: Option<Instant>,
}

/// What waits for a walk of the cgroup hierarchy, in arrival order.
enum Held {
    Record(Record),
    /// An interval of aggregates, with when it ended and how long it was.
    Drain(Drain, u64, u64),
}

/// A drain of the aggregates running on a blocking thread: the interval's counts (with when
/// it ended) as soon as they are read; then, once the consumer made the interval's events
/// ([`DrainJob::counted`]), the deletes of the keys it chose, and the maps.
struct DrainJob {
    counts: Option<oneshot::Receiver<(Result<Drain, ProbeError>, u64)>>,
    events_made: Option<oneshot::Sender<()>>,
    maps: JoinHandle<Result<Aggregates, ProbeError>>,
}

impl DrainJob {
    /// The interval's events are made: the deletes may run, not competing with them for a CPU.
    fn counted(job: Option<&mut Self>) {
        if let Some(made) = job.and_then(|job| job.events_made.take()) {
            // A drain thread gone has said why in its result.
            let _ = made.send(());
        }
    }
}

/// The consumer's state: what it turns records into and what waits.
struct Consumer<'a> {
    context: LiveContext,
    sink: &'a mut dyn Sink,
    sources: Sources,
    events: u64,
    /// Records and drains waiting for the walk in flight, in order.
    held: VecDeque<Held>,
    /// Ids the walk in flight was started for.
    asked: Vec<u64>,
    /// OOM kills waiting for their kernel report line, oldest first.
    ooms: VecDeque<OomArrival>,
    /// Until when the kernel is taken to be rate-limiting its OOM report.
    kmsg_quiet_until: Option<Instant>,
    /// A global OOM kill was emitted: sample every container's memory now (a census), not at
    /// the next `stats` tick, so the report can say who held the node's memory at the kill.
    census_wanted: bool,
    /// Memcgs freed whose kernel-side entries the next drain deletes.
    forget: Vec<u64>,
    /// `INODE_IDS` entries of files whose names were forgotten, which the next drain deletes:
    /// (key, the file it must still name).
    unkeyed: Vec<(u64, InodeId)>,
    said: Said<'a>,
}

impl Consumer<'_> {
    /// A `lost` event per kind whose lost count grew since the last: the kernel's (with
    /// `kernel`, at intervals) and the backlog's (at most every [`FLUSH_EVERY`] between them).
    fn say_losses(&mut self, kernel: bool) -> io::Result<()> {
        let mut lost = Vec::new();
        if kernel {
            self.said.kernel_totals = (self.said.losses.kernel)();
            lost = self.said.kernel.grown(&self.said.kernel_totals);
        }
        let due = self
            .said
            .drops_told
            .is_none_or(|at| at.elapsed() >= FLUSH_EVERY);
        if kernel || due {
            let dropped = self.said.blocked.grown(&self.said.losses.backlog.dropped());
            if !dropped.is_empty() {
                self.said.drops_told = Some(Instant::now());
            }
            lost.extend(dropped);
        }
        for lost in lost {
            let event = Event {
                timestamp_ns: clock::boot_ns(),
                memcg: Memcg::default(),
                what: What::Lost(lost),
            };
            self.emit(&event)?;
        }
        Ok(())
    }

    fn emit(&mut self, event: &Event) -> io::Result<()> {
        self.events += 1;
        self.sink.write(event)
    }

    /// Takes a record in: at once, or behind what waits for a walk (`true`: start one).
    #[expect(
        clippy::large_types_passed_by_value,
        reason = "a record that waits is kept; one that does not is dropped here"
    )]
    fn record(&mut self, record: Record) -> io::Result<bool> {
        if !self.held.is_empty() {
            self.held.push_back(Held::Record(record));
            return Ok(false);
        }
        let unknown = self.context.unknown_ids(&record);
        if unknown.is_empty() {
            self.handle(&record)?;
            return Ok(false);
        }
        self.asked = unknown;
        self.held.push_back(Held::Record(record));
        Ok(true)
    }

    /// The event a record stands for, and what userspace derives from it: the charge failure
    /// a memcg limit reclaim episode began with, when `try_charge` is derived.
    fn handle(&mut self, record: &Record) -> io::Result<()> {
        if let Record::OomKill(r) = record {
            let arrival = self.context.oom_arrived(r);
            let line = self.context.oom_report_line(r.pid);
            if line.is_none() && self.context.follows_kernel_log() {
                self.ooms.push_back(arrival);
                return Ok(());
            }
            return self.emit_oom(&arrival, line);
        }
        let Some(event) = self.context.observe(record) else {
            return Ok(());
        };
        self.emit(&event)?;
        if self.sources.charge_failures_from_reclaim
            && matches!(event.what, What::Reclaim(_))
            && let Some(derived) = self.context.charge_fail_from_reclaim(&event)
        {
            self.emit(&derived)?;
        }
        Ok(())
    }

    fn emit_oom(&mut self, arrival: &OomArrival, line: Option<OomKillLine>) -> io::Result<()> {
        let out = Duration::from_nanos(
            clock::boot_ns().saturating_sub(arrival.record.header.timestamp_ns),
        );
        let held = arrival.arrived.elapsed();
        log::debug!(
            "OOM kill of pid {}: out {} ms after the kill (reached the consumer after {} ms, \
             held {} ms), {}",
            arrival.record.pid,
            out.as_millis(),
            out.saturating_sub(held).as_millis(),
            held.as_millis(),
            if line.is_some() {
                "with the kernel's report line"
            } else {
                "without the kernel's report line"
            }
        );
        match self.context.oom_event(arrival, line) {
            Some(event) => {
                self.census_wanted |= matches!(
                    &event.what,
                    What::OomKill(kill) if kill.constraint == Some(OomConstraint::None)
                );
                self.emit(&event)
            }
            None => Ok(()),
        }
    }

    /// Emits the held OOM kills whose kernel line arrived, or whose wait is over (all of them
    /// when `all`).
    fn poll_ooms(&mut self, all: bool) -> io::Result<()> {
        let quiet = self.kmsg_quiet_until.is_some_and(|t| Instant::now() < t);
        let wait = if quiet { KMSG_QUIET_WAIT } else { KMSG_WAIT };
        let mut i = 0;
        while i < self.ooms.len() {
            let pid = self.ooms[i].record.pid;
            let line = self.context.oom_report_line(pid);
            if line.is_some() || all || self.ooms[i].arrived.elapsed() >= wait {
                let arrival = self.ooms.remove(i).expect("index checked");
                if line.is_none() && !all {
                    self.kmsg_quiet_until = Some(Instant::now() + KMSG_QUIET);
                }
                self.emit_oom(&arrival, line)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Takes in a walk, then what waited for it, until something waits again (`true`: start
    /// another walk).
    fn walked(&mut self, found: Vec<(u64, String)>) -> io::Result<bool> {
        let asked = std::mem::take(&mut self.asked);
        self.context.learn(found, &asked);
        while let Some(held) = self.held.pop_front() {
            let unknown = match &held {
                Held::Record(r) => self.context.unknown_ids(r),
                Held::Drain(d, ..) => self.context.unknown_ids_in(d),
            };
            if !unknown.is_empty() {
                self.asked = unknown;
                self.held.push_front(held);
                return Ok(true);
            }
            match held {
                Held::Record(r) => self.handle(&r)?,
                Held::Drain(d, now, interval) => self.aggregates(&d, now, interval)?,
            }
        }
        Ok(false)
    }

    /// Takes in an interval of aggregates (`true`: start a walk to name its memcgs).
    fn drained(&mut self, drain: Drain, now: u64, interval: u64) -> io::Result<bool> {
        let forgotten = self.context.expire_released();
        self.forget.extend(forgotten);
        if !self.held.is_empty() {
            self.held.push_back(Held::Drain(drain, now, interval));
            return Ok(false);
        }
        let unknown = self.context.unknown_ids_in(&drain);
        if unknown.is_empty() {
            self.aggregates(&drain, now, interval)?;
            return Ok(false);
        }
        self.asked = unknown;
        self.held.push_back(Held::Drain(drain, now, interval));
        Ok(true)
    }

    /// One interval of the kernel's aggregates as `cache`, `charge` and `slab` events.
    fn aggregates(&mut self, drain: &Drain, now: u64, interval: u64) -> io::Result<()> {
        // The second half of the interval's drain, on the consumer's thread (no await in here):
        // as raised as the first (`spawn_drain`), as the whole event path is.
        let started = Instant::now();
        let cpu = clock::thread_cpu_ns();
        let Self {
            context,
            sink,
            events: emitted,
            ..
        } = self;
        let before = *emitted;
        // Each event is written as it is made: none are kept.
        let mut emit = |event: &Event| {
            *emitted += 1;
            sink.write(event)
        };
        context.counted_activity(drain);
        context.cache_events(&drain.cache, (now, interval), &mut emit)?;
        self.unkeyed.extend(context.unkeyed_files());
        let from_page_cache;
        let charges = match self.sources.charges {
            ChargesFrom::Kernel(_) => &drain.charge,
            ChargesFrom::PageCache => {
                from_page_cache = charges_from_page_cache(&drain.cache);
                &from_page_cache
            }
        };
        context.charge_events((charges, self.sources.charges), (now, interval), &mut emit)?;
        context.slab_events(drain, (now, interval), &mut emit)?;
        let made = *emitted - before;
        self.sink.interval_end(now)?;
        self.sink.flush()?;
        #[expect(clippy::cast_precision_loss, reason = "milliseconds for people")]
        let cpu_ms = clock::thread_cpu_ns().saturating_sub(cpu) as f64 / 1e6;
        log::debug!(
            "aggregates: {made} events made in {:.2} ms (CPU {cpu_ms:.2} ms); tables: {:?}",
            started.elapsed().as_secs_f64() * 1000.0,
            self.context.table_sizes()
        );
        Ok(())
    }

    /// A pass over the followed memcgs' counters: what changed since the last.
    fn counted(&mut self, scan: CounterScan, now: u64) -> io::Result<()> {
        log::debug!(
            "counters: {} memcgs read in {:.2} ms (of {} followed; {}{}; usage files open: {})",
            scan.read,
            scan.took.as_secs_f64() * 1000.0,
            scan.memcgs(),
            if scan.full { "full" } else { "changed only" },
            if scan.walked() { ", walked" } else { "" },
            self.context
                .counter_files_open()
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        );
        for event in self.context.counter_events(scan, now) {
            self.emit(&event)?;
        }
        self.sink.flush()
    }

    /// The kernel said these memcgs' `memory.events` changed.
    fn notified(&mut self, cgroups: &[String]) -> io::Result<()> {
        let now = clock::boot_ns();
        for cgroup in cgroups {
            if let Some(event) = self.context.notified_counters(cgroup, now) {
                self.emit(&event)?;
            }
        }
        self.sink.flush()
    }

    fn sampled(&mut self, scan: MemoryScan, now: u64) -> io::Result<()> {
        for event in self.context.stats_events(scan, now) {
            self.emit(&event)?;
        }
        self.sink.flush()
    }
}

/// Drains the aggregates on a blocking thread, first deleting the kernel-side entries of the
/// memcgs in `forget` (freed) and the `INODE_IDS` entries in `unkeyed` (files whose names were
/// forgotten); the counts come back as soon as they are read, the maps once the consumer made
/// the interval's events and the idle keys the drain chose are deleted (at the default weight:
/// nothing waits for that).
fn spawn_drain(
    mut aggregates: Aggregates,
    forget: Vec<u64>,
    unkeyed: Vec<(u64, InodeId)>,
) -> DrainJob {
    let (send, counts) = oneshot::channel();
    let (events_made, made) = oneshot::channel::<()>();
    let maps = tokio::task::spawn_blocking(move || {
        {
            // A pooled thread: raised for the drain only, put back before the deletes.
            let _raised = priority::Raised::to(priority::RAISED_NICE);
            let started = Instant::now();
            let cpu = clock::thread_cpu_ns();
            aggregates.forget_memcgs(&forget);
            aggregates.forget_files(&unkeyed);
            let drain = aggregates.drain();
            let took = started.elapsed();
            if log::log_enabled!(log::Level::Debug) {
                let cpu = clock::thread_cpu_ns().saturating_sub(cpu);
                let keys = drain.as_ref().map_or(0, |d| {
                    d.cache.by_file.len() + d.cache.by_memcg.len() + d.charge.len() + d.slab.len()
                });
                log::debug!(
                    "aggregates: kernel maps drained in {:.2} ms (CPU {:.2} ms; {keys} keys, \
                     {} memcgs freed forgotten); {:?}",
                    took.as_secs_f64() * 1000.0,
                    ms(cpu),
                    forget.len(),
                    aggregates.sizes()
                );
            }
            // The consumer gone (a write error) is said by its own result.
            let _ = send.send((drain, clock::boot_ns()));
        }
        // Dropped unsent (the consumer stopped) also lets the deletes run.
        let _ = made.blocking_recv();
        let started = Instant::now();
        let cpu = clock::thread_cpu_ns();
        let deleted = aggregates.delete_idle()?;
        if deleted > 0 {
            log::debug!(
                "aggregates: {deleted} idle keys deleted in {:.2} ms (CPU {:.2} ms), after the \
                 interval's events",
                started.elapsed().as_secs_f64() * 1000.0,
                ms(clock::thread_cpu_ns().saturating_sub(cpu))
            );
        }
        Ok(aggregates)
    });
    DrainJob {
        counts: Some(counts),
        events_made: Some(events_made),
        maps,
    }
}

/// Nanoseconds as milliseconds, for people.
#[expect(clippy::cast_precision_loss, reason = "milliseconds for people")]
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// What a drain in flight handed back.
#[expect(
    clippy::large_enum_variant,
    reason = "two a second, each moved once: a box would cost as much"
)]
enum DrainStep {
    /// Its counts, with when the interval ended.
    Counts(Drain, u64),
    /// Its maps, once the counts came and the deletes are done: the job is over.
    Maps(Aggregates),
}

/// The next step of the drain in flight; never completes without one.
async fn drain_step(job: &mut Option<DrainJob>) -> io::Result<DrainStep> {
    let Some(job) = job.as_mut() else {
        return std::future::pending().await;
    };
    if let Some(counts) = job.counts.as_mut() {
        let done = counts.await;
        job.counts = None;
        let (drain, now) = done.map_err(|_| io::Error::other("the drain thread stopped"))?;
        return Ok(DrainStep::Counts(drain.map_err(io::Error::other)?, now));
    }
    let maps = (&mut job.maps).await.map_err(io::Error::other)?;
    Ok(DrainStep::Maps(maps.map_err(io::Error::other)?))
}

/// Watches for the kernel's own notifications that counters changed, when counters are read:
/// v2 `memory.events` (inotify), v1 `memory.oom_control` (eventfds).
fn watch_counters(
    context: &LiveContext,
    counters: Option<Duration>,
) -> Option<AsyncFd<CounterWatch>> {
    counters?;
    let hierarchy = context.resolver().hierarchy();
    let watch = CounterWatch::new(hierarchy.clone())
        .and_then(|watch| {
            // SAFETY: the fd belongs to `watch`, which the AsyncFd owns (and so keeps open,
            // unchanged) until it is dropped.
            unsafe { AsyncFd::register_with_interest(watch, Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))
        })
        .inspect_err(|e| {
            log::warn!("counters are read on the counters interval only (no notification: {e})");
        })
        .ok()?;
    Some(watch)
}

/// The cgroups the kernel notified, each with when to read it again; never completes without
/// a watch.
async fn counters_notified(
    watch: Option<&mut AsyncFd<CounterWatch>>,
) -> io::Result<(Vec<String>, &'static [Duration])> {
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    let mut guard = watch.readable_mut().await?;
    let changed = guard.get_inner_mut().changed()?;
    let rechecks = guard.get_inner().rechecks();
    guard.clear_ready();
    Ok((changed, rechecks))
}

/// Waits until the earliest re-read is due, and returns the cgroups due; never completes
/// without one.
async fn rechecks_due(rechecks: &mut Vec<(tokio::time::Instant, String)>) -> Vec<String> {
    let Some(next) = rechecks.iter().map(|(at, _)| *at).min() else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(next).await;
    let now = tokio::time::Instant::now();
    let mut due = Vec::new();
    rechecks.retain(|(at, cgroup)| {
        if *at > now {
            return true;
        }
        if !due.contains(cgroup) {
            due.push(cgroup.clone());
        }
        false
    });
    due
}

/// Awaits a job when there is one; never completes when there is none.
async fn join<T>(job: &mut Option<JoinHandle<T>>) -> io::Result<T> {
    match job.as_mut() {
        Some(handle) => handle.await.map_err(io::Error::other),
        None => std::future::pending().await,
    }
}

/// Runs until `stop` completes, then drains and returns.
///
/// # Errors
///
/// Sink write errors (e.g. a closed stdout), ring-buffer polling and map errors.
#[expect(
    clippy::too_many_lines,
    reason = "one select loop: every source of work side by side"
)]
pub async fn run(
    ring: RingBuf<MapData>,
    aggregates: Aggregates,
    context: LiveContext,
    settings: Settings,
    (sink, losses): (&mut dyn Sink, Losses<'_>),
    stop: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let Settings { intervals, sources } = settings;
    // The consumer (this thread) and the reader it starts are the event path.
    priority::raise_event_path();
    // Unbounded as a channel, bounded in records by the backlog.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Record>>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let backlog = losses.backlog.clone();
    let reader = spawn_reader(ring, (tx, backlog.clone()), stop_rx)?;

    let mut consumer = Consumer {
        context,
        sink,
        sources,
        events: 0,
        held: VecDeque::new(),
        asked: Vec::new(),
        ooms: VecDeque::new(),
        kmsg_quiet_until: None,
        census_wanted: false,
        forget: Vec::new(),
        unkeyed: Vec::new(),
        said: Said {
            losses,
            kernel: LossTally::kernel(),
            blocked: LossTally::of(LossCause::OutputBlocked),
            kernel_totals: Vec::new(),
            drops_told: None,
        },
    };
    let consume = async move {
        let ticker = |every: Duration| {
            // The first tick would fire at once; the first interval ends one period from now.
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut stats_ticker = intervals.stats.map(ticker);
        let mut aggregate_ticker = ticker(intervals.aggregate);
        let mut flush_ticker = ticker(FLUSH_EVERY);
        let mut oom_ticker = ticker(OOM_POLL);
        let mut aggregates = Some(aggregates);
        let mut last_drain = clock::boot_ns();
        let mut drain_job: Option<DrainJob> = None;
        let mut walk_job: Option<JoinHandle<Vec<(u64, String)>>> = None;
        let mut stats_job: Option<JoinHandle<MemoryScan>> = None;
        let mut counters_ticker = intervals.counters.map(ticker);
        let mut counters_job: Option<JoinHandle<CounterScan>> = None;
        let mut counter_watch = watch_counters(&consumer.context, intervals.counters);
        let mut rechecks: Vec<(tokio::time::Instant, String)> = Vec::new();
        let mut want_walk = false;
        loop {
            if want_walk && walk_job.is_none() {
                log::debug!(
                    "walking the cgroup hierarchy for memcg ids {:?}",
                    consumer.asked
                );
                walk_job = Some(tokio::task::spawn_blocking(consumer.context.walker()));
            }
            want_walk = false;
            if consumer.census_wanted && stats_job.is_none() && intervals.stats.is_some() {
                log::debug!("global OOM kill: sampling every container's memory now");
                consumer.census_wanted = false;
                stats_job = Some(tokio::task::spawn_blocking(
                    consumer.context.memory_scanner(true),
                ));
            }
            tokio::select! {
                _ = flush_ticker.tick() => consumer.sink.flush()?,
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    let taken = batch.len();
                    for record in batch {
                        want_walk |= consumer.record(record)?;
                    }
                    backlog.taken(taken);
                    consumer.say_losses(false)?;
                    // A write per batch: what the kernel said is out before the next batch.
                    consumer.sink.flush()?;
                }
                _ = oom_ticker.tick(), if !consumer.ooms.is_empty() => {
                    consumer.poll_ooms(false)?;
                    consumer.sink.flush()?;
                }
                found = join(&mut walk_job) => {
                    walk_job = None;
                    want_walk = consumer.walked(found?)?;
                    consumer.sink.flush()?;
                }
                _ = aggregate_ticker.tick(), if aggregates.is_some() => {
                    if let Some(maps) = aggregates.take() {
                        drain_job = Some(spawn_drain(
                            maps,
                            std::mem::take(&mut consumer.forget),
                            std::mem::take(&mut consumer.unkeyed),
                        ));
                    }
                }
                next = drain_step(&mut drain_job) => match next? {
                    DrainStep::Counts(drain, now) => {
                        want_walk = consumer.drained(drain, now, now - last_drain)?;
                        DrainJob::counted(drain_job.as_mut());
                        last_drain = now;
                        consumer.say_losses(true)?;
                    }
                    DrainStep::Maps(maps) => {
                        drain_job = None;
                        aggregates = Some(maps);
                    }
                },
                () = async {
                    match stats_ticker.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                }, if stats_job.is_none() => {
                    stats_job =
                        Some(tokio::task::spawn_blocking(consumer.context.memory_scanner(false)));
                }
                scan = join(&mut stats_job) => {
                    stats_job = None;
                    consumer.sampled(scan?, clock::boot_ns())?;
                }
                () = async {
                    match counters_ticker.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                }, if counters_job.is_none() => {
                    counters_job =
                        Some(tokio::task::spawn_blocking(consumer.context.counter_scanner(false)));
                }
                scan = join(&mut counters_job) => {
                    counters_job = None;
                    consumer.counted(scan?, clock::boot_ns())?;
                    if let Some(watch) = counter_watch.as_mut() {
                        let watch = watch.get_mut();
                        let failed = watch.follow(consumer.context.counter_cgroups());
                        if failed > 0 {
                            log::debug!("{failed} {} files could not be watched", watch.what());
                        }
                    }
                }
                changed = counters_notified(counter_watch.as_mut()) => {
                    let (changed, again) = changed?;
                    let now = tokio::time::Instant::now();
                    // A new notification restarts a cgroup's re-reads: at most a few pending
                    // per cgroup, however often an OOM storm notifies.
                    rechecks.retain(|(_, cgroup)| !changed.contains(cgroup));
                    for cgroup in &changed {
                        rechecks.extend(again.iter().map(|after| (now + *after, cgroup.clone())));
                    }
                    consumer.notified(&changed)?;
                }
                due = rechecks_due(&mut rechecks) => consumer.notified(&due)?,
            }
        }
        // The channel is closed: finish the drain in flight, then drain once more what the
        // kernel counted since.
        let mut last_drain_started = false;
        loop {
            if drain_job.is_none() {
                match aggregates.take() {
                    Some(maps) if !last_drain_started => {
                        last_drain_started = true;
                        drain_job = Some(spawn_drain(maps, Vec::new(), Vec::new()));
                    }
                    _ => break,
                }
            }
            match drain_step(&mut drain_job).await? {
                DrainStep::Counts(drain, now) => {
                    consumer.drained(drain, now, now - last_drain)?;
                    DrainJob::counted(drain_job.as_mut());
                    last_drain = now;
                }
                DrainStep::Maps(maps) => {
                    drain_job = None;
                    aggregates = Some(maps);
                }
            }
        }
        while !consumer.held.is_empty() {
            let found = match walk_job.take() {
                Some(job) => job.await.map_err(io::Error::other)?,
                None => tokio::task::spawn_blocking(consumer.context.walker())
                    .await
                    .map_err(io::Error::other)?,
            };
            consumer.walked(found)?;
        }
        // Held OOM kills get what remains of their wait for the kernel's line.
        while !consumer.ooms.is_empty() {
            consumer.poll_ooms(false)?;
            tokio::time::sleep(OOM_POLL).await;
        }
        // A last pass over the counters: what changed since the last interval (a stall, the
        // `high` events of a workload that just ended) belongs to the session, so the
        // recording's deltas cover it up to its end, not to its last tick.
        if intervals.counters.is_some() {
            if let Some(job) = counters_job.take() {
                let scan = job.await.map_err(io::Error::other)?;
                consumer.counted(scan, clock::boot_ns())?;
            }
            let scan = tokio::task::spawn_blocking(consumer.context.counter_scanner(true))
                .await
                .map_err(io::Error::other)?;
            consumer.counted(scan, clock::boot_ns())?;
        }
        // The reader has drained the ring buffer for the last time: the counts are final.
        consumer.say_losses(true)?;
        consumer.sink.end()?;
        Ok::<_, io::Error>((
            consumer.events,
            consumer.context.still_dying(),
            consumer.said.kernel_totals,
        ))
    };
    tokio::pin!(consume, stop);
    let mut stopping = false;
    let outcome = loop {
        tokio::select! {
            result = &mut consume => break result,
            () = &mut stop, if !stopping => {
                stopping = true;
                // The reader may be gone already (its error surfaces below).
                let _ = stop_tx.send(true);
            }
        }
    };
    // A sink error ends consumption early; tell the reader in case it is still running.
    let _ = stop_tx.send(true);
    let undecodable = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(io::Error::other)?
        .map_err(|_| io::Error::other("the ring-buffer reader panicked"))??;
    let (events, still_dying, kernel_lost) = outcome?;
    Ok(Stats {
        events,
        undecodable,
        still_dying,
        kernel_lost,
    })
}

/// Runs [`read_ring`] on a thread of its own, with a runtime of its own: nothing the consumer
/// waits for can stop it.
fn spawn_reader(
    ring: RingBuf<MapData>,
    to_consumer: (mpsc::UnboundedSender<Vec<Record>>, Backlog),
    stop: watch::Receiver<bool>,
) -> io::Result<std::thread::JoinHandle<io::Result<u64>>> {
    std::thread::Builder::new()
        .name("ring-reader".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?
                .block_on(read_ring(ring, to_consumer, stop))
        })
}

async fn read_ring(
    ring: RingBuf<MapData>,
    (tx, backlog): (mpsc::UnboundedSender<Vec<Record>>, Backlog),
    mut stop: watch::Receiver<bool>,
) -> io::Result<u64> {
    // SAFETY: the fd belongs to `ring`, which the AsyncFd owns (and so keeps open, unchanged)
    // until it is dropped at the end of this function.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut undecodable = 0;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let batch = backlog.admit(drain(guard.get_inner_mut(), &mut undecodable));
                guard.clear_ready();
                if !batch.is_empty() && tx.send(batch).is_err() {
                    break;
                }
            }
            _ = stop.changed() => {
                let batch = backlog.admit(drain(fd.get_mut(), &mut undecodable));
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                break;
            }
        }
    }
    Ok(undecodable)
}

fn drain(ring: &mut RingBuf<MapData>, undecodable: &mut u64) -> Vec<Record> {
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        match Record::decode(&item) {
            Ok(record) => batch.push(record),
            Err(err) => {
                *undecodable += 1;
                log::warn!("undecodable ring-buffer record: {err:?}");
            }
        }
    }
    batch
}

/// Flushes the programs' log messages to `log` whenever there are some; runs until aborted.
pub async fn forward_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its map fd; flushing neither closes nor replaces it, and the
    // AsyncFd owns the logger until this task ends.
    let mut logger = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("eBPF log messages will not be shown: {e}");
            return;
        }
    };
    loop {
        match logger.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(e) => {
                log::warn!("eBPF log messages will not be shown: {e}");
                return;
            }
        }
    }
}
