//! One pass over the followed memcgs' counters, run off the pipeline's consumer.

use std::time::{Duration, Instant};

use super::{
    MemoryHierarchy,
    context::is_sampled,
    counter_gate::{CounterGate, Decision},
    counters,
};
use crate::event::CounterValues;

/// What a pass found: the memcgs of a walk of the hierarchy (when it walked), and the counters
/// of the memcgs `stats` samples.
pub struct CounterScan {
    /// Empty when the pass did not walk.
    pub(super) found: Vec<(u64, String)>,
    /// Memcg id, cgroup path, counters (`None`: not read, nothing says they changed).
    pub(super) counters: Vec<(u64, String, Option<CounterValues>)>,
    /// How long the walk and the reads took.
    pub took: Duration,
    /// Memcgs whose files were read.
    pub read: usize,
    /// Whether the pass read every memcg, and whether it walked.
    pub full: bool,
    pub walked: bool,
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
        let (full, walked) = gate.begin(full);
        let found = if walked {
            let found = hierarchy.walk();
            gate.set_followed(
                found
                    .iter()
                    .filter(|(_, path)| is_sampled(path, named))
                    .cloned()
                    .collect(),
            );
            found
        } else {
            Vec::new()
        };
        let mut counters = Vec::with_capacity(gate.followed().len());
        let mut gone = Vec::new();
        let mut read = 0;
        for (id, path) in gate.followed().to_vec() {
            let values = match gate.decide(hierarchy, id, &path, full) {
                Decision::Unchanged => None,
                Decision::Gone => {
                    gone.push(path);
                    continue;
                }
                Decision::Read => {
                    read += 1;
                    let Some(values) = counters::read(hierarchy, &path) else {
                        gone.push(path);
                        continue;
                    };
                    gate.read(&path, &values);
                    Some(values)
                }
            };
            counters.push((id, path, values));
        }
        for path in gone {
            gate.gone(&path);
        }
        gate.end();
        Self {
            found,
            counters,
            took: start.elapsed(),
            read,
            full,
            walked,
        }
    }

    /// Memcgs followed.
    #[must_use]
    pub fn memcgs(&self) -> usize {
        self.counters.len()
    }
}
