//! `struct cgroup` and its `struct kernfs_node`.

use super::{Memcg, kernel_ptr, offsets};

kernel_ptr!(
    /// `struct cgroup *`
    Cgroup,
    "struct cgroup *"
);

kernel_ptr!(
    /// `struct kernfs_node *`: a cgroup's directory.
    KernfsNode,
    "struct kernfs_node *"
);

impl Cgroup {
    /// `cgrp->kn`
    ///
    /// # Errors
    ///
    /// When the cgroup cannot be read.
    #[inline(always)]
    pub fn kn(self) -> Result<KernfsNode, i64> {
        let kn: *const u8 = self.read(offsets().cgroup_kn)?;
        // SAFETY: `cgroup.kn` is a `struct kernfs_node *`.
        Ok(unsafe { KernfsNode::from_ptr(kn) })
    }

    /// `cgrp->kn->id`: the inode number of the cgroup's directory, the id userspace knows.
    ///
    /// # Errors
    ///
    /// When a pointer on the way cannot be read.
    #[inline(always)]
    pub fn id(self) -> Result<u64, i64> {
        self.kn()?.id()
    }

    /// Whether the cgroup belongs to the hierarchy that carries the memory controller:
    /// `cgrp->root->subsys_mask` has `memory_cgrp_id`'s bit.
    #[inline(always)]
    pub fn on_memory_hierarchy(self) -> bool {
        let o = offsets();
        self.read::<*const u8>(o.cgroup_root)
            .and_then(|root| super::read_at::<u32>(root, o.cgroup_root_subsys_mask))
            .is_ok_and(|mask| mask & o.memory_subsys_bit != 0)
    }

    /// `cgrp->subsys[memory_cgrp_id]`: the cgroup's own memcg; null when memory is not enabled
    /// for it.
    ///
    /// # Errors
    ///
    /// When the cgroup cannot be read.
    #[inline(always)]
    pub fn memcg(self) -> Result<Memcg, i64> {
        let css: *const u8 = self.read(offsets().cgroup_memory_css)?;
        // SAFETY: the memory css is the `struct mem_cgroup`'s first member.
        Ok(unsafe { Memcg::from_ptr(css) })
    }
}

impl KernfsNode {
    /// `kn->id`: the directory's inode number on 64-bit kernels.
    ///
    /// # Errors
    ///
    /// When the node cannot be read.
    #[inline(always)]
    pub fn id(self) -> Result<u64, i64> {
        self.read(offsets().kernfs_node_id)
    }

    /// `kn->__parent` (6.15+) or `kn->parent`.
    ///
    /// # Errors
    ///
    /// When the node cannot be read.
    #[inline(always)]
    pub fn parent(self) -> Result<Self, i64> {
        let parent: *const u8 = self.read(offsets().kernfs_node_parent)?;
        // SAFETY: a `struct kernfs_node *`.
        Ok(unsafe { Self::from_ptr(parent) })
    }
}
