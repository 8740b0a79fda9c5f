//! How fast `memtrace report` and `memtrace export --perfetto` get through a long recording.
//!
//! Run: `cargo bench -p memtrace --bench report` (optimised build). The input is generated, not
//! recorded: an hour of a busy node (50 containers with 10 s `stats`, 1 s page-cache intervals
//! with three top files, bursts of limit reclaim, an OOM kill every few minutes, cgroups created
//! and removed), written through the real trace writer to
//! `target/bench/report-input.mtrace`, so `memtrace report` can be timed on it too (and shows
//! its progress bar there).
#![expect(clippy::cast_precision_loss, reason = "a benchmark: rates for people")]

#[allow(
    dead_code,
    reason = "this benchmark draws from its own generator, not `Dice`"
)]
mod common;

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use memtrace::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        Context, Device, Event, FileCache, HostClock, Memcg, MemorySource, OomConstraint,
        OomContext, PageCache, What,
    },
    export::PerfettoWriter,
    report::{self, ReportBuilder, TraceInfo},
    trace::{TraceHeader, TraceItem, TraceReader, TraceWriter},
};
use memtrace_common::{
    EventKind,
    event::{
        CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RMDIR, CgroupRecord, OOM_FLAG_MEMCG,
        OOM_FLAG_RSS, OOM_FLAG_TASK, OomKillRecord, ReclaimRecord, Record,
    },
};

use common::header;

const CONTAINERS: u64 = 50;
const SECONDS: u64 = 3600;
const SEC: u64 = 1_000_000_000;
const MIB: u64 = 1 << 20;
const CLOCK: HostClock = HostClock {
    boot_time_wall_ns: 1_795_794_421_000_000_000,
    page_size: 4096,
};

/// A small deterministic generator, so every run measures the same input.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

fn cgroup(i: u64) -> String {
    // Container ids differ in their first 12 characters, as real ones do.
    format!(
        "/kubepods/burstable/pod{i:08x}-0000-4000-8000-000000000000/{i:012x}{:052x}",
        i * 7919
    )
}

fn node_hour() -> Vec<Event> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    let identities: Vec<(String, Option<ContainerIdentity>)> = (1..=CONTAINERS)
        .map(|i| {
            let path = cgroup(i);
            let identity = ContainerIdentity::from_cgroup_path(&path);
            (path, Some(identity))
        })
        .collect();
    for second in 0..SECONDS {
        let t = second * SEC;
        for (i, (path, identity)) in identities.iter().enumerate() {
            let i = i as u64 + 1;
            let page = CLOCK.page_size;
            let added = rng.next(2048);
            let mut cache = PageCache::new(SEC, added * page, rng.next(2048) * page);
            cache.top_files = (0..3)
                .map(|f| {
                    FileCache::new(
                        Device::from_kernel(254 << 20),
                        i * 100 + f,
                        added / 4 * page,
                        rng.next(256) * page,
                    )
                })
                .collect();
            out.push(Event {
                timestamp_ns: t + i,
                memcg: Memcg {
                    id: Some(i),
                    cgroup: Some(path.clone()),
                    container: identity.clone(),
                },
                what: What::Cache(cache),
            });
            if second % 10 == i % 10 {
                let anon = (second * MIB / 8 + i * MIB) % (400 * MIB);
                out.push(Event {
                    timestamp_ns: t + 500_000 + i,
                    memcg: Memcg {
                        id: None,
                        cgroup: Some(path.clone()),
                        container: identity.clone(),
                    },
                    what: What::Stats(
                        MemoryStats {
                            usage_bytes: Some(anon + 100 * MIB),
                            limit_bytes: Some(512 * MIB),
                            working_set_bytes: Some(anon + 60 * MIB),
                            anon_bytes: Some(anon),
                            file_bytes: Some(90 * MIB),
                            active_file_bytes: Some(50 * MIB),
                            inactive_file_bytes: Some(40 * MIB),
                            shmem_bytes: Some(0),
                            kernel_bytes: Some(10 * MIB),
                            ..MemoryStats::default()
                        }
                        .into(),
                    ),
                });
            }
            // A reclaim storm in one container in ten, a few seconds in every minute.
            if i.is_multiple_of(10) && second % 60 < 3 {
                for r in 0..10 {
                    out.push(kernel(
                        &Record::Reclaim(ReclaimRecord {
                            header: header(EventKind::Reclaim, t + 600_000 + r * 1000),
                            memcg_id: i,
                            duration_ns: 20_000 + rng.next(200_000),
                            nr_reclaimed: rng.next(64),
                            gfp_flags: 0xcc0,
                            order: 0,
                            pid: 1000 + u32::try_from(i).unwrap_or(0),
                        }),
                        path,
                        identity.as_ref(),
                    ));
                }
            }
            if second % 300 == 299 && i.is_multiple_of(10) {
                out.push(oom(t + 700_000, i, path, identity.as_ref()));
            }
        }
        if second % 30 == 0 {
            for action in [CGROUP_MKDIR, CGROUP_RMDIR] {
                out.push(kernel(
                    &Record::Cgroup(CgroupRecord {
                        header: header(EventKind::Cgroup, t + 800_000),
                        memcg_id: 10_000 + second,
                        action,
                        flags: CGROUP_FLAG_CHARGED,
                        charged_pages: 100,
                        ..CgroupRecord::default()
                    }),
                    &format!("/system.slice/job-{second}.scope"),
                    None,
                ));
            }
        }
    }
    out
}

