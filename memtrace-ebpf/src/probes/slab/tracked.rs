//! Slab attribution without the memory map: allocations are charged to the allocating task's
//! memcg (or its `active_memcg`), and each counted object is remembered by address until its
//! free, which is then attributed to the same memcg and cache. Objects allocated before memtrace
//! attached are not remembered: their frees are not counted.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use memtrace_common::{LostKind, SlabKey, SlabObject};

use super::{cache_alloc_args, count, remember_name};
use crate::{
    kernel::{
        Task,
        tracepoints::{Kfree, Kmalloc, KmemCacheFree},
    },
    maps::{Bumped, SLAB_OBJECTS, count_lost, ignored_caller, remember_memcg_id, wanted_memcg},
};

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_cache_alloc_tracked(ctx: RawTracePointContext) -> i32 {
    let Some(args) = cache_alloc_args(&ctx) else {
        return 0;
    };
    let Some(slab_account) = args.object.s.slab_account() else {
        return 0;
    };
    if !args.gfp_flags.accounted() && !slab_account {
        return 0;
    }
    let Some(size) = args.object.s.size() else {
        return 0;
    };
    if allocated(args.object.ptr, args.object.s.addr(), u64::from(size)) == Bumped::NewKey {
        remember_name(args.object.s);
    }
    0
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn slab_kmalloc_tracked(ctx: RawTracePointContext) -> i32 {
    let args = Kmalloc::from_ctx(&ctx);
    if args.ptr == 0 || !args.gfp_flags.accounted() || ignored_caller(args.call_site) {
        return 0;
    }
    allocated(args.ptr, args.bytes_alloc, args.bytes_alloc);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_cache_free_tracked(ctx: RawTracePointContext) -> i32 {
    freed(KmemCacheFree::from_ctx(&ctx).ptr);
    0
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn slab_kfree_tracked(ctx: RawTracePointContext) -> i32 {
    freed(Kfree::from_ctx(&ctx).ptr);
    0
}

#[inline(always)]
fn allocated(ptr: u64, cache: u64, bytes: u64) -> Bumped {
    let Ok(memcg) = Task::current().charge_memcg() else {
        return Bumped::Counted;
    };
    if memcg.is_null() || !wanted_memcg(memcg) {
        return Bumped::Counted;
    }
    let key = SlabKey {
        memcg: memcg.addr(),
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
        remember_memcg_id(memcg);
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
