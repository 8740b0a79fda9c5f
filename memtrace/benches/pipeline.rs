//! Throughput of the userspace pipeline on one core: `cargo xtask bench pipeline` (or `cargo
//! bench -p memtrace --bench pipeline`). The target (issue 10) is at least 1 M events/s for
//! decode + attribute + write JSON Lines and a trace file.
//!
//! The input is what the kernel writes to the ring buffer: `memtrace_common::event::Record`
//! bytes, back to back as the ring buffer hands them out. Each is decoded (`Record::decode`),
//! given its context by the real `attribution::LiveContext` (memcg id → cgroup path, container
//! and pod identity from the path, pod and container names from the kubelet's log directories,
//! the cgroupfs files an OOM kill and a charge failure read), and written, through the `Tee`
//! that `memtrace record --print json` uses, to a `JsonSink` over `io::sink()` and a
//! `TraceWriter` on a temporary file; the sinks are flushed after every ring-buffer batch, as
//! the pipeline does when its queue is empty.
//!
//! The cgroup hierarchy is a temporary directory laid out as a cgroup v2 node with 40
//! Kubernetes containers (systemd driver, containerd), each with the cgroupfs files memtrace
//! reads (`memory.current`, `memory.max`, `memory.stat`, `memory.events`), and `pods/` and
//! `containers/` as the kubelet writes them; memcg ids are the directories' inode numbers, as
//! on a real node. So no root and no cgroupfs are needed. Left out: the ring buffer itself
//! (the kernel's copy into it, and `RingBuf::next`), the channel between the reader task and
//! the consumer, the tokio runtime, `/dev/kmsg` (kills carry the kernel's `oom_control`, so
//! none is waited for), the kernel's aggregates (`cache`, `charge`, `slab`: map drains, not
//! ring-buffer records) and the real stdout.
//!
//! The record mix, per 1000: 769 memcg limit reclaim episodes, 200 charge failures, 30 cgroup
//! lifecycle records (a container's memcg created, removed while still charged, freed) and 1
//! OOM kill — a node under memory pressure, where ring-buffer records come fastest.

#![expect(
    clippy::cast_possible_truncation,
    reason = "dice values are below small bounds (a container index, a pid)"
)]

mod common;

