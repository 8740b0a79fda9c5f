//! Round trips and damaged files.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use crate::sinks::Sink as _;

use memtrace_common::{
    CgroupRecord, ChargeFailRecord, EventHeader, EventKind, LostKind, OomKillRecord, ReclaimRecord,
    event::Record,
};

use super::*;
use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        CacheSample, ChargeSample, ChargeSource, Context, Event, FileDelta, HostClock, Observed,
        OomContext, SlabCacheDelta, SlabSample, StatsSample,
    },
};

fn header() -> TraceHeader {
    TraceHeader {
        memtrace_version: "0.1.0".into(),
        host: "node-1".into(),
        kernel_release: "6.18.0".into(),
        boot_time_wall_ns: 1_795_000_000_000_000_000,
        clock: "CLOCK_BOOTTIME".into(),
        page_size: 4096,
        started_wall_ns: 1_795_000_100_000_000_000,
        probes: vec!["oom_kill=raw_tp/mark_victim".into()],
        cgroup_version: "v1".into(),
    }
}

const POD: &str = "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn container() -> ContainerIdentity {
    ContainerIdentity::from_cgroup_path(&format!(
        "{POD}/4c01db0b339c5c5ba5f8e1b2a9d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f"
    ))
}

fn oom(pid: u32, cgroup: Option<&str>) -> Observed {
    Observed::Kernel {
        record: Record::OomKill(OomKillRecord {
            header: EventHeader {
                kind: EventKind::OomKill as u32,
                cpu: 1,
                timestamp_ns: u64::from(pid) * 1000,
            },
            memcg_id: 99,
            pid,
            tgid: pid,
            anon_rss_pages: 16_000,
            flags: 7,
            ..OomKillRecord::default()
        }),
        context: Context {
            cgroup: cgroup.map(Into::into),
            container: cgroup.map(|_| container()),
            memcg_limit_bytes: Some(64 << 20),
            memcg_usage_bytes: None,
            oom: Some(OomContext {
                constraint: Some("CONSTRAINT_MEMCG".into()),
                limit_cgroup: Some(POD.into()),
                limit_container: Some(ContainerIdentity::from_cgroup_path(POD)),
                memory: Some(MemoryStats {
                    usage_bytes: Some(1),
                    ..MemoryStats::default()
                }),
                memory_source: Some("kernel_oom_report".into()),
                task: Some("memhog".into()),
            }),
            removed_ns: None,
            charge_failures: None,
        },
    }
}

