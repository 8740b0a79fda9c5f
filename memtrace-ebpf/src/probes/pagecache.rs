//! Page cache, attributed to the memcg each folio is charged to (not to whoever happens to be
//! running), with the file it belongs to, aggregated per CPU in the kernel, from the
//! `filemap:mm_filemap_add_to_page_cache/delete_from_page_cache` raw tracepoints
//! ([`FilemapOp`]).
//!
//! `folio->memcg_data` holds the `mem_cgroup *` (flag bits clear for page cache), whose first
//! member is its css. Hot path: no strings, one read and one per-CPU hash update keyed by
//! pointers; ids are read once per key and interval.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use memtrace_common::{CacheDelta, FileKey, LostKind};

use crate::{
    kernel::{FolioCharge, tracepoints::FilemapOp},
    maps::{
        Bumped, CACHE_FILE_0, CACHE_FILE_1, CACHE_MEMCG_0, CACHE_MEMCG_1, INODE_IDS, active_half,
        bump, count_lost, remember_memcg_id, wanted_memcg,
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
    // `None` for folios not charged to a memcg (nothing to attribute).
    let Some(FolioCharge {
        memcg,
        pages,
        mapping,
    }) = FilemapOp::from_ctx(ctx).folio.charge()
    else {
        return;
    };
    if !wanted_memcg(memcg) {
        return;
    }
    let (by_memcg, by_file) = if active_half() == 0 {
        (&CACHE_MEMCG_0, &CACHE_FILE_0)
    } else {
        (&CACHE_MEMCG_1, &CACHE_FILE_1)
    };
    let memcg_key = memcg.addr();
    // Per-memcg totals are the sums of the per-file counts; the per-memcg map counts only what
    // has no file key (no file, or the file map is full), so one map update is the usual cost.
    if let Some(file) = mapping {
        let key = FileKey {
            memcg: memcg_key,
            file: file.addr(),
        };
        match bump(by_file, &key, |d: &mut CacheDelta| count(d, added, pages)) {
            Bumped::Counted => return,
            Bumped::NewKey => {
                // Once per file and interval, not per event: what userspace shows of the file
                // and of the memcg.
                if let Some(id) = file.file_id() {
                    let _ = INODE_IDS.insert(&key.file, &id, 0);
                }
                remember_memcg_id(memcg);
                return;
            }
            Bumped::Full => {}
        }
    }
    match bump(by_memcg, &memcg_key, |d: &mut CacheDelta| {
        count(d, added, pages);
    }) {
        Bumped::NewKey => remember_memcg_id(memcg),
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
