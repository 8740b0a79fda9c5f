//! Page cache, attributed to the memcg each folio is charged to (not to whoever happens to be
//! running), with the file it belongs to, aggregated per CPU in the kernel.
//!
//! ```text
//! include/trace/events/filemap.h (raw tracepoint arguments, 6.1 … 6.18):
//!     DEFINE_EVENT(mm_filemap_op_page_cache, mm_filemap_add_to_page_cache,
//!         TP_PROTO(struct folio *folio), …)     after the folio was charged and inserted
//!     DEFINE_EVENT(mm_filemap_op_page_cache, mm_filemap_delete_from_page_cache,
//!         TP_PROTO(struct folio *folio), …)     before it is uncharged
//! ```
//!
//! `folio->memcg_data` holds the `mem_cgroup *` (flag bits clear for page cache), whose first
//! member is its css. Hot path: no strings, one read and one per-CPU hash update keyed by
//! pointers; ids are read once per key and interval.

use aya_ebpf::{EbpfContext as _, macros::raw_tracepoint, programs::RawTracePointContext};
use memtrace_common::{CacheDelta, FileKey, InodeId, KernelOffsets, LostKind};

use crate::{
    kernel::{Block, folio_memcg_in, read_at},
    maps::{
        Bumped, CACHE_FILE_0, CACHE_FILE_1, CACHE_MEMCG_0, CACHE_MEMCG_1, INODE_IDS, active_half,
        bump, count_lost, offsets, remember_memcg_id, wanted_memcg,
    },
};

#[raw_tracepoint(tracepoint = "mm_filemap_add_to_page_cache")]
pub fn filemap_add(ctx: RawTracePointContext) -> i32 {
    account(&ctx, true);
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_delete_from_page_cache")]
pub fn filemap_delete(ctx: RawTracePointContext) -> i32 {
    account(&ctx, false);
    0
}

#[inline(always)]
fn account(ctx: &RawTracePointContext, added: bool) {
    let offsets = offsets();
    // SAFETY: the first raw tracepoint argument is the `struct folio *`.
    let folio = unsafe { *ctx.as_ptr().cast::<u64>() } as *const u8;
    // SAFETY: every read below goes through `bpf_probe_read_kernel`.
    let Some((memcg, pages, file)) = (unsafe { inspect(folio, offsets) }) else {
        return;
    };
    // SAFETY: `memcg` is the folio's `struct mem_cgroup *`; reads are checked.
    if !unsafe { wanted_memcg(memcg, offsets) } {
        return;
    }
    let (by_memcg, by_file) = if active_half() == 0 {
        (&CACHE_MEMCG_0, &CACHE_FILE_0)
    } else {
        (&CACHE_MEMCG_1, &CACHE_FILE_1)
    };
    let memcg_key = memcg as u64;
    // Per-memcg totals are the sums of the per-file counts; the per-memcg map counts only what
    // has no file key (no file, or the file map is full), so one map update is the usual cost.
    if let Some(file) = file {
        let key = FileKey {
            memcg: memcg_key,
            file: file as u64,
        };
        match bump(by_file, &key, |d: &mut CacheDelta| count(d, added, pages)) {
            Bumped::Counted => return,
            Bumped::NewKey => {
                // Once per file and interval, not per event: what userspace shows of the file
                // and of the memcg.
                // SAFETY: kernel pointers; reads are checked by the helper.
                unsafe {
                    if let Some(id) = inode_id(file, offsets) {
                        let _ = INODE_IDS.insert(&key.file, &id, 0);
                    }
                    remember_memcg_id(memcg, offsets);
                }
                return;
            }
            Bumped::Full => {}
        }
    }
    match bump(by_memcg, &memcg_key, |d: &mut CacheDelta| {
        count(d, added, pages);
    }) {
        // SAFETY: as above.
        Bumped::NewKey => unsafe { remember_memcg_id(memcg, offsets) },
        Bumped::Counted => {}
        Bumped::Full => count_lost(LostKind::PageCache),
    }
}

#[inline(always)]
fn count(d: &mut CacheDelta, added: bool, pages: u64) {
    if added {
        d.added_pages += pages;
    } else {
        d.removed_pages += pages;
    }
}

/// What a folio is charged to: (`struct mem_cgroup *`, pages, its file's
/// `struct address_space *`).
type FolioCharge = (*const u8, u64, Option<*const u8>);

/// `None` for folios not charged to a memcg (nothing to attribute).
#[inline(always)]
unsafe fn inspect(folio: *const u8, o: &KernelOffsets) -> Option<FolioCharge> {
    // SAFETY: `folio` is a kernel pointer; reads are checked by the helper.
    unsafe {
        // A large folio keeps its page count in its second page: 128 bytes hold it all. A
        // small folio's next page may be unmapped (the end of a memory section): then 64.
        match Block::<16>::read(folio) {
            Some(block) => charge_in(&block, folio, o),
            None => charge_in(&Block::<8>::read(folio)?, folio, o),
        }
    }
}

/// # Safety
///
/// `block` must have been read from `folio`.
#[inline(always)]
unsafe fn charge_in<const N: usize>(
    block: &Block<N>,
    folio: *const u8,
    o: &KernelOffsets,
) -> Option<FolioCharge> {
    // SAFETY: as the caller promises; further reads are checked by the helper.
    unsafe {
        let (memcg, pages) = folio_memcg_in(block, folio, o)?;
        let file = block
            .u64_at(folio, o.folio_mapping)
            .map(|mapping| mapping as *const u8)
            .filter(|mapping| !mapping.is_null());
        Some((memcg, pages, file))
    }
}

/// The inode number and device of the file whose `address_space` is `file`.
#[inline(always)]
unsafe fn inode_id(file: *const u8, o: &KernelOffsets) -> Option<InodeId> {
    // SAFETY: `file` is a kernel pointer; reads are checked by the helper.
    unsafe {
        let inode: *const u8 = read_at(file, o.mapping_host).ok()?;
        let ino: u64 = read_at(inode, o.inode_ino).ok()?;
        let sb: *const u8 = read_at(inode, o.inode_sb).ok()?;
        let dev: u32 = read_at(sb, o.sb_dev).ok()?;
        Some(InodeId { ino, dev, pad: 0 })
    }
}
