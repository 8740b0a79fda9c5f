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

/// A file's pages charged to a memcg.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub memcg_id: u64,
    /// `inode.i_ino`
    pub ino: u64,
    /// `super_block.s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<FileKey>() == 24);

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

// SAFETY: `#[repr(C)]`, integer fields only, size asserted above: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CacheDelta {}
// SAFETY: as above; `pad` makes the padding explicit.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileKey {}
// SAFETY: as above; `pad` makes the padding explicit.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ReclaimBegin {}
