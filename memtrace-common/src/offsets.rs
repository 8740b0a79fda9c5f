//! Struct member offsets the programs need, read from the running kernel's BTF at start-up.
//!
//! aya cannot emit CO-RE relocations, so the loader resolves each offset by name in
//! `/sys/kernel/btf/vmlinux` and overrides the [`crate::names::OFFSETS_GLOBAL`] global with this
//! struct before the programs are loaded.

/// `mark_victim`'s first argument is the victim `task_struct *` (kernels since 6.8).
pub const MARK_VICTIM_ARG_TASK: u32 = 1;
/// `mark_victim`'s first argument is the victim's pid only (older kernels, e.g. 6.1).
pub const MARK_VICTIM_ARG_PID: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KernelOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.cgroups` (`struct css_set *`)
    pub task_cgroups: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `css_set.subsys[memory_cgrp_id]`: the offset of the array element, not the array.
    pub css_set_memory_css: u32,
    /// `cgroup_subsys_state.cgroup`
    pub css_cgroup: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: the cgroup directory's inode number on 64-bit kernels.
    pub kernfs_node_id: u32,
    /// `kernfs_node.__parent` (6.15+) or `.parent`: a cgroup's parent directory.
    pub kernfs_node_parent: u32,
    /// `mm_struct.rss_stat[MM_FILEPAGES]` counter (its `count` member where the element is a
    /// `percpu_counter`).
    pub mm_file_rss: u32,
    /// `mm_struct.rss_stat[MM_ANONPAGES]` counter.
    pub mm_anon_rss: u32,
    /// `mm_struct.rss_stat[MM_SHMEMPAGES]` counter.
    pub mm_shmem_rss: u32,
    /// [`MARK_VICTIM_ARG_TASK`] or [`MARK_VICTIM_ARG_PID`].
    pub mark_victim_arg: u32,
    /// `cgroup.root` (`struct cgroup_root *`)
    pub cgroup_root: u32,
    /// `cgroup_root.subsys_mask`: which controllers the hierarchy carries.
    pub cgroup_root_subsys_mask: u32,
    /// `1 << memory_cgrp_id`
    pub memory_subsys_bit: u32,
    /// `cgroup.subsys[memory_cgrp_id]`: the cgroup's own memory css (the `mem_cgroup`, whose
    /// first member is that css), null when memory is not enabled for it.
    pub cgroup_memory_css: u32,
    /// `mem_cgroup.memory.usage` (a `page_counter`'s `atomic_long_t`, in pages).
    pub memcg_usage: u32,
    /// `folio.memcg_data`: the `mem_cgroup *` with flag bits below [`Self::memcg_data_flags`]
    /// (`page.mem_cgroup` on 5.10, whose union with `page.obj_cgroups` tags that vector with
    /// bit 0).
    pub folio_memcg_data: u32,
    /// Flag bits of `memcg_data` (`__NR_MEMCG_DATA_FLAGS - 1`): a page-cache folio has none set.
    pub memcg_data_flags: u32,
    /// `folio.flags`
    pub folio_flags: u32,
    /// `1 << PG_head`: a large folio, whose page count is in [`Self::folio_nr_pages`].
    pub pg_head_mask: u32,
    /// `folio._nr_pages` (6.9+) or `folio._folio_nr_pages` (before); 0 on kernels without
    /// `struct folio` (5.10), whose page count is `1 << ` the byte at [`Self::folio_order`].
    pub folio_nr_pages: u32,
    /// On kernels without `struct folio` (5.10), where the filemap tracepoints and the charge
    /// function pass a `struct page *` and every `folio_*` offset here is the page's member:
    /// the offset from a head page of its order byte (`page[1].compound_order`). 0 where the
    /// folio keeps its page count ([`Self::folio_nr_pages`]).
    pub folio_order: u32,
    /// `folio.mapping` → `address_space.host` → `inode.i_ino`, `inode.i_sb` → `s_dev`.
    pub folio_mapping: u32,
    pub mapping_host: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// Argument positions of `mm_vmscan_memcg_reclaim_begin` (`order`, `gfp_flags`), from the
    /// tracepoint's BTF prototype.
    pub reclaim_begin_order_arg: u32,
    pub reclaim_begin_gfp_arg: u32,
    /// `mem_cgroup.memory.max` (pages).
    pub memcg_max: u32,
    /// `oom_control.memcg`, `.chosen`, `.totalpages`, `.constraint`.
    pub oom_control_memcg: u32,
    pub oom_control_chosen: u32,
    pub oom_control_totalpages: u32,
    pub oom_control_constraint: u32,
    /// `task_struct.active_memcg`: the memcg a kernel thread or a `set_active_memcg()` section
    /// charges to instead of the task's own.
    pub task_active_memcg: u32,
    /// `kmem_cache.flags`, `.size` (bytes per object, what is charged), `.name`.
    pub kmem_cache_flags: u32,
    pub kmem_cache_size: u32,
    pub kmem_cache_name: u32,
    /// `SLAB_ACCOUNT`: `1 << _SLAB_ACCOUNT` (6.9+, config-dependent) or `0x04000000` before.
    pub slab_account_flag: u32,
    /// `__GFP_ACCOUNT`: `1 << ___GFP_ACCOUNT_BIT` (6.10+) or `0x400000` before.
    pub gfp_account_flag: u32,
    /// `enum node_stat_item` values `NR_ANON_MAPPED` and `NR_FILE_PAGES`: the stat updates the
    /// `memcg:mod_memcg_lruvec_state` charge fallback counts.
    pub nr_anon_mapped: u32,
    pub nr_file_pages: u32,
    /// `enum node_stat_item` value `WORKINGSET_REFAULT_FILE` (5.9+): the stat update whose
    /// increase is a page-cache refault, which the `raw_tp` page-cache strategy counts.
    pub workingset_refault_file: u32,
    /// `sizeof(struct page)`, and `page.compound_head` (a tail page's head, plus 1).
    pub page_size: u32,
    pub page_compound_head: u32,
    /// `slab.slab_cache`, and `slab.obj_exts` (6.10+) or `slab.memcg_data` (before): the
    /// vector of per-object charge records, flag bits in its low 3 bits.
    pub slab_cache: u32,
    pub slab_obj_exts: u32,
    /// Bytes per record of that vector (`struct slabobj_ext`, or an `obj_cgroup *` before
    /// 6.10); the record starts with the object's `obj_cgroup *`.
    pub slab_obj_ext_size: u32,
    /// `obj_cgroup.memcg`
    pub obj_cgroup_memcg: u32,
    /// `memcg_data`/`obj_exts` flag `MEMCG_DATA_OBJEXTS` (6.10+; `MEMCG_DATA_OBJCGS` before):
    /// the word points to a slab's per-object charge records.
    pub memcg_data_objexts: u32,
    /// `memcg_data` flag `MEMCG_DATA_KMEM`: a kernel-memory page (a large `kmalloc()`), charged
    /// to an `obj_cgroup`.
    pub memcg_data_kmem: u32,
    /// Flag bits of `slab.obj_exts` (`OBJEXTS_FLAGS_MASK`: `__NR_OBJEXTS_FLAGS - 1`, 6.10+), or
    /// of `slab.memcg_data` before (`__NR_MEMCG_DATA_FLAGS - 1`).
    pub obj_exts_flags: u32,
    /// 1 when the `kmem_cache_alloc` and `kmem_cache_free` tracepoints pass the
    /// `struct kmem_cache *` as their third argument (6.0+), which the slab programs read; 0
    /// when they do not (5.10), and the slab strategies on them are refused.
    pub kmem_tracepoints_pass_cache: u32,
    /// `inode.i_nlink` (0: deleted), `inode.i_dentry` (the `hlist_head` of its dentries),
    /// `super_block.s_magic`.
    pub inode_nlink: u32,
    pub inode_dentry: u32,
    pub sb_magic: u32,
    /// `dentry.d_u.d_alias` (the `hlist_node` in its inode's `i_dentry`), `dentry.d_parent`,
    /// `dentry.d_name.name` (`const unsigned char *`), `dentry.d_hash.pprev` (null: unhashed).
    pub dentry_alias: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub dentry_hash_pprev: u32,
    /// `1 << PG_swapbacked`: with a file mapping, a tmpfs/shmem folio.
    pub pg_swapbacked_mask: u32,
    /// Where the programs read kernel memory in place (the kernel has `bpf_rdonly_cast()`,
    /// 6.2+, and the loader patched its calls in: [`crate::direct`]), the BTF id of the struct
    /// they cast an address to, to load the number there: `struct folio`, whose first member
    /// is a 64-bit number (`flags`). 0 where they read through `bpf_probe_read_kernel`.
    pub in_place_btf_id: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 260);

impl KernelOffsets {
    pub const ZERO: Self = Self {
        task_pid: 0,
        task_tgid: 0,
        task_comm: 0,
        task_cgroups: 0,
        task_mm: 0,
        css_set_memory_css: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        kernfs_node_parent: 0,
        mm_file_rss: 0,
        mm_anon_rss: 0,
        mm_shmem_rss: 0,
        mark_victim_arg: MARK_VICTIM_ARG_TASK,
        cgroup_root: 0,
        cgroup_root_subsys_mask: 0,
        memory_subsys_bit: 0,
        cgroup_memory_css: 0,
        memcg_usage: 0,
        folio_memcg_data: 0,
        memcg_data_flags: 0,
        folio_flags: 0,
        pg_head_mask: 0,
        folio_nr_pages: 0,
        folio_order: 0,
        folio_mapping: 0,
        mapping_host: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        reclaim_begin_order_arg: 0,
        reclaim_begin_gfp_arg: 1,
        memcg_max: 0,
        oom_control_memcg: 0,
        oom_control_chosen: 0,
        oom_control_totalpages: 0,
        oom_control_constraint: 0,
        task_active_memcg: 0,
        kmem_cache_flags: 0,
        kmem_cache_size: 0,
        kmem_cache_name: 0,
        slab_account_flag: 0,
        gfp_account_flag: 0,
        nr_anon_mapped: u32::MAX,
        nr_file_pages: u32::MAX,
        workingset_refault_file: u32::MAX,
        page_size: 0,
        page_compound_head: 0,
        slab_cache: 0,
        slab_obj_exts: 0,
        slab_obj_ext_size: 0,
        obj_cgroup_memcg: 0,
        memcg_data_objexts: 0,
        memcg_data_kmem: 0,
        obj_exts_flags: 0,
        kmem_tracepoints_pass_cache: 0,
        inode_nlink: 0,
        inode_dentry: 0,
        sb_magic: 0,
        dentry_alias: 0,
        dentry_parent: 0,
        dentry_name: 0,
        dentry_hash_pprev: 0,
        pg_swapbacked_mask: 0,
        in_place_btf_id: 0,
    };
}

crate::aya_pod!(KernelOffsets);
