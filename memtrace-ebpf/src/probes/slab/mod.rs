//! Memcg-accounted slab memory per memcg and cache, aggregated per CPU in the kernel.
//!
//! ```text
//! include/trace/events/kmem.h (raw tracepoint arguments, 6.1 … 6.18):
//!     kmem_cache_alloc: TP_PROTO(unsigned long call_site, const void *ptr,
//!                                struct kmem_cache *s, gfp_t gfp_flags, int node)
//!     kmalloc:          TP_PROTO(unsigned long call_site, const void *ptr, size_t bytes_req,
//!                                size_t bytes_alloc, gfp_t gfp_flags, int node)
//!     kmem_cache_free:  TP_PROTO(unsigned long call_site, const void *ptr,
//!                                const struct kmem_cache *s)
//!     kfree:            TP_PROTO(unsigned long call_site, const void *ptr)
//! ```
//!
//! Only accounted allocations count, as the tracepoints' own `accounted` field decides:
//! `__GFP_ACCOUNT` in the gfp flags, or a cache created with `SLAB_ACCOUNT`. `kmalloc()` does
//! not name its cache; its size class stands in for it. Two ways to attribute them:
//!
//! - [`charged`]: the memcg the kernel itself charged each object to, read from the object's
//!   slab (its per-object `obj_cgroup`), on allocation and on free. Needs the memory map.
//! - [`tracked`]: the allocating task's memcg, each counted object remembered by address until
//!   its free. A map update per event, so about twice the cost.

pub mod charged;
pub mod tracked;

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, programs::RawTracePointContext,
};
use memtrace_common::{CacheName, KernelOffsets, LostKind, SlabDelta, SlabKey};

use crate::{
    kernel::read_at,
    maps::{Bumped, CACHE_NAMES, SLAB_0, SLAB_1, active_half, bump, count_lost, ignored_callers},
};

/// `kmem_cache_alloc`'s (`ptr`, `s`, `gfp_flags`), `None` for a failed allocation or one made by
/// the BPF allocator for memtrace's own maps.
#[inline(always)]
fn cache_alloc_args(ctx: &RawTracePointContext) -> Option<(u64, u64, u64)> {
    // SAFETY: raw tracepoint arguments are u64s: (call_site, ptr, s, gfp_flags, node).
    let (call_site, ptr, cache, gfp) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args, *args.add(1), *args.add(2), *args.add(3))
    };
    (ptr != 0 && !ignored_callers().contains(call_site)).then_some((ptr, cache, gfp))
}

/// Counts into this interval's half of the aggregate; a full map is counted lost.
#[inline(always)]
fn count(key: &SlabKey, update: impl Fn(&mut SlabDelta)) -> Bumped {
    let map = if active_half() == 0 { &SLAB_0 } else { &SLAB_1 };
    let bumped = bump(map, key, update);
    if bumped == Bumped::Full {
        count_lost(LostKind::Slab);
    }
    bumped
}

/// Once per cache and interval: the name userspace shows.
///
/// # Safety
///
/// `s` must be a kernel `struct kmem_cache *`.
#[inline(always)]
unsafe fn remember_name(s: *const u8, offsets: &KernelOffsets) {
    let cache = s as u64;
    // SAFETY: a plain lookup; the value is not kept.
    if unsafe { CACHE_NAMES.get(&cache) }.is_some() {
        return;
    }
    let mut name = CacheName { name: [0; 32] };
    // SAFETY: `s` is a `struct kmem_cache *`; reads are checked by the helpers.
    unsafe {
        let Ok(ptr) = read_at::<*const u8>(s, offsets.kmem_cache_name) else {
            return;
        };
        if bpf_probe_read_kernel_str_bytes(ptr, &mut name.name).is_err() {
            return;
        }
    }
    let _ = CACHE_NAMES.insert(&cache, &name, 0);
}
