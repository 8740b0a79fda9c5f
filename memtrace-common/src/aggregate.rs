//! Hot-path counters aggregated in the kernel, in per-CPU hash maps that userspace drains every
//! interval. Each aggregate has two maps; the programs write to the one `AGG_ACTIVE[0]` names
//! while userspace reads and clears the other, so no increment is lost to a read/delete race.

/// Page-cache pages added to and removed from a memcg (value of the per-memcg and per-file maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheDelta {
    pub added_pages: u64,
    pub removed_pages: u64,
}

const _: () = assert!(size_of::<CacheDelta>() == 16);

/// A file's pages charged to a memcg. The file is keyed by its `struct inode *`: the hot path
/// then reads no inode fields; its number and device are read once per interval, when the key
/// is new, into the `INODE_IDS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub memcg_id: u64,
    /// `address_space.host`
    pub inode: u64,
}

const _: () = assert!(size_of::<FileKey>() == 16);

/// What userspace shows of a file: `inode.i_ino` and `super_block.s_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeId {
    pub ino: u64,
    /// Kernel encoding: `major << 20 | minor`.
    pub dev: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<InodeId>() == 16);

/// A reclaim episode in progress, per task, until its end tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimBegin {
    pub timestamp_ns: u64,
    pub memcg_id: u64,
    pub gfp_flags: u64,
    pub order: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<ReclaimBegin>() == 32);

/// Entries per aggregation map; a full map counts `LostKind::PageCache`.
pub const CACHE_MEMCG_ENTRIES: u32 = 16_384;
pub const CACHE_FILE_ENTRIES: u32 = 65_536;
pub const RECLAIM_BEGIN_ENTRIES: u32 = 16_384;
/// Memcgs a filter can name: every memcg id the kernel can have.
pub const FILTER_ENTRIES: u32 = 65_536;
/// Inode pointer → inode id, refreshed whenever a file key is new (each interval), so an LRU
/// twice the size of a file map keeps what a drain needs.
pub const INODE_IDS_ENTRIES: u32 = 2 * CACHE_FILE_ENTRIES;

// SAFETY: `#[repr(C)]`, integer fields only, size asserted above: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CacheDelta {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileKey {}
// SAFETY: as above; `pad` makes the padding explicit.
#[cfg(feature = "user")]
unsafe impl aya::Pod for InodeId {}
// SAFETY: as above; `pad` makes the padding explicit.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ReclaimBegin {}
