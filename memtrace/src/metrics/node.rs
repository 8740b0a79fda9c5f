//! The node's memory cgroups, read from the kernel at each scrape: how many are dying (removed,
//! still pinned by charged page cache or slab) and how many memcg ids are left. When none are,
//! no cgroup (so no container) can be created on the node.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::gauge::ConstGauge,
};

use crate::attribution::{MEMCG_ID_LIMIT, MemoryHierarchy, count_dying};

#[derive(Debug)]
pub struct NodeMemcgs {
    hierarchy: MemoryHierarchy,
}

/// Live and dying memcgs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgCounts {
    pub live: u64,
    pub dying: u64,
}

impl MemcgCounts {
    /// `MEM_CGROUP_ID_MAX` minus every memcg holding an id, live or dying.
    #[must_use]
    pub fn free_ids(self) -> u64 {
        MEMCG_ID_LIMIT.saturating_sub(self.live.saturating_add(self.dying))
    }
}

impl NodeMemcgs {
    #[must_use]
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        Self { hierarchy }
    }

    fn counts(&self) -> Option<MemcgCounts> {
        let live = self.hierarchy.walk().len() as u64;
        match count_dying(&self.hierarchy, live) {
            Ok(dying) => Some(MemcgCounts { live, dying }),
            Err(e) => {
                log::debug!("metrics: cannot count dying memory cgroups: {e}");
                None
            }
        }
    }
}

impl Collector for NodeMemcgs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counts) = self.counts() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "memcgs_live",
                "Memory cgroups on the node that exist in the hierarchy.",
                counts.live,
            ),
            (
                "memcgs_dying",
                "Memory cgroups on the node that were removed but are still pinned by charged \
                 memory (page cache, slab); each holds a memcg id.",
                counts.dying,
            ),
            (
                "memcg_ids_free",
                "Memcg ids left on the node (65535 - live - dying); at 0 no cgroup, so no \
                 container, can be created.",
                counts.free_ids(),
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ids_count_live_and_dying() {
        let counts = MemcgCounts {
            live: 100,
            dying: 35,
        };
        assert_eq!(counts.free_ids(), 65_400);
        let full = MemcgCounts {
            live: 70_000,
            dying: 1,
        };
        assert_eq!(full.free_ids(), 0);
    }
}
