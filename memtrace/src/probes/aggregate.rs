//! Draining the kernel's double-buffered aggregation maps.
//!
//! The programs count into the half `AGG_ACTIVE[0]` names. To drain, userspace points them at
//! the other half, waits for programs already running on the old half to finish, then reads
//! and empties it: no increment is lost between the read and the delete.
//!
//! The slab, charge and per-memcg page-cache aggregates each have a small preallocated spill
//! map per half, where the programs count a key they could not insert into the aggregate
//! (`memtrace_common::aggregate::SLAB_SPILL_ENTRIES` says why inserts fail); a drain adds it to
//! the aggregate's counts and empties it.
//!
//! Deleting keys is the costly part of emptying a map (the kernel frees each key's per-CPU
//! values), and nothing in an interval's output waits for it: a drain only chooses the keys to
//! delete, and [`Aggregates::delete_idle`] deletes them once the interval's events are made
//! (`pipeline`), before the next drain points the programs at that half again.

use std::{collections::HashMap, time::Duration};

use std::os::fd::AsFd as _;

use aya::maps::{Array, IterableMap as _, MapData, PerCpuHashMap, PerCpuValues, RingBuf};
use memtrace_common::{
    CacheDelta, CacheName, ChargeDelta, FileKey, FilePath, InodeId, SlabDelta, SlabKey,
    aggregate::SLAB_KMALLOC_MAX_KEY,
};

use super::{
    ProbeError,
    map_batch::{self, Read},
};

/// Programs run to completion in microseconds; this is far longer.
const SWITCH_GRACE: Duration = Duration::from_millis(2);

/// Page-cache deltas of one interval.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CacheDrain {
    /// Per memcg id, its files' counts included.
    pub by_memcg: HashMap<u64, CacheDelta>,
    /// (memcg id, the file's inode id and state when the kernel could read it, delta).
    pub by_file: Vec<(u64, Option<InodeId>, CacheDelta)>,
    /// Each file key counted (its `address_space` pointer, the `INODE_IDS` key) with the file
    /// `INODE_IDS` names under it: the kernel frees and reuses `address_space`s, so a key that
    /// names another file than at an earlier drain says the earlier file's inode is gone.
    pub file_keys: Vec<(u64, InodeId)>,
    /// The `INODE_IDS` entries [`Aggregates::forget_files`] was asked to delete before this
    /// drain: (key, the file it had to name).
    pub unkeyed: Vec<(u64, InodeId)>,
    /// The paths of files the kernel named for the first time.
    pub paths: Vec<FilePath>,
    /// The attached strategy counts refaults (`refault_pages`); without, they are unknown.
    pub refaults: bool,
}

/// A slab cache as users know it: `dentry`, `shmem_inode_cache`, `kmalloc-cg-512`.
pub type SlabCache = String;

/// Everything the kernel aggregated during one interval.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drain {
    pub cache: CacheDrain,
    /// Pages charged per memcg id.
    pub charge: HashMap<u64, ChargeDelta>,
    /// (memcg id, cache, delta).
    pub slab: Vec<(u64, SlabCache, SlabDelta)>,
}

pub struct Aggregates {
    pub(super) active: Array<MapData, u32>,
    pub(super) half: u32,
    pub(super) cache_memcg: [PerCpuHashMap<MapData, u64, CacheDelta>; 2],
    pub(super) cache_memcg_spill: [PerCpuHashMap<MapData, u64, CacheDelta>; 2],
    pub(super) cache_file: [PerCpuHashMap<MapData, FileKey, CacheDelta>; 2],
    pub(super) cache_slots: super::cache_slots::CacheSlots,
    pub(super) inode_ids: aya::maps::HashMap<MapData, u64, InodeId>,
    pub(super) file_paths: RingBuf<MapData>,
    pub(super) memcg_ids: aya::maps::HashMap<MapData, u64, u64>,
    pub(super) charge: [PerCpuHashMap<MapData, u64, ChargeDelta>; 2],
    pub(super) charge_spill: [PerCpuHashMap<MapData, u64, ChargeDelta>; 2],
    pub(super) slab: [PerCpuHashMap<MapData, SlabKey, SlabDelta>; 2],
    pub(super) slab_spill: [PerCpuHashMap<MapData, SlabKey, SlabDelta>; 2],
    pub(super) cache_names: aya::maps::HashMap<MapData, u64, CacheName>,
    /// The `page_cache` strategy attached counts refaults.
    pub(super) refaults: bool,
    /// What this side knows of `MEMCG_IDS`, so that neither side keeps what a node's
    /// container churn leaves behind.
    pub(super) memcg_pointers: MemcgPointers,
    /// `INODE_IDS` entries [`forget_files`](Self::forget_files) deleted, for the next drain
    /// only: a program may have counted the file under its key, without sending its path,
    /// between the switch of halves before and the delete.
    pub(super) deleted_files: HashMap<u64, InodeId>,
    /// What [`forget_files`](Self::forget_files) was asked since the last drain.
    pub(super) unkeyed: Vec<(u64, InodeId)>,
    pub(super) reader: DrainReader,
    /// The keys the last drain chose to delete from its half, not yet deleted.
    pub(super) idle: IdleKeys,
}

