//! Reading version 2 files: written by memtrace before the one event model, they store a
//! kernel record's ABI bytes beside the context userspace added, and samples in pages. Each
//! record becomes the [`Event`] today's pipeline would have made of it. Frozen: nothing writes
//! version 2 any more, so nothing here changes with the model.
//!
//! ```text
//! KERNEL (2) := cgroup_ref varint | limit_ref varint
//!               | postcard(context without cgroup and containers) | kernel record (ABI, rest)
//! STATS  (3) := cgroup_ref varint | postcard((timestamp_ns, MemoryStats))
//! CACHE  (4) := cgroup_ref varint | timestamp_ns, interval_ns, memcg_id, added_pages,
//!               removed_pages, files | per file: major, minor, ino, added_pages,
//!               removed_pages (each a varint)
//! CHARGE (5) := cgroup_ref varint | timestamp_ns, interval_ns, memcg_id, pages, charges,
//!               source (0 charge, 1 stat_updates, 2 page_cache), each a varint
//! SLAB   (6) := cgroup_ref varint | postcard((timestamp_ns, interval_ns, memcg_id, caches))
//! ```

use bytemuck::{Pod, Zeroable};
use memtrace_common::{
    ChargeFailRecord, EventHeader,
    event::{DecodeError, EventKind, Record},
};
use serde::Deserialize;

use super::records::{Decoder, get_varint};
use crate::{
    attribution::MemoryStats,
    event::{
        ChargeFailFromReclaim, ChargeSource, Charges, ChargesFromPageCache, Context, Device, Event,
        FileCache, Memcg, MemorySource, OomConstraint, OomContext, PageCache, Slab, SlabCache,
        What,
    },
};

const TAG_KERNEL: u8 = 2;
const TAG_STATS: u8 = 3;
const TAG_CACHE: u8 = 4;
const TAG_CHARGE: u8 = 5;
const TAG_SLAB: u8 = 6;

/// The part of a kernel record's context that is not in the table, as version 2 stored it.
#[derive(Deserialize)]
struct KernelContext {
    memcg_limit_bytes: Option<u64>,
    memcg_usage_bytes: Option<u64>,
    removed_ns: Option<u64>,
    oom: Option<OomRest>,
    charge_failures: Option<u64>,
}

#[derive(Deserialize)]
struct OomRest {
    constraint: Option<String>,
    memory: Option<MemoryStatsV2>,
    memory_source: Option<String>,
    task: Option<String>,
}

/// `MemoryStats` as version 2 stored it: its eleven byte counts in declaration order, plain.
type MemoryStatsV2 = [Option<u64>; 11];

fn stats(v: MemoryStatsV2) -> MemoryStats {
    MemoryStats {
        usage_bytes: v[0],
        limit_bytes: v[1],
        working_set_bytes: v[2],
        anon_bytes: v[3],
        file_bytes: v[4],
        active_file_bytes: v[5],
        inactive_file_bytes: v[6],
        shmem_bytes: v[7],
        kernel_bytes: v[8],
        slab_reclaimable_bytes: v[9],
        slab_unreclaimable_bytes: v[10],
    }
}

/// Version 2's charge failure record: it also carried userspace's derived failures
/// (`strategy` 1), with what their reclaim freed.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ChargeFailRecordV2 {
    kind: u32,
    cpu: u32,
    timestamp_ns: u64,
    memcg_id: u64,
    gfp_flags: u64,
    nr_pages: u32,
    ret: i32,
    pid: u32,
    tgid: u32,
    strategy: u32,
    pad: u32,
    comm: [u8; 16],
    nr_reclaimed: u64,
    reclaim_ns: u64,
}

const _: () = assert!(size_of::<ChargeFailRecordV2>() == 88);

/// `strategy` of a derived failure; 2 (kprobe) and 3 (fexit, which version 2 called fentry)
/// are today's values.
const DERIVED: u32 = 1;

/// One slab cache's deltas as version 2 stored them.
#[derive(Deserialize)]
struct SlabCacheDelta {
    cache: String,
    alloc_bytes: u64,
    alloc_objects: u64,
    free_bytes: u64,
    free_objects: u64,
}

