//! Page cache, attributed to the memcg each folio is charged to (not to whoever happens to be
//! running), with the file it belongs to, aggregated per CPU in the kernel, from the
//! `filemap:mm_filemap_add_to_page_cache/delete_from_page_cache` raw tracepoints
//! ([`FilemapOp`]). tmpfs/shmem folios never pass the add tracepoint (`shmem_add_to_page_cache`
//! has none), though their removal passes the delete one: they are counted as added when they
//! first go on an LRU list (`pagemap:mm_lru_insertion`, [`LruInsertion`]).
//!
//! Refaults are counted beside the adds, by [`super::refault`].
//!
//! `folio->memcg_data` holds the `mem_cgroup *` (flag bits clear for page cache), whose first
//! member is its css. Hot path: no strings, one read and one per-CPU hash update keyed by
//! pointers; ids are read once per key, interval and CPU, a file's path once per file. Runs of
//! one file's events on a CPU skip the hash ([`CACHE_SLOTS`]), and the drains keep the per-file
//! keys counted in (zeroed), so a file counted again in a later interval is not inserted again.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use memtrace_common::{CacheDelta, FileKey, FilePath, InodeId, LostKind};

use super::refault;
use crate::{
    kernel::{
        AddressSpace, FolioCharge, Inode, Memcg,
        tracepoints::{FilemapOp, LruInsertion},
    },
    maps::{
        Bumped, CACHE_FILE_0, CACHE_FILE_1, CACHE_MEMCG_0, CACHE_MEMCG_1, CACHE_MEMCG_SPILL_0,
        CACHE_MEMCG_SPILL_1, CACHE_SLOTS, FILE_PATHS, INODE_IDS, MEMCG_IDS, active_half, bump,
        bump_in, count_lost, remember_memcg_id, wanted_memcg,
    },
};

/// What happened to a folio's pages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// Added again soon after their eviction (already counted as added).
    Refaulted,
}

#[raw_tracepoint(tracepoint = "mm_filemap_add_to_page_cache")]
pub fn filemap_add(ctx: RawTracePointContext) -> i32 {
    if let Some(charge) = FilemapOp::from_ctx(&ctx).folio.charge() {
        account(charge, Change::Added);
    }
    0
}

