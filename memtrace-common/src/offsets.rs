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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// `mm_struct.rss_stat[MM_FILEPAGES]` counter (its `count` member where the element is a
    /// `percpu_counter`).
    pub mm_file_rss: u32,
    /// `mm_struct.rss_stat[MM_ANONPAGES]` counter.
    pub mm_anon_rss: u32,
    /// `mm_struct.rss_stat[MM_SHMEMPAGES]` counter.
    pub mm_shmem_rss: u32,
    /// [`MARK_VICTIM_ARG_TASK`] or [`MARK_VICTIM_ARG_PID`].
    pub mark_victim_arg: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 56);

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
        mm_file_rss: 0,
        mm_anon_rss: 0,
        mm_shmem_rss: 0,
        mark_victim_arg: MARK_VICTIM_ARG_TASK,
        pad: 0,
    };
}

// SAFETY: `KernelOffsets` is `#[repr(C)]`, holds only `u32`s and has no padding bytes (the
// size assertion above pins its layout), so every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
