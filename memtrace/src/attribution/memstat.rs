//! A memcg's memory as cgroupfs reports it: usage, limit and the breakdown the kubelet looks at.

use std::{collections::HashMap, fs};

use serde::{Deserialize, Serialize};

use memtrace_common::cgroup::read_u64;

use super::{CgroupVersion, MemoryHierarchy};

/// One memcg's memory, read from cgroupfs. Hierarchical totals on v1 (`total_*`), so a pod's
/// numbers include its containers, as on v2. Trace files store the byte counts compactly
/// (`event::compact`); version 2 files stored them plain (`trace::v2` reads those).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    #[serde(with = "crate::event::compact::option")]
    pub usage_bytes: Option<u64>,
    /// `None`: unlimited.
    #[serde(with = "crate::event::compact::option")]
    pub limit_bytes: Option<u64>,
    /// What the kubelet and cAdvisor call the working set and evict/alert on:
    /// `usage − inactive_file`.
    #[serde(with = "crate::event::compact::option")]
    pub working_set_bytes: Option<u64>,
    #[serde(with = "crate::event::compact::option")]
    pub anon_bytes: Option<u64>,
    /// Page cache (file-backed pages, shmem included, as the kernel counts it).
    #[serde(with = "crate::event::compact::option")]
    pub file_bytes: Option<u64>,
    #[serde(with = "crate::event::compact::option")]
    pub active_file_bytes: Option<u64>,
    #[serde(with = "crate::event::compact::option")]
    pub inactive_file_bytes: Option<u64>,
    #[serde(with = "crate::event::compact::option")]
    pub shmem_bytes: Option<u64>,
    /// Kernel memory charged to the memcg (v1 `memory.kmem.usage_in_bytes`, v2 `kernel`).
    #[serde(with = "crate::event::compact::option")]
    pub kernel_bytes: Option<u64>,
    /// v2 only: v1's `memory.stat` has no slab lines.
    #[serde(with = "crate::event::compact::option")]
    pub slab_reclaimable_bytes: Option<u64>,
    #[serde(with = "crate::event::compact::option")]
    pub slab_unreclaimable_bytes: Option<u64>,
}

impl MemoryStats {
    /// Reads everything at once; `None` when the cgroup is gone.
    #[must_use]
    pub fn read(hierarchy: &MemoryHierarchy, cgroup: &str) -> Option<Self> {
        let dir = hierarchy.dir(cgroup);
        let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
        let usage = hierarchy.usage_bytes(cgroup);
        let kmem = match hierarchy.version {
            CgroupVersion::V1 => read_u64(&dir.join("memory.kmem.usage_in_bytes")),
            CgroupVersion::V2 => None,
        };
        Some(Self::from_stat(
            hierarchy.version,
            &stat,
            usage,
            hierarchy.limit_bytes(cgroup),
            kmem,
        ))
    }

    /// Which `memory.stat` keys the kernel's OOM report uses: v2's (`anon`, `file`) when it
    /// has them, as 5.10 prints for v1 memcgs too; else the hierarchy's.
    #[must_use]
    pub fn report_format(stat: &str, hierarchy: CgroupVersion) -> CgroupVersion {
        if stat.lines().any(|line| line.starts_with("anon ")) {
            CgroupVersion::V2
        } else {
            hierarchy
        }
    }

    /// From `memory.stat` text and the other counters, as cgroupfs or the kernel's OOM report
    /// give them.
    #[must_use]
    pub fn from_stat(
        version: CgroupVersion,
        stat: &str,
        usage: Option<u64>,
        limit: Option<u64>,
        v1_kmem: Option<u64>,
    ) -> Self {
        let fields: HashMap<&str, u64> = stat
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k, v.trim().parse().ok()?))
            })
            .collect();
        let get = |k: &str| fields.get(k).copied();
        let mut s = match version {
            CgroupVersion::V1 => Self {
                anon_bytes: get("total_rss"),
                file_bytes: get("total_cache"),
                active_file_bytes: get("total_active_file"),
                inactive_file_bytes: get("total_inactive_file"),
                shmem_bytes: get("total_shmem"),
                kernel_bytes: v1_kmem,
                ..Self::default()
            },
            CgroupVersion::V2 => Self {
                anon_bytes: get("anon"),
                file_bytes: get("file"),
                active_file_bytes: get("active_file"),
                inactive_file_bytes: get("inactive_file"),
                shmem_bytes: get("shmem"),
                // A v1 memcg's report in v2's keys (5.10) has no `kernel` line: v1's counter.
                // v2 before 5.18 has none either: the parts it sums.
                kernel_bytes: get("kernel")
                    .or(v1_kmem)
                    .or_else(|| kernel_from_parts(&get)),
                slab_reclaimable_bytes: get("slab_reclaimable"),
                slab_unreclaimable_bytes: get("slab_unreclaimable"),
                ..Self::default()
            },
        };
        s.usage_bytes = usage;
        s.limit_bytes = limit;
        // cAdvisor: workingSet = usage − inactive_file, floored at 0.
        s.working_set_bytes = usage.map(|u| u.saturating_sub(s.inactive_file_bytes.unwrap_or(0)));
        s
    }
}

