//! `struct folio` (and `struct page`, which it overlays). On kernels without folios (5.10) the
//! same pointers are `struct page *` and the loader gives the page's offsets (`folio_order`).

use core::mem::MaybeUninit;

use super::{AddressSpace, Block, Memcg, Words, direct, kernel_ptr, offsets};

kernel_ptr!(
    /// `struct folio *`
    Folio,
    "struct folio *"
);

/// The low bits of `folio.mapping` that make it something other than a file's
/// (`include/linux/page-flags.h`: `PAGE_MAPPING_ANON | PAGE_MAPPING_MOVABLE`, or
/// `FOLIO_MAPPING_ANON | FOLIO_MAPPING_KSM` on recent kernels; `#define`s, not in BTF).
const PAGE_MAPPING_FLAGS: u64 = 3;

/// What a folio is charged to.
pub struct FolioCharge {
    pub memcg: Memcg,
    pub pages: u64,
    /// `folio->mapping`: its file, when it has one (for a folio not known to be in the page
    /// cache: when the low bits say it is not an `anon_vma`).
    pub mapping: Option<AddressSpace>,
    /// `PG_swapbacked`: with a file mapping, a tmpfs/shmem folio.
    pub swapbacked: bool,
}

impl Folio {
    /// The memcg a user or page-cache folio is charged to, and its pages: `folio->memcg_data`
    /// holds the `struct mem_cgroup *` (no flag bits set for such folios), and a large folio
    /// keeps its page count in the folio. `None` when the folio is not charged (or is a slab or
    /// kmem page). One helper read of its first 64 bytes, or its members loaded in place (6.2+).
    #[inline(always)]
    pub fn memcg_charge(self) -> Option<(Memcg, u64)> {
        if let Some(memory) = direct::in_place() {
            return self
                .charge_in_place(memory)
                .map(|(memcg, pages, _)| (memcg, pages));
        }
        self.memcg_charge_in(Block::<8>::read(self.0, &mut MaybeUninit::uninit())?)
    }

    /// [`Self::memcg_charge`] and the folio's file, from its first 64 bytes. A large folio
    /// keeps its page count in its second page, read on its own: one 128-byte read for every
    /// folio would touch the next `struct page`'s cache line on every small folio, a miss that
    /// costs more than the second read large folios (a page in hundreds) pay.
    ///
    /// Where the loader enabled it (6.2+), each member is loaded in place instead, with one
    /// instruction: no helper call.
    #[inline(always)]
    pub fn charge(self) -> Option<FolioCharge> {
        if let Some(memory) = direct::in_place() {
            let (memcg, pages, flags) = self.charge_in_place(memory)?;
            let o = offsets();
            return Some(FolioCharge {
                memcg,
                pages,
                mapping: file_mapping(memory.read(self.0, o.folio_mapping)),
                swapbacked: flags & u64::from(o.pg_swapbacked_mask) != 0,
            });
        }
        self.charge_in(Block::<8>::read(self.0, &mut MaybeUninit::uninit())?)
    }

    /// [`Self::memcg_charge`], loaded in place (6.2+: always a `struct folio`, whose page count
    /// is a member), and the folio's flags.
    #[inline(always)]
    fn charge_in_place(self, memory: direct::InPlace) -> Option<(Memcg, u64, u64)> {
        let o = offsets();
        let memcg_data: u64 = memory.read(self.0, o.folio_memcg_data);
        if memcg_data & u64::from(o.memcg_data_flags) != 0 || memcg_data == 0 {
            return None;
        }
        // SAFETY: without flag bits, `memcg_data` is the `struct mem_cgroup *`.
        let memcg = unsafe { Memcg::from_addr(memcg_data) };
        let flags: u64 = memory.read(self.0, o.folio_flags);
        let pages = if flags & u64::from(o.pg_head_mask) == 0 {
            1
        } else {
            u64::from(memory.read::<u32>(self.0, o.folio_nr_pages))
        };
        Some((memcg, pages, flags))
    }

    /// `block` was read from this folio.
    #[inline(always)]
    fn charge_in<const N: usize>(self, block: &Block<N>) -> Option<FolioCharge> {
        let (memcg, pages) = self.memcg_charge_in(block)?;
        let o = offsets();
        let mapping = block.u64_at(self.0, o.folio_mapping).and_then(file_mapping);
        let swapbacked = block
            .u64_at(self.0, o.folio_flags)
            .is_some_and(|flags| flags & u64::from(o.pg_swapbacked_mask) != 0);
        Some(FolioCharge {
            memcg,
            pages,
            mapping,
            swapbacked,
        })
    }

    /// `block` was read from this folio.
    #[inline(always)]
    fn memcg_charge_in<const N: usize>(self, block: &Block<N>) -> Option<(Memcg, u64)> {
        let o = offsets();
        let memcg_data = block.u64_at(self.0, o.folio_memcg_data)?;
        if memcg_data & u64::from(o.memcg_data_flags) != 0 || memcg_data == 0 {
            return None;
        }
        // SAFETY: without flag bits, `memcg_data` is the `struct mem_cgroup *`.
        let memcg = unsafe { Memcg::from_addr(memcg_data) };
        let flags = block.u64_at(self.0, o.folio_flags)?;
        let pages = if flags & u64::from(o.pg_head_mask) == 0 {
            1
        } else if o.folio_order != 0 {
            // A `struct page *` (5.10): the order byte of the first tail page.
            let shift = (o.folio_order % 4) * 8;
            block
                .u32_at(self.0, o.folio_order - o.folio_order % 4)
                .map_or(1, |word| 1 << ((word >> shift) & 0x1f))
        } else {
            block.u32_at(self.0, o.folio_nr_pages).map_or(1, u64::from)
        };
        Some((memcg, pages))
    }
}

/// A folio's `mapping` word as its file's `struct address_space *`: `None` when null, or tagged
/// as something else in its low bits (anonymous and movable folios).
#[inline(always)]
fn file_mapping(mapping: u64) -> Option<AddressSpace> {
    if mapping & PAGE_MAPPING_FLAGS != 0 {
        return None;
    }
    // SAFETY: an untagged `folio.mapping` is the folio's `struct address_space *`.
    unsafe { AddressSpace::from_addr(mapping) }.non_null()
}