/// Keys of one half a drain chose to delete (idle, or of freed memcgs), per map; deleted by
/// [`Aggregates::delete_idle`].
#[derive(Default)]
pub struct IdleKeys {
    half: usize,
    cache_memcg: Vec<u64>,
    cache_file: Vec<FileKey>,
    charge: Vec<u64>,
    slab: Vec<SlabKey>,
}

impl IdleKeys {
    /// How many keys wait.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.cache_memcg.len() + self.cache_file.len() + self.charge.len() + self.slab.len()
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The id drains found under each pointer in `MEMCG_IDS`, and the drain that last did.
#[derive(Default)]
pub struct MemcgPointers {
    ids: HashMap<u64, (u64, u64)>,
    /// Drains so far.
    drains: u64,
    /// Entries deleted for being unused, for the next drain only: a program may have put one
    /// back (a memcg busy again) between the switch of halves and the delete.
    deleted: HashMap<u64, u64>,
}

/// Drains after which a `MEMCG_IDS` entry no drain used is deleted. The programs put a key's
/// id there again in each interval the key is counted in; an entry unused this long is kept
/// only by a memcg (or an `obj_cgroup` whose memcg is gone: its objects are the parent's now)
/// that stopped allocating.
const UNUSED_DRAINS: u64 = 30;

/// How many entries the kernel's and this side's tables hold after a drain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// Entries of the kernel's `MEMCG_IDS` (memcg pointer → id).
    pub kernel_memcg_ids: usize,
    /// Memcg pointers this side remembers.
    pub memcg_pointers: usize,
    /// Keys the last drain found in the spill maps: counts whose key the programs could not
    /// insert into its aggregate (counted, not lost).
    pub spilled_keys: usize,
}

