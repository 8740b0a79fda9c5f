//! Round trips and damaged files.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use crate::sinks::Sink as _;

use memtrace_common::LostKind;

use super::*;
use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        CgroupAction, CgroupChange, Change, ChargeFail, ChargeFailFromReclaim, ChargeProbe,
        ChargeSource, Charges, ChargesFromPageCache, Counter, CounterChanges, CounterSource,
        CounterValues, Device, Event, FileCache, FileName, HostClock, LossCause, LossTally, Memcg,
        MemorySource, OomConstraint, OomKill, OomProbe, PageCache, Reclaim, Slab, SlabCache, What,
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
        memcgs_at_start: Some(crate::attribution::MemcgCensus {
            live: 130,
            dying: 14,
        }),
        flight: None,
    }
}

const POD: &str = "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn container() -> ContainerIdentity {
    ContainerIdentity::from_cgroup_path(&format!(
        "{POD}/4c01db0b339c5c5ba5f8e1b2a9d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f"
    ))
}

fn event(timestamp_ns: u64, id: Option<u64>, cgroup: Option<&str>, what: What) -> Event {
    Event {
        timestamp_ns,
        memcg: Memcg {
            id,
            cgroup: cgroup.map(Into::into),
            container: cgroup.filter(|c| c.starts_with(POD)).map(|_| container()),
        },
        what,
    }
}

fn oom(pid: u32, cgroup: Option<&str>) -> Event {
    event(
        u64::from(pid) * 1000,
        Some(99),
        cgroup,
        What::OomKill(OomKill {
            pid,
            tgid: Some(pid),
            comm: Some("memhog".into()),
            memcg_limit_bytes: Some(64 << 20),
            memcg_usage_bytes: None,
            anon_rss_bytes: Some(16_000 * 4096),
            file_rss_bytes: Some(0),
            shmem_rss_bytes: None,
            constraint: Some(if pid == 2 {
                OomConstraint::Other("CONSTRAINT_FROM_THE_FUTURE".into())
            } else {
                OomConstraint::Memcg
            }),
            probe: Some(OomProbe::RawTp),
            limit_cgroup: Some(POD.into()),
            limit_container: Some(ContainerIdentity::from_cgroup_path(POD)),
            memory: Some(MemoryStats {
                usage_bytes: Some(1),
                ..MemoryStats::default()
            }),
            memory_source: Some(MemorySource::KernelOomReport),
            oom_total_bytes: (pid != 2).then_some(64 << 20),
        }),
    )
}

/// At least one of every [`What`] variant, with every optional part both present and absent
/// somewhere.
#[expect(
    clippy::too_many_lines,
    reason = "one sample of every kind of event, side by side"
)]
pub(super) fn every_kind() -> Vec<Event> {
    let mut cache = PageCache::new(1_000_000_000, 49_152, 8192);
    cache.top_files = vec![
        FileCache::new(Device { major: 8, minor: 1 }, 1234, 40_960, 8192),
        FileCache::new(
            Device {
                major: 0,
                minor: 27,
            },
            7,
            4096,
            0,
        )
        .named(FileName {
            path: Some("/dev/shm/cache".into()),
            shmem: true,
            deleted: true,
            ..FileName::default()
        }),
        FileCache::new(Device::default(), 0, 4096, 0).named(FileName::other(3)),
    ];
    vec![
        oom(1, Some("/a")),
        oom(2, None),
        event(
            9,
            Some(5),
            Some("/a"),
            What::Cgroup(CgroupChange {
                action: CgroupAction::Removed,
                dying: true,
                charged_bytes: Some(4096),
                dying_ns: None,
            }),
        ),
        event(
            9,
            Some(5),
            Some("/a"),
            What::Cgroup(CgroupChange {
                action: CgroupAction::Freed,
                dying: false,
                charged_bytes: None,
                dying_ns: Some(6),
            }),
        ),
        event(
            10,
            None,
            Some(POD),
            What::Stats(
                MemoryStats {
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
                }
                .into(),
            ),
        ),
        event(
            10,
            None,
            Some("/b/c"),
            What::Stats(
                MemoryStats {
                    usage_bytes: Some(4096),
                    limit_bytes: None,
                    ..MemoryStats::default()
                }
                .into(),
            ),
        ),
        event(11, Some(5), Some("/a"), What::Cache(cache)),
        event(
            12,
            Some(0),
            None,
            What::Cache(PageCache::new(1_000_000_000, u64::MAX, 0)),
        ),
        event(
            12,
            Some(5),
            Some(POD),
            What::Reclaim(Reclaim {
                pid: 77,
                duration_ns: 1000,
                reclaimed_bytes: 0,
                order: 0,
                gfp_flags: 0xcc0,
                ineffective: true,
            }),
        ),
        event(
            13,
            Some(5),
            Some("/a"),
            What::ChargeFail(ChargeFail {
                pid: 77,
                tgid: 77,
                comm: "memhog".into(),
                nr_pages: 1,
                gfp_flags: 0xcc0,
                errno: 12,
                probe: ChargeProbe::Fexit,
                charge_failures: Some(3),
            }),
        ),
        event(
            13,
            Some(5),
            Some("/a"),
            What::ChargeFailFromReclaim(ChargeFailFromReclaim {
                pid: 78,
                gfp_flags: 0xcc0,
                reclaimed_bytes: 8192,
                reclaim_ns: 5000,
                charge_failures: None,
            }),
        ),
        event(
            14,
            Some(5),
            Some(POD),
            What::Charge(Charges {
                interval_ns: 1_000_000_000,
                charged_bytes: 25_000 * 4096,
                charges: Some(24_000),
                source: ChargeSource::Charge,
            }),
        ),
        event(
            14,
            Some(6),
            None,
            What::Charge(Charges {
                interval_ns: 1_000_000_000,
                charged_bytes: 4096,
                charges: None,
                source: ChargeSource::StatUpdates,
            }),
        ),
        event(
            14,
            Some(7),
            None,
            What::ChargeFromPageCache(ChargesFromPageCache {
                interval_ns: 1_000_000_000,
                charged_bytes: 8192,
            }),
        ),
        event(
            15,
            Some(5),
            Some("/a"),
            What::Slab(Slab::new(
                1_000_000_000,
                vec![
                    SlabCache::new("dentry".into(), (192_000, 1000), (0, 0)),
                    SlabCache::new("kmalloc-cg-64".into(), (64, 1), (128, 2)),
                ],
            )),
        ),
        oom(4, Some("/b/c")),
    ]
}

