//! OOM kills.
//!
//! Strategy here: the raw tracepoint `oom:mark_victim`, fired in `__oom_kill_process()` /
//! `mark_oom_victim()` when a task is chosen as victim, before the kill signal is sent, while the
//! victim's `mm` is still attached.
//!
//! ```text
//! include/trace/events/oom.h, recent kernels (6.12, 6.18):
//!     TP_PROTO(struct task_struct *task, uid_t uid)
//! older kernels (6.1):
//!     TP_PROTO(int pid)
//! ```
//!
//! The loader reads the prototype from BTF (`btf_trace_mark_victim`) and tells us which one this
//! kernel has (`mark_victim_arg`). With only a pid, the event carries the pid and userspace
//! resolves the rest while the victim is still exiting.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    EventHeader, EventKind, LostKind, OomKillRecord,
    event::{OOM_FLAG_MEMCG, OOM_FLAG_RSS, OOM_FLAG_TASK},
    offsets::MARK_VICTIM_ARG_TASK,
};

use crate::{
    kernel::{read_at, task_memcg_id},
    maps::{EVENTS, OFFSETS, count_lost},
};

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim(ctx: RawTracePointContext) -> i32 {
    oom_mark_victim_inner(&ctx);
    0
}

fn oom_mark_victim_inner(ctx: &RawTracePointContext) {
    let offsets = OFFSETS.load();
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        count_lost(LostKind::OomKill);
        return;
    };
    let mut rec = OomKillRecord {
        header: EventHeader {
            kind: EventKind::OomKill as u32,
            // SAFETY: plain helper calls without arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            // SAFETY: as above.
            timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
        },
        ..OomKillRecord::default()
    };
    // SAFETY: `ctx.as_ptr()` is `struct bpf_raw_tracepoint_args *`, whose first u64 is the
    // tracepoint's first argument.
    let arg0: u64 = unsafe { *ctx.as_ptr().cast::<u64>() };
    if offsets.mark_victim_arg == MARK_VICTIM_ARG_TASK {
        let task = arg0 as *const u8;
        fill_from_task(ctx, &mut rec, task, &offsets);
    } else {
        // `int pid`: the raw tracepoint passes it widened to u64; the low 32 bits are the pid.
        #[expect(clippy::cast_possible_truncation, reason = "an int widened to u64")]
        let pid = arg0 as u32;
        rec.pid = pid;
        rec.tgid = pid;
    }
    entry.write(rec);
    entry.submit(0);
}

/// Fills what the victim task gives; a field that cannot be read leaves its flag clear, so a
/// partly readable task still produces an event (an OOM kill is never dropped for a detail).
#[inline(always)]
fn fill_from_task(
    ctx: &RawTracePointContext,
    rec: &mut OomKillRecord,
    task: *const u8,
    offsets: &memtrace_common::KernelOffsets,
) {
    // SAFETY: `task` is the tracepoint's `struct task_struct *`; every read goes through
    // `bpf_probe_read_kernel`.
    unsafe {
        if let (Ok(pid), Ok(tgid), Ok(comm)) = (
            read_at::<u32>(task, offsets.task_pid),
            read_at::<u32>(task, offsets.task_tgid),
            read_at::<[u8; 16]>(task, offsets.task_comm),
        ) {
            rec.pid = pid;
            rec.tgid = tgid;
            rec.comm = comm;
            rec.flags |= OOM_FLAG_TASK;
        }
        match task_memcg_id(task, offsets) {
            Ok(id) => {
                rec.memcg_id = id;
                rec.flags |= OOM_FLAG_MEMCG;
            }
            // Rare (a task torn down under us) and worth knowing: userspace falls back to
            // /proc/PID/cgroup, which may already be gone.
            Err(err) => warn!(
                ctx,
                "mark_victim: cannot read pid {}'s memcg: error {}", rec.pid, err
            ),
        }
        if let Ok(mm) = read_at::<*const u8>(task, offsets.task_mm)
            && !mm.is_null()
            && let (Ok(anon), Ok(file), Ok(shmem)) = (
                read_at::<i64>(mm, offsets.mm_anon_rss),
                read_at::<i64>(mm, offsets.mm_file_rss),
                read_at::<i64>(mm, offsets.mm_shmem_rss),
            )
        {
            // Per-CPU batched counters can be transiently negative; the kernel clamps the same
            // way (`percpu_counter_read_positive`).
            rec.anon_rss_pages = anon.max(0).cast_unsigned();
            rec.file_rss_pages = file.max(0).cast_unsigned();
            rec.shmem_rss_pages = shmem.max(0).cast_unsigned();
            rec.flags |= OOM_FLAG_RSS;
        }
    }
}
