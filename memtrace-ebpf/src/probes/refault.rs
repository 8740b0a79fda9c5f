//! Refaults: page-cache adds that replaced a shadow entry, i.e. folios read again soon after
//! reclaim evicted them (thrashing), counted into the same per-CPU aggregate as the adds, per
//! memcg and file. The kernel counts them in `workingset_refault()`, which
//! `filemap_add_folio()` calls right after the add tracepoint.
//!
//! 1. fentry and 2. kprobe on `workingset_refault()` ([`WorkingsetRefault`]): the folio itself,
//!    so its memcg and file. Only file folios (not swap-backed: `WORKINGSET_REFAULT_FILE`);
//!    shmem and anon come back through the swap cache as anon refaults, not page cache.
//! 3. Where neither is allowed (this needs 6.16+'s stat tracepoint): the add program
//!    remembers per CPU the (memcg, file) of the folio it saw ([`remember_add`]), and the
//!    `memcg:mod_memcg_lruvec_state` update of `WORKINGSET_REFAULT_FILE` that follows on the
//!    same CPU is counted to that file ([`refault_stat`]); one the add did not precede (the
//!    task moved to another CPU in between) counts to its memcg without a file.
//!
//! The stat strategy counts exactly what the kernel counts. The function strategies count
//! every call for a file folio: under MGLRU the kernel leaves out a refault into another
//! memcg (or node) than the one the folio was evicted from, and before 6.7 one whose evicting
//! memcg is gone, which these still count.

use aya_ebpf::{
    macros::{fentry, kprobe, raw_tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use memtrace_common::FileKey;

use super::pagecache::{Change, account};
use crate::{
    kernel::{
        AddressSpace, Folio, FolioCharge, functions::WorkingsetRefault,
        tracepoints::ModMemcgLruvecState,
    },
    maps::LAST_ADD,
};

#[fentry(function = "workingset_refault")]
pub fn workingset_refault_fentry(ctx: FEntryContext) -> i32 {
    refaulted(WorkingsetRefault::from_fentry(&ctx).folio);
    0
}

#[kprobe]
pub fn workingset_refault_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(args) = WorkingsetRefault::from_kprobe(&ctx) {
        refaulted(args.folio);
    }
    0
}

#[inline(always)]
fn refaulted(folio: Folio) {
    if let Some(charge) = folio.charge()
        && !charge.swapbacked
        && charge.mapping.is_some()
    {
        account(charge, Change::Refaulted);
    }
}

/// Called by the add program of the stat strategy for every charged folio added.
#[inline(always)]
pub fn remember_add(charge: &FolioCharge) {
    if let Some(last) = LAST_ADD.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array, ours for this program run.
        let last = unsafe { &mut *last };
        last.memcg = charge.memcg.addr();
        last.file = charge.mapping.map_or(0, AddressSpace::addr);
    }
}

/// `memcg:mod_memcg_lruvec_state` (6.16+), fired on every memcg stat update: increases of
/// `WORKINGSET_REFAULT_FILE` are refaults, of the folio the last add on this CPU named when its
/// memcg is the same.
#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn refault_stat(ctx: RawTracePointContext) -> i32 {
    let args = ModMemcgLruvecState::from_ctx(&ctx);
    if args.val <= 0 || !args.item.counts_file_refaults() || args.memcg.is_null() {
        return 0;
    }
    let mut mapping = None;
    if let Some(last) = LAST_ADD.get_ptr_mut(0) {
        // SAFETY: as in `remember_add`.
        let last = unsafe { &mut *last };
        if last.memcg == args.memcg.addr() && last.file != 0 {
            // SAFETY: the add program stored a `struct address_space *` of a folio in the page
            // cache; the refault comes before the folio is unlocked, so the file is alive.
            mapping = Some(unsafe { AddressSpace::from_addr(last.file) });
        }
        *last = FileKey::default();
    }
    account(
        FolioCharge {
            memcg: args.memcg,
            pages: u64::from(args.val.cast_unsigned()),
            mapping,
            swapbacked: false,
        },
        Change::Refaulted,
    );
    0
}
