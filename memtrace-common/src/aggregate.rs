//! Hot-path counters aggregated in the kernel, in per-CPU hash maps that userspace drains every
//! interval. Each aggregate has two maps; the programs write to the one `AGG_ACTIVE[0]` names
//! while userspace reads and clears the other, so no increment is lost to a read/delete race.

use bytemuck::{Pod, Zeroable};

/// Page-cache pages added to and removed from a memcg (value of the per-memcg and per-file maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CacheDelta {
    pub added_pages: u64,
    pub removed_pages: u64,
    /// Of `added_pages`, those that were refaults: read again soon after their eviction (the
    /// kernel's `WORKINGSET_REFAULT_FILE`). 0 where the strategy does not count them.
    pub refault_pages: u64,
}

const _: () = assert!(size_of::<CacheDelta>() == 24);

/// A file's pages charged to a memcg. Both are keyed by kernel pointers (`struct mem_cgroup *`,
/// the file's `struct address_space *`): the hot path then reads neither; the memcg's id and
/// the file's inode number and device are read once per interval, when the key is new, into
/// the `MEMCG_IDS` and `INODE_IDS` maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FileKey {
    /// `struct mem_cgroup *`
    pub memcg: u64,
    /// `folio.mapping`: the file's `address_space`, one per inode.
    pub file: u64,
}

const _: () = assert!(size_of::<FileKey>() == 16);

/// Per CPU and half (`CACHE_SLOTS[half]`): the last file key counted on this CPU and what it
/// counted since, not yet in the per-file map. A run of events of one key (a sequential read,
/// a truncate, a dropped cache) then costs a compare instead of a hash lookup each; the slot
/// goes into the map when the CPU's next event has another key, and userspace reads and
/// empties the old half's slots when it drains the maps. `key.memcg == 0`: empty. The key is
/// always in the per-file map of the same half already, so its ids were taken when it was new.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CacheSlot {
    pub key: FileKey,
    pub delta: CacheDelta,
}

const _: () = assert!(size_of::<CacheSlot>() == 40);

/// What userspace shows of a file: `inode.i_ino` and `super_block.s_dev`, and what the kernel
/// knew of it when the key was new ([`InodeId::UNLINKED`], …).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct InodeId {
    pub ino: u64,
    /// Kernel encoding: `major << 20 | minor`.
    pub dev: u32,
    pub flags: u32,
}

const _: () = assert!(size_of::<InodeId>() == 16);

impl InodeId {
    /// `inode.i_nlink == 0`: the file was deleted (its pages live while it is open or mapped).
    pub const UNLINKED: u32 = 1;
    /// The file is in tmpfs/shmem (`s_magic == TMPFS_MAGIC`): memory, not reclaimable cache.
    pub const SHMEM: u32 = 2;
    /// The kernel sent this file's [`FilePath`] (so it does not walk its dentries again).
    pub const PATH_SENT: u32 = 4;

    /// The same file, whatever the flags say.
    #[must_use]
    pub const fn same_file(&self, other: &Self) -> bool {
        self.ino == other.ino && self.dev == other.dev
    }
}

/// `TMPFS_MAGIC` (`include/uapi/linux/magic.h`): the `s_magic` of tmpfs and of the kernel's
/// internal shmem mount (System V shared memory, memfd, shared anonymous mappings).
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Ancestors a [`FilePath`] holds, and bytes per name with its NUL: names of up to 79 bytes
/// are whole, longer ones are cut (and flagged [`FilePath::NAME_CUT`]). 79, not 63: the layer
/// directories of Docker (`overlay2/<64 hex>/diff`, `<64 hex>-init`) and of containers/storage
/// (podman, CRI-O) are 64 to 69 bytes, and a cut one no longer matches its layer.
pub const FILE_PATH_DEPTH: usize = 16;
pub const FILE_PATH_NAME: usize = 80;

/// A file's names from its dentry up to its filesystem's root, read once per file when the
/// kernel first counts it (the `FILE_PATHS` ring buffer): `names[0]` is the file's own name,
/// `names[depth - 1]` the one below the root. Userspace joins them and maps the filesystem
/// (`id.dev`) to where it is mounted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FilePath {
    pub id: InodeId,
    /// Names read (at most [`FILE_PATH_DEPTH`]).
    pub depth: u32,
    /// [`FilePath::NO_DENTRY`], [`FilePath::TRUNCATED`], [`FilePath::UNHASHED`].
    pub flags: u32,
    /// [`FILE_PATH_DEPTH`] NUL-padded names of [`FILE_PATH_NAME`] bytes each.
    pub names: [u8; FILE_PATH_DEPTH * FILE_PATH_NAME],
}

