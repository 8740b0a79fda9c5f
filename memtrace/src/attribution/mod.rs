//! Attribution: memcg id → cgroup path (v1 memory hierarchy and v2), and the memcg's limits.
//!
//! A memcg id is the inode number of its cgroup directory (`kernfs_node.id` on 64-bit kernels),
//! the same number `stat(2)` reports, so one directory walk maps ids to paths on both v1 and v2.

mod cgroupfs;
mod container;
mod context;
mod counter_changes;
mod counter_gate;
mod counter_scan;
mod counter_watch;
pub mod counters;
mod dying;
mod failcnt;
mod files;
mod filter;
mod kmsg;
mod memory_events;
mod memstat;
mod oom_control;
mod pods;
mod runtimes;

pub use cgroupfs::{
    CgroupVersion, HierarchyError, MemcgResolver, MemoryHierarchy, memcg_path_of_pid,
};
pub(crate) use container::with_version_3_layout;
pub use container::{ContainerIdentity, IdentityKind, QosClass, runtime};
pub use context::{KMSG_WAIT, LiveContext, MemoryScan, OomArrival, TableSizes};
pub use counter_scan::CounterScan;
pub use counter_watch::CounterWatch;
pub use dying::{DyingTracker, MEMCG_ID_LIMIT, MemcgCensus, Removed, count_dying};
pub use files::{FileNames, Forgotten};
pub use filter::Filter;
pub use kmsg::{KmsgOomLines, OomKillLine};
pub use memory_events::MemoryEventsWatch;
pub use memstat::MemoryStats;
pub use pods::{PodDirectory, PodName};
pub use runtimes::{RuntimeLookups, RuntimeNames, RuntimeState};
