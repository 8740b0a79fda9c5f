//! Trace file throughput and size: `cargo xtask bench trace` (or `cargo bench -p memtrace
//! --bench trace_format`). Prints events/s written and read on one core, and bytes per event on
//! disk.
//!
//! The events are a node's worth of what `memtrace record` produces, in its proportions and
//! shapes: 40 containers in Kubernetes pods; per second one drain of page-cache samples, where
//! one container in five does file I/O (hundreds of pages added and removed, 1–5 top files)
//! and the others append to a log file in 7 seconds out of 10 (1–16 pages, one file); a
//! `stats` sample per container every 10 s
//! with memory that drifts, a container restart (cgroup created, removed, freed) every 10 s, a
//! few reclaim episodes, and an OOM kill now and then. Field values come from a fixed-seed
//! generator so every run writes the same bytes. `TRACE_BENCH_KEEP=FILE` keeps the
//! recorder-paced trace (about 20 MB) to replay.

#![expect(
    clippy::cast_possible_truncation,
    reason = "dice values are below small bounds (a container index, a file count)"
)]

mod common;

use std::{
    fs,
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

use memtrace::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        Context, Device, Event, FileCache, HostClock, Memcg, MemorySource, OomConstraint,
        OomContext, PageCache, What,
    },
    sinks::{JsonSink, Sink},
    trace::{TraceHeader, TraceItem, TraceReader, TraceWriter},
};
use memtrace_common::{CgroupRecord, EventKind, OomKillRecord, ReclaimRecord, event::Record};

use common::{Dice, header as kernel_header, thread_cpu_time};

const CONTAINERS: usize = 40;
const SECOND: u64 = 1_000_000_000;
const PAGE: u64 = 4096;

struct Container {
    cgroup: String,
    identity: ContainerIdentity,
    memcg_id: u64,
    usage: u64,
    file: u64,
    files: Vec<u64>,
}

fn container(i: usize, generation: u64, dice: &mut Dice) -> Container {
    let pod = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{:08x}_{:04x}_4b5a_6978_{:012x}.slice",
        dice.next() as u32,
        i,
        dice.next() & 0xffff_ffff_ffff
    );
    let cgroup = format!(
        "{pod}/cri-containerd-{:016x}{:016x}{:016x}{:016x}.scope",
        dice.next(),
        dice.next(),
        dice.next(),
        generation
    );
    let mut identity = ContainerIdentity::from_cgroup_path(&cgroup);
    identity.pod_namespace = Some("shop".into());
    identity.pod_name = Some(format!("cart-{i}-7d9f8c"));
    identity.container_name = Some("app".into());
    Container {
        cgroup,
        identity,
        memcg_id: 4000 + i as u64 * 17 + generation * 1000,
        usage: (64 + dice.below(512)) << 20,
        file: (8 + dice.below(128)) << 20,
        files: (0..8).map(|_| 100_000 + dice.below(5_000_000)).collect(),
    }
}

impl Container {
    fn memcg(&self, with_id: bool) -> Memcg {
        Memcg {
            id: with_id.then_some(self.memcg_id),
            cgroup: Some(self.cgroup.clone()),
            container: Some(self.identity.clone()),
        }
    }

    /// What the pipeline knows of the container when one of its kernel records arrives.
    fn context(&self) -> Context {
        Context {
            cgroup: Some(self.cgroup.clone()),
            container: Some(self.identity.clone()),
            ..Context::default()
        }
    }
}

fn cgroup_record(c: &Container, action: u32, at: u64) -> Event {
    let mut rec = CgroupRecord {
        header: kernel_header(EventKind::Cgroup, at),
        memcg_id: c.memcg_id,
        action,
        ..CgroupRecord::default()
    };
    let path = c.cgroup.as_bytes();
    let n = path.len().min(rec.path.len() - 1);
    rec.path[..n].copy_from_slice(&path[..n]);
    Event::from_kernel(&Record::Cgroup(rec), c.context(), PAGE)
}