/// The event a version 2 record stands for.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per version 2 record type, side by side, frozen"
)]
pub fn event(decoder: &Decoder, tag: u8, body: &[u8], page_size: u64) -> Result<Event, String> {
    let bytes = |pages: u64| pages.saturating_mul(page_size);
    let mut pos = 0;
    let cgroup_ref = get_varint(body, &mut pos).ok_or("cut event record")?;
    let (cgroup, container) = decoder.entry(cgroup_ref)?;
    let memcg = |id| Memcg {
        id,
        cgroup: cgroup.clone(),
        container: container.clone(),
    };
    match tag {
        TAG_KERNEL => {
            let limit_ref = get_varint(body, &mut pos).ok_or("cut event record")?;
            let (rest, record): (KernelContext, &[u8]) = postcard::take_from_bytes(&body[pos..])
                .map_err(|e| format!("event context is not valid: {e}"))?;
            let oom = match rest.oom {
                None if limit_ref == 0 => None,
                None => return Err("limit cgroup without OOM context".into()),
                Some(oom) => {
                    let (limit_cgroup, limit_container) = decoder.entry(limit_ref)?;
                    Some(OomContext {
                        constraint: oom.constraint.as_deref().map(OomConstraint::from_name),
                        limit_cgroup,
                        limit_container,
                        memory: oom.memory.map(stats),
                        memory_source: oom.memory_source.as_deref().and_then(memory_source),
                        task: oom.task,
                    })
                }
            };
            let context = Context {
                cgroup: cgroup.clone(),
                container: container.clone(),
                memcg_limit_bytes: rest.memcg_limit_bytes,
                memcg_usage_bytes: rest.memcg_usage_bytes,
                oom,
                removed_ns: rest.removed_ns,
                charge_failures: rest.charge_failures,
            };
            kernel(record, context, page_size)
        }
        TAG_STATS => {
            let ((timestamp_ns, memory), rest): ((u64, MemoryStatsV2), _) =
                postcard::take_from_bytes(&body[pos..])
                    .map_err(|e| format!("stats sample is not valid: {e}"))?;
            if !rest.is_empty() {
                return Err("stats sample has trailing bytes".into());
            }
            if cgroup.is_none() {
                return Err("stats sample without a cgroup".into());
            }
            Ok(Event {
                timestamp_ns,
                memcg: memcg(None),
                what: What::Stats(stats(memory).into()),
            })
        }
        TAG_CACHE => {
            let mut next = || get_varint(body, &mut pos).ok_or("cut cache sample");
            let (timestamp_ns, interval_ns, memcg_id, added_pages, removed_pages) =
                (next()?, next()?, next()?, next()?, next()?);
            let files = next()?;
            // Each file takes at least 5 bytes: a count beyond that is damage, and must not
            // size an allocation.
            if files > (body.len() / 5) as u64 {
                return Err("cache sample's file count runs past its record".into());
            }
            let mut cache = PageCache::new(interval_ns, bytes(added_pages), bytes(removed_pages));
            for _ in 0..files {
                let (major, minor, ino, added_pages, removed_pages) =
                    (next()?, next()?, next()?, next()?, next()?);
                let (Ok(major), Ok(minor)) = (u32::try_from(major), u32::try_from(minor)) else {
                    return Err("bad device number in cache sample".into());
                };
                if major >= 1 << 12 || minor >= 1 << 20 {
                    return Err("bad device number in cache sample".into());
                }
                cache.top_files.push(FileCache::new(
                    Device { major, minor },
                    ino,
                    bytes(added_pages),
                    bytes(removed_pages),
                ));
            }
            if pos != body.len() {
                return Err("cache sample has trailing bytes".into());
            }
            Ok(Event {
                timestamp_ns,
                memcg: memcg(Some(memcg_id)),
                what: What::Cache(cache),
            })
        }
        TAG_CHARGE => {
            let mut next = || get_varint(body, &mut pos).ok_or("cut charge sample");
            let (timestamp_ns, interval_ns, memcg_id, pages, charges, source) =
                (next()?, next()?, next()?, next()?, next()?, next()?);
            if pos != body.len() {
                return Err("charge sample is not valid".into());
            }
            let charged_bytes = bytes(pages);
            let what = match source {
                0 => What::Charge(Charges {
                    interval_ns,
                    charged_bytes,
                    charges: Some(charges),
                    source: ChargeSource::Charge,
                }),
                1 => What::Charge(Charges {
                    interval_ns,
                    charged_bytes,
                    charges: None,
                    source: ChargeSource::StatUpdates,
                }),
                2 => What::ChargeFromPageCache(ChargesFromPageCache {
                    interval_ns,
                    charged_bytes,
                }),
                _ => return Err("charge sample is not valid".into()),
            };
            Ok(Event {
                timestamp_ns,
                memcg: memcg(Some(memcg_id)),
                what,
            })
        }
        TAG_SLAB => {
            let ((timestamp_ns, interval_ns, memcg_id, caches), rest): (
                (u64, u64, u64, Vec<SlabCacheDelta>),
                _,
            ) = postcard::take_from_bytes(&body[pos..])
                .map_err(|e| format!("slab sample is not valid: {e}"))?;
            if !rest.is_empty() {
                return Err("slab sample has trailing bytes".into());
            }
            let caches = caches
                .into_iter()
                .map(|c| {
                    SlabCache::new(
                        c.cache,
                        (c.alloc_bytes, c.alloc_objects),
                        (c.free_bytes, c.free_objects),
                    )
                })
                .collect();
            Ok(Event {
                timestamp_ns,
                memcg: memcg(Some(memcg_id)),
                what: What::Slab(Slab::new(interval_ns, caches)),
            })
        }
        other => Err(format!("unknown record type {other}")),
    }
}

