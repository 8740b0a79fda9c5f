//! Maps and globals shared by all programs. Their names are the constants in
//! `memtrace_common::names`, which must match the symbol names below.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use memtrace_common::{
    CacheDelta, FileKey, InodeId, KernelOffsets, LostKind, ReclaimBegin,
    aggregate::{
        CACHE_FILE_ENTRIES, CACHE_MEMCG_ENTRIES, FILTER_ENTRIES, INODE_IDS_ENTRIES,
        RECLAIM_BEGIN_ENTRIES,
    },
};

/// 256 KiB: OOM kills are rare; the loader may resize it (`map_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LostKind::COUNT, 0);

/// Hash maps allocate entries as keys appear: preallocating 65 536 per-CPU entries would cost
/// tens of milliseconds of start-up and megabytes of kernel memory per map for keys that mostly
/// never come (kernels since 6.1 allocate safely from any program context).
const BPF_F_NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::ZERO);

/// Counts one event of `kind` that could not be reported. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count_lost(kind: LostKind) {
    if let Some(counter) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: the pointer comes from a successful map lookup of this CPU's slot, which stays
        // valid for the whole program run; nothing else on this CPU runs concurrently with us.
        unsafe { *counter += 1 };
    }
}

/// `AGG_ACTIVE[0]`: which of the two maps of each aggregate the programs write to.
#[map]
pub static AGG_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static CACHE_MEMCG_0: PerCpuHashMap<u64, CacheDelta> =
    PerCpuHashMap::with_max_entries(CACHE_MEMCG_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
pub static CACHE_MEMCG_1: PerCpuHashMap<u64, CacheDelta> =
    PerCpuHashMap::with_max_entries(CACHE_MEMCG_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
pub static CACHE_FILE_0: PerCpuHashMap<FileKey, CacheDelta> =
    PerCpuHashMap::with_max_entries(CACHE_FILE_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
pub static CACHE_FILE_1: PerCpuHashMap<FileKey, CacheDelta> =
    PerCpuHashMap::with_max_entries(CACHE_FILE_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static INODE_IDS: LruHashMap<u64, InodeId> = LruHashMap::with_max_entries(INODE_IDS_ENTRIES, 0);

#[map]
pub static RECLAIM_BEGIN: HashMap<u32, ReclaimBegin> =
    HashMap::with_max_entries(RECLAIM_BEGIN_ENTRIES, BPF_F_NO_PREALLOC);

/// The active half of each double-buffered aggregate.
#[inline(always)]
pub fn active_half() -> u32 {
    AGG_ACTIVE.get(0).copied().unwrap_or(0) & 1
}

/// Memcgs the user asked about (`--cgroup`, `--container`, `--pod`), kept up to date by
/// userspace; consulted only when [`FILTER_ENABLED`] is set.
#[map]
pub static FILTER: HashMap<u64, u8> = HashMap::with_max_entries(FILTER_ENTRIES, BPF_F_NO_PREALLOC);

#[unsafe(no_mangle)]
pub static FILTER_ENABLED: Global<u32> = Global::new(0);

/// Whether events of `memcg_id` are wanted: hot paths skip the others before any map update.
#[inline(always)]
pub fn wanted(memcg_id: u64) -> bool {
    // SAFETY: a plain lookup; the value is not kept.
    FILTER_ENABLED.load() == 0 || unsafe { FILTER.get(&memcg_id) }.is_some()
}
