//! Pages charged per memcg, aggregated per CPU in the kernel; three strategies, the loader
//! attaches the best one the kernel allows.
//!
//! 1. fexit and 2. kprobe + kretprobe on `__mem_cgroup_charge()` ([`MemCgroupCharge`]): every user (anon, shmem) and page-cache folio charged to
//!    a memcg. On success (0) `folio->memcg_data` names the memcg: the charge is attributed to
//!    the memcg that paid, not to whoever ran.
//! 3. The raw tracepoint `memcg:mod_memcg_lruvec_state` (6.16+), fired on every memcg stat
//!    update ([`ModMemcgLruvecState`]). Increases of `NR_ANON_MAPPED` and `NR_FILE_PAGES` are
//!    the user and page-cache pages newly charged; this strategy counts pages only (`charges` stays 0), and userspace labels its
//!    events as derived from stat updates.

use aya_ebpf::{
    macros::{fexit, kprobe, kretprobe, raw_tracepoint},
    programs::{FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use memtrace_common::{ChargeDelta, LostKind};

use crate::{
    kernel::{Folio, Memcg, functions::MemCgroupCharge, tracepoints::ModMemcgLruvecState},
    maps::{
        Bumped, CHARGE_0, CHARGE_1, CHARGE_PENDING, CHARGE_SPILL_0, CHARGE_SPILL_1, active_half,
        bump, count_lost, remember_memcg_id, wanted_memcg,
    },
    paired,
};

#[fexit(function = "__mem_cgroup_charge")]
pub fn mem_cgroup_charge_fexit(ctx: FExitContext) -> i32 {
    let (args, ret) = MemCgroupCharge::from_fexit(&ctx);
    if ret == 0 {
        charged_folio(args.folio);
    }
    0
}

#[kprobe]
pub fn mem_cgroup_charge_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(args) = MemCgroupCharge::from_kprobe(&ctx) {
        paired::enter(&CHARGE_PENDING, &args.folio.addr(), LostKind::Charge);
    }
    0
}

#[kretprobe]
pub fn mem_cgroup_charge_kretprobe(ctx: RetProbeContext) -> u32 {
    let Some(folio) = paired::take(&CHARGE_PENDING) else {
        return 0;
    };
    let ret: i32 = ctx.ret();
    if ret == 0 {
        // SAFETY: the kprobe kept the function's `struct folio *`.
        charged_folio(unsafe { Folio::from_addr(folio) });
    }
    0
}

#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn memcg_lruvec_stat(ctx: RawTracePointContext) -> i32 {
    let args = ModMemcgLruvecState::from_ctx(&ctx);
    if args.val <= 0 || !args.item.counts_charged_pages() {
        return 0;
    }
    count(args.memcg, u64::from(args.val.cast_unsigned()), 0);
    0
}

#[inline(always)]
fn charged_folio(folio: Folio) {
    if let Some((memcg, pages)) = folio.memcg_charge() {
        count(memcg, pages, 1);
    }
}

/// Counts into the aggregate keyed by the `struct mem_cgroup *`; its id is read once per key
/// and interval.
#[inline(always)]
fn count(memcg: Memcg, pages: u64, charges: u64) {
    if memcg.is_null() || !wanted_memcg(memcg) {
        return;
    }
    if active_half() == 0 {
        count_in::<0>(memcg.addr(), pages, charges);
    } else {
        count_in::<1>(memcg.addr(), pages, charges);
    }
}

/// [`count`] into one half: a function per half, so that the verifier inlines its map
/// lookups (as `pagecache::account_in` explains).
#[inline(never)]
fn count_in<const HALF: u32>(memcg: u64, pages: u64, charges: u64) {
    let maps = if HALF == 0 {
        (&CHARGE_0, &CHARGE_SPILL_0)
    } else {
        (&CHARGE_1, &CHARGE_SPILL_1)
    };
    match bump(maps, &memcg, |d: &mut ChargeDelta| {
        d.pages += pages;
        d.charges += charges;
    }) {
        Bumped::Counted => {}
        // SAFETY: `count` passed a `struct mem_cgroup *`.
        Bumped::NewKey => remember_memcg_id(unsafe { Memcg::from_addr(memcg) }),
        Bumped::Full => count_lost(LostKind::Charge),
    }
}
