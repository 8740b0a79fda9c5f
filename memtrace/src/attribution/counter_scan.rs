//! One pass over the followed memcgs' counters, run off the pipeline's consumer.

use std::time::{Duration, Instant};

use super::{MemoryHierarchy, context::is_sampled, counters};
use crate::event::CounterValues;

/// What a walk of the hierarchy found, with the counters of the memcgs `stats` samples.
pub struct CounterScan {
    pub(super) found: Vec<(u64, String)>,
    /// Memcg id, cgroup path, counters.
    pub(super) counters: Vec<(u64, String, CounterValues)>,
    /// How long the walk and the reads took.
    pub took: Duration,
}

impl CounterScan {
    pub(super) fn new(hierarchy: &MemoryHierarchy, named: Option<&str>) -> Self {
        let start = Instant::now();
        let found = hierarchy.walk();
        let counters = found
            .iter()
            .filter(|(_, path)| is_sampled(path, named))
            .filter_map(|(id, path)| Some((*id, path.clone(), counters::read(hierarchy, path)?)))
            .collect();
        Self {
            found,
            counters,
            took: start.elapsed(),
        }
    }

    /// Memcgs whose counters were read.
    #[must_use]
    pub fn memcgs(&self) -> usize {
        self.counters.len()
    }
}