const _: () = assert!(size_of::<FilePath>() == 24 + FILE_PATH_DEPTH * FILE_PATH_NAME);

impl FilePath {
    /// The inode had no dentry (a file whose dentries the kernel dropped, or that never had
    /// one: System V shared memory).
    pub const NO_DENTRY: u32 = 1;
    /// The path is deeper than [`FILE_PATH_DEPTH`]: the names nearest the root are missing.
    pub const TRUNCATED: u32 = 2;
    /// The dentry was unhashed (`d_hash.pprev == NULL`): deleted or invalidated.
    pub const UNHASHED: u32 = 4;
    /// A name filled its [`FILE_PATH_NAME`] bytes: it may be longer, and its end cut.
    pub const NAME_CUT: u32 = 8;

    /// The name at `level` (0: the file's own), without its NUL padding.
    #[must_use]
    pub fn name(&self, level: usize) -> &[u8] {
        let slot = &self.names[level * FILE_PATH_NAME..(level + 1) * FILE_PATH_NAME];
        let len = slot.iter().position(|&b| b == 0).unwrap_or(slot.len());
        &slot[..len]
    }
}

/// A reclaim episode in progress, per task, until its end tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReclaimBegin {
    pub timestamp_ns: u64,
    pub memcg_id: u64,
    pub gfp_flags: u64,
    pub order: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<ReclaimBegin>() == 32);

/// Pages charged to a memcg (value of the charge aggregate, keyed by `struct mem_cgroup *`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ChargeDelta {
    pub pages: u64,
    /// Successful charge calls (0 where the strategy derives pages from stat updates).
    pub charges: u64,
}

const _: () = assert!(size_of::<ChargeDelta>() == 16);

/// `try_charge_memcg()`'s arguments, kept per task from its kprobe to its kretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TryChargeArgs {
    pub memcg: u64,
    pub gfp_flags: u64,
    pub nr_pages: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<TryChargeArgs>() == 24);

/// Memcg-accounted slab objects of one cache charged to one memcg.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SlabKey {
    /// `struct mem_cgroup *` (the `tracked` strategy) or the object's `struct obj_cgroup *`
    /// (`raw_tp`, which reads no further on the hot path): either way its memcg's id is in
    /// `MEMCG_IDS` under this pointer.
    pub memcg: u64,
    /// The `struct kmem_cache *`, or, for `kmalloc()` (whose tracepoint does not name the
    /// cache), the allocation's size class in bytes: always below [`SLAB_KMALLOC_MAX_KEY`].
    pub cache: u64,
}

const _: () = assert!(size_of::<SlabKey>() == 16);

/// Kernel code whose allocations slab accounting ignores, as `[start, end)` address ranges:
/// the BPF memory allocator, which refills memtrace's own map elements from an `irq_work`
/// (charged to the map's memcg, not to the interrupted task) and would otherwise count, and
/// track, the elements that track it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IgnoredCallers {
    pub ranges: [[u64; 2]; 8],
}

const _: () = assert!(size_of::<IgnoredCallers>() == 128);