use std::{
    fs,
    hint::black_box,
    io,
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use memtrace::{
    attribution::{
        CgroupVersion, Filter, LiveContext, MemcgResolver, MemoryHierarchy, PodDirectory,
        RuntimeLookups, RuntimeState,
    },
    event::HostClock,
    sinks::{JsonSink, Sink, Tee},
    trace::{TraceHeader, TraceWriter},
};
use memtrace_common::{
    CgroupRecord, EventKind, OomKillRecord, ReclaimRecord,
    event::{
        CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RELEASE, CGROUP_RMDIR, CHARGE_STRATEGY_FEXIT,
        ChargeFailRecord, OOM_FLAG_CONTROL, OOM_FLAG_MEMCG, OOM_FLAG_RSS, OOM_FLAG_TASK,
        OOM_STRATEGY_FENTRY, Record,
    },
};

use common::{Dice, header, thread_cpu_time};

const CONTAINERS: usize = 40;
const RECORDS: usize = 1_000_000;
/// Records the consumer gets per wake-up (a drained ring buffer, then a flush).
const BATCH: usize = 512;
const PAGE: u64 = 4096;
const SECOND: u64 = 1_000_000_000;
const TARGET: f64 = 1e6;
const CLOCK: HostClock = HostClock {
    boot_time_wall_ns: 1_795_000_000 * SECOND,
    page_size: PAGE,
};

/// A container's memcg on the fake node.
struct Memcg {
    id: u64,
    pod: String,
    /// Its pod's memcg, whose limit fires in an OOM kill.
    pod_id: u64,
}

/// The fake node: a cgroup v2 hierarchy and the kubelet's log directories, under `root`.
fn node(root: &Path, dice: &mut Dice) -> Vec<Memcg> {
    let write = |path: &Path, text: &str| fs::write(path, text).expect("write a cgroupfs file");
    let cgroupfs = root.join("cgroup");
    let qos = "/kubepods.slice/kubepods-burstable.slice";
    let mut memcgs = Vec::new();
    for i in 0..CONTAINERS {
        let uid = format!("{:08x}-{i:04x}-4b5a-8978-{:012x}", dice.next() as u32, i);
        let id = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            dice.next(),
            dice.next(),
            dice.next(),
            i
        );
        let pod = format!(
            "{qos}/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        );
        let path = format!("{pod}/cri-containerd-{id}.scope");
        let (pod_dir, dir) = (cgroupfs.join(&pod[1..]), cgroupfs.join(&path[1..]));
        fs::create_dir_all(&dir).expect("create a cgroup directory");
        for d in [&pod_dir, &dir] {
            let usage = (64 + dice.below(512)) << 20;
            write(&d.join("memory.current"), &format!("{usage}\n"));
            write(&d.join("memory.max"), &format!("{}\n", 1u64 << 30));
            write(
                &d.join("memory.events"),
                "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\n",
            );
            write(
                &d.join("memory.stat"),
                &format!(
                    "anon {}\nfile {}\nkernel 1048576\nshmem 0\nactive_file 1048576\n\
                     inactive_file 2097152\nslab_reclaimable 524288\nslab_unreclaimable 524288\n",
                    usage / 2,
                    usage / 4
                ),
            );
        }
        let logs = root.join("log");
        let pod_log = logs
            .join("pods")
            .join(format!("shop_cart-{i}-7d9f8c_{uid}/app"));
        fs::create_dir_all(&pod_log).expect("create the kubelet's pod directory");
        fs::create_dir_all(logs.join("containers")).expect("create the kubelet's containers");
        write(&pod_log.join("0.log"), "");
        write(
            &logs
                .join("containers")
                .join(format!("cart-{i}-7d9f8c_shop_app-{id}.log")),
            "",
        );
        let inode = |d: &Path| fs::metadata(d).expect("stat a cgroup directory").ino();
        memcgs.push(Memcg {
            id: inode(&dir),
            pod,
            pod_id: inode(&pod_dir),
        });
    }
    memcgs
}

fn comm(name: &[u8]) -> [u8; 16] {
    let mut comm = [0u8; 16];
    comm[..name.len()].copy_from_slice(name);
    comm
}

/// The ring buffer's records, back to back, and where each starts.
fn records(memcgs: &[Memcg], dice: &mut Dice) -> (Vec<u8>, Vec<usize>) {
    let (mut bytes, mut starts) = (Vec::new(), Vec::new());
    let mut push = |record: &Record| {
        starts.push(bytes.len());
        bytes.extend_from_slice(record.bytes());
    };
    let mut now = 3_600 * SECOND;
    let mut restarted = 0u64;
    let mut n = 0;
    while n < RECORDS {
        now += 1_000 + dice.below(20_000);
        let m = &memcgs[dice.below(CONTAINERS as u64) as usize];
        let pid = 1000 + dice.below(30_000) as u32;
        let roll = dice.below(1000);
        if roll < 10 {
            // A container restarts: its new memcg is created, removed while still charged,
            // and freed once nothing pins it.
            restarted += 1;
            let id = (1 << 40) + restarted;
            let mut path = [0u8; 256];
            let name = format!(
                "{}/cri-containerd-{:048x}{restarted:016x}.scope",
                m.pod, 0xc0de
            );
            path[..name.len()].copy_from_slice(name.as_bytes());
            for (k, action) in [CGROUP_MKDIR, CGROUP_RMDIR, CGROUP_RELEASE]
                .into_iter()
                .enumerate()
            {
                push(&Record::Cgroup(CgroupRecord {
                    header: header(EventKind::Cgroup, now + k as u64),
                    memcg_id: id,
                    action,
                    flags: if action == CGROUP_RMDIR {
                        CGROUP_FLAG_CHARGED
                    } else {
                        0
                    },
                    charged_pages: 50,
                    path: if action == CGROUP_MKDIR {
                        path
                    } else {
                        [0; 256]
                    },
                }));
            }
            n += 3;
        } else if roll < 11 {
            push(&Record::OomKill(OomKillRecord {
                header: header(EventKind::OomKill, now),
                memcg_id: m.id,
                pid,
                tgid: pid,
                anon_rss_pages: 250_000,
                file_rss_pages: 300,
                shmem_rss_pages: 0,
                flags: OOM_FLAG_MEMCG | OOM_FLAG_RSS | OOM_FLAG_TASK | OOM_FLAG_CONTROL,
                strategy: OOM_STRATEGY_FENTRY,
                comm: comm(b"java"),
                limit_memcg_id: m.pod_id,
                limit_usage_pages: 262_144,
                limit_max_pages: 262_144,
                totalpages: 262_144,
                constraint: 3,
                pad: 0,
            }));
            n += 1;
        } else if roll < 211 {
            push(&Record::ChargeFail(ChargeFailRecord {
                header: header(EventKind::ChargeFail, now),
                memcg_id: m.id,
                gfp_flags: 0xcc0,
                nr_pages: 1,
                ret: -12,
                pid,
                tgid: pid,
                strategy: CHARGE_STRATEGY_FEXIT,
                pad: 0,
                comm: comm(b"java"),
            }));
            n += 1;
        } else {
            push(&Record::Reclaim(ReclaimRecord {
                header: header(EventKind::Reclaim, now),
                memcg_id: m.id,
                duration_ns: 20_000 + dice.below(2_000_000),
                nr_reclaimed: dice.below(64),
                gfp_flags: 0xcc0,
                order: 0,
                pid,
            }));
            n += 1;
        }
    }
    (bytes, starts)
}

/// How far one run goes.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    Decode,
    Attribute,
    Json,
    JsonAndTrace,
}