/// [`filemap_add`] for the strategy that learns refaults from memcg stat updates: it also
/// remembers the folio's memcg and file for the refault count that may follow on this CPU. A
/// program of its own, so that the other strategies' adds do not pay for it.
#[raw_tracepoint(tracepoint = "mm_filemap_add_to_page_cache")]
pub fn filemap_add_refault(ctx: RawTracePointContext) -> i32 {
    if let Some(charge) = FilemapOp::from_ctx(&ctx).folio.charge() {
        refault::remember_add(&charge);
        account(charge, Change::Added);
    }
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_delete_from_page_cache")]
pub fn filemap_delete(ctx: RawTracePointContext) -> i32 {
    if let Some(charge) = FilemapOp::from_ctx(&ctx).folio.charge() {
        account(charge, Change::Removed);
    }
    0
}

/// A tmpfs/shmem folio (swap-backed, with a file mapping) going on an LRU list for the first
/// time: its add. Anonymous folios and other files' folios leave at the flag test.
#[raw_tracepoint(tracepoint = "mm_lru_insertion")]
pub fn lru_insertion(ctx: RawTracePointContext) -> i32 {
    if let Some(charge) = LruInsertion::from_ctx(&ctx).folio.charge()
        && charge.swapbacked
        && charge.mapping.is_some()
    {
        account(charge, Change::Added);
    }
    0
}

/// Counts a charged folio's pages as added to, removed from or refaulted into its memcg and
/// file.
#[inline(always)]
pub fn account(charge: FolioCharge, what: Change) {
    let FolioCharge {
        memcg,
        pages,
        mapping,
        ..
    } = charge;
    if !wanted_memcg(memcg) {
        return;
    }
    let file = mapping.map_or(0, AddressSpace::addr);
    let (memcg, half) = (memcg.addr(), active_half());
    // A run of one file's events on this CPU: counted in the CPU's slot, with no map lookup
    // and no call.
    if let Some(mapping) = mapping
        && let Some(slot) = CACHE_SLOTS.get_ptr_mut(half)
    {
        // SAFETY: this CPU's slot of a per-CPU array, ours for this program run.
        let slot = unsafe { &mut *slot };
        if slot.key == (FileKey { memcg, file }) {
            // A file's removals come in runs (reclaim, a dropped cache, a truncation): whether
            // it was deleted is read at the run's first, not at each.
            let first_removal = slot.delta.removed_pages == 0;
            count(&mut slot.delta, what, pages);
            if what == Change::Removed && first_removal {
                note_unlinked(mapping);
            }
            return;
        }
    }
    // Each program counts one kind of change: a constant of its own body, so that neither the
    // verifier nor the CPU meets the other kinds' branches.
    let first = half == 0;
    match what {
        Change::Added if first => added_in_0(memcg, file, pages),
        Change::Added => added_in_1(memcg, file, pages),
        Change::Removed if first => removed_in_0(memcg, file, pages),
        Change::Removed => removed_in_1(memcg, file, pages),
        Change::Refaulted if first => refaulted_in_0(memcg, file, pages),
        Change::Refaulted => refaulted_in_1(memcg, file, pages),
    };
}

/// [`Change`] as a const generic argument.
const ADDED: u8 = 0;
const REMOVED: u8 = 1;
const REFAULTED: u8 = 2;

impl Change {
    #[inline(always)]
    const fn of(what: u8) -> Self {
        match what {
            ADDED => Self::Added,
            REMOVED => Self::Removed,
            _ => Self::Refaulted,
        }
    }
}

/// [`account_in`] for each half and kind of change, as global functions (BTF linkage
/// `global`): the verifier checks each once, on its own, not again for every path of its
/// callers that reaches it, which halves the page-cache programs' verification (start-up).
macro_rules! account_in_global {
    ($($name:ident = <$half:literal, $what:ident>;)*) => {$(
        #[unsafe(no_mangle)]
        #[inline(never)]
        pub extern "C" fn $name(memcg: u64, file: u64, pages: u64) -> u32 {
            account_in::<$half, $what>(memcg, file, pages);
            0
        }
    )*};
}

account_in_global! {
    added_in_0 = <0, ADDED>;
    added_in_1 = <1, ADDED>;
    removed_in_0 = <0, REMOVED>;
    removed_in_1 = <1, REMOVED>;
    refaulted_in_0 = <0, REFAULTED>;
    refaulted_in_1 = <1, REFAULTED>;
}

/// [`account`] into one half of the aggregate. A function of its own for each half, so that
/// every map call in it names one map: the verifier then inlines the hash lookups. Chosen at
/// run time in one body, the compiler merges both halves' calls into one whose map varies, and
/// the verifier makes that an indirect call through the map's operations (about 2× the cost).
#[inline(always)]
fn account_in<const HALF: u32, const WHAT: u8>(memcg: u64, file: u64, pages: u64) {
    let what = const { Change::of(WHAT) };
    let by_file = if HALF == 0 {
        &CACHE_FILE_0
    } else {
        &CACHE_FILE_1
    };
    let mut delta = CacheDelta::default();
    count(&mut delta, what, pages);
    // Per-memcg totals are the sums of the per-file counts; the per-memcg map counts only what
    // has no file key (no file, or the file map is full), so one map update is the usual cost.
    if file == 0 {
        count_memcg::<HALF>(memcg, delta);
        return;
    }
    // SAFETY: `account` passed the folio's `struct address_space *`.
    let mapping = unsafe { AddressSpace::from_addr(file) };
    let key = FileKey { memcg, file };
    // Not the key in this CPU's slot ([`account`] looked).
    let slot = CACHE_SLOTS.get_ptr_mut(HALF);
    // Drains zero the keys counted in and keep them, so a file counted again in a later
    // interval costs a lookup, not a per-CPU insert. Its first event on this CPU since the
    // drain (a zero value) still takes what userspace shows of it: the kernel frees and reuses
    // `address_space`s, and a key kept from an earlier file must name the one counted now.
    let bumped = match by_file.get_ptr_mut(&key) {
        Some(value) => {
            // SAFETY: this CPU's value of a successful lookup, ours for this program run.
            let value = unsafe { &mut *value };
            let first = *value == CacheDelta::default();
            count(value, what, pages);
            if first {
                Bumped::NewKey
            } else {
                Bumped::Counted
            }
        }
        // No spill map of its own: what the file map cannot take counts per memcg.
        None => bump_in(by_file, &key, &|d: &mut CacheDelta| count(d, what, pages)),
    };
    match bumped {
        Bumped::Counted => {
            if what == Change::Removed {
                note_unlinked(mapping);
            }
        }
        Bumped::NewKey => {
            // Once per file, interval and CPU, not per event: what userspace shows of the file
            // and of the memcg.
            first_sight(memcg, file);
        }
        Bumped::Full => {
            count_memcg::<HALF>(memcg, delta);
            return;
        }
    }
    // The key is in the map now: it takes this CPU's slot, whose count goes to the map first.
    if let Some(slot) = slot {
        // SAFETY: this CPU's slot of a per-CPU array, ours for this program run.
        let slot = unsafe { &mut *slot };
        let pending = slot.delta;
        let old = slot.key;
        slot.key = key;
        slot.delta = CacheDelta::default();
        if old.memcg != 0 && pending != CacheDelta::default() {
            let add = |d: &mut CacheDelta| {
                d.added_pages += pending.added_pages;
                d.removed_pages += pending.removed_pages;
                d.refault_pages += pending.refault_pages;
            };
            // The old key went in the map when it took the slot, and a drain empties both:
            // this is a lookup. Only a full map (it never lost the key) could fall through.
            if bump_in(by_file, &old, &add) == Bumped::Full {
                count_memcg::<HALF>(old.memcg, pending);
            }
        }
    }
}

/// A (memcg, file) key's first event of an interval on this CPU: what userspace shows of the
/// file and of the memcg. A global function (own BTF linkage), so that the verifier checks it
/// once, on its own, rather than again at every path of the callers that reaches it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn first_sight(memcg: u64, file: u64) -> u32 {
    // SAFETY: `account` passed the folio's `struct address_space *` and the `struct mem_cgroup
    // *` it is charged to.
    remember_file(unsafe { AddressSpace::from_addr(file) });
    // SAFETY: as above.
    know_memcg_id(unsafe { Memcg::from_addr(memcg) });
    0
}