/// At least one of every `Observed` variant and kernel record kind, with every optional part
/// both present and absent somewhere.
#[expect(
    clippy::too_many_lines,
    reason = "one sample of every kind of event, side by side"
)]
pub(super) fn every_kind() -> Vec<Observed> {
    let mut lifecycle = CgroupRecord {
        header: EventHeader {
            kind: EventKind::Cgroup as u32,
            cpu: 0,
            timestamp_ns: 9,
        },
        memcg_id: 5,
        action: memtrace_common::event::CGROUP_RMDIR,
        ..CgroupRecord::default()
    };
    lifecycle.path[..2].copy_from_slice(b"/a");
    vec![
        oom(1, Some("/a")),
        oom(2, None),
        Observed::Kernel {
            record: Record::Cgroup(lifecycle),
            context: Context {
                cgroup: Some("/a".into()),
                removed_ns: Some(3),
                ..Context::default()
            },
        },
        Observed::Stats(StatsSample {
            timestamp_ns: 10,
            cgroup: "/b/c".into(),
            container: None,
            memory: MemoryStats {
                usage_bytes: Some(4096),
                limit_bytes: None,
                ..MemoryStats::default()
            },
        }),
        Observed::Stats(StatsSample {
            timestamp_ns: 10,
            cgroup: POD.into(),
            container: Some(ContainerIdentity::from_cgroup_path(POD)),
            memory: MemoryStats {
                usage_bytes: Some(1 << 30),
                limit_bytes: Some(2 << 30),
                working_set_bytes: Some(900 << 20),
                anon_bytes: Some(800 << 20),
                file_bytes: Some(100 << 20),
                active_file_bytes: Some(60 << 20),
                inactive_file_bytes: Some(40 << 20),
                shmem_bytes: Some(0),
                kernel_bytes: Some(12 << 20),
                slab_reclaimable_bytes: Some(3 << 20),
                slab_unreclaimable_bytes: Some(1 << 20),
            },
        }),
        Observed::Cache(CacheSample {
            timestamp_ns: 11,
            interval_ns: 1_000_000_000,
            memcg_id: 5,
            cgroup: Some("/a".into()),
            container: None,
            added_pages: 10,
            removed_pages: 2,
            top_files: vec![FileDelta {
                dev: 8 << 20 | 1,
                ino: 1234,
                added_pages: 10,
                removed_pages: 2,
            }],
        }),
        Observed::Cache(CacheSample {
            timestamp_ns: 12,
            interval_ns: 1_000_000_000,
            memcg_id: 0,
            cgroup: None,
            container: None,
            added_pages: u64::MAX,
            removed_pages: 0,
            top_files: Vec::new(),
        }),
        Observed::Kernel {
            record: Record::Reclaim(ReclaimRecord {
                header: EventHeader {
                    kind: EventKind::Reclaim as u32,
                    cpu: 1,
                    timestamp_ns: 12,
                },
                memcg_id: 5,
                duration_ns: 1000,
                nr_reclaimed: 0,
                gfp_flags: 0xcc0,
                order: 0,
                pid: 77,
            }),
            context: Context {
                cgroup: Some("/a".into()),
                container: Some(container()),
                ..Context::default()
            },
        },
        Observed::Kernel {
            record: Record::ChargeFail(ChargeFailRecord {
                header: EventHeader {
                    kind: EventKind::ChargeFail as u32,
                    cpu: 0,
                    timestamp_ns: 13,
                },
                memcg_id: 5,
                gfp_flags: 0xcc0,
                nr_pages: 1,
                ret: -12,
                pid: 77,
                tgid: 77,
                strategy: memtrace_common::event::CHARGE_STRATEGY_FENTRY,
                pad: 0,
                comm: *b"memhog\0\0\0\0\0\0\0\0\0\0",
                nr_reclaimed: 0,
                reclaim_ns: 0,
            }),
            context: Context {
                cgroup: Some("/a".into()),
                charge_failures: Some(3),
                ..Context::default()
            },
        },
        Observed::Charge(ChargeSample {
            timestamp_ns: 14,
            interval_ns: 1_000_000_000,
            memcg_id: 5,
            cgroup: Some("/a".into()),
            container: Some(container()),
            pages: 25_000,
            charges: 24_000,
            source: ChargeSource::Charge,
        }),
        Observed::Charge(ChargeSample {
            timestamp_ns: 14,
            interval_ns: 1_000_000_000,
            memcg_id: 6,
            cgroup: None,
            container: None,
            pages: 1,
            charges: 0,
            source: ChargeSource::StatUpdates,
        }),
        Observed::Charge(ChargeSample {
            timestamp_ns: 14,
            interval_ns: 1_000_000_000,
            memcg_id: 7,
            cgroup: None,
            container: None,
            pages: 2,
            charges: 0,
            source: ChargeSource::PageCache,
        }),
        Observed::Slab(SlabSample {
            timestamp_ns: 15,
            interval_ns: 1_000_000_000,
            memcg_id: 5,
            cgroup: Some("/a".into()),
            container: None,
            caches: vec![
                SlabCacheDelta {
                    cache: "dentry".into(),
                    alloc_bytes: 192_000,
                    alloc_objects: 1000,
                    free_bytes: 0,
                    free_objects: 0,
                },
                SlabCacheDelta {
                    cache: "kmalloc-cg-64".into(),
                    alloc_bytes: 64,
                    alloc_objects: 1,
                    free_bytes: 128,
                    free_objects: 2,
                },
            ],
        }),
        oom(4, Some("/b/c")),
    ]
}

/// A stats sample with numbers that do not repeat: files fill at a realistic pace.
fn varied(i: u64) -> Observed {
    let mut e = every_kind().swap_remove(4);
    if let Observed::Stats(s) = &mut e {
        s.timestamp_ns = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
        s.memory.usage_bytes = Some(i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 24);
    }
    e
}