/// `seconds` of a busy node's events, in the order the pipeline emits them.
#[expect(
    clippy::too_many_lines,
    reason = "the node's timeline, second by second, reads best in one piece"
)]
fn node_events(seconds: u64) -> Vec<Event> {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let mut containers: Vec<Container> = (0..CONTAINERS)
        .map(|i| container(i, 0, &mut dice))
        .collect();
    let mut out = Vec::new();
    let start = 3_600 * SECOND;
    let mut last = start;
    for s in 1..=seconds {
        // One drain of the kernel's aggregates: every sample shares its time and interval.
        let now = start + s * SECOND + dice.below(3_000_000);
        let interval_ns = now - last;
        last = now;
        for (i, c) in containers.iter_mut().enumerate() {
            // One container in five does real file I/O; the others append to their log, and
            // not every second (a memcg without page-cache activity has no sample).
            let busy = i % 5 == 0;
            if !busy && dice.below(10) < 3 {
                continue;
            }
            let (added, removed, files) = if busy {
                (dice.below(600), dice.below(500), 1 + dice.below(5) as usize)
            } else {
                let removed = if dice.below(20) == 0 {
                    dice.below(64)
                } else {
                    0
                };
                (1 + dice.below(16), removed, 1)
            };
            c.file = (c.file + added * PAGE).saturating_sub(removed * PAGE);
            let mut cache = PageCache::new(interval_ns, added * PAGE, removed * PAGE);
            cache.top_files = (0..files)
                .map(|k| {
                    FileCache::new(
                        Device::from_kernel(8 << 20 | 1),
                        c.files[k],
                        (added >> k) * PAGE,
                        (removed >> (k + 1)) * PAGE,
                    )
                })
                .collect();
            out.push(Event {
                timestamp_ns: now,
                memcg: c.memcg(true),
                what: What::Cache(cache),
            });
        }
        if s % 10 == 0 {
            for c in &mut containers {
                c.usage = (c.usage + dice.below(8 << 20)).saturating_sub(dice.below(8 << 20))
                    & !(PAGE - 1);
                let inactive = c.file / 3;
                out.push(Event {
                    timestamp_ns: now + dice.below(1_000_000),
                    // A sample is read by path: the kernel's id is not known.
                    memcg: c.memcg(false),
                    what: What::Stats(
                        MemoryStats {
                            usage_bytes: Some(c.usage),
                            limit_bytes: Some(1 << 30),
                            working_set_bytes: Some(c.usage - inactive.min(c.usage)),
                            anon_bytes: Some(c.usage.saturating_sub(c.file)),
                            file_bytes: Some(c.file),
                            active_file_bytes: Some(c.file - inactive),
                            inactive_file_bytes: Some(inactive),
                            shmem_bytes: Some(0),
                            kernel_bytes: Some((c.usage / 40) & !(PAGE - 1)),
                            slab_reclaimable_bytes: None,
                            slab_unreclaimable_bytes: None,
                        }
                        .into(),
                    ),
                });
            }
            // A container restarts: the old memcg is removed (still charged: dying), later
            // freed; the new one is created.
            let i = dice.below(CONTAINERS as u64) as usize;
            let fresh = container(i, s, &mut dice);
            let old = std::mem::replace(&mut containers[i], fresh);
            out.push(cgroup_record(
                &old,
                memtrace_common::event::CGROUP_RMDIR,
                now + 1,
            ));
            out.push(cgroup_record(
                &containers[i],
                memtrace_common::event::CGROUP_MKDIR,
                now + 2,
            ));
            out.push(cgroup_record(
                &old,
                memtrace_common::event::CGROUP_RELEASE,
                now + 3,
            ));
        }
        if dice.below(10) < 3 {
            let c = &containers[dice.below(CONTAINERS as u64) as usize];
            out.push(Event::from_kernel(
                &Record::Reclaim(ReclaimRecord {
                    header: kernel_header(EventKind::Reclaim, now + dice.below(SECOND)),
                    memcg_id: c.memcg_id,
                    duration_ns: 20_000 + dice.below(2_000_000),
                    nr_reclaimed: dice.below(64),
                    gfp_flags: 0xcc0,
                    order: 0,
                    pid: 1000 + dice.below(30_000) as u32,
                }),
                c.context(),
                PAGE,
            ));
        }
        if s % 600 == 0 {
            let c = &containers[dice.below(CONTAINERS as u64) as usize];
            let mut comm = [0u8; 16];
            comm[..4].copy_from_slice(b"java");
            out.push(Event::from_kernel(
                &Record::OomKill(OomKillRecord {
                    header: kernel_header(EventKind::OomKill, now + 5),
                    memcg_id: c.memcg_id,
                    pid: 4242,
                    tgid: 4242,
                    anon_rss_pages: 250_000,
                    flags: 7,
                    strategy: 1,
                    comm,
                    ..OomKillRecord::default()
                }),
                Context {
                    memcg_limit_bytes: Some(1 << 30),
                    memcg_usage_bytes: Some(1 << 30),
                    oom: Some(OomContext {
                        constraint: Some(OomConstraint::Memcg),
                        limit_cgroup: Some(c.cgroup.clone()),
                        limit_container: Some(c.identity.clone()),
                        memory: Some(MemoryStats {
                            usage_bytes: Some(1 << 30),
                            limit_bytes: Some(1 << 30),
                            ..MemoryStats::default()
                        }),
                        memory_source: Some(MemorySource::KernelOomReport),
                        task: None,
                    }),
                    ..c.context()
                },
                PAGE,
            ));
        }
    }
    out
}

