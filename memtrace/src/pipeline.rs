//! Ring buffer → decoded records → records with context → sinks.
//!
//! The reader task drains the ring buffer into owned records and never awaits while it holds a
//! ring-buffer item; it hands batches over a channel to the consumer, which adds context and
//! writes to the sink. On stop, the reader drains once more so that nothing the kernel already
//! submitted is lost, then closes the channel; the consumer finishes what is queued.

use std::{future::Future, io, time::Duration};

use aya::maps::{MapData, RingBuf};
use memtrace_common::event::Record;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, watch},
};

use crate::{
    attribution::{LiveContext, Removed},
    clock,
    event::{Event, What},
    probes::{
        Aggregates, Sources,
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
}

/// The sink is flushed at least this often, also when no event arrives: a trace writer writes
/// its open chunk then, if it is old enough, so a killed recorder loses under a second.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How often the pipeline samples what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Drain the kernel's aggregates (page cache) into `cache` events.
    pub aggregate: Duration,
    /// Sample active containers' memory from cgroupfs into `stats` events; `None`: never.
    pub stats: Option<Duration>,
}

/// How the pipeline turns what it reads into events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub intervals: Intervals,
    pub sources: Sources,
}

/// The event a record stands for, then what userspace derives from it: the charge failure a
/// memcg limit reclaim episode began with, when `try_charge` is derived.
fn observe(context: &mut LiveContext, record: &Record, sources: Sources) -> [Option<Event>; 2] {
    let event = context.observe(record);
    let derived = match &event {
        Some(
            e @ Event {
                what: What::Reclaim(_),
                ..
            },
        ) if sources.charge_failures_from_reclaim => context.charge_fail_from_reclaim(e),
        _ => None,
    };
    [event, derived]
}

/// Emits one interval of the kernel's aggregates as `cache`, `charge` and `slab` events.
fn emit_aggregates(
    aggregates: &mut Aggregates,
    context: &mut LiveContext,
    sources: Sources,
    since_ns: u64,
    emit: &mut impl FnMut(Event) -> io::Result<()>,
) -> io::Result<u64> {
    let now = clock::boot_ns();
    let interval = now - since_ns;
    let drain = aggregates.drain().map_err(io::Error::other)?;
    let mut events = context.cache_events(&drain.cache, now, interval);
    events.extend(match sources.charges {
        ChargesFrom::Kernel(source) => context.charge_events(&drain.charge, now, interval, source),
        ChargesFrom::PageCache => context.charges_from_page_cache_events(
            &charges_from_page_cache(&drain.cache),
            now,
            interval,
        ),
    });
    events.extend(context.slab_events(&drain, now, interval));
    for event in events {
        emit(event)?;
    }
    Ok(now)
}

/// Runs until `stop` completes, then drains and returns.
///
/// # Errors
///
/// Sink write errors (e.g. a closed stdout), ring-buffer polling and map errors.
pub async fn run(
    ring: RingBuf<MapData>,
    mut aggregates: Aggregates,
    mut context: LiveContext,
    settings: Settings,
    sink: &mut dyn Sink,
    stop: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let Settings { intervals, sources } = settings;
    let (tx, mut rx) = mpsc::channel::<Vec<Record>>(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(read_ring(ring, tx, stop_rx));

    let consume = async {
        let mut events = 0;
        let mut emit = |event: Event, sink: &mut dyn Sink| {
            events += 1;
            sink.write(&event)
        };
        let ticker = |every: Duration| {
            // The first tick would fire at once; the first interval ends one period from now.
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut stats_ticker = intervals.stats.map(ticker);
        let mut aggregate_ticker = ticker(intervals.aggregate);
        let mut last_drain = clock::boot_ns();
        let mut flush_ticker = ticker(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = flush_ticker.tick() => sink.flush()?,
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    for record in &batch {
                        for event in observe(&mut context, record, sources).into_iter().flatten() {
                            emit(event, sink)?;
                        }
                    }
                    if rx.is_empty() {
                        sink.flush()?;
                    }
                }
                _ = aggregate_ticker.tick() => {
                    last_drain = emit_aggregates(
                        &mut aggregates,
                        &mut context,
                        sources,
                        last_drain,
                        &mut |event| emit(event, sink),
                    )?;
                    sink.flush()?;
                }
                () = async {
                    match stats_ticker.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    for event in context.stats_events(clock::boot_ns()) {
                        emit(event, sink)?;
                    }
                    sink.flush()?;
                }
            }
        }
        // What the kernel counted since the last interval.
        emit_aggregates(
            &mut aggregates,
            &mut context,
            sources,
            last_drain,
            &mut |event| emit(event, sink),
        )?;
        sink.flush()?;
        Ok::<_, io::Error>((events, context.still_dying()))
    };
    tokio::pin!(consume, stop);
    let mut stopping = false;
    let consumed = loop {
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
    let undecodable = reader.await.map_err(io::Error::other)??;
    let (events, still_dying) = consumed?;
    Ok(Stats {
        events,
        undecodable,
        still_dying,
    })
}

async fn read_ring(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<Record>>,
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
                let batch = drain(guard.get_inner_mut(), &mut undecodable);
                guard.clear_ready();
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => {
                let batch = drain(fd.get_mut(), &mut undecodable);
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
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
