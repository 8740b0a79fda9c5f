//! Slab attribution without the memory map: allocations are charged to the allocating task's
//! memcg (or its `active_memcg`), and each counted object is remembered by address until its
//! free, which is then attributed to the same memcg and cache. Objects allocated before memtrace
//! attached are not remembered: their frees are not counted.

use aya_ebpf::{EbpfContext as _, macros::raw_tracepoint, programs::RawTracePointContext};
use memtrace_common::{KernelOffsets, LostKind, SlabKey, SlabObject};

use super::{cache_alloc_args, count, remember_name};
use crate::{
    kernel::{current_charge_memcg, read_at},
    maps::{
        Bumped, SLAB_OBJECTS, count_lost, ignored_callers, offsets, remember_memcg_id, wanted_memcg,
    },
};

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_cache_alloc_tracked(ctx: RawTracePointContext) -> i32 {
    let Some((ptr, cache, gfp)) = cache_alloc_args(&ctx) else {
        return 0;
    };
    let offsets = offsets();
    let s = cache as *const u8;
    // SAFETY: `s` is the tracepoint's `struct kmem_cache *`; reads are checked.
    let Ok(flags) = (unsafe { read_at::<u32>(s, offsets.kmem_cache_flags) }) else {
        return 0;
    };
    if gfp & u64::from(offsets.gfp_account_flag) == 0 && flags & offsets.slab_account_flag == 0 {
        return 0;
    }
    // SAFETY: as above.
    let Ok(size) = (unsafe { read_at::<u32>(s, offsets.kmem_cache_size) }) else {
        return 0;
    };
    if allocated(ptr, cache, u64::from(size), offsets) == Bumped::NewKey {
        // SAFETY: as above.
        unsafe { remember_name(s, offsets) };
    }
    0
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn slab_kmalloc_tracked(ctx: RawTracePointContext) -> i32 {
    // SAFETY: raw tracepoint arguments are u64s: (call_site, ptr, bytes_req, bytes_alloc,
    // gfp_flags, node).
    let (call_site, ptr, bytes_alloc, gfp) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args, *args.add(1), *args.add(3), *args.add(4))
    };
    let offsets = offsets();
    if ptr == 0
        || gfp & u64::from(offsets.gfp_account_flag) == 0
        || ignored_callers().contains(call_site)
    {
        return 0;
    }
    allocated(ptr, bytes_alloc, bytes_alloc, offsets);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_cache_free_tracked(ctx: RawTracePointContext) -> i32 {
    // SAFETY: the second raw tracepoint argument is the object's address.
    freed(unsafe { *ctx.as_ptr().cast::<u64>().add(1) });
    0
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn slab_kfree_tracked(ctx: RawTracePointContext) -> i32 {
    // SAFETY: the second raw tracepoint argument is the object's address.
    freed(unsafe { *ctx.as_ptr().cast::<u64>().add(1) });
    0
}

#[inline(always)]
fn allocated(ptr: u64, cache: u64, bytes: u64, offsets: &KernelOffsets) -> Bumped {
    // SAFETY: helper calls and checked reads only.
    let Ok(memcg) = (unsafe { current_charge_memcg(offsets) }) else {
        return Bumped::Counted;
    };
    // SAFETY: `memcg` is a `struct mem_cgroup *` read from the kernel.
    if memcg.is_null() || !unsafe { wanted_memcg(memcg, offsets) } {
        return Bumped::Counted;
    }
    let key = SlabKey {
        memcg: memcg as u64,
        cache,
    };
    let object = SlabObject { key, bytes };
    if SLAB_OBJECTS.insert(&ptr, &object, 0).is_err() {
        // Its free could not be attributed: count the allocation anyway, and say so.
        count_lost(LostKind::Slab);
    }
    let bumped = count(&key, |d| {
        d.alloc_bytes += bytes;
        d.alloc_objects += 1;
    });
    if bumped == Bumped::NewKey {
        // SAFETY: as above.
        unsafe { remember_memcg_id(memcg, offsets) };
    }
    bumped
}

#[inline(always)]
fn freed(ptr: u64) {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(object) = (unsafe { SLAB_OBJECTS.get(&ptr) }).copied() else {
        return;
    };
    let _ = SLAB_OBJECTS.remove(&ptr);
    count(&object.key, |d| {
        d.free_bytes += object.bytes;
        d.free_objects += 1;
    });
}
