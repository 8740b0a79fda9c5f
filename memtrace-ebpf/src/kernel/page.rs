//! `struct folio` (and `struct page`, which it overlays), and the file a page-cache folio
//! belongs to: `struct address_space` → `struct inode`. On kernels without folios (5.10) the
//! same pointers are `struct page *` and the loader gives the page's offsets (`folio_order`).

use memtrace_common::InodeId;

use super::{Block, Memcg, kernel_ptr, offsets, read_at};

kernel_ptr!(
    /// `struct folio *`
    Folio,
    "struct folio *"
);

kernel_ptr!(
    /// `struct address_space *`: a file's page cache.
    AddressSpace,
    "struct address_space *"
);

/// What a folio is charged to.
pub struct FolioCharge {
    pub memcg: Memcg,
    pub pages: u64,
    /// `folio->mapping`: its file, when it has one.
    pub mapping: Option<AddressSpace>,
}

impl Folio {
    /// The memcg a user or page-cache folio is charged to, and its pages: `folio->memcg_data`
    /// holds the `struct mem_cgroup *` (no flag bits set for such folios), and a large folio
    /// keeps its page count in the folio. `None` when the folio is not charged (or is a slab or
    /// kmem page). One read of its first 64 bytes.
    #[inline(always)]
    pub fn memcg_charge(self) -> Option<(Memcg, u64)> {
        self.memcg_charge_in(&Block::<8>::read(self.0)?)
    }

    /// [`Self::memcg_charge`] and the folio's file. A large folio keeps its page count in its
    /// second page: 128 bytes hold it all, in one read. A small folio's next page may be
    /// unmapped (the end of a memory section): then 64.
    #[inline(always)]
    pub fn charge(self) -> Option<FolioCharge> {
        match Block::<16>::read(self.0) {
            Some(block) => self.charge_in(&block),
            None => self.charge_in(&Block::<8>::read(self.0)?),
        }
    }

    /// `block` was read from this folio.
    #[inline(always)]
    fn charge_in<const N: usize>(self, block: &Block<N>) -> Option<FolioCharge> {
        let (memcg, pages) = self.memcg_charge_in(block)?;
        let mapping = block
            .u64_at(self.0, offsets().folio_mapping)
            // SAFETY: `folio.mapping` of a page-cache folio is its `struct address_space *`.
            .map(|mapping| unsafe { AddressSpace::from_addr(mapping) })
            .and_then(AddressSpace::non_null);
        Some(FolioCharge {
            memcg,
            pages,
            mapping,
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

impl AddressSpace {
    /// The inode number and device of the file: `mapping->host->i_ino` and
    /// `->i_sb->s_dev`.
    #[inline(always)]
    pub fn file_id(self) -> Option<InodeId> {
        let o = offsets();
        let inode: *const u8 = self.read(o.mapping_host).ok()?;
        let ino: u64 = read_at(inode, o.inode_ino).ok()?;
        let sb: *const u8 = read_at(inode, o.inode_sb).ok()?;
        let dev: u32 = read_at(sb, o.sb_dev).ok()?;
        Some(InodeId { ino, dev, pad: 0 })
    }
}
