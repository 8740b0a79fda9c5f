//! Memory cgroup lifecycle: created, removed (offline: *dying* while something still pins it),
//! freed, from the `cgroup:cgroup_mkdir/rmdir/release` raw tracepoints ([`CgroupEvent`]). Names
//! are captured here, when the cgroup is created, so that events about a cgroup that is gone by
//! the time userspace looks still carry its path.
//!
//! Every hierarchy fires these; only the one carrying the memory controller is reported (on a
//! v1 or hybrid host the memory hierarchy, on a v2 host the unified one).

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns, macros::raw_tracepoint, programs::RawTracePointContext,
};
use memtrace_common::{
    CgroupRecord, EventHeader, EventKind, LostKind,
    event::{CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RELEASE, CGROUP_RMDIR},
};

use crate::{
    kernel::{Cgroup, KernfsNode, tracepoints::CgroupEvent},
    maps::{EVENTS, FILTER, FILTER_ENABLED, count_lost},
};

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: RawTracePointContext) -> i32 {
    report(&ctx, CGROUP_MKDIR);
    0
}

#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: RawTracePointContext) -> i32 {
    report(&ctx, CGROUP_RMDIR);
    0
}

#[raw_tracepoint(tracepoint = "cgroup_release")]
pub fn cgroup_release(ctx: RawTracePointContext) -> i32 {
    report(&ctx, CGROUP_RELEASE);
    0
}

#[inline(always)]
fn report(ctx: &RawTracePointContext, action: u32) {
    let CgroupEvent { cgrp, path } = CgroupEvent::from_ctx(ctx);
    if !cgrp.on_memory_hierarchy() {
        return;
    }
    if action == CGROUP_MKDIR && FILTER_ENABLED.load() != 0 {
        grow_filtered_subtree(cgrp);
    }
    let Some(mut entry) = EVENTS.reserve::<CgroupRecord>(0) else {
        count_lost(LostKind::Cgroup);
        return;
    };
    // SAFETY: the reservation is exclusively ours until submitted; we write every field that is
    // read, starting from zeroed memory so the unused tail of `path` is deterministic.
    let rec = unsafe {
        let rec = entry.as_mut_ptr();
        core::ptr::write_bytes(rec, 0, 1);
        &mut *rec
    };
    rec.header = EventHeader {
        kind: EventKind::Cgroup as u32,
        // SAFETY: helper calls without arguments.
        pad: 0,
        // SAFETY: as above.
        timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    rec.action = action;
    if let Ok(kn) = cgrp.kn() {
        rec.memcg_id = kn.id().unwrap_or(0);
    }
    // A failed read leaves an empty path; userspace then names the cgroup from its scan.
    let _ = path.read_into(&mut rec.path);
    if action == CGROUP_RMDIR
        && let Ok(memcg) = cgrp.memcg()
        && let Some(memcg) = memcg.non_null()
        && let Ok(usage) = memcg.usage_pages()
    {
        rec.charged_pages = usage;
        rec.flags |= CGROUP_FLAG_CHARGED;
    }
    entry.submit(0);
}

/// A filtered subtree grows here, in the kernel, before the new cgroup's first charge, even when
/// the ring buffer is full: userspace would learn of it only after its first events were
/// dropped.
#[inline(always)]
fn grow_filtered_subtree(cgrp: Cgroup) {
    if let Ok(kn) = cgrp.kn()
        && let Ok(id) = kn.id()
        && let Ok(parent_id) = kn.parent().and_then(KernfsNode::id)
        // SAFETY: a plain lookup; the value is not kept.
        && unsafe { FILTER.get(&parent_id) }.is_some()
    {
        let _ = FILTER.insert(&id, &1, 0);
    }
}
