//! Memcg-accounted slab memory per memcg and cache, aggregated per CPU in the kernel, from the
//! `kmem:kmem_cache_alloc/kmalloc/kmem_cache_free/kfree` raw tracepoints (their arguments:
//! [`crate::kernel::tracepoints`]).
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

use aya_ebpf::programs::RawTracePointContext;
use memtrace_common::{CacheName, LostKind, SlabDelta, SlabKey};

use crate::{
    kernel::{KmemCache, tracepoints::KmemCacheAlloc},
    maps::{
        Bumped, CACHE_NAMES, SLAB_0, SLAB_1, SLAB_SPILL_0, SLAB_SPILL_1, active_half, bump,
        count_lost, ignored_caller,
    },
};

/// `kmem_cache_alloc`'s arguments, `None` for a failed allocation or one made by the BPF
/// allocator for memtrace's own maps.
#[inline(always)]
fn cache_alloc_args(ctx: &RawTracePointContext) -> Option<KmemCacheAlloc> {
    let args = KmemCacheAlloc::from_ctx(ctx);
    (args.object.ptr != 0 && !ignored_caller(args.object.call_site)).then_some(args)
}

/// Counts into this interval's half of the aggregate (or its spill map); what neither takes is
/// counted lost.
#[inline(always)]
fn count(key: &SlabKey, update: impl Fn(&mut SlabDelta)) -> Bumped {
    let maps = if active_half() == 0 {
        (&SLAB_0, &SLAB_SPILL_0)
    } else {
        (&SLAB_1, &SLAB_SPILL_1)
    };
    let bumped = bump(maps, key, update);
    if bumped == Bumped::Full {
        count_lost(LostKind::Slab);
    }
    bumped
}

/// Once per cache and interval: the name userspace shows.
#[inline(always)]
fn remember_name(s: KmemCache) {
    let cache = s.addr();
    // SAFETY: a plain lookup; the value is not kept.
    if unsafe { CACHE_NAMES.get(&cache) }.is_some() {
        return;
    }
    let mut name = CacheName { name: [0; 32] };
    if s.read_name(&mut name.name).is_ok() {
        let _ = CACHE_NAMES.insert(&cache, &name, 0);
    }
}