impl Aggregates {
    /// Switches the programs to the other half and returns what the old half counted.
    ///
    /// # Errors
    ///
    /// When a map cannot be read or written.
    pub fn drain(&mut self) -> Result<Drain, ProbeError> {
        // The programs must not count into keys about to be deleted.
        if !self.idle.is_empty() {
            self.delete_idle()?;
        }
        let old = self.switch_halves()?;
        self.idle.half = old;
        let (files, file_keys) = self.drain_files(old)?;
        // Keyed by memcg pointers; the programs put each key's id in MEMCG_IDS (0: unknown).
        // What each pointer named, kept for [`forget_memcgs`](Self::forget_memcgs).
        // Looked up once per pointer and drain: a busy memcg has thousands of keys.
        let learned = std::cell::RefCell::new(HashMap::new());
        let deleted = std::mem::take(&mut self.memcg_pointers.deleted);
        let memcg_id = |ids: &aya::maps::HashMap<MapData, u64, u64>, memcg: u64| {
            if let Some(&id) = learned.borrow().get(&memcg) {
                return id;
            }
            let id = ids
                .get(&memcg, 0)
                .ok()
                .or_else(|| deleted.get(&memcg).copied())
                // Evicted while its key stayed: zeroed keys do not put their ids back.
                .or_else(|| self.memcg_pointers.ids.get(&memcg).map(|&(id, _)| id))
                .unwrap_or(0);
            if id != 0 {
                learned.borrow_mut().insert(memcg, id);
            }
            id
        };
        let by_file: Vec<(u64, Option<InodeId>, CacheDelta)> = files
            .into_iter()
            .map(|(memcg, id, delta)| (memcg_id(&self.memcg_ids, memcg), id, delta))
            .collect();
        // The per-memcg map holds only what had no file key: the totals add the files'.
        let mut by_memcg = HashMap::new();
        let (memcg_sums, idle) = drain_with_spill(
            [&mut self.cache_memcg[old], &mut self.cache_memcg_spill[old]],
            "CACHE_MEMCG",
            &mut self.reader,
            (Empty::Zero, |&memcg| memcg),
            sum_cache,
        )?;
        self.idle.cache_memcg = idle;
        for (memcg, delta) in memcg_sums {
            let total = by_memcg
                .entry(memcg_id(&self.memcg_ids, memcg))
                .or_insert_with(CacheDelta::default);
            *total = sum_cache(total, &delta);
        }
        for (memcg, _, delta) in &by_file {
            let total = by_memcg.entry(*memcg).or_insert_with(CacheDelta::default);
            *total = sum_cache(total, delta);
        }
        let cache = CacheDrain {
            by_memcg,
            by_file,
            file_keys,
            unkeyed: std::mem::take(&mut self.unkeyed),
            paths: take_paths(&mut self.file_paths),
            refaults: self.refaults,
        };
        let mut charge = HashMap::new();
        let (charge_sums, idle) = drain_with_spill(
            [&mut self.charge[old], &mut self.charge_spill[old]],
            "CHARGE",
            &mut self.reader,
            (Empty::Zero, |&memcg| memcg),
            sum_charges,
        )?;
        self.idle.charge = idle;
        for (memcg, delta) in charge_sums {
            let total = charge
                .entry(memcg_id(&self.memcg_ids, memcg))
                .or_insert_with(ChargeDelta::default);
            *total = sum_charges(total, &delta);
        }
        // Looked up once per cache and drain: every busy memcg counts in the same few caches.
        let mut names: HashMap<u64, SlabCache> = HashMap::new();
        let (slab_sums, idle) = drain_with_spill(
            [&mut self.slab[old], &mut self.slab_spill[old]],
            "SLAB",
            &mut self.reader,
            (Empty::Zero, |key| key.memcg),
            sum_slab,
        )?;
        self.idle.slab = idle;
        let slab = slab_sums
            .into_iter()
            .map(|(key, delta)| {
                (
                    memcg_id(&self.memcg_ids, key.memcg),
                    names
                        .entry(key.cache)
                        .or_insert_with(|| self.cache_name(key.cache))
                        .clone(),
                    delta,
                )
            })
            .collect();
        self.reader.drained();
        self.memcg_pointers
            .learn(learned.into_inner(), &mut self.memcg_ids);
        Ok(Drain {
            cache,
            charge,
            slab,
        })
    }

    /// Points the programs at the other half, waits for those still counting in the old one,
    /// and returns the old one.
    fn switch_halves(&mut self) -> Result<usize, ProbeError> {
        let old = self.half as usize;
        self.half ^= 1;
        self.reader.spilled = 0;
        self.reader.idle_deletes = IDLE_DELETES_PER_DRAIN;
        self.active
            .set(0, &self.half, 0)
            .map_err(|source| map_error("AGG_ACTIVE", source))?;
        std::thread::sleep(SWITCH_GRACE);
        Ok(old)
    }

    /// Deletes the keys the last drain chose (idle ones within its budget, those of freed
    /// memcgs) from the half it drained, which the programs do not count into until the next
    /// drain: after the interval's events are made, not before. Returns how many.
    ///
    /// # Errors
    ///
    /// When the kernel refuses a delete.
    pub fn delete_idle(&mut self) -> Result<usize, ProbeError> {
        let IdleKeys {
            half,
            cache_memcg,
            cache_file,
            charge,
            slab,
        } = std::mem::take(&mut self.idle);
        delete_keys(&self.cache_memcg[half], "CACHE_MEMCG", &cache_memcg)?;
        delete_keys(&self.cache_file[half], "CACHE_FILE", &cache_file)?;
        delete_keys(&self.charge[half], "CHARGE", &charge)?;
        delete_keys(&self.slab[half], "SLAB", &slab)?;
        Ok(cache_memcg.len() + cache_file.len() + charge.len() + slab.len())
    }

