//! One pass over the followed memcgs' counters, run off the pipeline's consumer.

use std::time::{Duration, Instant};

use super::{
    MemoryHierarchy,
    context::is_sampled,
    counter_gate::{CounterGate, Decision, Pass},
    counters,
};
use crate::event::CounterValues;

/// What a pass found: the memcgs of a walk of the hierarchy (when it walked), and the counters
/// of the memcgs `stats` samples.
pub struct CounterScan {
    /// `None` when the pass did not walk.
    pub(super) found: Option<Vec<(u64, String)>>,
    /// Memcg id, cgroup path, counters (`None`: not read, nothing says they changed).
    pub(super) counters: Vec<(u64, String, Option<CounterValues>)>,
    /// When the pass began reading (`CLOCK_BOOTTIME`): a notification read after that is newer
    /// than what the pass read of the same counters.
    pub(super) started_ns: u64,
    /// How long the walk and the reads took.
    pub took: Duration,
    /// Memcgs whose files were read.
    pub read: usize,
    /// Whether the pass read every memcg.
    pub full: bool,
}

impl CounterScan {
    /// A pass; `full` reads every memcg (the first and the last pass of a session).
    pub(super) fn new(
        hierarchy: &MemoryHierarchy,
        named: Option<&str>,
        gate: &mut CounterGate,
        full: bool,
    ) -> Self {
        let start = Instant::now();
        let started_ns = crate::clock::boot_ns();
        let (full, found) = gate.begin(hierarchy, (Pass::Counters, full), |path| {
            is_sampled(path, named)
        });
        let mut counters = Vec::with_capacity(gate.followed().len());
        let mut gone = Vec::new();
        let mut read = 0;
        for (id, path) in gate.followed().to_vec() {
            let values = match gate.decide(hierarchy, Pass::Counters, (id, &path), full) {
                Decision::Unchanged => None,
                Decision::Read => {
                    read += 1;
                    let Some(values) = counters::read(hierarchy, &path) else {
                        gone.push(path);
                        continue;
                    };
                    gate.counters_read(&path, &values);
                    Some(values)
                }
            };
            counters.push((id, path, values));
        }
        for path in gone {
            gate.gone(&path);
        }
        gate.end(Pass::Counters);
        Self {
            found,
            counters,
            started_ns,
            took: start.elapsed(),
            read,
            full,
        }
    }

    /// Memcgs followed.
    #[must_use]
    pub fn memcgs(&self) -> usize {
        self.counters.len()
    }

    /// Whether the pass walked the hierarchy.
    #[must_use]
    pub fn walked(&self) -> bool {
        self.found.is_some()
    }
}
