//! The events users see, built from kernel records plus what userspace knew at the time.

use memtrace_common::{
    OomKillRecord,
    event::{OOM_FLAG_MEMCG, OOM_FLAG_RSS, OOM_FLAG_TASK, Record},
};
use serde::Serialize;

use crate::clock::format_wall;

/// What userspace added to a kernel record when it arrived (the cgroup may be gone later, so
/// this is recorded with the event, not recomputed on replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Cgroup path in the memory hierarchy, `/` for the root memcg.
    pub cgroup: Option<String>,
    pub memcg_limit_bytes: Option<u64>,
    pub memcg_usage_bytes: Option<u64>,
}

/// A kernel record with its context: what the trace file stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub record: Record,
    pub context: Context,
}

/// How to turn kernel timestamps and page counts into wall time and bytes, for the machine the
/// events came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostClock {
    pub boot_time_wall_ns: u64,
    pub page_size: u64,
}

/// One event as users see it; `--format json` prints it with a `"type"` tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    OomKill(OomKill),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomKill {
    /// Wall time, RFC 3339 UTC.
    pub time: String,
    /// Nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    /// Inode number of the victim's memory cgroup directory.
    pub memcg_id: Option<u64>,
    /// The victim's memory cgroup.
    pub cgroup: Option<String>,
    pub memcg_limit_bytes: Option<u64>,
    pub memcg_usage_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
}

impl Event {
    #[must_use]
    pub fn new(observed: &Observed, clock: HostClock) -> Self {
        match &observed.record {
            Record::OomKill(rec) => Self::OomKill(OomKill::new(rec, &observed.context, clock)),
        }
    }

    /// The `"type"` name.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::OomKill(_) => "oom_kill",
        }
    }
}

impl OomKill {
    fn new(rec: &OomKillRecord, context: &Context, clock: HostClock) -> Self {
        let has = |flag| rec.flags & flag != 0;
        let bytes = |pages: u64| has(OOM_FLAG_RSS).then(|| pages.saturating_mul(clock.page_size));
        Self {
            time: format_wall(clock.boot_time_wall_ns + rec.header.timestamp_ns),
            timestamp_ns: rec.header.timestamp_ns,
            pid: rec.pid,
            tgid: has(OOM_FLAG_TASK).then_some(rec.tgid),
            comm: has(OOM_FLAG_TASK).then(|| comm_str(&rec.comm)),
            memcg_id: has(OOM_FLAG_MEMCG).then_some(rec.memcg_id),
            cgroup: context.cgroup.clone(),
            memcg_limit_bytes: context.memcg_limit_bytes,
            memcg_usage_bytes: context.memcg_usage_bytes,
            anon_rss_bytes: bytes(rec.anon_rss_pages),
            file_rss_bytes: bytes(rec.file_rss_pages),
            shmem_rss_bytes: bytes(rec.shmem_rss_pages),
        }
    }
}

/// `task_struct.comm`: NUL-terminated, at most 16 bytes, not necessarily UTF-8.
fn comm_str(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use memtrace_common::{EventHeader, EventKind};

    use super::*;

    #[test]
    fn json_has_a_type_tag_and_bytes() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"memhog");
        let observed = Observed {
            record: Record::OomKill(OomKillRecord {
                header: EventHeader {
                    kind: EventKind::OomKill as u32,
                    cpu: 0,
                    timestamp_ns: 1_000,
                },
                memcg_id: 42,
                pid: 7,
                tgid: 7,
                anon_rss_pages: 2,
                file_rss_pages: 0,
                shmem_rss_pages: 0,
                flags: OOM_FLAG_MEMCG | OOM_FLAG_RSS | OOM_FLAG_TASK,
                pad: 0,
                comm,
            }),
            context: Context {
                cgroup: Some("/x".into()),
                memcg_limit_bytes: Some(64 << 20),
                memcg_usage_bytes: None,
            },
        };
        let event = Event::new(
            &observed,
            HostClock {
                boot_time_wall_ns: 1_795_794_421_000_000_000,
                page_size: 4096,
            },
        );
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["type"], "oom_kill");
        assert_eq!(json["comm"], "memhog");
        assert_eq!(json["cgroup"], "/x");
        assert_eq!(json["anon_rss_bytes"], 8192);
        assert_eq!(json["time"], "2026-11-27T15:47:01.000001Z");
        assert!(json["memcg_usage_bytes"].is_null());
    }

    #[test]
    fn comm_stops_at_nul_and_tolerates_bad_utf8() {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(comm_str(&comm), "a\u{fffd}b");
        assert_eq!(comm_str(&[b'x'; 16]), "x".repeat(16));
    }
}
