//! Slab attribution without the memory map: allocations are charged to the allocating task's
//! memcg (or its `active_memcg`), and each counted object is remembered by address until its
//! free, which is then attributed to the same memcg and cache. Objects allocated before memtrace
//! attached are not remembered: their frees are not counted.

use aya_ebpf::{
    macros::{fentry, fexit, raw_tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext},
};
use memtrace_common::{LostKind, SlabKey, SlabObject};

use super::{cache_alloc_args, count, remember_name};
use crate::{
    kernel::{
        Task,
        functions::{KmemCacheAllocFn, KmemCacheFreeFn},
        tracepoints::{Kfree, Kmalloc, KmemCacheAlloc, KmemCacheFree},
    },
    maps::{Bumped, SLAB_OBJECTS, count_lost, ignored_caller, remember_memcg_id, wanted_memcg},
};

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_cache_alloc_tracked(ctx: RawTracePointContext) -> i32 {
    if let Some(args) = cache_alloc_args(&ctx) {
        cache_alloc(&args);
    }
    0
}

#[fexit(function = "kmem_cache_alloc")]
pub fn slab_cache_alloc_fexit_tracked(ctx: FExitContext) -> i32 {
    cache_alloc(&KmemCacheAllocFn::from_fexit(&ctx, 2));
    0
}

#[fexit(function = "kmem_cache_alloc_node")]
pub fn slab_cache_alloc_node_fexit_tracked(ctx: FExitContext) -> i32 {
    cache_alloc(&KmemCacheAllocFn::from_fexit(&ctx, 3));
    0
}

#[inline(always)]
fn cache_alloc(args: &KmemCacheAlloc) {
    if args.object.ptr == 0 {
        return;
    }
    let Some(slab_account) = args.object.s.slab_account() else {
        return;
    };
    if !args.gfp_flags.accounted() && !slab_account {
        return;
    }
    let Some(size) = args.object.s.size() else {
        return;
    };
    if allocated(args.object.ptr, args.object.s.addr(), u64::from(size)) == Bumped::NewKey {
        remember_name(args.object.s);
    }
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn slab_kmalloc_tracked(ctx: RawTracePointContext) -> i32 {
    kmalloc(&Kmalloc::from_ctx(&ctx));
    0
}

#[raw_tracepoint(tracepoint = "kmalloc_node")]
pub fn slab_kmalloc_node_tracked(ctx: RawTracePointContext) -> i32 {
    kmalloc(&Kmalloc::from_ctx(&ctx));
    0
}

#[inline(always)]
fn kmalloc(args: &Kmalloc) {
    if args.ptr == 0 || !args.gfp_flags.accounted() || ignored_caller(args.call_site) {
        return;
    }
    allocated(args.ptr, args.bytes_alloc, args.bytes_alloc);
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_cache_free_tracked(ctx: RawTracePointContext) -> i32 {
    freed(KmemCacheFree::from_ctx(&ctx).ptr);
    0
}

#[fentry(function = "kmem_cache_free")]
pub fn slab_cache_free_fentry_tracked(ctx: FEntryContext) -> i32 {
    freed(KmemCacheFreeFn::from_fentry(&ctx).ptr);
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
