//! Maps and globals shared by all programs. Their names are the constants in
//! `memtrace_common::names`, which must match the symbol names below.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use memtrace_common::{
    CacheDelta, CacheName, CacheSlot, ChargeDelta, FileKey, IgnoredCallers, InodeId, LostKind,
    MemoryMap, ReclaimBegin, SlabDelta, SlabKey, SlabObject, TryChargeArgs,
    aggregate::{
        CACHE_FILE_ENTRIES, CACHE_MEMCG_ENTRIES, CACHE_MEMCG_SPILL_ENTRIES, CACHE_NAME_ENTRIES,
        CHARGE_ENTRIES, CHARGE_SPILL_ENTRIES, FILE_PATHS_BYTES, FILTER_ENTRIES, INODE_IDS_ENTRIES,
        MEMCG_IDS_ENTRIES, PENDING_ENTRIES, RECLAIM_BEGIN_ENTRIES, SLAB_ENTRIES,
        SLAB_OBJECT_ENTRIES, SLAB_SPILL_ENTRIES,
    },
};

use crate::kernel::Memcg;

/// The object's size; the loader always sets it (`--ring-buffer-size`, default
/// `DEFAULT_RING_BUFFER_BYTES` in memtrace/src/probes, 1 MiB).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LostKind::COUNT, 0);

/// Hash maps allocate entries as keys appear: preallocating 65 536 per-CPU entries would cost
/// tens of milliseconds of start-up and megabytes of kernel memory per map for keys that mostly
/// never come (kernels since 6.1 allocate safely from any program context).
const BPF_F_NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

/// A double-buffered per-CPU aggregate: two maps of one shape, `<NAME>_0` and `<NAME>_1` (the
/// programs write the one [`active_half`] names while userspace drains the other).
macro_rules! double_buffered {
    ([$zero:ident, $one:ident]: $key:ty => $value:ty, $entries:expr) => {
        #[map]
        pub static $zero: PerCpuHashMap<$key, $value> =
            PerCpuHashMap::with_max_entries($entries, BPF_F_NO_PREALLOC);
        #[map]
        pub static $one: PerCpuHashMap<$key, $value> =
            PerCpuHashMap::with_max_entries($entries, BPF_F_NO_PREALLOC);
    };
}

/// The two halves' spill maps of a double-buffered aggregate: preallocated (flags 0), so an
/// insert allocates nothing and fails only when the map is full. [`bump`] counts a key there
/// when its insert into the aggregate failed; userspace adds them up with the aggregate's.
macro_rules! spill {
    ([$zero:ident, $one:ident]: $key:ty => $value:ty, $entries:expr) => {
        #[map]
        pub static $zero: PerCpuHashMap<$key, $value> =
            PerCpuHashMap::with_max_entries($entries, 0);
        #[map]
        pub static $one: PerCpuHashMap<$key, $value> = PerCpuHashMap::with_max_entries($entries, 0);
    };
}

/// `IGNORED_CALLERS[0]`: whose allocations the slab programs skip. Userspace reads them from
/// kallsyms (tens of milliseconds) beside the rest of start-up and writes them here before the
/// slab programs attach; a map, not a global, so that loading need not wait for them. Array
/// lookups are inlined by the verifier: a few instructions more than a global.
#[map]
pub static IGNORED_CALLERS: Array<IgnoredCallers> = Array::with_max_entries(1, 0);

/// Whether an allocation or free made at `call_site` is one the slab programs skip.
#[inline(always)]
pub fn ignored_caller(call_site: u64) -> bool {
    IGNORED_CALLERS
        .get(0)
        .is_some_and(|callers| callers.contains(call_site))
}

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

double_buffered!([CACHE_MEMCG_0, CACHE_MEMCG_1]: u64 => CacheDelta, CACHE_MEMCG_ENTRIES);
spill!([CACHE_MEMCG_SPILL_0, CACHE_MEMCG_SPILL_1]: u64 => CacheDelta, CACHE_MEMCG_SPILL_ENTRIES);
double_buffered!([CACHE_FILE_0, CACHE_FILE_1]: FileKey => CacheDelta, CACHE_FILE_ENTRIES);
/// Per CPU, index: the half. The last file key counted and its count not yet in
/// `CACHE_FILE_<half>` ([`CacheSlot`]).
#[map]
pub static CACHE_SLOTS: PerCpuArray<CacheSlot> = PerCpuArray::with_max_entries(2, 0);

/// Per CPU: the (memcg, file) of the last page-cache add, for the refault stat update that
/// follows it (the `raw_tp` strategy's refaults); `memcg` 0 once taken.
#[map]
pub static LAST_ADD: PerCpuArray<FileKey> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static INODE_IDS: LruHashMap<u64, InodeId> = LruHashMap::with_max_entries(INODE_IDS_ENTRIES, 0);
/// A `FilePath` per file named for the first time, for userspace.
#[map]
pub static FILE_PATHS: RingBuf = RingBuf::with_byte_size(FILE_PATHS_BYTES, 0);
#[map]
pub static MEMCG_IDS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MEMCG_IDS_ENTRIES, 0);

/// `pid_tgid` → the reclaim episode it is in, from its begin to its end tracepoint.
#[map]
pub static RECLAIM_BEGIN: HashMap<u64, ReclaimBegin> =
    HashMap::with_max_entries(RECLAIM_BEGIN_ENTRIES, BPF_F_NO_PREALLOC);