    /// Deletes the kernel's `MEMCG_IDS` entries of memcgs the kernel freed, so that neither
    /// side keeps what a node's container churn leaves behind. An entry whose pointer now
    /// names another memcg (the kernel reused the memory) is kept.
    pub fn forget_memcgs(&mut self, freed: &[u64]) {
        if freed.is_empty() {
            return;
        }
        let freed: std::collections::HashSet<u64> = freed.iter().copied().collect();
        let ids = &mut self.memcg_ids;
        let stale = &mut self.reader.stale;
        self.memcg_pointers.ids.retain(|pointer, (id, _)| {
            if !freed.contains(id) {
                return true;
            }
            // The aggregates' keys of the pointer go too, in each half, so that a count under
            // it makes a new key, which names the memcg's id again.
            match ids.get(pointer, 0) {
                Ok(now) if now == *id => {
                    // Gone already (the LRU evicted it) is fine.
                    let _ = ids.remove(pointer);
                    stale.insert(*pointer, 2);
                    false
                }
                // The pointer names another memcg now: an `obj_cgroup` reparented when its
                // memcg went offline, or memory the kernel reused.
                Ok(now) => {
                    *id = now;
                    true
                }
                Err(_) => {
                    stale.insert(*pointer, 2);
                    false
                }
            }
        });
    }

    /// Reads and empties the old half's per-file counts, its map's and its slots' (memcg
    /// pointer, the file `INODE_IDS` names under its key, delta), and each key with the file it
    /// names.
    #[expect(
        clippy::type_complexity,
        reason = "two lists, named in the doc comment"
    )]
    fn drain_files(
        &mut self,
        old: usize,
    ) -> Result<(Vec<(u64, Option<InodeId>, CacheDelta)>, Vec<(u64, InodeId)>), ProbeError> {
        let deleted_files = std::mem::take(&mut self.deleted_files);
        // Looked up once per file and drain: a file read by many memcgs has a key in each.
        let mut file_keys: HashMap<u64, Option<InodeId>> = HashMap::new();
        let (mut sums, idle) = drain(
            &mut self.cache_file[old],
            "CACHE_FILE",
            &mut self.reader,
            (Empty::Zero, |key| key.memcg),
            sum_cache,
        )?;
        self.idle.cache_file = idle;
        // The slots' counts are the same half's, not yet in its map: drained with it, and
        // their keys are files counted like the map's.
        self.cache_slots.take(old, &mut sums, sum_cache)?;
        let by_file = sums
            .into_iter()
            .map(|(key, delta)| {
                let id = *file_keys.entry(key.file).or_insert_with(|| {
                    self.inode_ids
                        .get(&key.file, 0)
                        .ok()
                        .or_else(|| deleted_files.get(&key.file).copied())
                });
                (key.memcg, id, delta)
            })
            .collect();
        let file_keys = file_keys
            .into_iter()
            .filter_map(|(key, id)| Some((key, id?)))
            .collect();
        Ok((by_file, file_keys))
    }

    /// Deletes the kernel's `INODE_IDS` entries of files whose names this side forgot, so
    /// that the programs send a file's path again when they count it again: (`INODE_IDS` key,
    /// the file it must still name; an entry that names another file now is kept).
    pub fn forget_files(&mut self, files: &[(u64, InodeId)]) {
        for (key, id) in files {
            if let Ok(now) = self.inode_ids.get(key, 0)
                && now.same_file(id)
            {
                // Gone already (the LRU evicted it) is fine.
                let _ = self.inode_ids.remove(key);
                self.deleted_files.insert(*key, now);
            }
        }
        self.unkeyed.extend_from_slice(files);
    }

    /// The tables' sizes now; counting the kernel's map costs a system call per entry, so
    /// callers ask only when someone reads the answer (debug logging).
    #[must_use]
    pub fn sizes(&self) -> MapSizes {
        MapSizes {
            kernel_memcg_ids: self.memcg_ids.keys().count(),
            memcg_pointers: self.memcg_pointers.ids.len(),
            spilled_keys: self.reader.spilled,
        }
    }

    fn cache_name(&self, cache: u64) -> SlabCache {
        if cache < SLAB_KMALLOC_MAX_KEY {
            // What /proc/slabinfo calls the accounted kmalloc caches.
            return format!("kmalloc-cg-{cache}");
        }
        match self.cache_names.get(&cache, 0) {
            Ok(name) => crate::event::c_str(&name.name),
            Err(_) => format!("cache@{cache:#x}"),
        }
    }
}

impl MemcgPointers {
    /// Takes in what a drain found, and deletes the kernel's entries no drain has used for
    /// [`UNUSED_DRAINS`].
    fn learn(&mut self, found: HashMap<u64, u64>, ids: &mut aya::maps::HashMap<MapData, u64, u64>) {
        self.drains += 1;
        let drains = self.drains;
        for (pointer, id) in found {
            self.ids.insert(pointer, (id, drains));
        }
        let deleted = &mut self.deleted;
        self.ids.retain(|pointer, &mut (id, seen)| {
            if drains - seen < UNUSED_DRAINS {
                return true;
            }
            if ids.get(pointer, 0).is_ok_and(|now| now == id) {
                let _ = ids.remove(pointer);
                deleted.insert(*pointer, id);
            }
            false
        });
    }
}

