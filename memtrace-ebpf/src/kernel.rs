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

/// The first `8 × N` bytes of a kernel struct, read with one helper call: hot paths take
/// several members of a struct for the price of one read.
pub struct Block<const N: usize>([u64; N]);

impl<const N: usize> Block<N> {
    /// # Safety
    ///
    /// `base` must be a kernel pointer (possibly null or stale: the helper checks).
    #[inline(always)]
    pub unsafe fn read(base: *const u8) -> Option<Self> {
        // SAFETY: the helper validates the address; a bad one yields an error, never a fault.
        unsafe { bpf_probe_read_kernel(base.cast::<[u64; N]>()) }
            .ok()
            .map(Block)
    }

    /// The `u64` member at byte `offset`: from the block when it holds it, else read on its own.
    ///
    /// # Safety
    ///
    /// `base` must be the pointer the block was read from.
    #[inline(always)]
    pub unsafe fn u64_at(&self, base: *const u8, offset: u32) -> Option<u64> {
        match self.0.get(offset as usize / 8) {
            Some(&word) if offset % 8 == 0 => Some(word),
            // SAFETY: as the caller promises.
            _ => unsafe { read_at(base, offset) }.ok(),
        }
    }

    /// The `u32` member at byte `offset`, likewise.
    ///
    /// # Safety
    ///
    /// `base` must be the pointer the block was read from.
    #[inline(always)]
    pub unsafe fn u32_at(&self, base: *const u8, offset: u32) -> Option<u32> {
        match self.0.get(offset as usize / 8) {
            // The low half: BPF is little-endian.
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the low half is the member"
            )]
            Some(&word) if offset % 8 == 0 => Some(word as u32),
            Some(&word) if offset % 8 == 4 => Some((word >> 32) as u32),
            // SAFETY: as the caller promises.
            _ => unsafe { read_at(base, offset) }.ok(),
        }
    }
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
    // SAFETY: `folio` is a kernel pointer; every read is checked by the helper.
    unsafe { folio_memcg_in(&Block::<8>::read(folio)?, folio, o) }
}

/// [`folio_memcg`] from the folio's first bytes, already read.
///
/// # Safety
///
/// `block` must have been read from `folio`, a kernel `struct folio` pointer.
#[inline(always)]
pub unsafe fn folio_memcg_in<const N: usize>(
    block: &Block<N>,
    folio: *const u8,
    o: &memtrace_common::KernelOffsets,
) -> Option<(*const u8, u64)> {
    // SAFETY: reads are checked by the helper.
    unsafe {
        let memcg_data = block.u64_at(folio, o.folio_memcg_data)?;
        if memcg_data & u64::from(o.memcg_data_flags) != 0 {
            return None;
        }
        let memcg = memcg_data as *const u8;
        if memcg.is_null() {
            return None;
        }
        let flags = block.u64_at(folio, o.folio_flags)?;
        let pages = if flags & u64::from(o.pg_head_mask) != 0 {
            block.u32_at(folio, o.folio_nr_pages).map_or(1, u64::from)
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

/// `memcg_data`/`obj_exts` flag: the word points to a slab's per-object charge records
/// (`MEMCG_DATA_OBJEXTS`, `MEMCG_DATA_OBJCGS` before 6.10).
const MEMCG_DATA_OBJEXTS: u64 = 1;
/// `memcg_data` flag: a kernel-memory page (a large `kmalloc()`), charged to an `obj_cgroup`.
const MEMCG_DATA_KMEM: u64 = 2;
/// The flag bits of those words (`OBJEXTS_FLAGS_MASK` is 7 on 6.10+, 3 before): records and
/// `obj_cgroup`s are 8-byte aligned.
const MEMCG_DATA_FLAGS: u64 = 7;
const PAGE_SHIFT: u64 = 12;

/// Whom the kernel charged a slab object (or a large `kmalloc()`) to, and its size.
pub struct SlabOwner {
    /// `struct obj_cgroup *`: its `memcg` is the memcg charged (the parent's once the memcg is
    /// gone). Hot paths key on it and read the memcg once per key and interval.
    pub objcg: *const u8,
    /// The object's charged size: its cache's `size`, or the pages of a large `kmalloc()`.
    pub bytes: u64,
}

/// The `obj_cgroup` the kernel charged the object at `ptr` to, read from its slab as the
/// kernel's own `mem_cgroup_from_obj()` does: `virt_to_slab()`, then the object's record in the
/// slab's `obj_exts` vector (indexed as `obj_to_index()`). A large `kmalloc()` has no slab: its
/// page's `memcg_data` names the `obj_cgroup`. `None` for objects not charged to any memcg (the
/// root's, or not accounted).
///
/// `cache` is the object's `struct kmem_cache *` when the tracepoint gives it, else null (it is
/// then read from the slab); `cache_size` its `size` when the caller has read it, else 0.
///
/// # Safety
///
/// `ptr` must be a kernel address; reads are checked by the helper.
#[inline(always)]
pub unsafe fn slab_object_owner(
    ptr: u64,
    cache: *const u8,
    cache_size: u32,
    o: &memtrace_common::KernelOffsets,
    m: &memtrace_common::MemoryMap,
) -> Option<SlabOwner> {
    let page_size = u64::from(o.page_size);
    if page_size == 0 || m.vmemmap_base == 0 {
        return None;
    }
    let pfn = ptr.wrapping_sub(m.page_offset_base) >> PAGE_SHIFT;
    let page = m.vmemmap_base.wrapping_add(pfn.wrapping_mul(page_size));
    // SAFETY: each address below was computed from, or read from, the kernel's own structures;
    // the helper checks every access.
    unsafe {
        let mut head = page as *const u8;
        let mut block = Block::<8>::read(head)?;
        let compound = block.u64_at(head, o.page_compound_head)?;
        if compound & 1 != 0 {
            head = (compound - 1) as *const u8;
            block = Block::<8>::read(head)?;
        }
        let data = block.u64_at(head, o.slab_obj_exts)?;
        let vector = data & !MEMCG_DATA_FLAGS;
        if vector == 0 {
            return None;
        }
        let (objcg, bytes) = if data & MEMCG_DATA_OBJEXTS != 0 {
            let cache = if cache.is_null() {
                block.u64_at(head, o.slab_cache)? as *const u8
            } else {
                cache
            };
            let size = u64::from(if cache_size == 0 {
                read_at::<u32>(cache, o.kmem_cache_size).ok()?
            } else {
                cache_size
            });
            if size == 0 {
                return None;
            }
            let head_pfn = (head as u64).wrapping_sub(m.vmemmap_base) / page_size;
            let first = m.page_offset_base.wrapping_add(head_pfn << PAGE_SHIFT);
            let index = ptr.wrapping_sub(first) / size;
            let record = vector.wrapping_add(index.wrapping_mul(u64::from(o.slab_obj_ext_size)));
            (read_at::<u64>(record as *const u8, 0).ok()?, size)
        } else if data & MEMCG_DATA_KMEM != 0 {
            let flags = block.u64_at(head, o.folio_flags)?;
            let pages = if flags & u64::from(o.pg_head_mask) != 0 {
                read_at::<u32>(head, o.folio_nr_pages).map_or(1, u64::from)
            } else {
                1
            };
            (vector, pages << PAGE_SHIFT)
        } else {
            return None;
        };
        (objcg != 0).then_some(SlabOwner {
            objcg: objcg as *const u8,
            bytes,
        })
    }
}