/// A stats sample with numbers that do not repeat: files fill at a realistic pace.
fn varied(i: u64) -> Event {
    let mut e = every_kind().swap_remove(4);
    e.timestamp_ns = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    if let What::Stats(m) = &mut e.what {
        m.memory.usage_bytes = Some(i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 24);
    }
    e
}

fn write_sample(path: &Path) -> Vec<Event> {
    let mut events = every_kind_with_counters();
    events.push(lost_event());
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

/// A `lost` event, as the pipeline writes it: memtrace's own, of no memcg.
fn lost_event() -> Event {
    let lost = LossTally::of(LossCause::OutputBlocked)
        .grown(&[(LostKind::Reclaim, 42)])
        .pop()
        .expect("grown");
    Event {
        timestamp_ns: 21,
        memcg: Memcg::default(),
        what: What::Lost(lost),
    }
}

fn read_all(path: &Path) -> Result<(Vec<Event>, Option<TraceItem>), TraceError> {
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
    // Every user-visible type is there, so a new type without a sample fails here.
    for e in &events {
        let name = e.what.type_name();
        assert!(
            What::TYPES.contains(&name),
            "{name} missing from What::TYPES"
        );
    }
    for name in What::TYPES {
        assert!(
            events.iter().any(|e| e.what.type_name() == *name),
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
    bytes[8..10].copy_from_slice(&6u16.to_le_bytes());
    fs::write(&path, &bytes).expect("write");
    let err = TraceReader::open(&path).err().expect("must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a version 6 trace; this memtrace reads versions 2 to 5: use a newer memtrace",
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
    let mut n = 0u64;
    let mut round = |rec: &mut Recording| {
        let start = n;
        for e in every_kind()
            .into_iter()
            .chain((0..50).map(|i| varied(start + i)))
        {
            crate::sinks::Sink::write(rec, &e).expect("write");
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
        if let Err(err) = crate::sinks::Sink::write(&mut rec, &e) {
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
        crate::sinks::JsonSink::new(std::io::sink(), clock)
            .write(&e)
            .expect("json");
        crate::sinks::TextSink::new(std::io::sink(), clock)
            .write(&e)
            .expect("text");
    }
}

/// The version 3 encoding is the model's declaration order: a reordered variant or field reads
/// every older file wrongly. This pins the bytes of one event of every kind as version 3 wrote
/// them (identities in its fixed layout), and reads them back; when it fails on purpose, the
/// format changed: bump `VERSION` and keep a reader for the old one.
#[test]
fn the_version_3_encoding_of_every_kind_is_pinned_and_still_read() {
    let mut encoder = Encoder::default();
    let mut bytes = Vec::new();
    let events = every_kind_as_version_3_had_them();
    crate::event::with_layout_before_version_5(|| {
        crate::attribution::with_version_3_layout(|| {
            for e in &events {
                encoder.event(e, &mut bytes).expect("encode");
            }
        });
    });
    assert_eq!(
        (bytes.len(), crc32fast::hash(&bytes)),
        (1052, 2_591_213_029),
        "the version 3 encoding changed"
    );
    assert_eq!(decode_all(3, &bytes), events);
}

/// [`every_kind`] as version 3 recorded it: files without names (no FILE records) and no
/// "other files" row.
fn every_kind_as_version_3_had_them() -> Vec<Event> {
    let mut events = every_kind();
    for e in &mut events {
        // The sample with named files and an "other files" row; the other `cache` sample has
        // no files.
        if let What::Cache(cache) = &mut e.what
            && !cache.top_files.is_empty()
        {
            *cache = PageCache::new(1_000_000_000, 40_960, 8192);
            cache.top_files = vec![FileCache::new(
                Device { major: 8, minor: 1 },
                1234,
                40_960,
                8192,
            )];
        }
    }
    events
}

/// A container identity as a runtime names it: with its name and image.
fn named_container() -> ContainerIdentity {
    ContainerIdentity {
        pod_namespace: Some("shop".into()),
        pod_name: Some("hog-pod".into()),
        container_name: Some("hog".into()),
        image: Some("localhost/memtrace-busybox:test".into()),
        ..container()
    }
}

/// Every kind, with the OOM kill's limit identity (the one stored inside an event) named.
fn every_kind_named() -> Vec<Event> {
    let mut events = every_kind();
    for e in &mut events {
        if e.memcg.container.is_some() {
            e.memcg.container = Some(named_container());
        }
        if let What::OomKill(k) = &mut e.what {
            k.limit_container = Some(named_container());
        }
    }
    events
}

fn decode_all(version: u16, bytes: &[u8]) -> Vec<Event> {
    let mut decoder = Decoder::new(version, header().page_size);
    let mut pos = 0;
    let mut events = Vec::new();
    while let Some(e) = decoder.next(bytes, &mut pos).expect("decode") {
        events.push(e);
    }
    events
}

/// Version 4 stores an identity inside an event as its JSON, and files' names in FILE records:
/// names, images and file paths round-trip, and the bytes are pinned like version 3's.
#[test]
fn the_version_4_encoding_of_every_kind_is_pinned() {
    let mut encoder = Encoder::default();
    let mut bytes = Vec::new();
    let events = every_kind_named();
    crate::event::with_layout_before_version_5(|| {
        for e in &events {
            encoder.event(e, &mut bytes).expect("encode");
        }
    });
    assert_eq!(decode_all(4, &bytes), events);
    assert_eq!(
        (bytes.len(), crc32fast::hash(&bytes)),
        (1872, 563_282_956),
        "the version 4 encoding changed"
    );
}

/// Every kind as version 5 writes it: `stats` samples with the memcg's counters, and
/// `counters` events.
fn every_kind_with_counters() -> Vec<Event> {
    let mut events = every_kind_named();
    let mut counters = CounterValues::default();
    counters.set(Counter::Failcnt, 12);
    counters.set(Counter::OomKill, 1);
    counters.set(Counter::DirtyBytes, 8192);
    if let What::Stats(sample) = &mut events[4].what {
        sample.counters = counters;
    }
    events.push(event(
        20,
        Some(5),
        Some("/a"),
        What::Counters(CounterChanges {
            interval_ns: 1_000_000_000,
            source: CounterSource::Sampled,
            changed: vec![
                (Counter::OomKill, Change { value: 1, delta: 1 }),
                (
                    Counter::DirtyBytes,
                    Change {
                        value: 8192,
                        delta: -4096,
                    },
                ),
            ],
        }),
    ));
    events
}

/// Version 5 stores a sample's counters after its memory, and `counters` events: pinned like
/// the versions before.
#[test]
fn the_version_5_encoding_of_every_kind_is_pinned() {
    let mut encoder = Encoder::default();
    let mut bytes = Vec::new();
    let mut events = every_kind_with_counters();
    // And refaults at the end of a `cache` event and of each of its file rows.
    for e in &mut events {
        if let What::Cache(c) = &mut e.what {
            c.refault_bytes = Some(48 << 20);
            for f in &mut c.top_files {
                f.refault_bytes = Some(16 << 20);
            }
        }
    }
    for e in &events {
        encoder.event(e, &mut bytes).expect("encode");
    }
    assert_eq!(decode_all(5, &bytes), events);
    assert_eq!(
        (bytes.len(), crc32fast::hash(&bytes)),
        (1920, 1_448_662_045),
        "the version 5 encoding changed"
    );
}
