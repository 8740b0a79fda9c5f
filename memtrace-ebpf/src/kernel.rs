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

/// The memcg a user or page-cache folio is charged to (its `struct mem_cgroup *`), and its
/// pages: `folio->memcg_data` holds the pointer (no flag bits set for such folios), and a large
/// folio keeps its page count in the folio. `None` when the folio is not charged (or is a slab
/// or kmem page).
///
/// # Safety
///
/// `folio` must be a kernel `struct folio` pointer.
#[inline(always)]
pub unsafe fn folio_memcg(
    folio: *const u8,
    o: &memtrace_common::KernelOffsets,
) -> Option<(*const u8, u64)> {
    // SAFETY: each pointer below was read from the kernel; `read_at` checks every access.
    unsafe {
        let memcg_data: u64 = read_at(folio, o.folio_memcg_data).ok()?;
        if memcg_data & u64::from(o.memcg_data_flags) != 0 {
            return None;
        }
        let memcg = memcg_data as *const u8;
        if memcg.is_null() {
            return None;
        }
        let flags: u64 = read_at(folio, o.folio_flags).ok()?;
        let pages = if flags & u64::from(o.pg_head_mask) != 0 {
            read_at::<u32>(folio, o.folio_nr_pages).map_or(1, u64::from)
        } else {
            1
        };
        Some((memcg, pages))
    }
}

/// The memcg (`struct mem_cgroup *`) the current task's kernel allocations are charged to:
/// `current->active_memcg` when a `set_active_memcg()` section is open (e.g. a kernel thread
/// working for a cgroup), else the task's own memcg.
///
/// # Safety
///
/// Calls helpers and reads kernel memory through the checked helper only.
#[inline(always)]
pub unsafe fn current_charge_memcg(o: &memtrace_common::KernelOffsets) -> Result<*const u8, i64> {
    // SAFETY: `bpf_get_current_task` returns the running task; reads are checked.
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task() as *const u8;
        let active: *const u8 = read_at(task, o.task_active_memcg)?;
        if active.is_null() {
            // The memory css is the `mem_cgroup`'s first member.
            let css_set: *const u8 = read_at(task, o.task_cgroups)?;
            read_at(css_set, o.css_set_memory_css)
        } else {
            Ok(active)
        }
    }
}
