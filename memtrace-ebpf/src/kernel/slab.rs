//! Slab caches (`struct kmem_cache`), and whom the kernel charged a slab object to: read from
//! its slab (`struct slab`, which overlays the head `struct page` of the object's pages).

use core::mem::MaybeUninit;

use memtrace_common::MemoryMap;

use super::{Block, KernelStr, ObjCgroup, Words, direct, kernel_ptr, offsets};

/// x86-64's 4 KiB pages: a macro (`PAGE_SHIFT`), which BTF does not carry, and the same on
/// every x86-64 kernel.
const PAGE_SHIFT: u64 = 12;

kernel_ptr!(
    /// `struct kmem_cache *`
    KmemCache,
    "struct kmem_cache *"
);

/// `gfp_t` allocation flags.
#[derive(Clone, Copy)]
pub struct Gfp(pub u64);

impl Gfp {
    /// `__GFP_ACCOUNT`: the allocation is charged to a memcg.
    #[inline(always)]
    pub fn accounted(self) -> bool {
        self.0 & u64::from(offsets().gfp_account_flag) != 0
    }
}

impl KmemCache {
    /// Whether the cache was created with `SLAB_ACCOUNT` (its objects are charged whatever
    /// the gfp flags), and its `size` (bytes per object, what is charged): both are near the
    /// start of `struct kmem_cache`, one read.
    #[inline(always)]
    pub fn account_and_size(self) -> Option<(bool, u32)> {
        let o = offsets();
        if let Some(memory) = direct::in_place() {
            let flags: u32 = memory.read(self.0, o.kmem_cache_flags);
            return Some((
                flags & o.slab_account_flag != 0,
                memory.read(self.0, o.kmem_cache_size),
            ));
        }
        let mut place = MaybeUninit::uninit();
        let block = Block::<6>::read(self.0, &mut place)?;
        Some((
            block.u32_at(self.0, o.kmem_cache_flags)? & o.slab_account_flag != 0,
            block.u32_at(self.0, o.kmem_cache_size)?,
        ))
    }

    /// Whether the cache was created with `SLAB_ACCOUNT`, alone.
    #[inline(always)]
    pub fn slab_account(self) -> Option<bool> {
        let o = offsets();
        self.read::<u32>(o.kmem_cache_flags)
            .ok()
            .map(|flags| flags & o.slab_account_flag != 0)
    }

    /// `size`, alone.
    #[inline(always)]
    pub fn size(self) -> Option<u32> {
        if let Some(memory) = direct::in_place() {
            return Some(memory.read(self.0, offsets().kmem_cache_size));
        }
        self.read(offsets().kmem_cache_size).ok()
    }

    /// Copies the cache's `name` into `buf`.
    ///
    /// # Errors
    ///
    /// When the cache or its name cannot be read.
    #[inline(always)]
    pub fn read_name(self, buf: &mut [u8]) -> Result<(), i64> {
        KernelStr(self.read(offsets().kmem_cache_name)?)
            .read_into(buf)
            .map(|_| ())
    }
}

/// Whom the kernel charged a slab object (or a large `kmalloc()`) to, and its size.
pub struct SlabOwner {
    /// Its `memcg` is the memcg charged (the parent's once the memcg is gone). Hot paths key on
    /// it and read the memcg once per key and interval.
    pub objcg: ObjCgroup,
    /// The object's charged size: its cache's `size`, or the pages of a large `kmalloc()`.
    pub bytes: u64,
}

