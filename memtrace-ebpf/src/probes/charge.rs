//! Pages charged per memcg, aggregated per CPU in the kernel; three strategies, the loader
//! attaches the best one the kernel allows.
//!
//! 1. fexit and 2. kprobe + kretprobe on
//!    `int __mem_cgroup_charge(struct folio *folio, struct mm_struct *mm, gfp_t gfp)`
//!    (`mm/memcontrol.c`, 5.16 … 6.18): every user (anon, shmem) and page-cache folio charged to
//!    a memcg. On success (0) `folio->memcg_data` names the memcg: the charge is attributed to
//!    the memcg that paid, not to whoever ran.
//! 3. The raw tracepoint `memcg:mod_memcg_lruvec_state` (6.16+), fired on every memcg stat
//!    update:
//!
//! ```text
//! include/trace/events/memcg.h:
//!     TP_PROTO(struct mem_cgroup *memcg, int item, int val)
//! ```
//!
//!    Increases of `NR_ANON_MAPPED` and `NR_FILE_PAGES` are the user and page-cache pages newly
//!    charged; this strategy counts pages only (`charges` stays 0), and userspace labels its
//!    events as derived from stat updates.

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_current_pid_tgid,
    macros::{fexit, kprobe, kretprobe, raw_tracepoint},
    programs::{FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use memtrace_common::{ChargeDelta, KernelOffsets, LostKind};

use crate::{
    kernel::folio_memcg,
    maps::{
        Bumped, CHARGE_0, CHARGE_1, CHARGE_PENDING, active_half, bump, count_lost, offsets,
        remember_memcg_id, wanted_memcg,
    },
};

#[fexit(function = "__mem_cgroup_charge")]
pub fn mem_cgroup_charge_fexit(ctx: FExitContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    // fexit arguments are followed by the return value.
    let ret: i32 = ctx.arg(3);
    if ret == 0 {
        charged_folio(folio);
    }
    0
}

#[kprobe]
pub fn mem_cgroup_charge_kprobe(ctx: ProbeContext) -> u32 {
    let Some(folio) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let task = bpf_get_current_pid_tgid();
    if CHARGE_PENDING.insert(&task, &folio, 0).is_err() {
        count_lost(LostKind::Charge);
    }
    0
}

#[kretprobe]
pub fn mem_cgroup_charge_kretprobe(ctx: RetProbeContext) -> u32 {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(folio) = (unsafe { CHARGE_PENDING.get(&task) }).copied() else {
        // Entered before memtrace attached.
        return 0;
    };
    let _ = CHARGE_PENDING.remove(&task);
    let ret: i32 = ctx.ret();
    if ret == 0 {
        charged_folio(folio as *const u8);
    }
    0
}

#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn memcg_lruvec_stat(ctx: RawTracePointContext) -> i32 {
    let offsets = offsets();
    // SAFETY: raw tracepoint arguments are u64s: (memcg, item, val).
    let (memcg, item, val) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args as *const u8, *args.add(1), *args.add(2))
    };
    #[expect(clippy::cast_possible_truncation, reason = "ints widened to u64")]
    let (item, val) = (item as u32, val as i32);
    if val <= 0 || (item != offsets.nr_anon_mapped && item != offsets.nr_file_pages) {
        return 0;
    }
    #[expect(clippy::cast_sign_loss, reason = "checked positive above")]
    count(memcg, val as u64, 0, offsets);
    0
}

#[inline(always)]
fn charged_folio(folio: *const u8) {
    let offsets = offsets();
    // SAFETY: `folio` is the kernel's `struct folio *`; reads are checked by the helper.
    if let Some((memcg, pages)) = unsafe { folio_memcg(folio, offsets) } {
        count(memcg, pages, 1, offsets);
    }
}

/// Counts into the aggregate keyed by the `struct mem_cgroup *`; its id is read once per key
/// and interval.
#[inline(always)]
fn count(memcg: *const u8, pages: u64, charges: u64, offsets: &KernelOffsets) {
    // SAFETY: `memcg` is a `struct mem_cgroup *` from the kernel; reads are checked.
    if memcg.is_null() || !unsafe { wanted_memcg(memcg, offsets) } {
        return;
    }
    let map = if active_half() == 0 {
        &CHARGE_0
    } else {
        &CHARGE_1
    };
    match bump(map, &(memcg as u64), |d: &mut ChargeDelta| {
        d.pages += pages;
        d.charges += charges;
    }) {
        Bumped::Counted => {}
        // SAFETY: as above.
        Bumped::NewKey => unsafe { remember_memcg_id(memcg, offsets) },
        Bumped::Full => count_lost(LostKind::Charge),
    }
}