fn memory_source(name: &str) -> Option<MemorySource> {
    match name {
        "kernel_oom_report" => Some(MemorySource::KernelOomReport),
        "cgroupfs_after_kill" => Some(MemorySource::CgroupfsAfterKill),
        _ => None,
    }
}

/// A version 2 kernel record: today's ABI but for charge failures, which were longer and also
/// carried the failures userspace derived from reclaim.
fn kernel(record: &[u8], context: Context, page_size: u64) -> Result<Event, String> {
    let kind = record
        .get(..4)
        .map(|k| u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
    if kind == Some(EventKind::ChargeFail as u32) {
        if record.len() != size_of::<ChargeFailRecordV2>() {
            return Err(format!(
                "event of kind {} has {} bytes, needs {}",
                EventKind::ChargeFail as u32,
                record.len(),
                size_of::<ChargeFailRecordV2>()
            ));
        }
        let r: ChargeFailRecordV2 = bytemuck::pod_read_unaligned(record);
        if r.strategy != DERIVED {
            // The kernel's own failure: today's record without what only userspace filled.
            let today = ChargeFailRecord {
                header: EventHeader {
                    kind: r.kind,
                    pad: 0,
                    timestamp_ns: r.timestamp_ns,
                },
                memcg_id: r.memcg_id,
                gfp_flags: r.gfp_flags,
                nr_pages: r.nr_pages,
                ret: r.ret,
                pid: r.pid,
                tgid: r.tgid,
                strategy: r.strategy,
                pad: 0,
                comm: r.comm,
            };
            return Ok(Event::from_kernel(
                &Record::ChargeFail(today),
                context,
                page_size,
            ));
        }
        return Ok(Event {
            timestamp_ns: r.timestamp_ns,
            memcg: Memcg {
                id: Some(r.memcg_id),
                cgroup: context.cgroup,
                container: context.container,
            },
            what: What::ChargeFailFromReclaim(ChargeFailFromReclaim {
                pid: r.pid,
                gfp_flags: r.gfp_flags,
                reclaimed_bytes: r.nr_reclaimed.saturating_mul(page_size),
                reclaim_ns: r.reclaim_ns,
                charge_failures: context.charge_failures,
            }),
        });
    }
    let decoded = Record::decode(record).map_err(|e| match e {
        DecodeError::Short { kind, need, got } => {
            format!("event of kind {kind} has {got} bytes, needs {need}")
        }
        DecodeError::UnknownKind(kind) => format!("unknown event kind {kind}"),
    })?;
    if decoded.bytes().len() != record.len() {
        return Err("kernel record has trailing bytes".into());
    }
    Ok(Event::from_kernel(&decoded, context, page_size))
}