fn write_sample(path: &Path) -> Vec<Observed> {
    let events = every_kind();
    let mut w = TraceWriter::create(path, &header()).expect("create");
    for (i, e) in events.iter().enumerate() {
        w.append(e).expect("append");
        // Several blocks, so that cuts fall between and inside blocks.
        if i % 3 == 2 {
            w.seal().expect("seal");
        }
    }
    w.finish(&[(LostKind::OomKill, 5)]).expect("finish");
    events
}

fn read_all(path: &Path) -> Result<(Vec<Observed>, Option<TraceItem>), TraceError> {
    let mut r = TraceReader::open(path)?;
    let mut events = Vec::new();
    let mut last = None;
    while let Some(item) = r.next_item()? {
        match item {
            TraceItem::Event(e) => events.push(e),
            other @ (TraceItem::End { .. } | TraceItem::TailCut { .. }) => last = Some(other),
        }
    }
    Ok((events, last))
}

#[test]
fn every_event_kind_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.mtrace");
    let written = write_sample(&path);
    assert_eq!(
        fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
        0o600
    );
    let r = TraceReader::open(&path).expect("open");
    assert_eq!(r.header(), &header());
    let (events, end) = read_all(&path).expect("read");
    assert_eq!(events, written);
    assert_eq!(
        end,
        Some(TraceItem::End {
            events: written.len() as u64,
            lost: vec![5]
        })
    );
    // Every user-visible type is there, so a new variant without a sample fails here.
    let clock = HostClock {
        boot_time_wall_ns: 0,
        page_size: 4096,
    };
    for e in &events {
        let name = Event::new(e, clock).type_name();
        assert!(
            Event::TYPES.contains(&name),
            "{name} missing from Event::TYPES"
        );
    }
    for name in Event::TYPES {
        assert!(
            events
                .iter()
                .any(|e| Event::new(e, clock).type_name() == *name),
            "no {name} event in the round trip"
        );
    }
}

#[test]
fn a_file_cut_anywhere_after_its_header_gives_what_was_whole_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full");
    let written = write_sample(&full);
    let bytes = fs::read(&full).expect("read");
    let cut = dir.path().join("cut");
    let header_len = {
        let mut r = TraceReader::open(&full).expect("open");
        let _ = r.next_item();
        // The preamble, then the first frame: what was consumed before the first event.
        usize::try_from(r.bytes_read()).expect("small")
    };
    let mut seen_partial = false;
    for len in 0..bytes.len() {
        fs::write(&cut, &bytes[..len]).expect("write");
        match read_all(&cut) {
            Ok((events, Some(TraceItem::TailCut { events: n, .. }))) => {
                assert_eq!(events.len() as u64, n);
                assert_eq!(events[..], written[..events.len()], "cut at {len}");
                seen_partial |= !events.is_empty() && events.len() < written.len();
            }
            Ok(other) => panic!("cut at {len} read as complete: {other:?}"),
            Err(TraceError::NotATrace { .. } | TraceError::Truncated { .. }) => {
                assert!(len < header_len, "cut at {len} (header {header_len})");
            }
            Err(e) => panic!("cut at {len}: {e}"),
        }
    }
    assert!(seen_partial, "some cut must keep some events");
}

#[test]
fn every_flipped_byte_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full");
    write_sample(&full);
    let bytes = fs::read(&full).expect("read");
    let bad = dir.path().join("bad");
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x41;
        fs::write(&bad, &flipped).expect("write");
        match read_all(&bad) {
            Err(_) => {}
            Ok(result) => panic!("flip at byte {i} went unnoticed: {result:?}"),
        }
    }
}

#[test]
fn rejects_garbage_empty_old_and_future_files_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x");
    for garbage in [
        &b""[..],
        b"hello",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    ] {
        fs::write(&path, garbage).expect("write");
        let err = TraceReader::open(&path).err().expect("must fail");
        assert!(matches!(err, TraceError::NotATrace { .. }), "{err}");
    }
    write_sample(&path);
    let mut bytes = fs::read(&path).expect("read");
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
    fs::write(&path, &bytes).expect("write");
    let err = TraceReader::open(&path).err().expect("must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a version 3 trace; this memtrace reads version 2: use a newer memtrace",
            path.display()
        )
    );
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    fs::write(&path, &bytes).expect("write");
    let err = TraceReader::open(&path).err().expect("must fail");
    assert!(matches!(err, TraceError::OldVersion { .. }), "{err}");
}

