//! Trace file layout, version 1. All integers little-endian.
//!
//! ```text
//! file   := magic "MEMTRACE" | version u16 | reserved u16 | header_len u32 | header | crc32 u32
//!           frame*
//! header := JSON object (TraceHeader), header_len bytes; crc32 covers the 16 bytes before it
//!           and itself
//! frame  := tag u8 | reserved [u8; 3] | len u32 | crc32 u32 | payload (len bytes)
//!           crc32 covers the 8 bytes before it and the payload
//! CGROUP (1) := table_id u32 | reserved u32 | memcg_id u64 (0 = unknown) | path (UTF-8, rest)
//! EVENT  (2) := cgroup table_id u32 (u32::MAX = none) | context_len u32
//!               | context (JSON `event::Context` without its cgroup, context_len bytes)
//!               | kernel record (memtrace-common ABI, rest)
//! END    (3) := events u64 | lost_kinds u32 | reserved u32 | lost u64 × lost_kinds
//! STATS  (4) := cgroup table_id u32 | reserved u32
//!               | sample (JSON `event::StatsSample` without its cgroup, rest)
//! CACHE  (5) := cgroup table_id u32 (u32::MAX = none) | reserved u32
//!               | sample (JSON `event::CacheSample` without its cgroup, rest)
//! CHARGE (6), SLAB (7): as CACHE, with `event::ChargeSample` and `event::SlabSample`
//! ```
//!
//! A cgroup's frame is written before the first event that names it, so a reader that stops
//! anywhere has every name it needs.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"MEMTRACE";
pub const VERSION: u16 = 1;
pub const TAG_CGROUP: u8 = 1;
pub const TAG_EVENT: u8 = 2;
pub const TAG_END: u8 = 3;
pub const TAG_STATS: u8 = 4;
pub const TAG_CACHE: u8 = 5;
pub const TAG_CHARGE: u8 = 6;
pub const TAG_SLAB: u8 = 7;
pub const FRAME_HEADER_LEN: usize = 12;
/// No frame or header is larger; a bigger length means corruption, not a reason to allocate.
pub const MAX_PAYLOAD: u32 = 1 << 20;
pub const NO_CGROUP: u32 = u32::MAX;

/// Everything needed to read the events on another machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    pub memtrace_version: String,
    pub host: String,
    pub kernel_release: String,
    /// Wall-clock time of boot, ns since the Unix epoch; event timestamps count from it.
    pub boot_time_wall_ns: u64,
    /// The clock of event timestamps (`CLOCK_BOOTTIME`).
    pub clock: String,
    /// Page size of the recording host, for page counts in kernel records.
    pub page_size: u64,
    /// Wall time the recording started, ns since the Unix epoch.
    pub started_wall_ns: u64,
    /// What each probe point attached, e.g. `oom_kill=raw_tp/mark_victim`.
    pub probes: Vec<String>,
    /// `v1` or `v2`: the memory controller's cgroup version on the recording host.
    pub cgroup_version: String,
}

#[must_use]
pub fn crc(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}
