//! The node's memory cgroups, read from the kernel at each scrape: how many are dying (removed,
//! still pinned by charged page cache or slab) and how many memcg ids are left. When none are,
//! no cgroup (so no container) can be created on the node.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::gauge::ConstGauge,
};

use crate::attribution::{MemcgCensus, MemoryHierarchy, count_dying};

#[derive(Debug)]
pub struct NodeMemcgs {
    hierarchy: MemoryHierarchy,
}

impl NodeMemcgs {
    #[must_use]
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        Self { hierarchy }
    }

    fn counts(&self) -> Option<MemcgCensus> {
        let live = self.hierarchy.walk().len() as u64;
        match count_dying(&self.hierarchy, live) {
            Ok(dying) => Some(MemcgCensus { live, dying }),
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
                counts.headroom(),
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
