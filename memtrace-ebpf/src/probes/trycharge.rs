//! Charges a memcg could not take: `try_charge_memcg()` returning an error, by fexit or by
//! kprobe + kretprobe. Rare (each follows reclaim and usually an OOM kill), so each goes through
//! the ring buffer.
//!
//! ```text
//! mm/memcontrol.c (5.17 … 6.18; `try_charge` before, static in both):
//!     static int try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask,
//!                                 unsigned int nr_pages)
//! ```
//!
//! It returns `-ENOMEM` when reclaim and the OOM killer did not make room (or the task is itself
//! the OOM victim, or the gfp forbids retrying). Kernels that allow neither fexit nor kprobes get
//! charge failures derived in userspace from memcg reclaim (see the loader's plan).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{fexit, kprobe, kretprobe},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use memtrace_common::{
    ChargeFailRecord, EventHeader, EventKind, LostKind, TryChargeArgs,
    event::{CHARGE_STRATEGY_FEXIT, CHARGE_STRATEGY_KPROBE},
};

use crate::{
    kernel::memcg_id_of,
    maps::{EVENTS, TRY_CHARGE_PENDING, count_lost, offsets, wanted},
};

#[fexit(function = "try_charge_memcg")]
pub fn try_charge_memcg_fexit(ctx: FExitContext) -> i32 {
    // fexit arguments are followed by the return value.
    let ret: i32 = ctx.arg(3);
    if ret != 0 {
        let args = TryChargeArgs {
            memcg: ctx.arg(0),
            gfp_flags: ctx.arg::<u32>(1).into(),
            nr_pages: ctx.arg(2),
            pad: 0,
        };
        report(&args, ret, CHARGE_STRATEGY_FEXIT);
    }
    0
}

#[kprobe]
pub fn try_charge_memcg_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(memcg), Some(gfp), Some(nr_pages)) =
        (ctx.arg::<u64>(0), ctx.arg::<u32>(1), ctx.arg::<u32>(2))
    else {
        return 0;
    };
    let args = TryChargeArgs {
        memcg,
        gfp_flags: gfp.into(),
        nr_pages,
        pad: 0,
    };
    let task = bpf_get_current_pid_tgid();
    if TRY_CHARGE_PENDING.insert(&task, &args, 0).is_err() {
        count_lost(LostKind::ChargeFail);
    }
    0
}

#[kretprobe]
pub fn try_charge_memcg_kretprobe(ctx: RetProbeContext) -> u32 {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { TRY_CHARGE_PENDING.get(&task) }).copied() else {
        // Entered before memtrace attached.
        return 0;
    };
    let _ = TRY_CHARGE_PENDING.remove(&task);
    let ret: i32 = ctx.ret();
    if ret != 0 {
        report(&args, ret, CHARGE_STRATEGY_KPROBE);
    }
    0
}

#[inline(always)]
fn report(args: &TryChargeArgs, ret: i32, strategy: u32) {
    let offsets = offsets();
    // SAFETY: `memcg` is the function's `struct mem_cgroup *`; reads are checked.
    let memcg_id = unsafe { memcg_id_of(args.memcg as *const u8, offsets) }.unwrap_or(0);
    if !wanted(memcg_id) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ChargeFailRecord>(0) else {
        count_lost(LostKind::ChargeFail);
        return;
    };
    // SAFETY: helper calls without arguments.
    let (pid_tgid, timestamp_ns) = unsafe { (bpf_get_current_pid_tgid(), bpf_ktime_get_boot_ns()) };
    #[expect(clippy::cast_possible_truncation, reason = "the halves of pid_tgid")]
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    entry.write(ChargeFailRecord {
        header: EventHeader {
            kind: EventKind::ChargeFail as u32,
            pad: 0,
            timestamp_ns,
        },
        memcg_id,
        gfp_flags: args.gfp_flags,
        nr_pages: args.nr_pages,
        ret,
        pid,
        tgid,
        strategy,
        pad: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    });
    entry.submit(0);
}