/// Kernel memory from a v2 `memory.stat` without the `kernel` line (before 5.18, which added
/// it as the memcg's `MEMCG_KMEM` pages): slab, kernel stacks, page tables and per-CPU memory,
/// the accounted kernel memory that memory.stat breaks down. `None` without a slab line.
fn kernel_from_parts(get: &impl Fn(&str) -> Option<u64>) -> Option<u64> {
    let slab =
        get("slab").or_else(|| Some(get("slab_reclaimable")? + get("slab_unreclaimable")?))?;
    let rest: u64 = ["kernel_stack", "pagetables", "percpu"]
        .iter()
        .filter_map(|k| get(k))
        .sum();
    Some(slab + rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_in_v2_keys_is_read_as_v2_on_a_v1_hierarchy() {
        let stat = "anon 66908160\nfile 0\ninactive_file 0\n";
        assert_eq!(
            MemoryStats::report_format(stat, CgroupVersion::V1),
            CgroupVersion::V2
        );
        assert_eq!(
            MemoryStats::report_format("rss 4096\ncache 0\n", CgroupVersion::V1),
            CgroupVersion::V1
        );
        let s = MemoryStats::from_stat(CgroupVersion::V2, stat, None, None, Some(500));
        assert_eq!(s.anon_bytes, Some(66_908_160));
        assert_eq!(s.kernel_bytes, Some(500));
    }

    #[test]
    fn v1_uses_hierarchical_totals_and_kmem() {
        let stat = "cache 1\nrss 2\ntotal_cache 4096\ntotal_rss 8192\ntotal_shmem 0\n\
                    total_active_file 1024\ntotal_inactive_file 3072\n";
        let s = MemoryStats::from_stat(CgroupVersion::V1, stat, Some(20_000), None, Some(500));
        assert_eq!(s.anon_bytes, Some(8192));
        assert_eq!(s.file_bytes, Some(4096));
        assert_eq!(s.kernel_bytes, Some(500));
        assert_eq!(s.working_set_bytes, Some(20_000 - 3072));
        assert_eq!(s.slab_reclaimable_bytes, None);
    }

    /// 5.10's v2 memory.stat and OOM report: no `kernel` line, its parts.
    #[test]
    fn v2_before_5_18_sums_the_kernel_parts() {
        let stat = "anon 0\nfile 0\nkernel_stack 16384\npercpu 1000\nsock 0\n\
                    slab_reclaimable 20000\nslab_unreclaimable 30000\nslab 50000\n";
        let s = MemoryStats::from_stat(CgroupVersion::V2, stat, Some(60_000), None, None);
        assert_eq!(s.kernel_bytes, Some(50_000 + 16_384 + 1000));
        let no_slab = MemoryStats::from_stat(CgroupVersion::V2, "anon 1\n", None, None, None);
        assert_eq!(no_slab.kernel_bytes, None, "absent, not zero");
    }

    #[test]
    fn v2_reads_slab_and_kernel() {
        let stat = "anon 100\nfile 200\nkernel 30\nshmem 5\nactive_file 50\ninactive_file 150\n\
                    slab_reclaimable 10\nslab_unreclaimable 20\ngarbage\nbad x\n";
        let s = MemoryStats::from_stat(CgroupVersion::V2, stat, Some(100), Some(1000), None);
        assert_eq!(s.kernel_bytes, Some(30));
        assert_eq!(s.slab_unreclaimable_bytes, Some(20));
        assert_eq!(
            s.working_set_bytes,
            Some(0),
            "floored at zero like cAdvisor"
        );
        assert_eq!(s.limit_bytes, Some(1000));
    }
}
