//! `struct oom_control`.

use super::{Memcg, Task, kernel_ptr, offsets};

kernel_ptr!(
    /// `struct oom_control *`: one OOM kill's context.
    OomControl,
    "struct oom_control *"
);

/// What `oom_control` says about the limit that fired.
pub struct OomLimit {
    /// The memcg whose limit fired; null for a global OOM.
    pub memcg: Memcg,
    /// `enum oom_constraint`, reported raw.
    pub constraint: u32,
    pub totalpages: u64,
}

impl OomControl {
    /// `oc->memcg`, `oc->constraint` and `oc->totalpages`, all or none.
    #[inline(always)]
    pub fn limit(self) -> Option<OomLimit> {
        let o = offsets();
        let (Ok(memcg), Ok(constraint), Ok(totalpages)) = (
            self.read::<*const u8>(o.oom_control_memcg),
            self.read::<u32>(o.oom_control_constraint),
            self.read::<u64>(o.oom_control_totalpages),
        ) else {
            return None;
        };
        Some(OomLimit {
            // SAFETY: `oom_control.memcg` is a `struct mem_cgroup *`.
            memcg: unsafe { Memcg::from_ptr(memcg) },
            constraint,
            totalpages,
        })
    }

    /// `oc->chosen`: the victim.
    ///
    /// # Errors
    ///
    /// When the `oom_control` cannot be read.
    #[inline(always)]
    pub fn chosen(self) -> Result<Task, i64> {
        let task: *const u8 = self.read(offsets().oom_control_chosen)?;
        // SAFETY: `oom_control.chosen` is a `struct task_struct *`.
        Ok(unsafe { Task::from_ptr(task) })
    }
}