impl SlabOwner {
    /// The `obj_cgroup` the kernel charged the object at `ptr` to, read from its slab as the
    /// kernel's own `mem_cgroup_from_obj()` does: `virt_to_slab()`, then the object's record in
    /// the slab's `obj_exts` vector (indexed as `obj_to_index()`). A large `kmalloc()` has no
    /// slab: its page's `memcg_data` names the `obj_cgroup`. `None` for objects not charged to
    /// any memcg (the root's, or not accounted).
    ///
    /// `cache` is the object's cache when the tracepoint gives it, else null (it is then read
    /// from the slab: a null pointer rather than an `Option`, which the compiler turns into two
    /// copies of what follows); `cache_size` its `size` when the caller has read it, else 0. `map` is where this
    /// boot's kernel maps memory, measured at start-up.
    #[inline(always)]
    pub fn of_object(ptr: u64, cache: KmemCache, cache_size: u32, map: &MemoryMap) -> Option<Self> {
        let o = offsets();
        let page_size = u64::from(o.page_size);
        if page_size == 0 || map.vmemmap_base == 0 {
            return None;
        }
        // `virt_to_page()`: the object's `struct page`, then its head (`compound_head`, plus 1
        // in a tail page).
        let pfn = ptr.wrapping_sub(map.page_offset_base) >> PAGE_SHIFT;
        let head = map.vmemmap_base.wrapping_add(pfn.wrapping_mul(page_size)) as *const u8;
        if let Some(memory) = direct::in_place() {
            let compound: u64 = memory.read(head, o.page_compound_head);
            let head = if compound & 1 == 0 {
                head
            } else {
                (compound - 1) as *const u8
            };
            return Self::of_object_at(ptr, head, &memory, cache, cache_size, map);
        }
        let (mut place, mut tail_place) = (MaybeUninit::uninit(), MaybeUninit::uninit());
        let block = Block::<8>::read(head, &mut place)?;
        let compound = block.u64_at(head, o.page_compound_head)?;
        if compound & 1 == 0 {
            return Self::of_object_at(ptr, head, block, cache, cache_size, map);
        }
        let head = (compound - 1) as *const u8;
        let block = Block::<8>::read(head, &mut tail_place)?;
        Self::of_object_at(ptr, head, block, cache, cache_size, map)
    }

    /// [`Self::of_object`] once the head page is found: `head`'s words are read from `words`
    /// (a block of it read through the helper, or in place).
    #[inline(always)]
    fn of_object_at(
        ptr: u64,
        head: *const u8,
        words: &impl Words,
        cache: KmemCache,
        cache_size: u32,
        map: &MemoryMap,
    ) -> Option<Self> {
        let o = offsets();
        let page_size = u64::from(o.page_size);
        let data = words.u64_at(head, o.slab_obj_exts)?;
        let vector = data & !u64::from(o.obj_exts_flags);
        if vector == 0 {
            return None;
        }
        let (objcg, bytes) = if data & u64::from(o.memcg_data_objexts) != 0 {
            let cache = if cache.is_null() {
                // SAFETY: `slab.slab_cache` is a `struct kmem_cache *`.
                unsafe { KmemCache::from_addr(words.u64_at(head, o.slab_cache)?) }
            } else {
                cache
            };
            let size = u64::from(if cache_size == 0 {
                cache.size()?
            } else {
                cache_size
            });
            if size == 0 {
                return None;
            }
            // Not 0 ([`Self::of_object`] checked), which a re-read of the offsets hides from
            // the compiler: `checked_div`, not a division with a panic.
            let head_pfn = (head as u64)
                .wrapping_sub(map.vmemmap_base)
                .checked_div(page_size)?;
            let first = map.page_offset_base.wrapping_add(head_pfn << PAGE_SHIFT);
            let index = ptr.wrapping_sub(first) / size;
            let record = vector.wrapping_add(index.wrapping_mul(u64::from(o.slab_obj_ext_size)));
            // A record starts with the object's `struct obj_cgroup *`.
            (words.word_at(record as *const u8)?, size)
        } else if data & u64::from(o.memcg_data_kmem) != 0 {
            let flags = words.u64_at(head, o.folio_flags)?;
            let pages = if flags & u64::from(o.pg_head_mask) != 0 {
                words.u32_at(head, o.folio_nr_pages).map_or(1, u64::from)
            } else {
                1
            };
            (vector, pages << PAGE_SHIFT)
        } else {
            return None;
        };
        (objcg != 0).then_some(SlabOwner {
            // SAFETY: a slab record's (or a kmem page's `memcg_data`'s) `struct obj_cgroup *`.
            objcg: unsafe { ObjCgroup::from_addr(objcg) },
            bytes,
        })
    }
}
