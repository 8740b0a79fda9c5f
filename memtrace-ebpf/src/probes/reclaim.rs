//! Memcg limit reclaim: how long each episode took and what it freed, paired per task.
//!
//! ```text
//! include/trace/events/vmscan.h (raw tracepoint arguments; order from BTF, see the loader):
//!     DEFINE_EVENT(mm_vmscan_direct_reclaim_begin_template, mm_vmscan_memcg_reclaim_begin,
//!         TP_PROTO(int order, gfp_t gfp_flags), …)
//!     DEFINE_EVENT(mm_vmscan_direct_reclaim_end_template, mm_vmscan_memcg_reclaim_end,
//!         TP_PROTO(unsigned long nr_reclaimed), …)
//! ```
//!
//! Neither names the memcg being reclaimed: it is the one the running task's charge pushed over
//! a limit, so the episode is attributed to the task's memcg.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use memtrace_common::{EventHeader, EventKind, LostKind, ReclaimBegin, ReclaimRecord};

use crate::{
    kernel::task_memcg_id,
    maps::{EVENTS, RECLAIM_BEGIN, count_lost, offsets, wanted},
};

/// The kernel task id (the thread): each thread reclaims on its own.
#[inline(always)]
fn current_pid() -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "the low half is the pid")]
    let pid = pid_tgid as u32;
    pid
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(ctx: RawTracePointContext) -> i32 {
    let offsets = offsets();
    // SAFETY: raw tracepoint arguments are u64s. The verifier only allows constant context
    // offsets, so both are read and the loader's BTF-derived positions pick.
    let args = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        [*args, *args.add(1)]
    };
    let order = args[usize::from(offsets.reclaim_begin_order_arg != 0)];
    let gfp_flags = args[usize::from(offsets.reclaim_begin_gfp_arg != 0)];
    // SAFETY: helper calls; the task pointer is read through the checked helper.
    let (pid, timestamp_ns, memcg_id) = unsafe {
        (
            current_pid(),
            bpf_ktime_get_boot_ns(),
            task_memcg_id(bpf_get_current_task() as *const u8, offsets).unwrap_or(0),
        )
    };
    if !wanted(memcg_id) {
        return 0;
    }
    let begin = ReclaimBegin {
        timestamp_ns,
        memcg_id,
        gfp_flags,
        #[expect(clippy::cast_possible_truncation, reason = "an int widened to u64")]
        order: order as u32,
        pad: 0,
    };
    if RECLAIM_BEGIN.insert(&pid, &begin, 0).is_err() {
        count_lost(LostKind::Reclaim);
    }
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: RawTracePointContext) -> i32 {
    // SAFETY: helper calls without arguments; the first argument is `unsigned long`.
    let (pid, now, nr_reclaimed) = unsafe {
        (
            current_pid(),
            bpf_ktime_get_boot_ns(),
            *ctx.as_ptr().cast::<u64>(),
        )
    };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(begin) = (unsafe { RECLAIM_BEGIN.get(&pid) }).copied() else {
        // Began before memtrace attached.
        return 0;
    };
    let _ = RECLAIM_BEGIN.remove(&pid);
    let Some(mut entry) = EVENTS.reserve::<ReclaimRecord>(0) else {
        count_lost(LostKind::Reclaim);
        return 0;
    };
    entry.write(ReclaimRecord {
        header: EventHeader {
            kind: EventKind::Reclaim as u32,
            // SAFETY: helper call without arguments.
            pad: 0,
            timestamp_ns: begin.timestamp_ns,
        },
        memcg_id: begin.memcg_id,
        duration_ns: now.saturating_sub(begin.timestamp_ns),
        nr_reclaimed,
        gfp_flags: begin.gfp_flags,
        order: begin.order,
        pid,
    });
    entry.submit(0);
    0
}
