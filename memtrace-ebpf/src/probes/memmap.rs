//! Measuring where the kernel maps memory (KASLR moves it at boot), for the slab programs:
//! pairs of (`struct page *`, pfn) from the raw and the classic `kmem:mm_page_alloc` tracepoint
//! give `vmemmap_base`; pairs of (`struct page *`, address) from a large `kmalloc()`, which is
//! page-backed, give the direct map's base. Attached for a moment at start-up, and only
//! memtrace's own thread group is watched; userspace triggers the allocations and keeps the
//! value most samples agree on (the two `mm_page_alloc` programs may run in either order).
//! The tracepoints' arguments: [`MmPageAlloc`], [`Kmalloc`].

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use memtrace_common::MemoryMapSample;

use crate::{
    kernel::tracepoints::{Kmalloc, MmPageAlloc},
    maps::{MEMMAP_LAST, MEMMAP_SAMPLES, MEMMAP_TGID},
};

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
    let page = MmPageAlloc::from_ctx(&ctx).page;
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
    let Ok(pfn) = MmPageAlloc::pfn(&ctx) else {
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
    large_kmalloc(&ctx);
    0
}

/// Before 6.1, `kmalloc_node()` (and `kvmalloc()`, which the trigger uses) fire this one.
#[raw_tracepoint(tracepoint = "kmalloc_node")]
pub fn memmap_kmalloc_node(ctx: RawTracePointContext) -> i32 {
    large_kmalloc(&ctx);
    0
}

#[inline(always)]
fn large_kmalloc(ctx: &RawTracePointContext) {
    if !watched() {
        return;
    }
    let Kmalloc {
        ptr, bytes_alloc, ..
    } = Kmalloc::from_ctx(ctx);
    // Large allocations take whole pages: the address is the page's.
    if bytes_alloc > 8192
        && ptr.trailing_zeros() >= 12
        && let Some(last) = MEMMAP_LAST.get(0)
    {
        sample(MemoryMapSample::PAGE_ADDRESS, last[0], ptr);
    }
}