impl Stage {
    const ALL: [Self; 4] = [
        Self::Decode,
        Self::Attribute,
        Self::Json,
        Self::JsonAndTrace,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode (Record::decode)",
            Self::Attribute => "+ attribute (LiveContext::observe → Event)",
            Self::Json => "+ JSON Lines (JsonSink over io::sink)",
            Self::JsonAndTrace => "+ trace file (Tee: JSON Lines and TraceWriter)",
        }
    }
}

fn live_context(root: &Path) -> LiveContext {
    let hierarchy = MemoryHierarchy {
        root: root.join("cgroup"),
        version: CgroupVersion::V2,
    };
    LiveContext::new(
        MemcgResolver::new(hierarchy),
        PodDirectory::new(root.join("log")),
        None,
        Filter::default(),
        PAGE,
        vec![(3, "CONSTRAINT_MEMCG".to_owned())],
    )
    // The containers' runtime state: none, under the bench's own directory, not the host's.
    .with_runtime_lookups(RuntimeLookups::new(RuntimeState::new(root.join("host"))))
}

fn trace_header() -> TraceHeader {
    TraceHeader {
        memtrace_version: env!("CARGO_PKG_VERSION").into(),
        host: "bench".into(),
        kernel_release: "bench".into(),
        boot_time_wall_ns: CLOCK.boot_time_wall_ns,
        clock: "CLOCK_BOOTTIME".into(),
        page_size: PAGE,
        started_wall_ns: CLOCK.boot_time_wall_ns + 3_600 * SECOND,
        probes: Vec::new(),
        cgroup_version: "v2".into(),
        memcgs_at_start: None,
        flight: None,
    }
}

