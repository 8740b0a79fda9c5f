//! Reading kernel structs through offsets resolved from BTF by the loader.

use aya_ebpf::helpers::bpf_probe_read_kernel;

/// Reads a `T` at `base + offset` in kernel memory.
///
/// # Safety
///
/// `base` must be a kernel pointer (possibly null or stale: `bpf_probe_read_kernel` checks).
#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i64> {
    // SAFETY: the helper validates the address; a bad one yields an error, never a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(i64::from)
}

/// Follows `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`: the inode number of the
/// task's memory-controller cgroup directory. This is the memcg, not the cgroup-v2 cgroup that
/// `bpf_get_current_cgroup_id()` returns (which is useless on v1 and hybrid hosts).
///
/// # Safety
///
/// `task` must be a kernel `task_struct` pointer.
#[inline(always)]
pub unsafe fn task_memcg_id(
    task: *const u8,
    offsets: &memtrace_common::KernelOffsets,
) -> Result<u64, i64> {
    // SAFETY: each pointer below was read from the kernel; `read_at` checks every access.
    unsafe {
        let css_set: *const u8 = read_at(task, offsets.task_cgroups)?;
        let css: *const u8 = read_at(css_set, offsets.css_set_memory_css)?;
        memcg_id_of(css, offsets)
    }
}

/// The id of a memcg given its css (a `struct mem_cgroup *` is one: the css comes first):
/// `css->cgroup->kn->id`.
///
/// # Safety
///
/// `css` must be a kernel `cgroup_subsys_state` pointer.
#[inline(always)]
pub unsafe fn memcg_id_of(
    css: *const u8,
    offsets: &memtrace_common::KernelOffsets,
) -> Result<u64, i64> {
    // SAFETY: each pointer below was read from the kernel; `read_at` checks every access.
    unsafe {
        let cgroup: *const u8 = read_at(css, offsets.css_cgroup)?;
        let kn: *const u8 = read_at(cgroup, offsets.cgroup_kn)?;
        read_at(kn, offsets.kernfs_node_id)
    }
}
