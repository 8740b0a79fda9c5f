//! The arguments of each tracepoint the programs attach to, named once, with the tracepoint's
//! prototype above its struct. A raw tracepoint passes its `TP_PROTO` arguments as an array of
//! `u64`s (each widened to 64 bits), in order; the verifier checks each index against the
//! tracepoint's argument count when the program loads.

use aya_ebpf::{
    EbpfContext as _,
    programs::{RawTracePointContext, TracePointContext},
};
use memtrace_common::offsets::MARK_VICTIM_ARG_TASK;

use super::{Cgroup, Folio, Gfp, KernelStr, KmemCache, Memcg, StatItem, Task, offsets};

/// The `i`th argument.
#[inline(always)]
fn arg(ctx: &RawTracePointContext, i: usize) -> u64 {
    // SAFETY: `ctx.as_ptr()` is `struct bpf_raw_tracepoint_args *`: the arguments as u64s; an
    // index past the tracepoint's arguments is refused by the verifier at load.
    unsafe { *ctx.as_ptr().cast::<u64>().add(i) }
}

/// The low 32 bits of an argument declared `int`/`unsigned int`, which the raw tracepoint
/// passes widened to u64.
#[expect(clippy::cast_possible_truncation, reason = "an int widened to u64")]
#[inline(always)]
fn arg_u32(ctx: &RawTracePointContext, i: usize) -> u32 {
    arg(ctx, i) as u32
}

/// `oom:mark_victim`, fired in `mark_oom_victim()` while the victim's `mm` is still attached.
///
/// ```text
/// include/trace/events/oom.h, recent kernels (6.12, 6.18):
///     TP_PROTO(struct task_struct *task, uid_t uid)
/// older kernels (6.1):
///     TP_PROTO(int pid)
/// ```
///
/// The loader reads that prototype from BTF (`btf_trace_mark_victim`) and tells which one this
/// kernel has (`mark_victim_arg`).
pub enum MarkVictim {
    Task(Task),
    Pid(u32),
}

impl MarkVictim {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        if offsets().mark_victim_arg == MARK_VICTIM_ARG_TASK {
            // SAFETY: this kernel's first argument is the victim's `struct task_struct *`.
            Self::Task(unsafe { Task::from_addr(arg(ctx, 0)) })
        } else {
            Self::Pid(arg_u32(ctx, 0))
        }
    }
}

/// `cgroup:cgroup_mkdir`, `cgroup:cgroup_rmdir`, `cgroup:cgroup_release`.
///
/// ```text
/// include/trace/events/cgroup.h (6.1 … 6.18):
///     DECLARE_EVENT_CLASS(cgroup, TP_PROTO(struct cgroup *cgrp, const char *path), …)
///     DEFINE_EVENT(cgroup, cgroup_mkdir, …)    after the csses are created
///     DEFINE_EVENT(cgroup, cgroup_rmdir, …)    in cgroup_destroy_locked(), csses being killed
///     DEFINE_EVENT(cgroup, cgroup_release, …)  in css_release_work_fn() for the cgroup itself
/// ```
pub struct CgroupEvent {
    pub cgrp: Cgroup,
    pub path: KernelStr,
}

impl CgroupEvent {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            // SAFETY: the first argument is the `struct cgroup *`.
            cgrp: unsafe { Cgroup::from_addr(arg(ctx, 0)) },
            path: KernelStr(arg(ctx, 1) as *const u8),
        }
    }
}

/// `memcg:mod_memcg_lruvec_state` (6.16+), fired on every memcg stat update.
///
/// ```text
/// include/trace/events/memcg.h:
///     TP_PROTO(struct mem_cgroup *memcg, int item, int val)
/// ```
pub struct ModMemcgLruvecState {
    pub memcg: Memcg,
    /// An `enum node_stat_item`.
    pub item: StatItem,
    pub val: i32,
}

impl ModMemcgLruvecState {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            // SAFETY: the first argument is the `struct mem_cgroup *`.
            memcg: unsafe { Memcg::from_addr(arg(ctx, 0)) },
            item: StatItem(arg_u32(ctx, 1)),
            val: arg_u32(ctx, 2).cast_signed(),
        }
    }
}

/// `filemap:mm_filemap_add_to_page_cache` and `filemap:mm_filemap_delete_from_page_cache`.
///
/// ```text
/// include/trace/events/filemap.h (6.1 … 6.18):
///     DEFINE_EVENT(mm_filemap_op_page_cache, mm_filemap_add_to_page_cache,
///         TP_PROTO(struct folio *folio), …)     after the folio was charged and inserted
///     DEFINE_EVENT(mm_filemap_op_page_cache, mm_filemap_delete_from_page_cache,
///         TP_PROTO(struct folio *folio), …)     before it is uncharged
/// ```
pub struct FilemapOp {
    pub folio: Folio,
}

impl FilemapOp {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            // SAFETY: the only argument is the `struct folio *`.
            folio: unsafe { Folio::from_addr(arg(ctx, 0)) },
        }
    }
}

/// `pagemap:mm_lru_insertion`, fired for every folio put on an LRU list (when a per-CPU batch
/// is drained), tmpfs/shmem folios included.
///
/// ```text
/// include/trace/events/pagemap.h:
///     TRACE_EVENT(mm_lru_insertion, TP_PROTO(struct folio *folio), …)
/// ```
pub struct LruInsertion {
    pub folio: Folio,
}

impl LruInsertion {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            // SAFETY: the only argument is the `struct folio *`.
            folio: unsafe { Folio::from_addr(arg(ctx, 0)) },
        }
    }
}