#[test]
fn a_block_is_sealed_by_age_on_flush_and_by_size_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t");
    let mut w = TraceWriter::create(&path, &header()).expect("create");
    let empty = w.bytes_written();
    w.append(&every_kind()[0]).expect("append");
    w.flush_due().expect("flush");
    assert_eq!(w.bytes_written(), empty, "a fresh block waits");
    std::thread::sleep(SEAL_AGE);
    w.flush_due().expect("flush");
    assert!(w.bytes_written() > empty, "an old block is written");
    let written = w.bytes_written();
    let stats = &every_kind()[4];
    while w.bytes_written() == written {
        w.append(stats).expect("append");
    }
    assert!(w.events() > 1000);
    // The file as it is now (no end marker) reads to its last block.
    let (events, last) = read_all(&path).expect("read");
    assert!(matches!(
        last,
        Some(TraceItem::TailCut {
            dropped_bytes: 0,
            ..
        })
    ));
    assert_eq!(
        events.len() as u64,
        w.events(),
        "the block that filled up was written"
    );
}

#[test]
fn max_size_ends_a_file_and_rotate_keeps_the_newest_n() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("r.mtrace");
    // A leftover of an earlier rotated recording, removed at the start.
    fs::write(rotated_name(&base, 9), b"old").expect("write");
    let limits = Limits {
        max_size: Some(64 << 10),
        rotate: Some(3),
    };
    let mut rec = Recording::create(&base, &header(), limits).expect("create");
    let clock = HostClock {
        boot_time_wall_ns: 0,
        page_size: 4096,
    };
    let mut n = 0u64;
    let mut round = |rec: &mut Recording| {
        let start = n;
        for e in every_kind()
            .into_iter()
            .chain((0..50).map(|i| varied(start + i)))
        {
            crate::sinks::Sink::write(rec, &e, &Event::new(&e, clock)).expect("write");
            n += 1;
        }
        // As the pipeline does every quarter second: small chunks, like a real recording's.
        rec.seal_for_test();
    };
    while rec
        .files()
        .last()
        .is_none_or(|f| f != &rotated_name(&base, 6))
    {
        round(&mut rec);
    }
    // The sixth file has events too.
    round(&mut rec);
    let files = rec.files();
    let total = rec.finish(&[]).expect("finish");
    assert_eq!(total, n);
    assert_eq!(
        files,
        (4..=6).map(|i| rotated_name(&base, i)).collect::<Vec<_>>()
    );
    let mut on_disk: Vec<_> = fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, files);
    for f in &files {
        assert!(
            fs::metadata(f).expect("stat").len() <= 64 << 10,
            "{}",
            f.display()
        );
        let (events, last) = read_all(f).expect("each file reads on its own");
        assert_ne!(events.len(), 0, "{}", f.display());
        assert!(matches!(last, Some(TraceItem::End { .. })), "{last:?}");
    }

    let single = dir.path().join("one.mtrace");
    let mut rec = Recording::create(
        &single,
        &header(),
        Limits {
            max_size: Some(64 << 10),
            rotate: None,
        },
    )
    .expect("create");
    let mut i = 0;
    let full = loop {
        let e = varied(i);
        i += 1;
        if let Err(err) = crate::sinks::Sink::write(&mut rec, &e, &Event::new(&e, clock)) {
            break err;
        }
    };
    assert!(
        full.get_ref()
            .and_then(|e| e.downcast_ref::<FileFull>())
            .is_some(),
        "{full}"
    );
    assert!(fs::metadata(&single).expect("stat").len() <= 64 << 10);
    let (_, last) = read_all(&single).expect("read");
    assert!(matches!(last, Some(TraceItem::End { .. })));
}

#[test]
fn times_read_from_a_file_never_overflow() {
    // Found by the fuzzer: boot time plus timestamp overflowed (a panic in debug builds).
    let clock = HostClock {
        boot_time_wall_ns: u64::MAX - 5,
        page_size: u64::MAX,
    };
    for e in every_kind() {
        let event = Event::new(&e, clock);
        serde_json::to_string(&event).expect("json");
        crate::sinks::TextSink::new(std::io::sink())
            .write(&e, &event)
            .expect("text");
    }
}