/// The paths the programs sent since the last drain.
fn take_paths(file_paths: &mut RingBuf<MapData>) -> Vec<FilePath> {
    let mut paths = Vec::new();
    while let Some(item) = file_paths.next() {
        if item.len() >= size_of::<FilePath>() {
            // SAFETY: the programs write whole `FilePath`s; the length is checked and the
            // read is unaligned.
            paths.push(unsafe { item.as_ptr().cast::<FilePath>().read_unaligned() });
        }
    }
    paths
}

fn sum_charges(a: &ChargeDelta, b: &ChargeDelta) -> ChargeDelta {
    ChargeDelta {
        pages: a.pages + b.pages,
        charges: a.charges + b.charges,
    }
}

fn sum_slab(a: &SlabDelta, b: &SlabDelta) -> SlabDelta {
    SlabDelta {
        alloc_bytes: a.alloc_bytes + b.alloc_bytes,
        alloc_objects: a.alloc_objects + b.alloc_objects,
        free_bytes: a.free_bytes + b.free_bytes,
        free_objects: a.free_objects + b.free_objects,
    }
}

fn sum_cache(a: &CacheDelta, b: &CacheDelta) -> CacheDelta {
    CacheDelta {
        added_pages: a.added_pages + b.added_pages,
        removed_pages: a.removed_pages + b.removed_pages,
        refault_pages: a.refault_pages + b.refault_pages,
    }
}

/// How [`drain`] reads the maps. `MEMTRACE_DRAIN_KEY_BY_KEY` in the environment makes it read
/// them key by key, as on kernels without batch operations.
pub struct DrainReader {
    /// Possible CPUs: the per-CPU values of a key.
    cpus: usize,
    /// This kernel has batch operations for per-CPU hash maps (5.6+); unknown until the first
    /// drain asks.
    batch: bool,
    /// Memcg pointers [`Aggregates::forget_memcgs`] forgot, and the drains left that delete
    /// their keys (one per half): counted anew, a key names its memcg's id again.
    stale: HashMap<u64, u8>,
    /// Keys the current (or last) drain found in the spill maps.
    spilled: usize,
    /// Idle keys the current drain may still delete ([`IDLE_DELETES_PER_DRAIN`]).
    idle_deletes: usize,
}

impl DrainReader {
    /// # Errors
    ///
    /// When the possible CPUs cannot be read from sysfs.
    pub fn new() -> Result<Self, ProbeError> {
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| ProbeError::Io {
            what: format!("reading {path}"),
            source,
        })?;
        Ok(Self {
            cpus: cpus.get() as usize,
            // The key-by-key path of kernels before 5.6, on any kernel: for tests of it, and
            // for A/B measurements (`cargo xtask bench node`).
            batch: std::env::var_os("MEMTRACE_DRAIN_KEY_BY_KEY").is_none(),
            stale: HashMap::new(),
            spilled: 0,
            idle_deletes: IDLE_DELETES_PER_DRAIN,
        })
    }

    /// One drain fewer for the stale pointers.
    fn drained(&mut self) {
        self.stale.retain(|_, left| {
            *left -= 1;
            *left > 0
        });
    }
}

/// How [`drain`] empties a map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    /// Every key is deleted: the spill maps, small and preallocated, keep no key they do not
    /// need.
    Delete,
    /// The keys counted in are zeroed in place, the idle ones and those of stale memcg
    /// pointers deleted. A busy memcg's keys stay, so the programs count into them the next
    /// time this half is active instead of inserting them again: an insert allocates the
    /// key's per-CPU values, and since Linux 6.8 ("bpf: Use smaller low/high marks for percpu
    /// allocation") the BPF allocator keeps one to three of them per CPU, refilled one at a
    /// time from an `irq_work`; the burst of new keys after each switch of halves failed inserts
    /// (events lost) at a node's 1 000 memcgs. The per-file map too: a file counted again
    /// costs the programs a lookup instead of an insert; they take what userspace shows of its
    /// file again at its first event on a CPU after the drain (a zero value), because the
    /// kernel frees and reuses `address_space`s as files come and go.
    Zero,
}

