//! Slab attribution by the kernel's own charge records: each object's memcg is read from its
//! slab ([`SlabOwner::of_object`]) when it is allocated and again when it is freed, so a free
//! counts against the memcg and cache that paid for it, also for objects allocated before
//! memtrace attached, and no per-object state is kept. Needs `MEMORY_MAP`.

use aya_ebpf::{
    macros::{fentry, fexit, raw_tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext},
};
use memtrace_common::SlabKey;

use super::{cache_alloc_args, count, remember_name};
use crate::{
    kernel::{
        KmemCache, Memcg, SlabOwner,
        functions::{KmemCacheAllocFn, KmemCacheFreeFn},
        tracepoints::{Kfree, Kmalloc, KmemCacheAlloc, KmemCacheFree},
    },
    maps::{Bumped, FILTER_ENABLED, MEMCG_IDS, MEMORY_MAP, ignored_caller, wanted_memcg},
};

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_cache_alloc(ctx: RawTracePointContext) -> i32 {
    if let Some(args) = cache_alloc_args(&ctx) {
        cache_alloc(&args);
    }
    0
}

#[fexit(function = "kmem_cache_alloc")]
pub fn slab_cache_alloc_fexit(ctx: FExitContext) -> i32 {
    cache_alloc(&KmemCacheAllocFn::from_fexit(&ctx, 2));
    0
}

#[fexit(function = "kmem_cache_alloc_node")]
pub fn slab_cache_alloc_node_fexit(ctx: FExitContext) -> i32 {
    cache_alloc(&KmemCacheAllocFn::from_fexit(&ctx, 3));
    0
}

#[inline(always)]
fn cache_alloc(args: &KmemCacheAlloc) {
    if args.object.ptr == 0 {
        return;
    }
    // The tracepoint's `accounted`, before any slab is looked at.
    let Some((slab_account, size)) = args.object.s.account_and_size() else {
        return;
    };
    if !args.gfp_flags.accounted() && !slab_account {
        return;
    }
    let Some(owner) = owner(args.object.ptr, args.object.s, size) else {
        return;
    };
    if counted(&owner, args.object.s.addr(), true) == Bumped::NewKey {
        remember_name(args.object.s);
    }
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn slab_kmalloc(ctx: RawTracePointContext) -> i32 {
    kmalloc(&Kmalloc::from_ctx(&ctx));
    0
}

#[raw_tracepoint(tracepoint = "kmalloc_node")]
pub fn slab_kmalloc_node(ctx: RawTracePointContext) -> i32 {
    kmalloc(&Kmalloc::from_ctx(&ctx));
    0
}

#[inline(always)]
fn kmalloc(args: &Kmalloc) {
    if args.ptr == 0 || !args.gfp_flags.accounted() || ignored_caller(args.call_site) {
        return;
    }
    if let Some(owner) = owner(args.ptr, KmemCache::NULL, 0) {
        // Its size class (`bytes_alloc`, the cache's size) stands in for the unnamed cache.
        counted(&owner, owner.bytes, true);
    }
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_cache_free(ctx: RawTracePointContext) -> i32 {
    cache_free(&KmemCacheFree::from_ctx(&ctx));
    0
}

#[fentry(function = "kmem_cache_free")]
pub fn slab_cache_free_fentry(ctx: FEntryContext) -> i32 {
    cache_free(&KmemCacheFreeFn::from_fentry(&ctx));
    0
}

#[inline(always)]
fn cache_free(args: &KmemCacheFree) {
    // The BPF allocator's frees, like its allocations, are memtrace's own map memory.
    if args.ptr == 0 || ignored_caller(args.call_site) {
        return;
    }
    if let Some(owner) = owner(args.ptr, args.s, 0)
        && counted(&owner, args.s.addr(), false) == Bumped::NewKey
    {
        // A cache may shrink in an interval it grows nowhere.
        remember_name(args.s);
    }
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn slab_kfree(ctx: RawTracePointContext) -> i32 {
    let args = Kfree::from_ctx(&ctx);
    if args.ptr == 0 || ignored_caller(args.call_site) {
        return 0;
    }
    if let Some(owner) = owner(args.ptr, KmemCache::NULL, 0) {
        counted(&owner, owner.bytes, false);
    }
    0
}

#[inline(always)]
fn owner(ptr: u64, cache: KmemCache, size: u32) -> Option<SlabOwner> {
    let map = MEMORY_MAP.get(0)?;
    let owner = SlabOwner::of_object(ptr, cache, size, map)?;
    if FILTER_ENABLED.load() == 0 {
        return Some(owner);
    }
    wanted_memcg(owner.objcg.memcg().ok()?).then_some(owner)
}

/// Counts an allocation or a free of `owner`'s object against (`obj_cgroup`, `cache`).
#[inline(always)]
fn counted(owner: &SlabOwner, cache: u64, allocated: bool) -> Bumped {
    let key = SlabKey {
        memcg: owner.objcg.addr(),
        cache,
    };
    let bytes = owner.bytes;
    let bumped = count(&key, |d| {
        if allocated {
            d.alloc_bytes += bytes;
            d.alloc_objects += 1;
        } else {
            d.free_bytes += bytes;
            d.free_objects += 1;
        }
    });
    if bumped == Bumped::NewKey {
        // Once per key and interval: the memcg's id, for userspace, under the key's pointer.
        if let Ok(id) = owner.objcg.memcg().and_then(Memcg::id) {
            let _ = MEMCG_IDS.insert(&key.memcg, &id, 0);
        }
    }
    bumped
}
