//! What changed in each memcg's counters since memtrace last said: the `counters` events.
//!
//! Memcgs there at the first pass give the baseline and say nothing; a memcg that appears later
//! was created while memtrace ran, so its counters started at zero and what it has already
//! counted is a change.

use std::collections::HashMap;

use crate::event::{Change, CounterChanges, CounterSource, CounterValues};

#[derive(Default)]
pub struct CounterTracker {
    /// Per cgroup path: when its counters were last read, and their values then.
    last: HashMap<String, (u64, CounterValues)>,
    /// Whether a full pass has given the baseline.
    primed: bool,
}

impl CounterTracker {
    /// A pass over the memcgs whose counters are followed: their values, or `None` for one not
    /// read (nothing said they changed: they stay as they were); the ones it did not list are
    /// gone and forgotten. Returns what changed, per cgroup.
    pub fn pass(
        &mut self,
        now_ns: u64,
        read: Vec<(String, Option<CounterValues>)>,
    ) -> Vec<(String, CounterChanges)> {
        let primed = std::mem::replace(&mut self.primed, true);
        let mut seen = HashMap::with_capacity(read.len());
        let mut changes = Vec::new();
        for (cgroup, values) in read {
            let Some(values) = values else {
                if let Some(kept) = self.last.remove(&cgroup) {
                    seen.insert(cgroup, kept);
                }
                continue;
            };
            let (change, entry) = match self.last.remove(&cgroup) {
                Some((at, before)) => (
                    diff(
                        now_ns.saturating_sub(at),
                        CounterSource::Sampled,
                        &before,
                        &values,
                    ),
                    values,
                ),
                // Created since the last pass: from zero.
                None if primed => (
                    diff(
                        0,
                        CounterSource::Sampled,
                        &CounterValues::default(),
                        &values,
                    ),
                    values,
                ),
                None => (None, values),
            };
            if let Some(change) = change {
                changes.push((cgroup.clone(), change));
            }
            seen.insert(cgroup, (now_ns, entry));
        }
        self.last = seen;
        changes
    }

    /// Some of a memcg's counters, read on the kernel's notification; `None` when none of them
    /// changed or the memcg is not followed (yet).
    pub fn notified(
        &mut self,
        now_ns: u64,
        cgroup: &str,
        values: &CounterValues,
    ) -> Option<CounterChanges> {
        let (at, before) = self.last.get_mut(cgroup)?;
        let change = diff(
            now_ns.saturating_sub(*at),
            CounterSource::Notified,
            before,
            values,
        );
        before.merge(values);
        *at = now_ns;
        change
    }

    /// A followed cgroup's counters as last read or notified.
    pub fn values(&self, cgroup: &str) -> Option<&CounterValues> {
        self.last.get(cgroup).map(|(_, values)| values)
    }

    /// The cgroups followed.
    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        self.last.keys().map(String::as_str)
    }

    /// Memcgs followed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

/// The counters of `after` whose values differ from `before`'s; a counter `before` lacks
/// counts from zero (the kernel started counting it).
fn diff(
    interval_ns: u64,
    source: CounterSource,
    before: &CounterValues,
    after: &CounterValues,
) -> Option<CounterChanges> {
    let changed: Vec<_> = after
        .0
        .iter()
        .filter_map(|&(counter, value)| {
            let old = before.get(counter).unwrap_or(0);
            (old != value).then(|| {
                let delta = i128::from(value) - i128::from(old);
                (
                    counter,
                    Change {
                        value,
                        delta: i64::try_from(delta).unwrap_or(if delta < 0 {
                            i64::MIN
                        } else {
                            i64::MAX
                        }),
                    },
                )
            })
        })
        .collect();
    (!changed.is_empty()).then_some(CounterChanges {
        interval_ns,
        source,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Counter;

    fn values(pairs: &[(Counter, u64)]) -> CounterValues {
        CounterValues(pairs.to_vec())
    }

    #[test]
    fn the_first_pass_is_the_baseline_and_only_changes_follow() {
        let mut t = CounterTracker::default();
        let a = values(&[(Counter::Failcnt, 5), (Counter::DirtyBytes, 8192)]);
        assert_eq!(
            t.pass(1_000, vec![("/a".into(), Some(a.clone()))]),
            Vec::new()
        );
        assert!(
            t.pass(2_000, vec![("/a".into(), Some(a))]).is_empty(),
            "nothing changed"
        );
        let a = values(&[(Counter::Failcnt, 7), (Counter::DirtyBytes, 4096)]);
        let changes = t.pass(3_000, vec![("/a".into(), Some(a))]);
        assert_eq!(changes.len(), 1);
        let (cgroup, c) = &changes[0];
        assert_eq!(cgroup, "/a");
        assert_eq!(c.interval_ns, 1_000);
        assert_eq!(c.get(Counter::Failcnt), Some(Change { value: 7, delta: 2 }));
        assert_eq!(
            c.get(Counter::DirtyBytes),
            Some(Change {
                value: 4096,
                delta: -4096
            })
        );
    }

    #[test]
    fn a_memcg_created_later_counts_from_zero_and_gone_ones_are_forgotten() {
        let mut t = CounterTracker::default();
        assert_eq!(
            t.pass(1, vec![("/a".into(), Some(CounterValues::default()))]),
            Vec::new()
        );
        let b = values(&[(Counter::OomKill, 1), (Counter::UnderOom, 0)]);
        let changes = t.pass(2, vec![("/b".into(), Some(b))]);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].1.changed,
            vec![(Counter::OomKill, Change { value: 1, delta: 1 })],
            "zero stays unsaid"
        );
        assert_eq!(t.len(), 1, "/a is gone");
    }

    #[test]
    fn a_memcg_not_read_keeps_its_values_and_interval() {
        let mut t = CounterTracker::default();
        let a = values(&[(Counter::Failcnt, 1)]);
        t.pass(1_000, vec![("/a".into(), Some(a))]);
        let unread = t.pass(2_000, vec![("/a".into(), None)]);
        assert_eq!(
            unread.len(),
            0,
            "a memcg not read changes nothing: {unread:?}"
        );
        assert_eq!(t.values("/a"), Some(&values(&[(Counter::Failcnt, 1)])));
        let changes = t.pass(
            3_000,
            vec![("/a".into(), Some(values(&[(Counter::Failcnt, 4)])))],
        );
        assert_eq!(changes[0].1.interval_ns, 2_000, "since it was last read");
        assert_eq!(
            changes[0].1.get(Counter::Failcnt),
            Some(Change { value: 4, delta: 3 })
        );
    }

    #[test]
    fn a_notification_compares_only_what_it_read() {
        let mut t = CounterTracker::default();
        let a = values(&[
            (Counter::High, 1),
            (Counter::Max, 0),
            (Counter::DirtyBytes, 10),
        ]);
        t.pass(1_000, vec![("/a".into(), Some(a))]);
        assert!(
            t.notified(1_500, "/b", &values(&[(Counter::High, 3)]))
                .is_none()
        );
        let c = t
            .notified(
                1_500,
                "/a",
                &values(&[(Counter::High, 3), (Counter::Max, 0)]),
            )
            .expect("changed");
        assert_eq!(c.source, CounterSource::Notified);
        assert_eq!(
            c.changed,
            vec![(Counter::High, Change { value: 3, delta: 2 })]
        );
        // The next pass does not say it again.
        let a = values(&[
            (Counter::High, 3),
            (Counter::Max, 0),
            (Counter::DirtyBytes, 10),
        ]);
        assert_eq!(t.pass(2_000, vec![("/a".into(), Some(a))]), Vec::new());
    }
}