/// Counts into a memcg's entry of the per-memcg map or its spill map (what has no file key).
#[inline(always)]
fn count_memcg<const HALF: u32>(memcg: u64, delta: CacheDelta) {
    let (added, removed, refaulted) = (delta.added_pages, delta.removed_pages, delta.refault_pages);
    if HALF == 0 {
        memcg_in_0(memcg, added, removed, refaulted);
    } else {
        memcg_in_1(memcg, added, removed, refaulted);
    }
}

/// [`count_memcg`] for each half, as global functions (as [`account_in_global`]).
macro_rules! memcg_in_global {
    ($($name:ident = ($memcg:ident, $spill:ident);)*) => {$(
        #[unsafe(no_mangle)]
        #[inline(never)]
        pub extern "C" fn $name(memcg: u64, added: u64, removed: u64, refaulted: u64) -> u32 {
            let update = |d: &mut CacheDelta| {
                d.added_pages += added;
                d.removed_pages += removed;
                d.refault_pages += refaulted;
            };
            match bump((&$memcg, &$spill), &memcg, update) {
                // SAFETY: every caller passes the `struct mem_cgroup *` a folio is charged to.
                Bumped::NewKey => know_memcg_id(unsafe { Memcg::from_addr(memcg) }),
                Bumped::Counted => {}
                Bumped::Full => count_lost(LostKind::PageCache),
            }
            0
        }
    )*};
}