/// `MEMTRACE_AGGREGATE_ENTRIES=N` in memtrace's environment creates the slab, charge and
/// per-memcg page-cache aggregates with N entries (at least one) instead of their full size, so
/// that inserts fail and counts go to the spill maps: for tests of that path (the kernel's
/// allocation failures, its usual cause, cannot be caused at will). Those maps are created by
/// [`super::early_maps`], which takes this size.
pub(super) fn entries_from_env() -> Option<u32> {
    std::env::var("MEMTRACE_AGGREGATE_ENTRIES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .map(|n| n.max(1))
}

/// [`drain`] of an aggregate and of its spill map (read and emptied; the keys its programs
/// could not insert into the aggregate), added up; and the aggregate's keys to delete.
fn drain_with_spill<K, V>(
    [map, spill]: [&mut PerCpuHashMap<MapData, K, V>; 2],
    name: &str,
    reader: &mut DrainReader,
    (empty, pointer): (Empty, fn(&K) -> u64),
    add: impl Fn(&V, &V) -> V,
) -> Result<(HashMap<K, V>, Vec<K>), ProbeError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + Default + PartialEq,
{
    let (mut sums, delete) = drain(map, name, reader, (empty, pointer), &add)?;
    let (spilled, _) = drain(
        spill,
        &format!("{name}_SPILL"),
        reader,
        (Empty::Delete, pointer),
        &add,
    )?;
    reader.spilled += spilled.len();
    for (key, delta) in spilled {
        if delta != V::default() {
            let sum = sums.entry(key).or_default();
            *sum = add(sum, &delta);
        }
    }
    Ok((sums, delete))
}

/// Reads every key's per-CPU values, sums them with `add`, and empties the map as `empty`
/// says (`pointer`: a key's memcg pointer): many keys a system call ([`map_batch`]), or key by
/// key, deleting, where the kernel has no batch operations. Returns the sums and, for
/// [`Empty::Zero`] in batches, the keys to delete ([`Aggregates::delete_idle`]).
fn drain<K, V>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    name: &str,
    reader: &mut DrainReader,
    (empty, pointer): (Empty, fn(&K) -> u64),
    add: impl Fn(&V, &V) -> V,
) -> Result<(HashMap<K, V>, Vec<K>), ProbeError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + Default + PartialEq,
{
    let mut sums = HashMap::new();
    let mut delete = Vec::new();
    if reader.batch {
        let io = |source| ProbeError::Io {
            what: format!("draining {name} in batches"),
            source,
        };
        let fd = map.map().fd().as_fd();
        let sum = |per_cpu: &[V]| per_cpu.iter().fold(V::default(), |acc, d| add(&acc, d));
        let read = if empty == Empty::Delete {
            map_batch::read_per_cpu(fd, reader.cpus, Read::Delete, |key: K, per_cpu: &[V]| {
                sums.insert(key, sum(per_cpu));
            })
            .map_err(io)?
        } else {
            let (mut counted, mut stale_keys, mut idle) = (Vec::new(), Vec::new(), Vec::new());
            let stale = &reader.stale;
            let read =
                map_batch::read_per_cpu(fd, reader.cpus, Read::Keep, |key: K, per_cpu: &[V]| {
                    let sum = sum(per_cpu);
                    if stale.contains_key(&pointer(&key)) {
                        stale_keys.push(key);
                    } else if sum == V::default() {
                        idle.push(key);
                    } else {
                        counted.push(key);
                    }
                    if sum != V::default() {
                        sums.insert(key, sum);
                    }
                })
                .map_err(io)?;
            // A kernel with lookup batches has the others (all four came in 5.6).
            if read {
                map_batch::set_per_cpu(fd, reader.cpus, &counted, &V::default()).map_err(io)?;
                let keys = counted.len() + stale_keys.len() + idle.len();
                // A quarter of the idle keys at least: under a churn faster than the budget
                // they would pile up until the map is half full, and go all at once.
                let deletes = reader.idle_deletes.max(idle.len() / 4);
                if idle.len() > deletes && !half_full(map, keys) {
                    idle.truncate(deletes);
                }
                reader.idle_deletes = reader.idle_deletes.saturating_sub(idle.len());
                stale_keys.append(&mut idle);
                delete = stale_keys;
            }
            read
        };
        if read {
            return Ok((sums, delete));
        }
        reader.batch = false;
        log::debug!("no batch operations for per-CPU hash maps: drained key by key");
    }
    for entry in map.iter() {
        let (key, per_cpu): (K, PerCpuValues<V>) =
            entry.map_err(|source| map_error(name, source))?;
        let sum = per_cpu.iter().fold(V::default(), |acc, d| add(&acc, d));
        sums.insert(key, sum);
    }
    for key in sums.keys() {
        // Gone already is fine: nothing else deletes, but be tolerant.
        let _ = map.remove(key);
    }
    Ok((sums, delete))
}

