//! Dying memory cgroups: removed (offline) but not freed, because page cache or slab charged to
//! them keeps them alive. Each one holds a memcg id; the kernel has 65 535, and when they run
//! out no new cgroup (so no new container) can be created.

use std::{collections::HashMap, fs, io};

use super::{CgroupVersion, MemoryHierarchy};

/// The kernel's limit on memcg ids (`MEM_CGROUP_ID_MAX`).
pub const MEMCG_ID_LIMIT: u64 = 65_535;

/// The memory cgroups a host has at one moment. Each, live or dying, holds one of the kernel's
/// [`MEMCG_ID_LIMIT`] ids; a trace header keeps the count at its start so that a report made
/// elsewhere can say how close the node was to running out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemcgCensus {
    pub live: u64,
    pub dying: u64,
}

impl MemcgCensus {
    #[must_use]
    pub const fn ids_in_use(&self) -> u64 {
        self.live.saturating_add(self.dying)
    }

    /// Ids left before the kernel refuses to create a memory cgroup.
    #[must_use]
    pub const fn headroom(&self) -> u64 {
        MEMCG_ID_LIMIT.saturating_sub(self.ids_in_use())
    }
}

/// How many memcgs are dying right now, from the kernel's counters.
///
/// v2: the root's `cgroup.stat` `nr_dying_descendants`. v1: `/proc/cgroups` counts every memcg
/// the kernel still has, live or dying; the live ones are the hierarchy's directories.
///
/// # Errors
///
/// When the counters cannot be read.
pub fn count_dying(hierarchy: &MemoryHierarchy, live_memcgs: u64) -> io::Result<u64> {
    match hierarchy.version {
        CgroupVersion::V2 => {
            let stat = fs::read_to_string(hierarchy.root.join("cgroup.stat"))?;
            field(&stat, "nr_dying_descendants")
                .ok_or_else(|| io::Error::other("cgroup.stat has no nr_dying_descendants"))
        }
        CgroupVersion::V1 => {
            let cgroups = fs::read_to_string("/proc/cgroups")?;
            let total = cgroups
                .lines()
                .find_map(|l| {
                    let mut cols = l.split_whitespace();
                    (cols.next() == Some("memory")).then(|| cols.nth(1)?.parse::<u64>().ok())?
                })
                .ok_or_else(|| io::Error::other("/proc/cgroups has no memory line"))?;
            Ok(total.saturating_sub(live_memcgs))
        }
    }
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// A memcg seen being removed and not yet freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub cgroup: Option<String>,
    pub removed_ns: u64,
    pub charged_bytes: Option<u64>,
}

/// Follows memcgs from removal to release.
#[derive(Debug, Default)]
pub struct DyingTracker {
    removed: HashMap<u64, Removed>,
}

impl DyingTracker {
    pub fn removed(&mut self, memcg_id: u64, removed: Removed) {
        self.removed.insert(memcg_id, removed);
    }

    /// Forgets a freed memcg, returning when it was removed if that was seen.
    pub fn freed(&mut self, memcg_id: u64) -> Option<Removed> {
        self.removed.remove(&memcg_id)
    }

    /// Dying memcgs removed while memtrace watched, oldest first.
    #[must_use]
    pub fn dying(&self) -> Vec<Removed> {
        let mut dying: Vec<Removed> = self.removed.values().cloned().collect();
        dying.sort_by_key(|d| d.removed_ns);
        dying
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_counts_live_and_dying() {
        assert_eq!(
            MemcgCensus {
                live: 100,
                dying: 35
            }
            .headroom(),
            65_400
        );
        assert_eq!(
            MemcgCensus {
                live: 70_000,
                dying: 1
            }
            .headroom(),
            0
        );
    }

    #[test]
    fn reads_nr_dying_descendants() {
        let stat = "nr_descendants 12\nnr_dying_descendants 3\n";
        assert_eq!(field(stat, "nr_dying_descendants"), Some(3));
        assert_eq!(field(stat, "nr_descendants"), Some(12));
    }

    #[test]
    fn tracks_removal_to_release() {
        let mut t = DyingTracker::default();
        let removed = Removed {
            cgroup: Some("/a".into()),
            removed_ns: 100,
            charged_bytes: Some(4096),
        };
        t.removed(5, removed.clone());
        assert_eq!(t.dying(), vec![removed.clone()]);
        assert_eq!(t.freed(5), Some(removed));
        assert_eq!(t.freed(5), None);
        assert_eq!(t.dying(), Vec::new());
    }
}
