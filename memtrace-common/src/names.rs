//! Map, program and global names, defined once for both sides.

/// Ring buffer carrying rare events (OOM kills, …) one by one.
pub const EVENTS_MAP: &str = "EVENTS";
/// Per-CPU array of lost-event counters, indexed by [`crate::LostKind`].
pub const LOST_MAP: &str = "LOST";
/// The [`crate::KernelOffsets`] global, filled in from the running kernel's BTF before load.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// The OOM strategies: raw tracepoint on `oom:mark_victim`, and fentry and kprobe on
/// [`OOM_KILL_FUNCTION`].
pub const PROG_OOM_MARK_VICTIM: &str = "oom_mark_victim";
pub const PROG_OOM_FENTRY: &str = "oom_kill_process_fentry";
pub const PROG_OOM_KPROBE: &str = "oom_kill_process_kprobe";
/// Chooses the OOM victim's fate and has the `oom_control` (`mm/oom_kill.c`).
pub const OOM_KILL_FUNCTION: &str = "oom_kill_process";

/// Which of the two maps of each aggregate the programs write to (`Array<u32>`, index 0).
pub const AGG_ACTIVE_MAP: &str = "AGG_ACTIVE";
/// Page-cache deltas per memcg, double-buffered.
pub const CACHE_MEMCG_MAPS: [&str; 2] = ["CACHE_MEMCG_0", "CACHE_MEMCG_1"];
/// Page-cache deltas per (memcg, file), double-buffered.
pub const CACHE_FILE_MAPS: [&str; 2] = ["CACHE_FILE_0", "CACHE_FILE_1"];
/// Inode pointer → (inode number, device), for the per-file aggregate.
pub const INODE_IDS_MAP: &str = "INODE_IDS";
/// Reclaim episodes in progress, per task.
pub const RECLAIM_BEGIN_MAP: &str = "RECLAIM_BEGIN";
/// Memcg ids the user's filter selects (`HashMap<u64, u8>`), and the global that turns it on.
pub const FILTER_MAP: &str = "FILTER";
pub const FILTER_ENABLED_GLOBAL: &str = "FILTER_ENABLED";

/// Raw tracepoints on the page cache and on memcg reclaim.
pub const PROG_FILEMAP_ADD: &str = "filemap_add";
pub const PROG_FILEMAP_DELETE: &str = "filemap_delete";
pub const PROG_RECLAIM_BEGIN: &str = "memcg_reclaim_begin";
pub const PROG_RECLAIM_END: &str = "memcg_reclaim_end";

/// Raw tracepoints on the memory cgroup lifecycle.
pub const PROG_CGROUP_MKDIR: &str = "cgroup_mkdir";
pub const PROG_CGROUP_RMDIR: &str = "cgroup_rmdir";
pub const PROG_CGROUP_RELEASE: &str = "cgroup_release";

/// Capability probes: the smallest program of each type, loaded and attached by
/// `memtrace probes` to learn what the running kernel allows.
pub const PROG_CAP_TRACEPOINT: &str = "cap_tracepoint";
pub const PROG_CAP_RAW_TRACEPOINT: &str = "cap_raw_tracepoint";
pub const PROG_CAP_KPROBE: &str = "cap_kprobe";
pub const PROG_CAP_FENTRY: &str = "cap_fentry";

/// Kernel function the kprobe and fentry capability probes attach to: it exists on every kernel
/// with a memory controller and is where the OOM strategies of later kernels will hook.
pub const CAP_PROBE_FUNCTION: &str = "oom_kill_process";
