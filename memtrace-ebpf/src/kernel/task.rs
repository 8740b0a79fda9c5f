//! `struct task_struct`.

use super::{Memcg, kernel_ptr, mm::Mm, offsets};

kernel_ptr!(
    /// `struct task_struct *`
    Task,
    "struct task_struct *"
);

impl Task {
    /// The running task.
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: the helper returns the running task's `task_struct *`.
        unsafe { Self::from_addr(aya_ebpf::helpers::bpf_get_current_task()) }
    }

    /// `pid`, `tgid` and `comm`, all or none.
    #[inline(always)]
    pub fn ids(self) -> Option<(u32, u32, [u8; 16])> {
        let o = offsets();
        match (
            self.read::<u32>(o.task_pid),
            self.read::<u32>(o.task_tgid),
            self.read::<[u8; 16]>(o.task_comm),
        ) {
            (Ok(pid), Ok(tgid), Ok(comm)) => Some((pid, tgid, comm)),
            _ => None,
        }
    }

    /// `task->cgroups->subsys[memory_cgrp_id]`: the task's memory css, which is its
    /// `struct mem_cgroup` (the css comes first). This is the memcg, not the cgroup-v2 cgroup
    /// that `bpf_get_current_cgroup_id()` returns (which is useless on v1 and hybrid hosts).
    ///
    /// # Errors
    ///
    /// When a pointer on the way cannot be read.
    #[inline(always)]
    pub fn memcg(self) -> Result<Memcg, i64> {
        let o = offsets();
        let css_set: *const u8 = self.read(o.task_cgroups)?;
        let css: *const u8 = super::read_at(css_set, o.css_set_memory_css)?;
        // SAFETY: `css_set.subsys[memory_cgrp_id]` is the memory css, a `struct mem_cgroup *`.
        Ok(unsafe { Memcg::from_ptr(css) })
    }

    /// The memcg the task's kernel allocations are charged to: `task->active_memcg` when a
    /// `set_active_memcg()` section is open (e.g. a kernel thread working for a cgroup), else
    /// the task's own.
    ///
    /// # Errors
    ///
    /// When a pointer on the way cannot be read.
    #[inline(always)]
    pub fn charge_memcg(self) -> Result<Memcg, i64> {
        let active: *const u8 = self.read(offsets().task_active_memcg)?;
        if active.is_null() {
            self.memcg()
        } else {
            // SAFETY: `task_struct.active_memcg` is a `struct mem_cgroup *`.
            Ok(unsafe { Memcg::from_ptr(active) })
        }
    }

    /// `task->mm`: null for a kernel thread or a task whose memory is already torn down.
    ///
    /// # Errors
    ///
    /// When the task cannot be read.
    #[inline(always)]
    pub fn mm(self) -> Result<Mm, i64> {
        let mm: *const u8 = self.read(offsets().task_mm)?;
        // SAFETY: `task_struct.mm` is a `struct mm_struct *`.
        Ok(unsafe { Mm::from_ptr(mm) })
    }
}