fn header() -> TraceHeader {
    TraceHeader {
        memtrace_version: env!("CARGO_PKG_VERSION").into(),
        host: "bench".into(),
        kernel_release: "bench".into(),
        boot_time_wall_ns: 1_795_000_000 * SECOND,
        clock: "CLOCK_BOOTTIME".into(),
        page_size: PAGE,
        started_wall_ns: 1_795_003_600 * SECOND,
        probes: Vec::new(),
        cgroup_version: "v2".into(),
        memcgs_at_start: None,
        flight: None,
    }
}

fn per_second(n: u64, took: Duration) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a rate for people")]
    let n = n as f64;
    n / took.as_secs_f64()
}

#[expect(clippy::cast_precision_loss, reason = "ratios for people")]
fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seconds = 36_000;
    let events = node_events(seconds);
    let n = events.len() as u64;
    let count = |kind: &str| events.iter().filter(|e| e.what.type_name() == kind).count();
    println!(
        "mix: {n} events = {seconds} s of a {CONTAINERS}-container node: {} cache, {} stats, {} cgroup, {} reclaim, {} oom_kill",
        count("cache"),
        count("stats"),
        count("cgroup"),
        count("reclaim"),
        count("oom_kill"),
    );

    // Throughput: as fast as one core appends (chunks written when a block is full).
    let bulk = dir.path().join("bulk.mtrace");
    let (mut best, mut best_cpu) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let begun = Instant::now();
        let cpu = thread_cpu_time();
        let mut w = TraceWriter::create(&bulk, &header()).expect("create");
        for e in &events {
            w.append(e).expect("append");
        }
        w.finish(&[]).expect("finish");
        best = best.min(begun.elapsed());
        best_cpu = best_cpu.min(thread_cpu_time().saturating_sub(cpu));
    }
    let bulk_bytes = fs::metadata(&bulk).expect("stat").len();
    println!(
        "write: {:.2} M events/s on one core (best of 3, {n} events in {:.3} s; target >= 1 M/s); {:.2} M events per CPU-second",
        per_second(n, best) / 1e6,
        best.as_secs_f64(),
        per_second(n, best_cpu) / 1e6,
    );
    println!(
        "size, written as fast as possible (1 MiB blocks): {:.2} bytes/event ({bulk_bytes} bytes)",
        bulk_bytes as f64 / n as f64
    );

    // On disk as a recorder writes it: a chunk per second of events (the flush deadline).
    let paced = dir.path().join("paced.mtrace");
    let mut w = TraceWriter::create(&paced, &header()).expect("create");
    let mut second = None;
    for e in &events {
        let s = e.timestamp_ns / SECOND;
        if second.is_some_and(|prev| prev != s) {
            w.seal().expect("seal");
        }
        second = Some(s);
        w.append(e).expect("append");
    }
    w.finish(&[]).expect("finish");
    let paced_bytes = fs::metadata(&paced).expect("stat").len();
    // To look at the file (`memtrace replay`, its progress bar) after the run.
    if let Some(keep) = std::env::var_os("TRACE_BENCH_KEEP") {
        fs::copy(&paced, &keep).expect("copy the trace");
        println!("kept: {}", Path::new(&keep).display());
    }
    println!(
        "size, a chunk flushed every second as recorded (~{} events/chunk): {:.2} bytes/event ({paced_bytes} bytes; target <= 16)",
        n / seconds,
        paced_bytes as f64 / n as f64
    );

    // Replay: decode every event; then decode and print as `replay --format json` does.
    let (mut best, mut best_cpu) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let begun = Instant::now();
        let cpu = thread_cpu_time();
        let mut r = TraceReader::open(&paced).expect("open");
        let mut read = 0u64;
        while let Some(item) = r.next_item().expect("read") {
            if let TraceItem::Event(e) = item {
                black_box(&e);
                read += 1;
            }
        }
        assert_eq!(read, n);
        best = best.min(begun.elapsed());
        best_cpu = best_cpu.min(thread_cpu_time().saturating_sub(cpu));
    }
    println!(
        "read: {:.2} M events/s decoded on one core ({:.0} MB/s of file); {:.2} M events per CPU-second",
        per_second(n, best) / 1e6,
        per_second(paced_bytes, best) / 1e6,
        per_second(n, best_cpu) / 1e6,
    );
    let clock = HostClock {
        boot_time_wall_ns: header().boot_time_wall_ns,
        page_size: PAGE,
    };
    let begun = Instant::now();
    let mut r = TraceReader::open(&paced).expect("open");
    let mut sink = JsonSink::new(std::io::sink(), clock);
    while let Some(item) = r.next_item().expect("read") {
        if let TraceItem::Event(e) = item {
            sink.write(&e).expect("write");
        }
    }
    sink.flush().expect("flush");
    let took = begun.elapsed();
    println!(
        "replay as JSON Lines: {:.2} M events/s on one core",
        per_second(n, took) / 1e6
    );
}
