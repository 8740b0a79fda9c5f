//! Memory cgroup lifecycle: created, removed (offline: *dying* while something still pins it),
//! freed. Names are captured here, when the cgroup is created, so that events about a cgroup
//! that is gone by the time userspace looks still carry its path.
//!
//! ```text
//! include/trace/events/cgroup.h (raw tracepoint arguments, 6.1 … 6.18):
//!     DECLARE_EVENT_CLASS(cgroup, TP_PROTO(struct cgroup *cgrp, const char *path), …)
//!     DEFINE_EVENT(cgroup, cgroup_mkdir, …)    after the csses are created
//!     DEFINE_EVENT(cgroup, cgroup_rmdir, …)    in cgroup_destroy_locked(), csses being killed
//!     DEFINE_EVENT(cgroup, cgroup_release, …)  in css_release_work_fn() for the cgroup itself
//! ```
//!
//! Every hierarchy fires these; only the one carrying the memory controller is reported (on a
//! v1 or hybrid host the memory hierarchy, on a v2 host the unified one).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use memtrace_common::{
    CgroupRecord, EventHeader, EventKind, KernelOffsets, LostKind,
    event::{CGROUP_FLAG_CHARGED, CGROUP_MKDIR, CGROUP_RELEASE, CGROUP_RMDIR},
};

use crate::{
    kernel::read_at,
    maps::{EVENTS, FILTER, FILTER_ENABLED, count_lost, offsets},
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
    let offsets = offsets();
    // SAFETY: `ctx.as_ptr()` is `struct bpf_raw_tracepoint_args *`: u64 arguments in order.
    let (cgrp, path) = unsafe {
        let args = ctx.as_ptr().cast::<u64>();
        (*args as *const u8, *args.add(1) as *const u8)
    };
    if !on_memory_hierarchy(cgrp, offsets) {
        return;
    }
    if action == CGROUP_MKDIR && FILTER_ENABLED.load() != 0 {
        // SAFETY: `cgrp` is a `struct cgroup *`; reads are checked by the helper.
        unsafe { grow_filtered_subtree(cgrp, offsets) };
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
    // SAFETY: `cgrp` is the tracepoint's `struct cgroup *`; reads are checked by the helper.
    unsafe {
        if let Ok(kn) = read_at::<*const u8>(cgrp, offsets.cgroup_kn) {
            rec.memcg_id = read_at::<u64>(kn, offsets.kernfs_node_id).unwrap_or(0);
        }
        // A failed read leaves an empty path; userspace then names the cgroup from its scan.
        let _ = bpf_probe_read_kernel_str_bytes(path, &mut rec.path);
        if action == CGROUP_RMDIR
            && let Ok(css) = read_at::<*const u8>(cgrp, offsets.cgroup_memory_css)
            && !css.is_null()
            && let Ok(usage) = read_at::<i64>(css, offsets.memcg_usage)
        {
            rec.charged_pages = usage.max(0).cast_unsigned();
            rec.flags |= CGROUP_FLAG_CHARGED;
        }
    }
    entry.submit(0);
}

/// A filtered subtree grows here, in the kernel, before the new cgroup's first charge, even when
/// the ring buffer is full: userspace would learn of it only after its first events were
/// dropped.
///
/// # Safety
///
/// `cgrp` must be a kernel `struct cgroup` pointer.
#[inline(always)]
unsafe fn grow_filtered_subtree(cgrp: *const u8, offsets: &KernelOffsets) {
    // SAFETY: every read goes through the checked helper.
    unsafe {
        if let Ok(kn) = read_at::<*const u8>(cgrp, offsets.cgroup_kn)
            && let Ok(id) = read_at::<u64>(kn, offsets.kernfs_node_id)
            && let Ok(parent) = read_at::<*const u8>(kn, offsets.kernfs_node_parent)
            && let Ok(parent_id) = read_at::<u64>(parent, offsets.kernfs_node_id)
            && FILTER.get(&parent_id).is_some()
        {
            let _ = FILTER.insert(&id, &1, 0);
        }
    }
}

/// Whether `cgrp` belongs to the hierarchy that carries the memory controller.
#[inline(always)]
fn on_memory_hierarchy(cgrp: *const u8, offsets: &KernelOffsets) -> bool {
    // SAFETY: `cgrp` is a `struct cgroup *`; reads are checked by the helper.
    unsafe {
        read_at::<*const u8>(cgrp, offsets.cgroup_root)
            .and_then(|root| read_at::<u32>(root, offsets.cgroup_root_subsys_mask))
            .is_ok_and(|mask| mask & offsets.memory_subsys_bit != 0)
    }
}
