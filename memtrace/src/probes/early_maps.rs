//! The maps whose creation costs most, created on threads of their own from the start of
//! start-up, beside BTF and the object's load, and put in place of the one-entry maps aya
//! creates for them before any program is loaded.
//!
//! The kernel does the work of creating a map in the thread that asks: `INODE_IDS` (an LRU
//! hash, which the kernel preallocates: 131 072 entries) took 4 ms here, the 65 536-bucket
//! per-CPU hashes and the preallocated spill maps (a per-CPU allocation per entry) 0.6–0.9 ms
//! each, 12 ms in all, one after the other in aya's load on the main thread, three times that
//! with a busy loop on every CPU. Created here, they are made while the main thread reads BTF
//! and aya parses the object, by a few threads taking them from one queue, the largest first.
//! The main thread then shares the CPUs with them while it reads BTF (that phase took longer,
//! object load less: 8.5–29 ms instead of 30–39 with a busy loop per CPU).
//!
//! Putting a map in place is what [`super::deferred_maps`] does to grow one: `dup3` of the
//! full-size map onto the descriptor aya wrote into the programs' instructions, before any
//! program is loaded, after checking that the kernel made both of the same type, key, value and
//! flags. The maps are exactly those of the object (a test compares every field); where a
//! map could not be created beside, it is created in place the same way, and a refusal is the
//! error aya's load would have given.
//!
//! Ring buffers are not among them: aya maps a ring buffer with the size of the map it
//! created.

use std::{
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::Duration,
};

use aya::{Ebpf, EbpfLoader, maps::Map};
use memtrace_common::{
    CacheDelta, ChargeDelta, FileKey, InodeId, ReclaimBegin, SlabDelta, SlabKey,
    aggregate::{
        CACHE_FILE_ENTRIES, CACHE_MEMCG_ENTRIES, CACHE_MEMCG_SPILL_ENTRIES, CHARGE_ENTRIES,
        CHARGE_SPILL_ENTRIES, FILTER_ENTRIES, INODE_IDS_ENTRIES, MEMCG_IDS_ENTRIES,
        RECLAIM_BEGIN_ENTRIES, SLAB_ENTRIES, SLAB_SPILL_ENTRIES,
    },
    names::{
        CACHE_FILE_MAPS, CACHE_MEMCG_MAPS, CACHE_MEMCG_SPILL_MAPS, CHARGE_MAPS, CHARGE_SPILL_MAPS,
        FILTER_MAP, INODE_IDS_MAP, MEMCG_IDS_MAP, RECLAIM_BEGIN_MAP, SLAB_MAPS, SLAB_SPILL_MAPS,
    },
};

use super::{
    ProbeError,
    bpf_sys::{self, MapSpec},
};
use crate::startup::{self, timed};