/// Deletes `keys` from `map` ([`Aggregates::delete_idle`]), many a system call.
fn delete_keys<K: aya::Pod, V: aya::Pod>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &str,
    keys: &[K],
) -> Result<(), ProbeError> {
    if keys.is_empty() {
        return Ok(());
    }
    map_batch::delete(map.map().fd().as_fd(), keys)
        .map(|_| ())
        .map_err(|source| ProbeError::Io {
            what: format!("deleting idle keys of {name}"),
            source,
        })
}

/// Idle keys (zero in every CPU: counted in the interval before, not in this one) a drain
/// deletes, at most, from maps less than half full. A delete costs the kernel about 10 µs (it
/// frees the key's per-CPU values): when hundreds of containers stop at once, deleting all
/// their keys after one drain took 45 ms of CPU (`cargo xtask bench node`). An idle key left in
/// place costs a read per drain and counts as kept (its next event re-reads what userspace
/// shows of it); the next drains delete the rest, a quarter of a map's idle keys at least
/// (a churn faster than the budget does not pile them up). Keys of freed memcgs, and the idle
/// keys of a map half full, are always deleted at once.
const IDLE_DELETES_PER_DRAIN: usize = 1024;

/// Whether `keys` fill half of the map or more, when its size can be read (else: yes, so that
/// every idle key is deleted).
fn half_full<K: aya::Pod, V: aya::Pod>(map: &PerCpuHashMap<MapData, K, V>, keys: usize) -> bool {
    map.map()
        .info()
        .map_or(true, |info| keys >= info.max_entries() as usize / 2)
}

