//! Measuring where the kernel maps memory (KASLR moves it at boot), for the slab programs:
//! pairs of (`struct page *`, pfn) from the raw and the classic `kmem:mm_page_alloc` tracepoint
//! give `vmemmap_base`; pairs of (`struct page *`, address) from a large `kmalloc()`, which is
//! page-backed, give the direct map's base. Attached for a moment at start-up, and only
//! memtrace's own thread group is watched; userspace triggers the allocations and keeps the
//! value most samples agree on (the two `mm_page_alloc` programs may run in either order).
//!
//! ```text
//! include/trace/events/kmem.h (6.1 … 6.18):
//!     mm_page_alloc: TP_PROTO(struct page *page, unsigned int order, gfp_t gfp_flags,
//!                             int migratetype); the record holds `unsigned long pfn` at 8
//! ```

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use memtrace_common::MemoryMapSample;

use crate::maps::{MEMMAP_LAST, MEMMAP_SAMPLES, MEMMAP_TGID};

/// `pfn`'s offset in the classic tracepoint's record, after the 8-byte common header; userspace
/// checks it against the tracepoint's format before attaching.
const PFN_OFFSET: usize = 8;

#[inline(always)]
fn watched() -> bool {
    bpf_get_current_pid_tgid() >> 32 == u64::from(MEMMAP_TGID.load())
}

#[inline(always)]
fn sample(kind: u64, page: u64, value: u64) {
    if page != 0 && value != 0 {
        let _ = MEMMAP_SAMPLES.output(&MemoryMapSample { kind, page, value }, 0);
    }
}

#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn memmap_page(ctx: RawTracePointContext) -> i32 {
    if !watched() {
        return 0;
    }
    // SAFETY: the first raw tracepoint argument is the `struct page *`.
    let page = unsafe { *ctx.as_ptr().cast::<u64>() };
    if let Some(last) = MEMMAP_LAST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a successful lookup, ours for this program run.
        let pfn = unsafe {
            (*last)[0] = page;
            (*last)[1]
        };
        sample(MemoryMapSample::PAGE_PFN, page, pfn);
    }
    0
}

#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn memmap_pfn(ctx: TracePointContext) -> u32 {
    if !watched() {
        return 0;
    }
    // SAFETY: the record holds `pfn` at PFN_OFFSET (checked by userspace).
    let Ok(pfn) = (unsafe { ctx.read_at::<u64>(PFN_OFFSET) }) else {
        return 0;
    };
    if let Some(last) = MEMMAP_LAST.get_ptr_mut(0) {
        // SAFETY: as above.
        let page = unsafe {
            (*last)[1] = pfn;
            (*last)[0]
        };
        sample(MemoryMapSample::PAGE_PFN, page, pfn);
    }
    0
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn memmap_kmalloc(ctx: RawTracePointContext) -> i32 {
    if !watched() {
        return 0;
    }
    // SAFETY: raw tracepoint arguments are u64s: (call_site, ptr, bytes_req, bytes_alloc, …).
    let (ptr, bytes_alloc) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args.add(1), *args.add(3))
    };
    // Large allocations take whole pages: the address is the page's.
    if bytes_alloc > 8192
        && ptr.trailing_zeros() >= 12
        && let Some(last) = MEMMAP_LAST.get(0)
    {
        sample(MemoryMapSample::PAGE_ADDRESS, last[0], ptr);
    }
    0
}
