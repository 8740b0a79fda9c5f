//! `struct mm_struct`.

use super::{kernel_ptr, offsets};

kernel_ptr!(
    /// `struct mm_struct *`
    Mm,
    "struct mm_struct *"
);

/// A task's resident pages by kind, as `get_mm_counter()` reads them.
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl Mm {
    /// `rss_stat[MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES]`, all or none.
    #[inline(always)]
    pub fn rss(self) -> Option<Rss> {
        let o = offsets();
        let (Ok(anon), Ok(file), Ok(shmem)) = (
            self.read::<i64>(o.mm_anon_rss),
            self.read::<i64>(o.mm_file_rss),
            self.read::<i64>(o.mm_shmem_rss),
        ) else {
            return None;
        };
        // Per-CPU batched counters can be transiently negative; the kernel clamps the same way
        // (`percpu_counter_read_positive`).
        Some(Rss {
            anon: anon.max(0).cast_unsigned(),
            file: file.max(0).cast_unsigned(),
            shmem: shmem.max(0).cast_unsigned(),
        })
    }
}
