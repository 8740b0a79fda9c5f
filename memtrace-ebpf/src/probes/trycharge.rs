//! Charges a memcg could not take: `try_charge_memcg()` ([`TryChargeMemcg`]) returning an
//! error, by fexit or by kprobe + kretprobe. Rare (each follows reclaim and usually an OOM
//! kill), so each goes through the ring buffer. Kernels that allow neither fexit nor kprobes get
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
    kernel::{Memcg, functions::TryChargeMemcg},
    maps::{EVENTS, TRY_CHARGE_PENDING, count_lost, wanted},
    paired,
};

#[fexit(function = "try_charge_memcg")]
pub fn try_charge_memcg_fexit(ctx: FExitContext) -> i32 {
    let (args, ret) = TryChargeMemcg::from_fexit(&ctx);
    if ret != 0 {
        report(&kept(&args), ret, CHARGE_STRATEGY_FEXIT);
    }
    0
}

#[kprobe]
pub fn try_charge_memcg_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(args) = TryChargeMemcg::from_kprobe(&ctx) {
        paired::enter(&TRY_CHARGE_PENDING, &kept(&args), LostKind::ChargeFail);
    }
    0
}

#[kretprobe]
pub fn try_charge_memcg_kretprobe(ctx: RetProbeContext) -> u32 {
    let Some(args) = paired::take(&TRY_CHARGE_PENDING) else {
        return 0;
    };
    let ret: i32 = ctx.ret();
    if ret != 0 {
        report(&args, ret, CHARGE_STRATEGY_KPROBE);
    }
    0
}

/// What the report needs of the arguments, as the kprobe keeps them for its kretprobe.
#[inline(always)]
fn kept(args: &TryChargeMemcg) -> TryChargeArgs {
    TryChargeArgs {
        memcg: args.memcg.addr(),
        gfp_flags: args.gfp_mask.0,
        nr_pages: args.nr_pages,
        pad: 0,
    }
}

#[inline(always)]
fn report(args: &TryChargeArgs, ret: i32, strategy: u32) {
    // SAFETY: the function's `struct mem_cgroup *`, as its probe kept it.
    let memcg_id = unsafe { Memcg::from_addr(args.memcg) }.id().unwrap_or(0);
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
