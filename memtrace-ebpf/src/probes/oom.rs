//! OOM kills, by three strategies; the loader attaches the best one the kernel allows.
//!
//! 1. fentry and 2. kprobe on `oom_kill_process()` ([`OomKillProcess`]): `oc->chosen` is the
//!    victim, `oc->memcg` the memcg whose limit fired (NULL for a global OOM), with
//!    `oc->constraint` and `oc->totalpages`. The limit's usage and max are read from that
//!    memcg's page counter here, at the kill.
//! 3. The raw tracepoint `oom:mark_victim` ([`MarkVictim`]), fired in `mark_oom_victim()` while
//!    the victim's `mm` is still attached: the victim task on recent kernels, its pid only on
//!    older ones. With only a pid, the event carries the pid and userspace completes it from the
//!    kernel's own OOM report.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_ktime_get_boot_ns,
    macros::{fentry, kprobe, raw_tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use aya_log_ebpf::warn;
use memtrace_common::{
    EventHeader, EventKind, LostKind, OomKillRecord,
    event::{
        OOM_FLAG_CONTROL, OOM_FLAG_MEMCG, OOM_FLAG_RSS, OOM_FLAG_TASK, OOM_STRATEGY_FENTRY,
        OOM_STRATEGY_KPROBE, OOM_STRATEGY_RAW_TP,
    },
};

use crate::{
    kernel::{Memcg, OomControl, Task, functions::OomKillProcess, tracepoints::MarkVictim},
    maps::{EVENTS, count_lost},
};

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> i32 {
    let args = OomKillProcess::from_fentry(&ctx);
    report(&ctx, OOM_STRATEGY_FENTRY, Victim::Control(args.oc));
    0
}

#[kprobe]
pub fn oom_kill_process_kprobe(ctx: ProbeContext) -> u32 {
    let Some(args) = OomKillProcess::from_kprobe(&ctx) else {
        return 0;
    };
    report(&ctx, OOM_STRATEGY_KPROBE, Victim::Control(args.oc));
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim(ctx: RawTracePointContext) -> i32 {
    let victim = match MarkVictim::from_ctx(&ctx) {
        MarkVictim::Task(task) => Victim::Task(task),
        MarkVictim::Pid(pid) => Victim::Pid(pid),
    };
    report(&ctx, OOM_STRATEGY_RAW_TP, victim);
    0
}

/// What the strategy gives about the victim.
enum Victim {
    Control(OomControl),
    Task(Task),
    Pid(u32),
}

#[inline(always)]
fn report<C: EbpfContext>(ctx: &C, strategy: u32, victim: Victim) {
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
            fill_from_control(&mut rec, oc);
            if let Ok(task) = oc.chosen() {
                fill_from_task(ctx, &mut rec, task);
            }
        }
        Victim::Task(task) => fill_from_task(ctx, &mut rec, task),
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
fn fill_from_control(rec: &mut OomKillRecord, oc: OomControl) {
    let Some(limit) = oc.limit() else {
        return;
    };
    rec.constraint = limit.constraint;
    rec.totalpages = limit.totalpages;
    rec.flags |= OOM_FLAG_CONTROL;
    let Some(memcg) = limit.memcg.non_null() else {
        // A global OOM: no memcg limit fired.
        return;
    };
    rec.limit_memcg_id = memcg.id().unwrap_or(0);
    rec.limit_usage_pages = memcg.usage_pages().unwrap_or(0);
    rec.limit_max_pages = memcg.max_pages().unwrap_or(0);
}

/// Fills what the victim task gives; a field that cannot be read leaves its flag clear, so a
/// partly readable task still produces an event (an OOM kill is never dropped for a detail).
#[inline(always)]
fn fill_from_task<C: EbpfContext>(ctx: &C, rec: &mut OomKillRecord, task: Task) {
    if let Some((pid, tgid, comm)) = task.ids() {
        rec.pid = pid;
        rec.tgid = tgid;
        rec.comm = comm;
        rec.flags |= OOM_FLAG_TASK;
    }
    match task.memcg().and_then(Memcg::id) {
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
    if let Ok(mm) = task.mm()
        && let Some(mm) = mm.non_null()
        && let Some(rss) = mm.rss()
    {
        rec.anon_rss_pages = rss.anon;
        rec.file_rss_pages = rss.file;
        rec.shmem_rss_pages = rss.shmem;
        rec.flags |= OOM_FLAG_RSS;
    }
}