/// `enum bpf_map_type`.
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_F_NO_PREALLOC`: buckets only; entries are allocated as keys appear.
const NO_PREALLOC: u32 = 1;

/// The early maps of a start-up, in the order they are created (the costliest first), with the
/// sizes the loader would give them.
///
/// `aggregate_entries` is `MEMTRACE_AGGREGATE_ENTRIES` ([`super::aggregate::entries_from_env`]);
/// `filter`: whether the kernel filter is on (its map is one entry otherwise).
pub fn specs(aggregate_entries: Option<u32>, filter: bool) -> Vec<MapSpec> {
    let aggregate = |entries: u32| aggregate_entries.map_or(entries, |n| n.max(1));
    let spec =
        |name: &str, map_type, (key_size, value_size): (usize, usize), max_entries, flags| {
            MapSpec {
                map_type,
                key_size: u32::try_from(key_size).unwrap_or(u32::MAX),
                value_size: u32::try_from(value_size).unwrap_or(u32::MAX),
                max_entries,
                map_flags: flags,
                name: name.to_owned(),
            }
        };
    let pair = |names: [&str; 2], map_type, sizes, entries, flags| {
        names.map(|name| spec(name, map_type, sizes, entries, flags))
    };
    let u64_to = |value: usize| (size_of::<u64>(), value);
    let mut specs = vec![
        spec(
            INODE_IDS_MAP,
            BPF_MAP_TYPE_LRU_HASH,
            u64_to(size_of::<InodeId>()),
            INODE_IDS_ENTRIES,
            0,
        ),
        spec(
            MEMCG_IDS_MAP,
            BPF_MAP_TYPE_LRU_HASH,
            u64_to(size_of::<u64>()),
            MEMCG_IDS_ENTRIES,
            0,
        ),
    ];
    let percpu = BPF_MAP_TYPE_PERCPU_HASH;
    let slab = (size_of::<SlabKey>(), size_of::<SlabDelta>());
    let file = (size_of::<FileKey>(), size_of::<CacheDelta>());
    let cache = u64_to(size_of::<CacheDelta>());
    let charge = u64_to(size_of::<ChargeDelta>());
    for group in [
        pair(
            SLAB_MAPS,
            percpu,
            slab,
            aggregate(SLAB_ENTRIES),
            NO_PREALLOC,
        ),
        pair(
            CACHE_FILE_MAPS,
            percpu,
            file,
            CACHE_FILE_ENTRIES,
            NO_PREALLOC,
        ),
        pair(SLAB_SPILL_MAPS, percpu, slab, SLAB_SPILL_ENTRIES, 0),
        pair(
            CHARGE_MAPS,
            percpu,
            charge,
            aggregate(CHARGE_ENTRIES),
            NO_PREALLOC,
        ),
        pair(
            CACHE_MEMCG_MAPS,
            percpu,
            cache,
            aggregate(CACHE_MEMCG_ENTRIES),
            NO_PREALLOC,
        ),
        pair(CHARGE_SPILL_MAPS, percpu, charge, CHARGE_SPILL_ENTRIES, 0),
        pair(
            CACHE_MEMCG_SPILL_MAPS,
            percpu,
            cache,
            CACHE_MEMCG_SPILL_ENTRIES,
            0,
        ),
    ] {
        specs.extend(group);
    }
    specs.push(spec(
        RECLAIM_BEGIN_MAP,
        BPF_MAP_TYPE_HASH,
        u64_to(size_of::<ReclaimBegin>()),
        RECLAIM_BEGIN_ENTRIES,
        NO_PREALLOC,
    ));
    if filter {
        specs.push(spec(
            FILTER_MAP,
            BPF_MAP_TYPE_HASH,
            u64_to(size_of::<u8>()),
            FILTER_ENTRIES,
            NO_PREALLOC,
        ));
    }
    specs
}

/// One map's creation: its spec, and what the kernel said and when.
type Made = (MapSpec, std::io::Result<OwnedFd>);

/// The maps being created beside the rest of start-up.
pub struct EarlyMaps {
    threads: Vec<JoinHandle<(Vec<Made>, Duration)>>,
    names: Vec<String>,
}

impl EarlyMaps {
    /// Starts creating `specs` on threads of their own, each taking the next from one queue.
    pub fn start(specs: Vec<MapSpec>, threads: usize) -> Self {
        let names = specs.iter().map(|s| s.name.clone()).collect();
        let queue = Arc::new(Mutex::new(specs.into_iter()));
        let threads = (0..threads.max(1))
            .map(|_| {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    let mut made = Vec::new();
                    let ((), took) = timed(|| {
                        while let Some(spec) = queue.lock().ok().and_then(|mut q| q.next()) {
                            let fd = bpf_sys::create_map(&spec);
                            made.push((spec, fd));
                        }
                    });
                    (made, took)
                })
            })
            .collect();
        Self { threads, names }
    }

    /// Has the loader create every early map with one entry: the real one takes its place.
    pub fn shrink<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for name in &self.names {
            loader.map_max_entries(name, 1);
        }
    }

    /// Waits for the maps and puts each in place of the object's one-entry map. Call it after
    /// the object's load and before any of its programs is loaded.
    ///
    /// # Errors
    ///
    /// When the kernel refuses a map (as aya's load would have failed).
    pub fn install(self, ebpf: &Ebpf) -> Result<(), ProbeError> {
        let mut waited = Duration::ZERO;
        let mut slowest = Duration::ZERO;
        let mut made = Vec::new();
        for thread in self.threads {
            let (joined, took) = timed(|| thread.join());
            waited += took;
            let (maps, busy) = joined.map_err(|_| ProbeError::Missing("early map thread"))?;
            slowest = slowest.max(busy);
            made.extend(maps);
        }
        startup::beside("early maps", slowest);
        startup::within("early maps wait", waited, "object load (maps)");
        for (spec, fd) in made {
            install(ebpf, &spec, fd)?;
        }
        Ok(())
    }
}

/// Puts the map made for `spec` in place of the object's map of that name, or, where it could
/// not be made or does not match, makes it again from the object's own.
fn install(ebpf: &Ebpf, spec: &MapSpec, made: std::io::Result<OwnedFd>) -> Result<(), ProbeError> {
    let failed = |reason: String| ProbeError::Program {
        what: format!("creating map {}", spec.name),
        reason,
    };
    let Some(Map::HashMap(small) | Map::PerCpuHashMap(small) | Map::LruHashMap(small)) =
        ebpf.map(&spec.name)
    else {
        return Err(ProbeError::Missing("an early map"));
    };
    let info = small
        .info()
        .map_err(|e| failed(format!("reading the small one: {e}")))?;
    let map_type = info
        .map_type()
        .map_err(|e| failed(format!("reading the small one's type: {e}")))?;
    let object = MapSpec {
        map_type: map_type as u32,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: spec.max_entries,
        map_flags: info.map_flags(),
        name: spec.name.clone(),
    };
    let full = match made {
        Ok(fd) if object == *spec => fd,
        made => {
            log::debug!(
                "early map {}: {:?}; made again as {object:?}",
                spec.name,
                made.map(|_| format!("made as {spec:?}"))
            );
            bpf_sys::create_map(&object).map_err(|e| failed(e.to_string()))?
        }
    };
    // No program of the object was loaded before (`install`).
    super::deferred_maps::put_in_place(small, &full)
        .map_err(|e| failed(format!("putting it in place: {e}")))
}

#[cfg(test)]
mod tests {
    use aya::programs::RawTracePoint;
    use aya_obj::Object;
    use memtrace_common::names::{PROG_FILEMAP_ADD_REFAULT, PROG_SLAB_KFREE};

    use super::*;
    use crate::probes::EBPF_OBJECT;

    /// Every early map is the object's, as the loader would create it: type, key, value,
    /// flags, and the size the loader gives it.
    #[test]
    fn each_early_map_is_the_objects() {
        let object = Object::parse(EBPF_OBJECT).expect("memtrace's object parses");
        for filter in [false, true] {
            for spec in specs(None, filter) {
                let map = object
                    .maps
                    .get(&spec.name)
                    .unwrap_or_else(|| panic!("the object has no {}", spec.name));
                let wanted = MapSpec {
                    map_type: map.map_type(),
                    key_size: map.key_size(),
                    value_size: map.value_size(),
                    max_entries: map.max_entries(),
                    map_flags: map.map_flags(),
                    name: spec.name.clone(),
                };
                assert_eq!(spec, wanted, "{}", spec.name);
            }
        }
        let resized = specs(Some(100), false);
        let sized = |name: &str| {
            resized
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.max_entries)
        };
        assert_eq!(sized(SLAB_MAPS[1]), Some(100), "MEMTRACE_AGGREGATE_ENTRIES");
        assert_eq!(
            sized(INODE_IDS_MAP),
            Some(INODE_IDS_ENTRIES),
            "not an aggregate"
        );
        assert_eq!(sized(FILTER_MAP), None, "no filter: one entry, made by aya");
    }

    /// The object loads with the early maps in place, and the programs that use them load.
    #[test]
    fn early_maps_take_the_place_of_the_small_ones() {
        crate::probes::privileges::raise_memlock();
        let early = EarlyMaps::start(specs(Some(64), true), 3);
        let mut loader = EbpfLoader::new();
        super::super::deferred_maps::shrink(&mut loader);
        early.shrink(&mut loader);
        let mut ebpf = loader.load(EBPF_OBJECT).expect("the object loads");
        let entries = |name: &str| {
            let info = match ebpf.map(name) {
                Some(Map::HashMap(m) | Map::PerCpuHashMap(m) | Map::LruHashMap(m)) => m.info(),
                _ => panic!("{name} is a hash map"),
            };
            info.expect("info").max_entries()
        };
        assert_eq!(entries(INODE_IDS_MAP), 1, "aya's own, before");
        early.install(&ebpf).expect("in place");
        assert_eq!(entries(INODE_IDS_MAP), INODE_IDS_ENTRIES);
        assert_eq!(entries(SLAB_SPILL_MAPS[0]), SLAB_SPILL_ENTRIES);
        assert_eq!(entries(CHARGE_MAPS[1]), 64);
        assert_eq!(entries(FILTER_MAP), FILTER_ENTRIES);
        for name in [PROG_SLAB_KFREE, PROG_FILEMAP_ADD_REFAULT] {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .expect("in the object")
                .try_into()
                .expect("a raw tracepoint program");
            program
                .load()
                .unwrap_or_else(|e| panic!("{name} loads with the early maps: {e:?}"));
        }
    }
}
