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
//! member is its css. Hot path: no strings, two per-CPU hash updates.

use aya_ebpf::{
    EbpfContext as _, macros::raw_tracepoint, maps::PerCpuHashMap, programs::RawTracePointContext,
};
use memtrace_common::{CacheDelta, FileKey, InodeId, KernelOffsets, LostKind};

use crate::{
    kernel::{folio_charge, read_at},
    maps::{
        Bumped, CACHE_FILE_0, CACHE_FILE_1, CACHE_MEMCG_0, CACHE_MEMCG_1, INODE_IDS, OFFSETS,
        active_half, bump, count_lost, wanted,
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
    let offsets = OFFSETS.load();
    // SAFETY: the first raw tracepoint argument is the `struct folio *`.
    let folio = unsafe { *ctx.as_ptr().cast::<u64>() } as *const u8;
    // SAFETY: every read below goes through `bpf_probe_read_kernel`.
    let Some((memcg_id, pages, inode)) = (unsafe { inspect(folio, &offsets) }) else {
        return;
    };
    if !wanted(memcg_id) {
        return;
    }
    let (by_memcg, by_file) = if active_half() == 0 {
        (&CACHE_MEMCG_0, &CACHE_FILE_0)
    } else {
        (&CACHE_MEMCG_1, &CACHE_FILE_1)
    };
    add(by_memcg, &memcg_id, added, pages);
    if let Some(inode) = inode {
        let key = FileKey {
            memcg_id,
            inode: inode as u64,
        };
        if add(by_file, &key, added, pages) == Bumped::NewKey {
            // Once per file and interval, not per event: what userspace shows of the file.
            // SAFETY: `inode` is a `struct inode *`; reads are checked by the helper.
            if let Some(id) = unsafe { inode_id(inode, &offsets) } {
                let _ = INODE_IDS.insert(&(inode as u64), &id, 0);
            }
        }
    }
}

/// What a folio is charged to: (memcg id, pages, its file's `struct inode *`).
type FolioCharge = (u64, u64, Option<*const u8>);

/// `None` for folios not charged to a memcg (nothing to attribute).
#[inline(always)]
unsafe fn inspect(folio: *const u8, o: &KernelOffsets) -> Option<FolioCharge> {
    // SAFETY: `folio` is a kernel pointer; reads are checked by the helper.
    unsafe {
        let (memcg_id, pages) = folio_charge(folio, o)?;
        let inode = read_at::<*const u8>(folio, o.folio_mapping)
            .and_then(|mapping| read_at::<*const u8>(mapping, o.mapping_host))
            .ok()
            .filter(|host| !host.is_null());
        Some((memcg_id, pages, inode))
    }
}

#[inline(always)]
unsafe fn inode_id(inode: *const u8, o: &KernelOffsets) -> Option<InodeId> {
    // SAFETY: `inode` is a kernel pointer; reads are checked by the helper.
    unsafe {
        let ino: u64 = read_at(inode, o.inode_ino).ok()?;
        let sb: *const u8 = read_at(inode, o.inode_sb).ok()?;
        let dev: u32 = read_at(sb, o.sb_dev).ok()?;
        Some(InodeId { ino, dev, pad: 0 })
    }
}

/// Counts `pages` into `key`'s delta; a full map counts the event lost.
#[inline(always)]
fn add<K>(map: &PerCpuHashMap<K, CacheDelta>, key: &K, added: bool, pages: u64) -> Bumped {
    let bumped = bump(map, key, |d: &mut CacheDelta| {
        if added {
            d.added_pages += pages;
        } else {
            d.removed_pages += pages;
        }
    });
    if bumped == Bumped::Full {
        count_lost(LostKind::PageCache);
    }
    bumped
}
