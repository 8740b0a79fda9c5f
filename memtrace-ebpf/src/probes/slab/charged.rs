//! Slab attribution by the kernel's own charge records: each object's memcg is read from its
//! slab ([`slab_object_owner`]) when it is allocated and again when it is freed, so a free
//! counts against the memcg and cache that paid for it, also for objects allocated before
//! memtrace attached, and no per-object state is kept. Needs `MEMORY_MAP`.

use aya_ebpf::{EbpfContext as _, macros::raw_tracepoint, programs::RawTracePointContext};
use memtrace_common::{KernelOffsets, SlabKey};

use super::{cache_alloc_args, count, remember_name};
use crate::{
    kernel::{Block, SlabOwner, memcg_id_of, read_at, slab_object_owner},
    maps::{Bumped, FILTER_ENABLED, MEMCG_IDS, MEMORY_MAP, ignored_callers, offsets, wanted_memcg},
};

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_cache_alloc(ctx: RawTracePointContext) -> i32 {
    let Some((ptr, cache, gfp)) = cache_alloc_args(&ctx) else {
        return 0;
    };
    let offsets = offsets();
    let s = cache as *const u8;
    // The tracepoint's `accounted`, before any slab is looked at; `flags` and `size` are near
    // the start of `struct kmem_cache`, one read.
    // SAFETY: `s` is the tracepoint's `struct kmem_cache *`; reads are checked.
    let Some((flags, size)) = (unsafe {
        Block::<6>::read(s).and_then(|b| {
            Some((
                b.u32_at(s, offsets.kmem_cache_flags)?,
                b.u32_at(s, offsets.kmem_cache_size)?,
            ))
        })
    }) else {
        return 0;
    };
    if gfp & u64::from(offsets.gfp_account_flag) == 0 && flags & offsets.slab_account_flag == 0 {
        return 0;
    }
    let Some(owner) = owner(ptr, s, size, offsets) else {
        return 0;
    };
    if counted(&owner, cache, true, offsets) == Bumped::NewKey {
        // SAFETY: as above.
        unsafe { remember_name(s, offsets) };
    }
    0
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn slab_kmalloc(ctx: RawTracePointContext) -> i32 {
    // SAFETY: raw tracepoint arguments are u64s: (call_site, ptr, bytes_req, bytes_alloc,
    // gfp_flags, node).
    let (call_site, ptr, gfp) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args, *args.add(1), *args.add(4))
    };
    let offsets = offsets();
    if ptr == 0
        || gfp & u64::from(offsets.gfp_account_flag) == 0
        || ignored_callers().contains(call_site)
    {
        return 0;
    }
    if let Some(owner) = owner(ptr, core::ptr::null(), 0, offsets) {
        // Its size class (`bytes_alloc`, the cache's size) stands in for the unnamed cache.
        counted(&owner, owner.bytes, true, offsets);
    }
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_cache_free(ctx: RawTracePointContext) -> i32 {
    // SAFETY: raw tracepoint arguments are u64s: (call_site, ptr, s).
    let (call_site, ptr, cache) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args, *args.add(1), *args.add(2))
    };
    // The BPF allocator's frees, like its allocations, are memtrace's own map memory.
    if ptr == 0 || ignored_callers().contains(call_site) {
        return 0;
    }
    let offsets = offsets();
    if let Some(owner) = owner(ptr, cache as *const u8, 0, offsets)
        && counted(&owner, cache, false, offsets) == Bumped::NewKey
    {
        // A cache may shrink in an interval it grows nowhere.
        // SAFETY: the tracepoint's `struct kmem_cache *`.
        unsafe { remember_name(cache as *const u8, offsets) };
    }
    0
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn slab_kfree(ctx: RawTracePointContext) -> i32 {
    // SAFETY: raw tracepoint arguments are u64s: (call_site, ptr).
    let (call_site, ptr) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args, *args.add(1))
    };
    if ptr == 0 || ignored_callers().contains(call_site) {
        return 0;
    }
    let offsets = offsets();
    if let Some(owner) = owner(ptr, core::ptr::null(), 0, offsets) {
        counted(&owner, owner.bytes, false, offsets);
    }
    0
}

#[inline(always)]
fn owner(ptr: u64, cache: *const u8, size: u32, offsets: &KernelOffsets) -> Option<SlabOwner> {
    let map = MEMORY_MAP.get(0)?;
    // SAFETY: `ptr` is the tracepoint's object address; reads are checked.
    let owner = unsafe { slab_object_owner(ptr, cache, size, offsets, map) }?;
    if FILTER_ENABLED.load() == 0 {
        return Some(owner);
    }
    // SAFETY: `owner.objcg` is a `struct obj_cgroup *` read from the kernel; reads are checked.
    let memcg: *const u8 = unsafe { read_at(owner.objcg, offsets.obj_cgroup_memcg) }.ok()?;
    // SAFETY: a `struct mem_cgroup *` read from the kernel.
    unsafe { wanted_memcg(memcg, offsets) }.then_some(owner)
}

/// Counts an allocation or a free of `owner`'s object against (`obj_cgroup`, `cache`).
#[inline(always)]
fn counted(owner: &SlabOwner, cache: u64, allocated: bool, offsets: &KernelOffsets) -> Bumped {
    let key = SlabKey {
        memcg: owner.objcg as u64,
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
        // SAFETY: a `struct obj_cgroup *` read from the kernel; reads are checked.
        unsafe {
            if let Ok(memcg) = read_at::<*const u8>(owner.objcg, offsets.obj_cgroup_memcg)
                && let Ok(id) = memcg_id_of(memcg, offsets)
            {
                let _ = MEMCG_IDS.insert(&key.memcg, &id, 0);
            }
        }
    }
    bumped
}