fn kernel(record: &Record, path: &str, identity: Option<&ContainerIdentity>) -> Event {
    Event::from_kernel(
        record,
        Context {
            cgroup: Some(path.to_owned()),
            container: identity.cloned(),
            ..Context::default()
        },
        CLOCK.page_size,
    )
}

fn oom(t: u64, i: u64, path: &str, identity: Option<&ContainerIdentity>) -> Event {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"java");
    Event::from_kernel(
        &Record::OomKill(OomKillRecord {
            header: header(EventKind::OomKill, t),
            memcg_id: i,
            pid: 4242,
            tgid: 4242,
            anon_rss_pages: 120_000,
            flags: OOM_FLAG_MEMCG | OOM_FLAG_RSS | OOM_FLAG_TASK,
            comm,
            ..OomKillRecord::default()
        }),
        Context {
            cgroup: Some(path.to_owned()),
            container: identity.cloned(),
            memcg_limit_bytes: Some(512 * MIB),
            memcg_usage_bytes: Some(512 * MIB),
            oom: Some(OomContext {
                constraint: Some(OomConstraint::Memcg),
                limit_cgroup: Some(path.to_owned()),
                memory: Some(MemoryStats {
                    usage_bytes: Some(512 * MIB),
                    limit_bytes: Some(512 * MIB),
                    anon_bytes: Some(470 * MIB),
                    file_bytes: Some(30 * MIB),
                    kernel_bytes: Some(12 * MIB),
                    ..MemoryStats::default()
                }),
                memory_source: Some(MemorySource::KernelOomReport),
                ..OomContext::default()
            }),
            ..Context::default()
        },
        CLOCK.page_size,
    )
}

fn write_trace(path: &Path, events: &[Event]) {
    let header = TraceHeader {
        memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: "bench".into(),
        kernel_release: "generated".into(),
        boot_time_wall_ns: CLOCK.boot_time_wall_ns,
        clock: "CLOCK_BOOTTIME".into(),
        page_size: CLOCK.page_size,
        started_wall_ns: CLOCK.boot_time_wall_ns,
        probes: Vec::new(),
        cgroup_version: "v1".into(),
        memcgs_at_start: None,
        flight: None,
    };
    let mut writer = TraceWriter::create(path, &header).expect("create the trace");
    for e in events {
        writer.append(e).expect("write the trace");
    }
    writer.finish(&[]).expect("finish the trace");
}

fn rate(label: &str, n: u64, took: Duration) {
    println!(
        "{label:<48} {n:>9} events in {:>8.1} ms = {:>6.2} M events/s",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64() / 1e6
    );
}

fn main() {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&target).expect("target/bench");
    let events = node_hour();
    let n = events.len() as u64;
    println!("input: {n} events, an hour of {CONTAINERS} containers (generated)");

    let started = Instant::now();
    let mut builder = ReportBuilder::new(CLOCK);
    for e in &events {
        builder.add(e);
    }
    let report = builder.finish(TraceInfo::default());
    rate("report model (Event → Report)", n, started.elapsed());

    let started = Instant::now();
    let text = report::text(&report);
    println!(
        "{:<48} {:>8.1} ms ({} bytes)",
        "text render",
        started.elapsed().as_secs_f64() * 1e3,
        text.len()
    );
    let started = Instant::now();
    let html = report::html(&report).expect("html");
    println!(
        "{:<48} {:>8.1} ms ({} bytes, {} charts)",
        "HTML render with charts",
        started.elapsed().as_secs_f64() * 1e3,
        html.len(),
        html.matches("<svg ").count()
    );

    let started = Instant::now();
    let mut perfetto = PerfettoWriter::new(io::sink(), &TraceInfo::default()).expect("start");
    for e in &events {
        perfetto.add(e).expect("export");
    }
    let written = perfetto.finish(&TraceInfo::default()).expect("finish");
    rate(
        &format!("Perfetto export ({written} trace events)"),
        n,
        started.elapsed(),
    );

    let file = target.join("report-input.mtrace");
    write_trace(&file, &events);
    let size = std::fs::metadata(&file).expect("stat").len();
    let started = Instant::now();
    let mut reader = TraceReader::open(&file).expect("open");
    let mut builder = ReportBuilder::new(CLOCK);
    let mut read = 0;
    while let Some(item) = reader.next_item().expect("read") {
        if let TraceItem::Event(e) = item {
            builder.add(&e);
            read += 1;
        }
    }
    let _ = builder.finish(TraceInfo::default());
    rate(
        &format!("file → report model ({} MiB)", size >> 20),
        read,
        started.elapsed(),
    );
    println!("trace for `memtrace report`: {}", file.display());
}