impl IgnoredCallers {
    #[must_use]
    pub fn contains(&self, address: u64) -> bool {
        let mut i = 0;
        while i < self.ranges.len() {
            if self.ranges[i][0] <= address && address < self.ranges[i][1] {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Cache keys below this are `kmalloc()` size classes, not kernel pointers.
pub const SLAB_KMALLOC_MAX_KEY: u64 = 1 << 32;

/// Bytes and objects allocated and freed (value of the slab aggregate).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlabDelta {
    pub alloc_bytes: u64,
    pub alloc_objects: u64,
    pub free_bytes: u64,
    pub free_objects: u64,
}

const _: () = assert!(size_of::<SlabDelta>() == 32);

/// A live accounted object, from its allocation to its free: what its free is attributed to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlabObject {
    pub key: SlabKey,
    pub bytes: u64,
}

const _: () = assert!(size_of::<SlabObject>() == 24);

/// Where the kernel maps memory, which KASLR moves at boot: `vmemmap_base` (the `struct page`
/// array) and `page_offset_base` (the direct map). With them the slab programs find an object's
/// `struct slab` (`virt_to_slab()`) and from it the memcg the kernel charged the object to.
/// Measured at start-up ([`MemoryMapSample`]), as kallsyms lists no data symbols on most kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MemoryMap {
    pub vmemmap_base: u64,
    pub page_offset_base: u64,
}

const _: () = assert!(size_of::<MemoryMap>() == 16);

/// One observation of the calibration programs, which watch memtrace's own thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MemoryMapSample {
    /// [`MemoryMapSample::PAGE_PFN`] or [`MemoryMapSample::PAGE_ADDRESS`].
    pub kind: u64,
    /// A `struct page *` from the raw `mm_page_alloc` tracepoint.
    pub page: u64,
    /// `PAGE_PFN`: the pfn the classic `mm_page_alloc` tracepoint recorded; `PAGE_ADDRESS`:
    /// the address `kmalloc()` returned for a large (page-backed) allocation.
    pub value: u64,
}

impl MemoryMapSample {
    pub const PAGE_PFN: u64 = 1;
    pub const PAGE_ADDRESS: u64 = 2;
}

const _: () = assert!(size_of::<MemoryMapSample>() == 24);

/// A slab cache's name (`kmem_cache.name`), NUL-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CacheName {
    pub name: [u8; 32],
}

const _: () = assert!(size_of::<CacheName>() == 32);

/// Entries per aggregation map; a full map counts `LostKind::PageCache`.
pub const CACHE_MEMCG_ENTRIES: u32 = 16_384;
pub const CACHE_FILE_ENTRIES: u32 = 65_536;
pub const RECLAIM_BEGIN_ENTRIES: u32 = 16_384;
pub const CHARGE_ENTRIES: u32 = 16_384;
/// Tasks between a kprobe and its kretprobe at once.
pub const PENDING_ENTRIES: u32 = 16_384;
pub const SLAB_ENTRIES: u32 = 65_536;
/// Entries of each preallocated spill map, where the programs count a key whose insert into its
/// aggregate failed: the aggregates allocate their per-CPU values as keys appear, and the
/// kernel's BPF allocator keeps only one to three of them spare per CPU (since 6.8), refilled
/// from an `irq_work` that cannot always get per-CPU memory without sleeping. Hundreds of memcgs
/// turning busy at once (a node starting its pods) failed hundreds of inserts. Preallocated, a
/// spill map cannot fail an insert until it is full; its size is what its creation costs at
/// start-up (per entry a per-CPU allocation: 1 024 entries about 3 ms, 16 384 about 70 ms).
pub const SLAB_SPILL_ENTRIES: u32 = 1024;
pub const CHARGE_SPILL_ENTRIES: u32 = 256;
pub const CACHE_MEMCG_SPILL_ENTRIES: u32 = 256;
/// Live accounted objects tracked for attributing their frees: 100 000 files in tmpfs are about
/// 300 000 objects. Entries are allocated as used; the kernel allocates the buckets (16 bytes
/// each) up front.
pub const SLAB_OBJECT_ENTRIES: u32 = 1 << 19;
pub const CACHE_NAME_ENTRIES: u32 = 4096;
/// Memcgs a filter can name: every memcg id the kernel can have.
pub const FILTER_ENTRIES: u32 = 65_536;
/// File (`address_space`) pointer → inode id, refreshed whenever a file key is new (each interval), so an LRU
/// twice the size of a file map keeps what a drain needs.
pub const INODE_IDS_ENTRIES: u32 = 2 * CACHE_FILE_ENTRIES;
/// The `FILE_PATHS` ring buffer: a [`FilePath`] per file the kernel has not named before (1 600
/// new files between two drains before it is full; a file whose path was lost is sent again
/// the next interval it is counted in).
pub const FILE_PATHS_BYTES: u32 = 2 * 1024 * 1024;
/// Memcg pointer → memcg id, refreshed likewise.
pub const MEMCG_IDS_ENTRIES: u32 = 2 * CACHE_MEMCG_ENTRIES;

crate::aya_pod!(
    CacheDelta,
    FileKey,
    CacheSlot,
    InodeId,
    FilePath,
    ReclaimBegin,
    ChargeDelta,
    SlabKey,
    SlabDelta,
    CacheName,
    MemoryMap,
    IgnoredCallers,
);
