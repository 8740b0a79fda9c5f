//! Map, program and global names, defined once for both sides.

/// Ring buffer carrying rare events (OOM kills, …) one by one.
pub const EVENTS_MAP: &str = "EVENTS";
/// Per-CPU array of lost-event counters, indexed by [`crate::LostKind`].
pub const LOST_MAP: &str = "LOST";
/// The [`crate::KernelOffsets`] global, filled in from the running kernel's BTF before load.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// The OOM strategies: raw tracepoint on `oom:mark_victim`, and fentry and kprobe on
/// [`OOM_KILL_FUNCTION`].
pub const PROG_OOM_MARK_VICTIM: &str = "oom_mark_victim";
pub const PROG_OOM_FENTRY: &str = "oom_kill_process_fentry";
pub const PROG_OOM_KPROBE: &str = "oom_kill_process_kprobe";
/// Chooses the OOM victim's fate and has the `oom_control` (`mm/oom_kill.c`).
pub const OOM_KILL_FUNCTION: &str = "oom_kill_process";

/// Which of the two maps of each aggregate the programs write to (`Array<u32>`, index 0).
pub const AGG_ACTIVE_MAP: &str = "AGG_ACTIVE";
/// Page-cache deltas per memcg, double-buffered.
pub const CACHE_MEMCG_MAPS: [&str; 2] = ["CACHE_MEMCG_0", "CACHE_MEMCG_1"];
/// Where a half of [`CACHE_MEMCG_MAPS`] counts a key it could not insert (preallocated).
pub const CACHE_MEMCG_SPILL_MAPS: [&str; 2] = ["CACHE_MEMCG_SPILL_0", "CACHE_MEMCG_SPILL_1"];
/// Page-cache deltas per (memcg, file), double-buffered.
pub const CACHE_FILE_MAPS: [&str; 2] = ["CACHE_FILE_0", "CACHE_FILE_1"];
/// Per CPU, per half: the last file key and its count not yet in `CACHE_FILE_<half>`
/// (`PerCpuArray<CacheSlot>`, index: the half).
pub const CACHE_SLOTS_MAP: &str = "CACHE_SLOTS";
/// Memcg pointer → memcg id, for the page-cache aggregates.
pub const MEMCG_IDS_MAP: &str = "MEMCG_IDS";
/// Inode pointer → (inode number, device), for the per-file aggregate.
pub const INODE_IDS_MAP: &str = "INODE_IDS";
/// A [`crate::FilePath`] per file the kernel names for the first time (`RingBuf`).
pub const FILE_PATHS_MAP: &str = "FILE_PATHS";
/// Reclaim episodes in progress, per task.
pub const RECLAIM_BEGIN_MAP: &str = "RECLAIM_BEGIN";
/// Memcg ids the user's filter selects (`HashMap<u64, u8>`), and the global that turns it on.
pub const FILTER_MAP: &str = "FILTER";
pub const FILTER_ENABLED_GLOBAL: &str = "FILTER_ENABLED";

/// Raw tracepoints on the page cache and on memcg reclaim.
pub const PROG_FILEMAP_ADD: &str = "filemap_add";
pub const PROG_FILEMAP_DELETE: &str = "filemap_delete";
/// tmpfs/shmem pages never pass `mm_filemap_add_to_page_cache`: they are counted when they
/// first go on an LRU list (`pagemap:mm_lru_insertion`).
pub const PROG_LRU_INSERTION: &str = "lru_insertion";
/// Refaults (a page-cache add over a shadow entry: a folio evicted not long ago, read again):
/// fentry or kprobe on [`REFAULT_FUNCTION`], which has the folio; or, where neither is allowed,
/// the add program that remembers per CPU the (memcg, file) of its folio
/// ([`PROG_FILEMAP_ADD_REFAULT`]) and the memcg stat update that counts the refault right
/// after it ([`PROG_REFAULT_STAT`]).
pub const PROG_REFAULT_FENTRY: &str = "workingset_refault_fentry";
pub const PROG_REFAULT_KPROBE: &str = "workingset_refault_kprobe";
pub const PROG_FILEMAP_ADD_REFAULT: &str = "filemap_add_refault";
pub const PROG_REFAULT_STAT: &str = "refault_stat";
/// Counts a refault (`mm/workingset.c`), called by `filemap_add_folio()` right after the add
/// tracepoint when the add replaced a shadow entry (and from swap-in, for anon and shmem).
pub const REFAULT_FUNCTION: &str = "workingset_refault";
pub const PROG_RECLAIM_BEGIN: &str = "memcg_reclaim_begin";
pub const PROG_RECLAIM_END: &str = "memcg_reclaim_end";

/// Raw tracepoints on the memory cgroup lifecycle.
pub const PROG_CGROUP_MKDIR: &str = "cgroup_mkdir";
pub const PROG_CGROUP_RMDIR: &str = "cgroup_rmdir";
pub const PROG_CGROUP_RELEASE: &str = "cgroup_release";

