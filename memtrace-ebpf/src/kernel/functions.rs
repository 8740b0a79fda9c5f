//! The arguments of each kernel function the programs probe (fentry/fexit, kprobe/kretprobe),
//! named once, with the function's prototype above its struct. fexit programs see the
//! arguments followed by the return value.

use aya_ebpf::programs::{FEntryContext, FExitContext, ProbeContext};

use super::{Folio, Gfp, KmemCache, Memcg, OomControl, tracepoints::KmemCacheAlloc};

/// ```text
/// mm/oom_kill.c (6.1 … 6.18):
///     static void oom_kill_process(struct oom_control *oc, const char *message)
/// ```
pub struct OomKillProcess {
    pub oc: OomControl,
}

impl OomKillProcess {
    #[inline(always)]
    pub fn from_fentry(ctx: &FEntryContext) -> Self {
        // SAFETY: the first argument is the `struct oom_control *`.
        let oc = unsafe { OomControl::from_ptr(ctx.arg(0)) };
        Self { oc }
    }

    #[inline(always)]
    pub fn from_kprobe(ctx: &ProbeContext) -> Option<Self> {
        // SAFETY: as above.
        let oc = unsafe { OomControl::from_ptr(ctx.arg(0)?) };
        Some(Self { oc })
    }
}

/// ```text
/// mm/memcontrol.c (5.16 … 6.18):
///     int __mem_cgroup_charge(struct folio *folio, struct mm_struct *mm, gfp_t gfp)
/// ```
///
/// 0 on success, when `folio->memcg_data` names the memcg that paid.
pub struct MemCgroupCharge {
    pub folio: Folio,
}

impl MemCgroupCharge {
    /// The arguments and the return value.
    #[inline(always)]
    pub fn from_fexit(ctx: &FExitContext) -> (Self, i32) {
        // SAFETY: the first argument is the `struct folio *`.
        let folio = unsafe { Folio::from_ptr(ctx.arg(0)) };
        (Self { folio }, ctx.arg(3))
    }

    #[inline(always)]
    pub fn from_kprobe(ctx: &ProbeContext) -> Option<Self> {
        // SAFETY: as above.
        let folio = unsafe { Folio::from_ptr(ctx.arg(0)?) };
        Some(Self { folio })
    }
}

/// ```text
/// mm/workingset.c (6.0 … 6.18; a `struct page *` in 5.10, which `Folio` reads alike):
///     void workingset_refault(struct folio *folio, void *shadow)
/// ```
///
/// Called by `filemap_add_folio()` right after the add tracepoint when the folio replaced a
/// shadow entry (it was evicted not long ago), and by swap-in for anon and shmem folios. The
/// folio is charged and in its file's mapping already.
pub struct WorkingsetRefault {
    pub folio: Folio,
}

impl WorkingsetRefault {
    #[inline(always)]
    pub fn from_fentry(ctx: &FEntryContext) -> Self {
        // SAFETY: the first argument is the `struct folio *`.
        let folio = unsafe { Folio::from_ptr(ctx.arg(0)) };
        Self { folio }
    }

    #[inline(always)]
    pub fn from_kprobe(ctx: &ProbeContext) -> Option<Self> {
        // SAFETY: as above.
        let folio = unsafe { Folio::from_ptr(ctx.arg(0)?) };
        Some(Self { folio })
    }
}

/// ```text
/// mm/memcontrol.c (5.17 … 6.18; `try_charge` before, static in both):
///     static int try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask,
///                                 unsigned int nr_pages)
/// ```
///
/// `-ENOMEM` when reclaim and the OOM killer did not make room (or the task is itself the OOM
/// victim, or the gfp forbids retrying).
pub struct TryChargeMemcg {
    pub memcg: Memcg,
    pub gfp_mask: Gfp,
    pub nr_pages: u32,
}

impl TryChargeMemcg {
    /// The arguments and the return value.
    #[inline(always)]
    pub fn from_fexit(ctx: &FExitContext) -> (Self, i32) {
        let args = Self {
            // SAFETY: the first argument is the `struct mem_cgroup *`.
            memcg: unsafe { Memcg::from_ptr(ctx.arg(0)) },
            gfp_mask: Gfp(ctx.arg::<u32>(1).into()),
            nr_pages: ctx.arg(2),
        };
        (args, ctx.arg(3))
    }

    #[inline(always)]
    pub fn from_kprobe(ctx: &ProbeContext) -> Option<Self> {
        let (Some(memcg), Some(gfp), Some(nr_pages)) = (
            ctx.arg::<*const u8>(0),
            ctx.arg::<u32>(1),
            ctx.arg::<u32>(2),
        ) else {
            return None;
        };
        Some(Self {
            // SAFETY: as above.
            memcg: unsafe { Memcg::from_ptr(memcg) },
            gfp_mask: Gfp(gfp.into()),
            nr_pages,
        })
    }
}

/// ```text
/// mm/slub.c, mm/slab.c (5.10):
///     void *kmem_cache_alloc(struct kmem_cache *s, gfp_t gfpflags)
///     void *kmem_cache_alloc_node(struct kmem_cache *s, gfp_t gfpflags, int node)
/// ```
///
/// Read into the `kmem:kmem_cache_alloc` tracepoint's shape, which on 5.10 does not pass the
/// cache. There is no call site: the BPF allocator does not use these functions on such kernels.
pub struct KmemCacheAllocFn;

impl KmemCacheAllocFn {
    /// The arguments and the returned object, whose index is the function's argument count.
    #[inline(always)]
    pub fn from_fexit(ctx: &FExitContext, returned: usize) -> KmemCacheAlloc {
        KmemCacheAlloc {
            object: super::tracepoints::KmemCacheFree {
                call_site: 0,
                ptr: ctx.arg(returned),
                // SAFETY: the first argument is the `struct kmem_cache *`.
                s: unsafe { KmemCache::from_ptr(ctx.arg(0)) },
            },
            gfp_flags: Gfp(ctx.arg::<u32>(1).into()),
        }
    }
}

/// ```text
/// mm/slub.c, mm/slab.c (5.10):
///     void kmem_cache_free(struct kmem_cache *s, void *x)
/// ```
pub struct KmemCacheFreeFn;

impl KmemCacheFreeFn {
    #[inline(always)]
    pub fn from_fentry(ctx: &FEntryContext) -> super::tracepoints::KmemCacheFree {
        super::tracepoints::KmemCacheFree {
            call_site: 0,
            ptr: ctx.arg(1),
            // SAFETY: the first argument is the `struct kmem_cache *`.
            s: unsafe { KmemCache::from_ptr(ctx.arg(0)) },
        }
    }
}