/// One pass over every record up to `stage`; returns the events made, and the CPU and wall
/// time it took (setting up the context and creating the trace file are not timed; ending the
/// file is).
fn run(stage: Stage, root: &Path, bytes: &[u8], starts: &[usize]) -> (u64, Duration, Duration) {
    let mut context = live_context(root);
    let mut json = JsonSink::new(io::sink(), CLOCK);
    let trace_path = root.join("pipeline.mtrace");
    let mut trace = TraceWriter::create(&trace_path, &trace_header()).expect("create the trace");
    let mut events = 0u64;
    let begun = Instant::now();
    let cpu = thread_cpu_time();
    {
        let mut tee = Tee {
            first: &mut json,
            second: &mut trace,
        };
        let sink: &mut dyn Sink = match stage {
            Stage::JsonAndTrace => &mut tee,
            _ => tee.first,
        };
        for batch in starts.chunks(BATCH) {
            for &start in batch {
                // A record is as long as its kind's struct; the decoder checks the length.
                let record = Record::decode(&bytes[start..]).expect("a record as written");
                if stage == Stage::Decode {
                    black_box(&record);
                    events += 1;
                    continue;
                }
                let Some(event) = context.observe(&record) else {
                    continue;
                };
                events += 1;
                if stage == Stage::Attribute {
                    black_box(&event);
                } else {
                    sink.write(&event).expect("write");
                }
            }
            if stage >= Stage::Json {
                sink.flush().expect("flush");
            }
        }
    }
    trace.finish(&[]).expect("end the trace");
    (
        events,
        thread_cpu_time().saturating_sub(cpu),
        begun.elapsed(),
    )
}

#[expect(clippy::cast_precision_loss, reason = "rates for people")]
fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let memcgs = node(dir.path(), &mut dice);
    let (bytes, starts) = records(&memcgs, &mut dice);
    let kinds = |kind: EventKind| {
        starts
            .iter()
            .filter(|&&s| {
                Record::decode(&bytes[s..]).is_ok_and(|r| match r {
                    Record::OomKill(_) => kind == EventKind::OomKill,
                    Record::Cgroup(_) => kind == EventKind::Cgroup,
                    Record::Reclaim(_) => kind == EventKind::Reclaim,
                    Record::ChargeFail(_) => kind == EventKind::ChargeFail,
                })
            })
            .count()
    };
    println!(
        "input: {} ring-buffer records ({} bytes) for {CONTAINERS} containers: {} reclaim, {} \
         charge_fail, {} cgroup, {} oom_kill; batches of {BATCH}",
        starts.len(),
        bytes.len(),
        kinds(EventKind::Reclaim),
        kinds(EventKind::ChargeFail),
        kinds(EventKind::Cgroup),
        kinds(EventKind::OomKill),
    );
    println!("events/s per CPU-second of the thread (wall-clock rate in brackets), best of 3:");
    let mut full = 0.0;
    for stage in Stage::ALL {
        let (mut cpu, mut wall) = (Duration::MAX, Duration::MAX);
        let mut events = 0;
        for _ in 0..3 {
            let (n, c, w) = run(stage, dir.path(), &bytes, &starts);
            events = n;
            cpu = cpu.min(c);
            wall = wall.min(w);
        }
        let rate = events as f64 / cpu.as_secs_f64();
        println!(
            "{:<48} {:>6.2} M events/s {:>5.0} ns/event  [{:.2} M/s wall]",
            stage.name(),
            rate / 1e6,
            cpu.as_secs_f64() * 1e9 / events as f64,
            events as f64 / wall.as_secs_f64() / 1e6,
        );
        full = rate;
    }
    let trace_bytes = fs::metadata(dir.path().join("pipeline.mtrace"))
        .expect("stat the trace")
        .len();
    println!(
        "pipeline: {:.2} M events/s on one core = {:.2} × the 1 M events/s target ({}; trace \
         {:.1} bytes/event)",
        full / 1e6,
        full / TARGET,
        if full >= TARGET { "met" } else { "MISSED" },
        trace_bytes as f64 / starts.len() as f64,
    );
}
