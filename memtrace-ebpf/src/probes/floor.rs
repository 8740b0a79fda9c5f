//! Programs that do nothing, on the raw tracepoints memtrace's hot paths use: `cargo xtask bench`
//! runs them (`memtrace bench-floor`) to measure what attaching anything there costs, the floor
//! below which no tracer of these tracepoints can go. Never attached by `run` or `record`.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

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