/// Capability probes: the smallest program of each type, loaded and attached by
/// `memtrace probes` to learn what the running kernel allows.
pub const PROG_CAP_TRACEPOINT: &str = "cap_tracepoint";
pub const PROG_CAP_RAW_TRACEPOINT: &str = "cap_raw_tracepoint";
pub const PROG_CAP_KPROBE: &str = "cap_kprobe";
pub const PROG_CAP_FENTRY: &str = "cap_fentry";

/// Kernel function the kprobe and fentry capability probes attach to: it exists on every kernel
/// with a memory controller and is where the OOM strategies of later kernels will hook.
pub const CAP_PROBE_FUNCTION: &str = "oom_kill_process";

/// Charges: fexit, or kprobe + kretprobe, on [`CHARGE_FUNCTION`]; or the memcg stat-update raw
/// tracepoint on kernels that refuse both.
pub const PROG_CHARGE_FEXIT: &str = "mem_cgroup_charge_fexit";
pub const PROG_CHARGE_KPROBE: &str = "mem_cgroup_charge_kprobe";
pub const PROG_CHARGE_KRETPROBE: &str = "mem_cgroup_charge_kretprobe";
pub const PROG_CHARGE_STAT: &str = "memcg_lruvec_stat";
/// Charges a user or page-cache folio to a memcg (`mm/memcontrol.c`, 5.16+).
pub const CHARGE_FUNCTION: &str = "__mem_cgroup_charge";
/// The same, charging a `struct page *` (5.8 to 5.15; an inline wrapper since), tried when
/// the kernel has no [`CHARGE_FUNCTION`].
pub const CHARGE_PAGE_FUNCTION: &str = "mem_cgroup_charge";
/// Pages charged per memcg, double-buffered.
pub const CHARGE_MAPS: [&str; 2] = ["CHARGE_0", "CHARGE_1"];
/// Where a half of [`CHARGE_MAPS`] counts a key it could not insert (preallocated).
pub const CHARGE_SPILL_MAPS: [&str; 2] = ["CHARGE_SPILL_0", "CHARGE_SPILL_1"];
/// Folios between the charge kprobe and its kretprobe, per task.
pub const CHARGE_PENDING_MAP: &str = "CHARGE_PENDING";

/// Charge failures: fexit, or kprobe + kretprobe, on [`TRY_CHARGE_FUNCTION`].
pub const PROG_TRY_CHARGE_FEXIT: &str = "try_charge_memcg_fexit";
pub const PROG_TRY_CHARGE_KPROBE: &str = "try_charge_memcg_kprobe";
pub const PROG_TRY_CHARGE_KRETPROBE: &str = "try_charge_memcg_kretprobe";
/// Charges pages to a memcg's page counter, reclaiming and OOM-killing when over the limit
/// (`mm/memcontrol.c`, 5.17+; `try_charge` before).
pub const TRY_CHARGE_FUNCTION: &str = "try_charge_memcg";
/// Its name before 5.14, with the same arguments, tried when the kernel has no
/// [`TRY_CHARGE_FUNCTION`].
pub const TRY_CHARGE_OLD_FUNCTION: &str = "try_charge";
/// `try_charge_memcg` arguments between its kprobe and its kretprobe, per task.
pub const TRY_CHARGE_PENDING_MAP: &str = "TRY_CHARGE_PENDING";

