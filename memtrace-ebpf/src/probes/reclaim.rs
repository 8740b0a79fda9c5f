//! Memcg limit reclaim: how long each episode took and what it freed, paired per task, from the
//! `vmscan:mm_vmscan_memcg_reclaim_begin/end` raw tracepoints ([`MemcgReclaimBegin`],
//! [`MemcgReclaimEnd`]).
//!
//! Neither names the memcg being reclaimed: it is the one the running task's charge pushed over
//! a limit, so the episode is attributed to the task's memcg.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use memtrace_common::{EventHeader, EventKind, LostKind, ReclaimBegin, ReclaimRecord};

use crate::{
    kernel::{
        Memcg, Task,
        tracepoints::{MemcgReclaimBegin, MemcgReclaimEnd},
    },
    maps::{EVENTS, RECLAIM_BEGIN, count_lost, wanted},
    paired,
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
    let args = MemcgReclaimBegin::from_ctx(&ctx);
    // SAFETY: a helper call without arguments.
    let timestamp_ns = unsafe { bpf_ktime_get_boot_ns() };
    let memcg_id = Task::current().memcg().and_then(Memcg::id).unwrap_or(0);
    if !wanted(memcg_id) {
        return 0;
    }
    let begin = ReclaimBegin {
        timestamp_ns,
        memcg_id,
        gfp_flags: args.gfp_flags.0,
        order: args.order,
        pad: 0,
    };
    paired::enter(&RECLAIM_BEGIN, &begin, LostKind::Reclaim);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: RawTracePointContext) -> i32 {
    let MemcgReclaimEnd { nr_reclaimed } = MemcgReclaimEnd::from_ctx(&ctx);
    // SAFETY: helper calls without arguments.
    let (pid, now) = unsafe { (current_pid(), bpf_ktime_get_boot_ns()) };
    let Some(begin) = paired::take(&RECLAIM_BEGIN) else {
        // Began before memtrace attached.
        return 0;
    };
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
