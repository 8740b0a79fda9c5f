//! Programs that do nothing, on the raw tracepoints memtrace's hot paths use: `cargo xtask bench`
//! runs them (`memtrace bench-floor`) to measure what attaching anything there costs, the floor
//! below which no tracer of these tracepoints can go; and beside them the count floor
//! (`memtrace bench-floor --count`), one per-CPU hash count per event, the least any per-key
//! aggregation costs. Never attached by `run` or `record`.

use aya_ebpf::{
    EbpfContext as _,
    macros::{map, raw_tracepoint},
    maps::PerCpuHashMap,
    programs::RawTracePointContext,
};

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn floor_kmem_cache_alloc(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn floor_kmalloc(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn floor_kmem_cache_free(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn floor_kfree(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_add_to_page_cache")]
pub fn floor_filemap_add(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_delete_from_page_cache")]
pub fn floor_filemap_delete(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn floor_memcg_lruvec_stat(_ctx: RawTracePointContext) -> i32 {
    0
}

/// What the count floor's programs count into: a per-CPU hash, preallocated, keyed by the top
/// bits of the tracepoint's first argument (a handful of keys).
#[map]
static FLOOR_COUNTS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(64, 0);

/// The count floor: the map work of any per-key aggregation and nothing else. One lookup of
/// this CPU's count under a key taken from the first argument (its 1 GiB region: a call site,
/// a folio, a memcg), no memory read, an insert only the first time a key is seen. A tracer that
/// counts events per memcg or per file pays at least this on every event, plus what it reads
/// to find the key.
#[inline(always)]
fn count_by_first_argument(ctx: &RawTracePointContext) -> i32 {
    // SAFETY: every one of these tracepoints has a first argument.
    let key = unsafe { *(ctx.as_ptr() as *const u64) } >> 30;
    if let Some(count) = FLOOR_COUNTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a successful lookup, ours for this program run.
        unsafe { *count += 1 };
    } else {
        let _ = FLOOR_COUNTS.insert(&key, &1, 0);
    }
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn count_floor_kmem_cache_alloc(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn count_floor_kmalloc(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn count_floor_kmem_cache_free(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn count_floor_kfree(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}

#[raw_tracepoint(tracepoint = "mm_filemap_add_to_page_cache")]
pub fn count_floor_filemap_add(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}

#[raw_tracepoint(tracepoint = "mm_filemap_delete_from_page_cache")]
pub fn count_floor_filemap_delete(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}

#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn count_floor_memcg_lruvec_stat(ctx: RawTracePointContext) -> i32 {
    count_by_first_argument(&ctx)
}