/// `vmscan:mm_vmscan_memcg_reclaim_begin`.
///
/// ```text
/// include/trace/events/vmscan.h (the order of the two differs between kernels: the loader
/// finds each by its type in the raw tracepoint's BTF prototype):
///     DEFINE_EVENT(mm_vmscan_direct_reclaim_begin_template, mm_vmscan_memcg_reclaim_begin,
///         TP_PROTO(int order, gfp_t gfp_flags), …)
/// ```
pub struct MemcgReclaimBegin {
    pub order: u32,
    pub gfp_flags: Gfp,
}

impl MemcgReclaimBegin {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        let o = offsets();
        // The verifier only allows constant context offsets: both are read, and the loader's
        // positions pick.
        let args = [arg(ctx, 0), arg(ctx, 1)];
        #[expect(clippy::cast_possible_truncation, reason = "an int widened to u64")]
        let order = args[usize::from(o.reclaim_begin_order_arg != 0)] as u32;
        Self {
            order,
            gfp_flags: Gfp(args[usize::from(o.reclaim_begin_gfp_arg != 0)]),
        }
    }
}

/// `vmscan:mm_vmscan_memcg_reclaim_end`.
///
/// ```text
/// include/trace/events/vmscan.h:
///     DEFINE_EVENT(mm_vmscan_direct_reclaim_end_template, mm_vmscan_memcg_reclaim_end,
///         TP_PROTO(unsigned long nr_reclaimed), …)
/// ```
pub struct MemcgReclaimEnd {
    pub nr_reclaimed: u64,
}

impl MemcgReclaimEnd {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            nr_reclaimed: arg(ctx, 0),
        }
    }
}

/// `kmem:kmem_cache_alloc`.
///
/// ```text
/// include/trace/events/kmem.h (6.1 … 6.18):
///     TP_PROTO(unsigned long call_site, const void *ptr, struct kmem_cache *s,
///              gfp_t gfp_flags, int node)
/// ```
pub struct KmemCacheAlloc {
    /// The object (0 when the allocation failed) and its cache: the arguments it shares with
    /// `kmem_cache_free`.
    pub object: KmemCacheFree,
    pub gfp_flags: Gfp,
}

impl KmemCacheAlloc {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            object: KmemCacheFree::from_ctx(ctx),
            gfp_flags: Gfp(arg(ctx, 3)),
        }
    }
}

/// `kmem:kmalloc`.
///
/// ```text
/// include/trace/events/kmem.h (6.1 … 6.18):
///     TP_PROTO(unsigned long call_site, const void *ptr, size_t bytes_req,
///              size_t bytes_alloc, gfp_t gfp_flags, int node)
/// ```
pub struct Kmalloc {
    pub call_site: u64,
    /// The object; 0 when the allocation failed.
    pub ptr: u64,
    /// Its size class: the `kmalloc-*` cache's size, or whole pages for a large one.
    pub bytes_alloc: u64,
    pub gfp_flags: Gfp,
}

impl Kmalloc {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            call_site: arg(ctx, 0),
            ptr: arg(ctx, 1),
            bytes_alloc: arg(ctx, 3),
            gfp_flags: Gfp(arg(ctx, 4)),
        }
    }
}

/// `kmem:kmem_cache_free`.
///
/// ```text
/// include/trace/events/kmem.h (6.1 … 6.18):
///     TP_PROTO(unsigned long call_site, const void *ptr, const struct kmem_cache *s)
/// ```
pub struct KmemCacheFree {
    pub call_site: u64,
    pub ptr: u64,
    pub s: KmemCache,
}

impl KmemCacheFree {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            call_site: arg(ctx, 0),
            ptr: arg(ctx, 1),
            // SAFETY: the third argument is the `struct kmem_cache *`.
            s: unsafe { KmemCache::from_addr(arg(ctx, 2)) },
        }
    }
}

/// `kmem:kfree`.
///
/// ```text
/// include/trace/events/kmem.h (6.1 … 6.18):
///     TP_PROTO(unsigned long call_site, const void *ptr)
/// ```
pub struct Kfree {
    pub call_site: u64,
    pub ptr: u64,
}

impl Kfree {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self {
            call_site: arg(ctx, 0),
            ptr: arg(ctx, 1),
        }
    }
}

/// `kmem:mm_page_alloc`, raw and classic.
///
/// ```text
/// include/trace/events/kmem.h (6.1 … 6.18):
///     TP_PROTO(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)
/// the classic tracepoint's record (its `format`):
///     field:unsigned long pfn;  offset:8;  size:8;  signed:0;
/// ```
pub struct MmPageAlloc {
    /// The `struct page *`, as an address: the memory-map calibration only compares it.
    pub page: u64,
}

impl MmPageAlloc {
    #[inline(always)]
    pub fn from_ctx(ctx: &RawTracePointContext) -> Self {
        Self { page: arg(ctx, 0) }
    }

    /// The classic tracepoint's `pfn`; userspace checks its offset against the tracepoint's
    /// `format` before attaching.
    ///
    /// # Errors
    ///
    /// When the record cannot be read.
    #[inline(always)]
    pub fn pfn(ctx: &TracePointContext) -> Result<u64, i64> {
        /// After the 8-byte common header.
        const PFN_OFFSET: usize = 8;
        // SAFETY: the record holds `pfn` at PFN_OFFSET; the read is checked by the helper.
        unsafe { ctx.read_at::<u64>(PFN_OFFSET) }.map_err(i64::from)
    }
}
