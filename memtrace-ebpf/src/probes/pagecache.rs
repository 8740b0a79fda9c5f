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
    EbpfContext as _, bindings::BPF_NOEXIST, macros::raw_tracepoint, maps::PerCpuHashMap,
    programs::RawTracePointContext,
};
use memtrace_common::{CacheDelta, FileKey, KernelOffsets, LostKind};

use crate::{
    kernel::read_at,
    maps::{
        CACHE_FILE_0, CACHE_FILE_1, CACHE_MEMCG_0, CACHE_MEMCG_1, OFFSETS, active_half, count_lost,
        wanted,
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
    let Some((memcg_id, pages, file)) = (unsafe { inspect(folio, &offsets) }) else {
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
    if let Some((ino, dev)) = file {
        let key = FileKey {
            memcg_id,
            ino,
            dev,
            pad: 0,
        };
        add(by_file, &key, added, pages);
    }
}

/// What a folio is charged to: (memcg id, pages, (inode, device) when it has a file).
type FolioCharge = (u64, u64, Option<(u64, u32)>);

/// `None` for folios not charged to a memcg (nothing to attribute).
#[inline(always)]
unsafe fn inspect(folio: *const u8, o: &KernelOffsets) -> Option<FolioCharge> {
    // SAFETY: `folio` is a kernel pointer; reads are checked by the helper.
    unsafe {
        let memcg_data: u64 = read_at(folio, o.folio_memcg_data).ok()?;
        if memcg_data & u64::from(o.memcg_data_flags) != 0 {
            return None;
        }
        let memcg = memcg_data as *const u8;
        if memcg.is_null() {
            return None;
        }
        let cgroup: *const u8 = read_at(memcg, o.css_cgroup).ok()?;
        let kn: *const u8 = read_at(cgroup, o.cgroup_kn).ok()?;
        let memcg_id: u64 = read_at(kn, o.kernfs_node_id).ok()?;

        let flags: u64 = read_at(folio, o.folio_flags).ok()?;
        let pages = if flags & u64::from(o.pg_head_mask) != 0 {
            read_at::<u32>(folio, o.folio_nr_pages).map_or(1, u64::from)
        } else {
            1
        };

        let file = read_at::<*const u8>(folio, o.folio_mapping)
            .and_then(|mapping| read_at::<*const u8>(mapping, o.mapping_host))
            .and_then(|host| {
                let ino: u64 = read_at(host, o.inode_ino)?;
                let sb: *const u8 = read_at(host, o.inode_sb)?;
                let dev: u32 = read_at(sb, o.sb_dev)?;
                Ok((ino, dev))
            })
            .ok();
        Some((memcg_id, pages, file))
    }
}

#[inline(always)]
fn add<K>(map: &PerCpuHashMap<K, CacheDelta>, key: &K, added: bool, pages: u64) {
    let bump = |d: &mut CacheDelta| {
        if added {
            d.added_pages += pages;
        } else {
            d.removed_pages += pages;
        }
    };
    if let Some(delta) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU slot of a successful lookup, ours for this program run.
        bump(unsafe { &mut *delta });
        return;
    }
    let mut fresh = CacheDelta::default();
    bump(&mut fresh);
    if map.insert(key, &fresh, u64::from(BPF_NOEXIST)).is_ok() {
        return;
    }
    // Another CPU created the key meanwhile (EEXIST): count into our slot of it.
    match map.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(delta) => bump(unsafe { &mut *delta }),
        None => count_lost(LostKind::PageCache),
    }
}