double_buffered!([CHARGE_0, CHARGE_1]: u64 => ChargeDelta, CHARGE_ENTRIES);
spill!([CHARGE_SPILL_0, CHARGE_SPILL_1]: u64 => ChargeDelta, CHARGE_SPILL_ENTRIES);
/// `pid_tgid` → the folio being charged, from the kprobe to the kretprobe.
#[map]
pub static CHARGE_PENDING: HashMap<u64, u64> =
    HashMap::with_max_entries(PENDING_ENTRIES, BPF_F_NO_PREALLOC);
/// `pid_tgid` → `try_charge_memcg` arguments, from the kprobe to the kretprobe.
#[map]
pub static TRY_CHARGE_PENDING: HashMap<u64, TryChargeArgs> =
    HashMap::with_max_entries(PENDING_ENTRIES, BPF_F_NO_PREALLOC);

double_buffered!([SLAB_0, SLAB_1]: SlabKey => SlabDelta, SLAB_ENTRIES);
spill!([SLAB_SPILL_0, SLAB_SPILL_1]: SlabKey => SlabDelta, SLAB_SPILL_ENTRIES);
/// Object address → what its allocation was counted as.
#[map]
pub static SLAB_OBJECTS: HashMap<u64, SlabObject> =
    HashMap::with_max_entries(SLAB_OBJECT_ENTRIES, BPF_F_NO_PREALLOC);
/// What the memory-map calibration programs saw (`MemoryMapSample`s), for userspace.
#[map]
pub static MEMMAP_SAMPLES: RingBuf = RingBuf::with_byte_size(16 * 1024, 0);
/// Per CPU: the last `mm_page_alloc`'s page pointer and pfn, from the raw and the classic
/// tracepoint, whichever the kernel ran first.
#[map]
pub static MEMMAP_LAST: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);
/// The thread group whose allocations the calibration programs watch: memtrace's own.
#[unsafe(no_mangle)]
pub static MEMMAP_TGID: Global<u32> = Global::new(0);

/// `MEMORY_MAP[0]`: where the kernel maps memory, measured by userspace before the slab
/// programs attach.
#[map]
pub static MEMORY_MAP: Array<MemoryMap> = Array::with_max_entries(1, 0);
/// `struct kmem_cache *` → name, read once per cache and interval.
#[map]
pub static CACHE_NAMES: LruHashMap<u64, CacheName> =
    LruHashMap::with_max_entries(CACHE_NAME_ENTRIES, 0);

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

/// [`wanted`] for a memcg known by pointer: its id costs three reads, paid only when a filter
/// is on.
#[inline(always)]
pub fn wanted_memcg(memcg: Memcg) -> bool {
    FILTER_ENABLED.load() == 0 || memcg.id().is_ok_and(wanted)
}

/// Records a memcg pointer's id for userspace; aggregates keyed by pointer call it once per new
/// key and interval.
#[inline(always)]
pub fn remember_memcg_id(memcg: Memcg) {
    if let Ok(id) = memcg.id() {
        let _ = MEMCG_IDS.insert(&memcg.addr(), &id, 0);
    }
}

/// Whether events of `memcg_id` are wanted: hot paths skip the others before any map update.
#[inline(always)]
pub fn wanted(memcg_id: u64) -> bool {
    // SAFETY: a plain lookup; the value is not kept.
    FILTER_ENABLED.load() == 0 || unsafe { FILTER.get(&memcg_id) }.is_some()
}

/// What [`bump`] did.
#[derive(PartialEq, Eq)]
pub enum Bumped {
    Counted,
    /// The key was new (in the aggregate or its spill map): the first count of this interval.
    NewKey,
    /// Neither the aggregate nor its spill map could take the key; the caller counts it lost.
    Full,
}

/// Applies `update` to this CPU's value of `key` in `map`, creating the key when it is new; when
/// the key cannot be created there (the map is full, or the kernel could not allocate its
/// per-CPU values), in `spill`, the preallocated map userspace adds to `map`'s counts.
#[inline(always)]
pub fn bump<K, V: Default>(
    (map, spill): (&PerCpuHashMap<K, V>, &PerCpuHashMap<K, V>),
    key: &K,
    update: impl Fn(&mut V),
) -> Bumped {
    match bump_in(map, key, &update) {
        Bumped::Full => bump_in(spill, key, &update),
        bumped => bumped,
    }
}

/// [`bump`] in one map, with no spill map.
#[inline(always)]
pub fn bump_in<K, V: Default>(
    map: &PerCpuHashMap<K, V>,
    key: &K,
    update: &impl Fn(&mut V),
) -> Bumped {
    if let Some(value) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU slot of a successful lookup, ours for this program run.
        update(unsafe { &mut *value });
        return Bumped::Counted;
    }
    let mut fresh = V::default();
    update(&mut fresh);
    if map
        .insert(key, &fresh, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_ok()
    {
        return Bumped::NewKey;
    }
    // Another CPU created the key meanwhile (EEXIST): count into our slot of it.
    if let Some(value) = map.get_ptr_mut(key) {
        // SAFETY: as above.
        update(unsafe { &mut *value });
        Bumped::Counted
    } else {
        Bumped::Full
    }
}