/// Slab: raw tracepoints on allocations and frees.
pub const PROG_SLAB_CACHE_ALLOC: &str = "slab_cache_alloc";
pub const PROG_SLAB_KMALLOC: &str = "slab_kmalloc";
pub const PROG_SLAB_CACHE_FREE: &str = "slab_cache_free";
pub const PROG_SLAB_KFREE: &str = "slab_kfree";
/// Slab, where the memory map could not be measured: the same tracepoints, each counted object
/// remembered by address until its free.
pub const PROG_SLAB_CACHE_ALLOC_TRACKED: &str = "slab_cache_alloc_tracked";
pub const PROG_SLAB_KMALLOC_TRACKED: &str = "slab_kmalloc_tracked";
pub const PROG_SLAB_CACHE_FREE_TRACKED: &str = "slab_cache_free_tracked";
pub const PROG_SLAB_KFREE_TRACKED: &str = "slab_kfree_tracked";
/// Slab where the `kmem_cache_*` tracepoints do not pass the cache (5.10): fexit on the
/// allocating functions and fentry on the freeing one, next to the `kmalloc` raw tracepoints
/// (the NUMA ones too: 5.10 fires `kmalloc_node` for `kmalloc_node()`). Counted by the kernel's
/// charge records, or tracked.
pub const PROG_SLAB_CACHE_ALLOC_FEXIT: &str = "slab_cache_alloc_fexit";
pub const PROG_SLAB_CACHE_ALLOC_NODE_FEXIT: &str = "slab_cache_alloc_node_fexit";
pub const PROG_SLAB_CACHE_FREE_FENTRY: &str = "slab_cache_free_fentry";
pub const PROG_SLAB_KMALLOC_NODE: &str = "slab_kmalloc_node";
pub const PROG_SLAB_CACHE_ALLOC_FEXIT_TRACKED: &str = "slab_cache_alloc_fexit_tracked";
pub const PROG_SLAB_CACHE_ALLOC_NODE_FEXIT_TRACKED: &str = "slab_cache_alloc_node_fexit_tracked";
pub const PROG_SLAB_CACHE_FREE_FENTRY_TRACKED: &str = "slab_cache_free_fentry_tracked";
pub const PROG_SLAB_KMALLOC_NODE_TRACKED: &str = "slab_kmalloc_node_tracked";
/// The functions those programs attach to.
pub const KMEM_CACHE_ALLOC_FUNCTION: &str = "kmem_cache_alloc";
pub const KMEM_CACHE_ALLOC_NODE_FUNCTION: &str = "kmem_cache_alloc_node";
pub const KMEM_CACHE_FREE_FUNCTION: &str = "kmem_cache_free";
/// Measuring the memory map at start-up: raw and classic `kmem:mm_page_alloc`, raw `kmalloc`.
pub const PROG_MEMMAP_PAGE: &str = "memmap_page";
pub const PROG_MEMMAP_PFN: &str = "memmap_pfn";
pub const PROG_MEMMAP_KMALLOC: &str = "memmap_kmalloc";
/// The same on `kmalloc_node`, where the kernel has it (before 6.1).
pub const PROG_MEMMAP_KMALLOC_NODE: &str = "memmap_kmalloc_node";
/// What they saw ([`crate::aggregate::MemoryMapSample`]s).
pub const MEMMAP_SAMPLES_MAP: &str = "MEMMAP_SAMPLES";
/// The thread group they watch.
pub const MEMMAP_TGID_GLOBAL: &str = "MEMMAP_TGID";
/// `MEMORY_MAP[0]`: the measured [`crate::aggregate::MemoryMap`].
pub const MEMORY_MAP_MAP: &str = "MEMORY_MAP";
/// Accounted slab bytes per (memcg, cache), double-buffered.
pub const SLAB_MAPS: [&str; 2] = ["SLAB_0", "SLAB_1"];
/// Where a half of [`SLAB_MAPS`] counts a key it could not insert (preallocated).
pub const SLAB_SPILL_MAPS: [&str; 2] = ["SLAB_SPILL_0", "SLAB_SPILL_1"];
/// Live accounted objects → what their free is attributed to.
pub const SLAB_OBJECTS_MAP: &str = "SLAB_OBJECTS";
/// `IGNORED_CALLERS[0]`: the [`crate::aggregate::IgnoredCallers`], written before the slab
/// programs attach.
pub const IGNORED_CALLERS_MAP: &str = "IGNORED_CALLERS";
/// Functions of the BPF memory allocator (`kernel/bpf/memalloc.c`) that call `kmalloc()` or
/// `kfree()` (the others, where the compiler inlined them, are not in kallsyms).
pub const BPF_MEMALLOC_FUNCTIONS: [&str; 8] = [
    "__alloc",
    "alloc_bulk",
    "free_one",
    "free_all",
    "__free_rcu",
    "__free_rcu_tasks_trace",
    "drain_mem_cache",
    "__free_by_rcu",
];
/// `struct kmem_cache *` → its name.
pub const CACHE_NAMES_MAP: &str = "CACHE_NAMES";

/// Empty programs on the hot-path raw tracepoints, for `cargo xtask bench`'s floor:
/// (program, raw tracepoint).
pub const FLOOR_PROGRAMS: [(&str, &str); 7] = [
    ("floor_kmem_cache_alloc", "kmem_cache_alloc"),
    ("floor_kmalloc", "kmalloc"),
    ("floor_kmem_cache_free", "kmem_cache_free"),
    ("floor_kfree", "kfree"),
    ("floor_filemap_add", "mm_filemap_add_to_page_cache"),
    ("floor_filemap_delete", "mm_filemap_delete_from_page_cache"),
    ("floor_memcg_lruvec_stat", "mod_memcg_lruvec_state"),
];
/// The count floor's programs (one per-CPU hash count per event), on the same tracepoints as
/// [`FLOOR_PROGRAMS`].
pub const COUNT_FLOOR_PROGRAMS: [(&str, &str); 7] = [
    ("count_floor_kmem_cache_alloc", "kmem_cache_alloc"),
    ("count_floor_kmalloc", "kmalloc"),
    ("count_floor_kmem_cache_free", "kmem_cache_free"),
    ("count_floor_kfree", "kfree"),
    ("count_floor_filemap_add", "mm_filemap_add_to_page_cache"),
    (
        "count_floor_filemap_delete",
        "mm_filemap_delete_from_page_cache",
    ),
    ("count_floor_memcg_lruvec_stat", "mod_memcg_lruvec_state"),
];

/// The kfunc the programs read kernel memory in place with, where the kernel has it (6.2+:
/// [`crate::direct`]).
pub const RDONLY_CAST_KFUNC: &str = "bpf_rdonly_cast";