memcg_in_global! {
    memcg_in_0 = (CACHE_MEMCG_0, CACHE_MEMCG_SPILL_0);
    memcg_in_1 = (CACHE_MEMCG_1, CACHE_MEMCG_SPILL_1);
}

/// [`remember_memcg_id`] unless the memcg's id is there already: its three reads and the LRU
/// insert are most of what a key's first event of an interval costs. A pointer names one memcg
/// until the kernel frees it, and userspace deletes a freed memcg's entry
/// (`Aggregates::forget_memcgs`) so that a memcg the kernel puts at the same address later
/// gets its own.
#[inline(always)]
fn know_memcg_id(memcg: Memcg) {
    // SAFETY: a plain lookup; the value is not kept.
    if unsafe { MEMCG_IDS.get(&memcg.addr()) }.is_none() {
        remember_memcg_id(memcg);
    }
}

/// The file's id and state for this interval, and its path the first time the file is seen
/// (the walk up its dentries happens once per file, not per interval). The entry is written
/// only when it changes: a file read interval after interval costs reads and a lookup, not
/// an LRU insert each time.
#[inline(always)]
fn remember_file(file: AddressSpace) {
    let Some(inode) = file.host() else {
        return;
    };
    let Some(mut id) = inode.id() else {
        return;
    };
    // Scalars, not an `Option<InodeId>`: LLVM spills the payload of a `None` uninitialised,
    // and the verifier refuses the read.
    let (mut same_file, mut known_flags) = (false, 0);
    // SAFETY: a plain lookup; the values are copied.
    if let Some(known) = unsafe { INODE_IDS.get(&file.addr()) } {
        same_file = known.same_file(&id);
        known_flags = known.flags;
    }
    if (same_file && known_flags & InodeId::PATH_SENT != 0) || send_path(inode, id) {
        id.flags |= InodeId::PATH_SENT;
    }
    if !same_file || known_flags != id.flags {
        let _ = INODE_IDS.insert(&file.addr(), &id, 0);
    }
}

/// A removal from a file already counted this interval: a file deleted since its first event
/// says so (a tmpfs file's last folios reach the LRU late, in the drain its deletion makes, so
/// its first event in that interval is often an add, read while the file was still linked).
///
/// The inode is read first: most removals are of linked files (reclaim, a dropped cache), and
/// two reads cost less than the lookup, which only a deleted file's removals pay. A run of one
/// file's events on a CPU (its slot) reads it at its first removal only: a file that reclaim
/// took pages from and that is then deleted, on the same CPU with no other file's event in
/// between and within one interval, is not marked deleted in that interval.
#[inline(always)]
fn note_unlinked(file: AddressSpace) {
    if !file.host().is_some_and(Inode::unlinked) {
        return;
    }
    let Some(known) = INODE_IDS.get_ptr_mut(&file.addr()) else {
        return;
    };
    // SAFETY: a value of this map, valid while the program runs; flags only ever gain bits, so
    // a racing update on another CPU loses nothing that matters.
    let known = unsafe { &mut *known };
    known.flags |= InodeId::UNLINKED;
}

/// Whether the path went out; a full ring buffer is tried again the next interval.
#[inline(always)]
fn send_path(inode: Inode, id: InodeId) -> bool {
    let Some(mut entry) = FILE_PATHS.reserve::<FilePath>(0) else {
        return false;
    };
    // SAFETY: the reserved entry is ours until submitted; every member the reader uses is
    // written below (names up to `depth`, each NUL-terminated by the helper).
    let path = unsafe { &mut *entry.as_mut_ptr() };
    path.id = id;
    inode.read_path(path);
    entry.submit(0);
    true
}

#[inline(always)]
fn count(d: &mut CacheDelta, change: Change, pages: u64) {
    match change {
        Change::Added => d.added_pages += pages,
        Change::Removed => d.removed_pages += pages,
        Change::Refaulted => d.refault_pages += pages,
    }
}
