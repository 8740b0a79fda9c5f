//! OOM kills, by three strategies; the loader attaches the best one the kernel allows.
//!
//! 1. fentry and 2. kprobe on `oom_kill_process(struct oom_control *oc, const char *message)`
//!    (`mm/oom_kill.c`, 6.1 … 6.18): `oc->chosen` is the victim, `oc->memcg` the memcg whose limit
//!    fired (NULL for a global OOM), with `oc->constraint` and `oc->totalpages`. The limit's
//!    usage and max are read from that memcg's page counter here, at the kill.
//! 3. The raw tracepoint `oom:mark_victim`, fired in `mark_oom_victim()` while the victim's `mm`
//!    is still attached:
//!
//! ```text
//! include/trace/events/oom.h, recent kernels (6.12, 6.18):
//!     TP_PROTO(struct task_struct *task, uid_t uid)
//! older kernels (6.1):
//!     TP_PROTO(int pid)
//! ```
//!
//! The loader reads that prototype from BTF (`btf_trace_mark_victim`) and tells us which one
//! this kernel has (`mark_victim_arg`). With only a pid, the event carries the pid and userspace
//! completes it from the kernel's own OOM report.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_ktime_get_boot_ns,
    macros::{fentry, kprobe, raw_tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use aya_log_ebpf::warn;
use memtrace_common::{
    EventHeader, EventKind, KernelOffsets, LostKind, OomKillRecord,
    event::{
        OOM_FLAG_CONTROL, OOM_FLAG_MEMCG, OOM_FLAG_RSS, OOM_FLAG_TASK, OOM_STRATEGY_FENTRY,
        OOM_STRATEGY_KPROBE, OOM_STRATEGY_RAW_TP,
    },
    offsets::MARK_VICTIM_ARG_TASK,
};

use crate::{
    kernel::{memcg_id_of, read_at, task_memcg_id},
    maps::{EVENTS, count_lost, offsets},
};

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> i32 {
    let oc: *const u8 = ctx.arg(0);
    report(&ctx, OOM_STRATEGY_FENTRY, Victim::Control(oc));
    0
}

#[kprobe]
pub fn oom_kill_process_kprobe(ctx: ProbeContext) -> u32 {
    let Some(oc) = ctx.arg::<*const u8>(0) else {
        return 0;
    };
    report(&ctx, OOM_STRATEGY_KPROBE, Victim::Control(oc));
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim(ctx: RawTracePointContext) -> i32 {
    let offsets = offsets();
    // SAFETY: `ctx.as_ptr()` is `struct bpf_raw_tracepoint_args *`, whose first u64 is the
    // tracepoint's first argument.
    let arg0: u64 = unsafe { *ctx.as_ptr().cast::<u64>() };
    let victim = if offsets.mark_victim_arg == MARK_VICTIM_ARG_TASK {
        Victim::Task(arg0 as *const u8)
    } else {
        // `int pid`: the raw tracepoint passes it widened to u64; the low 32 bits are the pid.
        #[expect(clippy::cast_possible_truncation, reason = "an int widened to u64")]
        Victim::Pid(arg0 as u32)
    };
    report(&ctx, OOM_STRATEGY_RAW_TP, victim);
    0
}

/// What the strategy gives about the victim.
enum Victim {
    /// `struct oom_control *`
    Control(*const u8),
    /// `struct task_struct *`
    Task(*const u8),
    Pid(u32),
}

#[inline(always)]
fn report<C: EbpfContext>(ctx: &C, strategy: u32, victim: Victim) {
    let offsets = offsets();
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        count_lost(LostKind::OomKill);
        return;
    };
    let mut rec = OomKillRecord {
        header: EventHeader {
            kind: EventKind::OomKill as u32,
            // SAFETY: plain helper calls without arguments.
            pad: 0,
            // SAFETY: as above.
            timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
        },
        strategy,
        ..OomKillRecord::default()
    };
    match victim {
        Victim::Control(oc) => {
            fill_from_control(&mut rec, oc, offsets);
            // SAFETY: `oc` is the probed function's `struct oom_control *`.
            if let Ok(task) = unsafe { read_at::<*const u8>(oc, offsets.oom_control_chosen) } {
                fill_from_task(ctx, &mut rec, task, offsets);
            }
        }
        Victim::Task(task) => fill_from_task(ctx, &mut rec, task, offsets),
        Victim::Pid(pid) => {
            rec.pid = pid;
            rec.tgid = pid;
        }
    }
    entry.write(rec);
    entry.submit(0);
}

/// The memcg whose limit fired, its usage and max at the kill, the constraint.
#[inline(always)]
fn fill_from_control(rec: &mut OomKillRecord, oc: *const u8, o: &KernelOffsets) {
    // SAFETY: `oc` is a `struct oom_control *`; every read goes through the checked helper.
    unsafe {
        let (Ok(memcg), Ok(constraint), Ok(totalpages)) = (
            read_at::<*const u8>(oc, o.oom_control_memcg),
            read_at::<u32>(oc, o.oom_control_constraint),
            read_at::<u64>(oc, o.oom_control_totalpages),
        ) else {
            return;
        };
        rec.constraint = constraint;
        rec.totalpages = totalpages;
        rec.flags |= OOM_FLAG_CONTROL;
        if memcg.is_null() {
            // A global OOM: no memcg limit fired.
            return;
        }
        rec.limit_memcg_id = memcg_id_of(memcg, o).unwrap_or(0);
        rec.limit_usage_pages =
            read_at::<i64>(memcg, o.memcg_usage).map_or(0, |u| u.max(0).cast_unsigned());
        rec.limit_max_pages = read_at::<u64>(memcg, o.memcg_max).unwrap_or(0);
    }
}

/// Fills what the victim task gives; a field that cannot be read leaves its flag clear, so a
/// partly readable task still produces an event (an OOM kill is never dropped for a detail).
#[inline(always)]
fn fill_from_task<C: EbpfContext>(
    ctx: &C,
    rec: &mut OomKillRecord,
    task: *const u8,
    offsets: &KernelOffsets,
) {
    // SAFETY: `task` is a `struct task_struct *`; every read goes through
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
            // Rare (a task torn down under us) and worth knowing: userspace falls back to the
            // kernel's OOM report.
            Err(err) => warn!(
                ctx,
                "oom: cannot read pid {}'s memcg: error {}", rec.pid, err
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