pub(super) fn map_error(name: &str, source: aya::maps::MapError) -> ProbeError {
    ProbeError::Map {
        what: name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, ops::Range};

    use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
    use memtrace_common::CacheDelta;

    use super::{
        super::bpf_sys, DrainReader, Empty, IDLE_DELETES_PER_DRAIN, delete_keys, drain,
        drain_with_spill, sum_cache,
    };

    /// `enum bpf_map_type`, and the flag of the aggregates (their spill maps have none).
    const PERCPU_HASH: u32 = 5;
    const NO_PREALLOC: u32 = 1;

    fn cpus() -> usize {
        aya::util::nr_cpus().expect("possible CPUs").get() as usize
    }

    /// What each CPU counted under `key`, in both maps.
    fn counted(key: u64, cpu: u64) -> CacheDelta {
        CacheDelta {
            added_pages: key,
            removed_pages: cpu,
            refault_pages: 1,
        }
    }

    fn filled_map(flags: u32, keys: Range<u64>) -> PerCpuHashMap<MapData, u64, CacheDelta> {
        let spec = bpf_sys::MapSpec {
            map_type: PERCPU_HASH,
            key_size: 8,
            value_size: u32::try_from(size_of::<CacheDelta>()).expect("a small value"),
            max_entries: 4096,
            map_flags: flags,
            name: "memtrace_spill".into(),
        };
        let fd = bpf_sys::create_map(&spec).expect("root can create a per-CPU hash map");
        let data = MapData::from_fd(fd).expect("a map");
        let map = aya::maps::Map::from_map_data(data).expect("a map aya knows");
        let mut map = PerCpuHashMap::try_from(map).expect("a per-CPU hash map");
        for key in keys {
            let values: Vec<CacheDelta> = (0..cpus() as u64).map(|cpu| counted(key, cpu)).collect();
            let values = PerCpuValues::try_from(values).expect("one per CPU");
            map.insert(&key, values, 0).expect("room in the map");
        }
        map
    }

    #[test]
    fn a_drain_adds_the_spill_map_to_its_aggregate_and_empties_the_spill_map() {
        let cpus = cpus();
        for batch in [true, false] {
            let mut aggregate = filled_map(NO_PREALLOC, 0..3000);
            // Keys 2 000..3 000 in both: counted in the spill map while their insert failed,
            // in the aggregate once it succeeded.
            let mut spill = filled_map(0, 2000..4000);
            let mut reader = DrainReader {
                cpus,
                batch,
                stale: HashMap::new(),
                spilled: 0,
                idle_deletes: IDLE_DELETES_PER_DRAIN,
            };
            let (sums, idle) = drain_with_spill(
                [&mut aggregate, &mut spill],
                "TEST",
                &mut reader,
                (Empty::Zero, |&memcg| memcg),
                sum_cache,
            )
            .expect("the drain");
            assert!(idle.is_empty(), "every key counted: none to delete");
            assert_eq!(sums.len(), 4000, "batch {batch}");
            for (key, sum) in &sums {
                let once = (0..cpus as u64).fold(CacheDelta::default(), |acc, cpu| {
                    sum_cache(&acc, &counted(*key, cpu))
                });
                let expected = if (2000..3000).contains(key) {
                    sum_cache(&once, &once)
                } else {
                    once
                };
                assert_eq!(*sum, expected, "key {key}, batch {batch}");
            }
            assert_eq!(reader.spilled, 2000, "batch {batch}");
            assert_eq!(
                spill.keys().count(),
                0,
                "the spill map emptied, batch {batch}"
            );
            let left: Vec<PerCpuValues<CacheDelta>> = aggregate
                .iter()
                .map(|entry| entry.expect("an entry").1)
                .collect();
            // Batches keep the aggregate's keys, zeroed; key by key deletes them.
            assert_eq!(left.len(), if batch { 3000 } else { 0 }, "batch {batch}");
            assert!(
                left.iter()
                    .all(|values| values.iter().all(|v| *v == CacheDelta::default())),
                "the aggregate's keys zeroed"
            );
        }
    }

    #[test]
    fn a_drain_deletes_at_most_its_budget_of_idle_keys_from_maps_less_than_half_full() {
        let keys = |map: &PerCpuHashMap<MapData, u64, CacheDelta>| map.keys().count();
        // A drain, then the deletes it chose (`Aggregates::delete_idle`).
        let drained = |map: &mut PerCpuHashMap<MapData, u64, CacheDelta>,
                       reader: &mut DrainReader| {
            let (sums, idle) = drain(
                map,
                "TEST",
                reader,
                (Empty::Zero, |&memcg| memcg),
                sum_cache,
            )
            .expect("the drain");
            let before = map.keys().count();
            delete_keys(map, "TEST", &idle).expect("the deletes");
            assert_eq!(map.keys().count(), before - idle.len(), "deleted after");
            sums.len()
        };
        let mut reader = DrainReader {
            cpus: cpus(),
            batch: true,
            stale: HashMap::new(),
            spilled: 0,
            idle_deletes: IDLE_DELETES_PER_DRAIN,
        };
        // 1 900 keys of 4 096: the first drain counts and zeroes them; the drains after delete
        // at most `IDLE_DELETES_PER_DRAIN` of them each, and every key of a freed memcg at once.
        let mut map = filled_map(NO_PREALLOC, 0..1900);
        assert_eq!(drained(&mut map, &mut reader), 1900, "every key counted");
        assert_eq!(keys(&map), 1900, "kept, zeroed");
        reader.stale = (0..100).map(|memcg| (memcg, 1)).collect();
        reader.idle_deletes = IDLE_DELETES_PER_DRAIN;
        assert_eq!(drained(&mut map, &mut reader), 0, "nothing counted since");
        assert_eq!(
            keys(&map),
            1900 - 100 - IDLE_DELETES_PER_DRAIN,
            "the freed memcgs' keys and a budget of idle ones deleted"
        );
        assert_eq!(reader.idle_deletes, 0, "the budget spent");
        // A second map in the same drain: no budget left, a quarter of its idle keys go.
        reader.stale.clear();
        let mut other = filled_map(NO_PREALLOC, 0..100);
        drained(&mut other, &mut reader);
        drained(&mut other, &mut reader);
        assert_eq!(keys(&other), 75, "the rest kept for later drains");
        reader.idle_deletes = IDLE_DELETES_PER_DRAIN;
        assert_eq!(drained(&mut map, &mut reader), 0);
        assert_eq!(keys(&map), 0, "the rest in the next drain");

        // 3 000 of 4 096: more than half full, every idle key goes at once.
        let mut full = filled_map(NO_PREALLOC, 0..3000);
        reader.idle_deletes = IDLE_DELETES_PER_DRAIN;
        assert_eq!(drained(&mut full, &mut reader), 3000);
        assert_eq!(drained(&mut full, &mut reader), 0);
        assert_eq!(keys(&full), 0, "a map half full keeps no idle key");
    }
}
