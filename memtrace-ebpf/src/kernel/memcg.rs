//! `struct mem_cgroup` and `struct obj_cgroup`.

use super::{Cgroup, kernel_ptr, offsets};

kernel_ptr!(
    /// `struct mem_cgroup *`; its first member is its css (`struct cgroup_subsys_state`), so
    /// a memory css pointer is one too.
    Memcg,
    "struct mem_cgroup *"
);

impl Memcg {
    /// `css.cgroup`: the cgroup the memcg is the memory controller of.
    ///
    /// # Errors
    ///
    /// When the memcg cannot be read.
    #[inline(always)]
    pub fn cgroup(self) -> Result<Cgroup, i64> {
        let cgroup: *const u8 = self.read(offsets().css_cgroup)?;
        // SAFETY: `cgroup_subsys_state.cgroup` is a `struct cgroup *`.
        Ok(unsafe { Cgroup::from_ptr(cgroup) })
    }

    /// The memcg's id as userspace knows it: `css->cgroup->kn->id`, the inode number of its
    /// cgroup directory.
    ///
    /// # Errors
    ///
    /// When a pointer on the way cannot be read.
    #[inline(always)]
    pub fn id(self) -> Result<u64, i64> {
        self.cgroup()?.id()
    }

    /// `memory.usage` (a `page_counter`), in pages; clamped at 0 as the kernel reads it.
    ///
    /// # Errors
    ///
    /// When the memcg cannot be read.
    #[inline(always)]
    pub fn usage_pages(self) -> Result<u64, i64> {
        self.read::<i64>(offsets().memcg_usage)
            .map(|u| u.max(0).cast_unsigned())
    }

    /// `memory.max`, in pages.
    ///
    /// # Errors
    ///
    /// When the memcg cannot be read.
    #[inline(always)]
    pub fn max_pages(self) -> Result<u64, i64> {
        self.read(offsets().memcg_max)
    }
}

kernel_ptr!(
    /// `struct obj_cgroup *`: what kernel memory (slab objects, large `kmalloc()`s) is charged
    /// through; its memcg is reparented when the memcg goes away.
    ObjCgroup,
    "struct obj_cgroup *"
);

impl ObjCgroup {
    /// `objcg->memcg`.
    ///
    /// # Errors
    ///
    /// When the `obj_cgroup` cannot be read.
    #[inline(always)]
    pub fn memcg(self) -> Result<Memcg, i64> {
        let memcg: *const u8 = self.read(offsets().obj_cgroup_memcg)?;
        // SAFETY: `obj_cgroup.memcg` is a `struct mem_cgroup *`.
        Ok(unsafe { Memcg::from_ptr(memcg) })
    }
}

/// An `enum node_stat_item` value, as `mod_memcg_lruvec_state` passes it.
#[derive(Clone, Copy)]
pub struct StatItem(pub u32);

impl StatItem {
    /// `NR_ANON_MAPPED` or `NR_FILE_PAGES`: increases of these are user and page-cache pages
    /// newly charged.
    #[inline(always)]
    pub fn counts_charged_pages(self) -> bool {
        let o = offsets();
        self.0 == o.nr_anon_mapped || self.0 == o.nr_file_pages
    }

    /// `WORKINGSET_REFAULT_FILE`: increases are page-cache refaults.
    #[inline(always)]
    pub fn counts_file_refaults(self) -> bool {
        self.0 == offsets().workingset_refault_file
    }
}
