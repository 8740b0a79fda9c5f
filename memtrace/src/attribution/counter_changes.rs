//! What changed in each memcg's counters since memtrace last said: the `counters` events.
//!
//! Memcgs there at the first pass give the baseline and say nothing; a memcg that appears later
//! was created while memtrace ran, so its counters started at zero and what it has already
//! counted is a change.

use std::collections::HashMap;

use crate::event::{Change, CounterChanges, CounterSource, CounterValues};

#[derive(Default)]
pub struct CounterTracker {
    /// Per cgroup path: what memtrace last said of its counters.
    last: HashMap<String, Followed>,
    /// Whether a full pass has given the baseline.
    primed: bool,
}

/// A followed memcg's counters as last said.
struct Followed {
    /// When they were last read (by a pass or a notification).
    at: u64,
    values: CounterValues,
    /// The counters notifications read since the last pass, and when the last one was read.
    notified: Option<(u64, CounterValues)>,
}

impl CounterTracker {
    /// A pass over the memcgs whose counters are followed, which began reading at `read_ns`:
    /// their values, or `None` for one not read (nothing said they changed: they stay as they
    /// were); the ones it did not list are gone and forgotten. Returns what changed, per cgroup.
    ///
    /// A pass reads off the consumer, so notifications may be taken in while it reads: what
    /// one read after `read_ns` is newer than the pass's value of the same counter, and is
    /// kept (else a counter would seem to fall, then rise again, and be counted twice).
    pub fn pass(
        &mut self,
        now_ns: u64,
        read_ns: u64,
        read: Vec<(String, Option<CounterValues>)>,
    ) -> Vec<(String, CounterChanges)> {
        let primed = std::mem::replace(&mut self.primed, true);
        let mut seen = HashMap::with_capacity(read.len());
        let mut changes = Vec::new();
        for (cgroup, values) in read {
            let Some(mut values) = values else {
                if let Some(kept) = self.last.remove(&cgroup) {
                    seen.insert(cgroup, kept);
                }
                continue;
            };
            let change = match self.last.remove(&cgroup) {
                Some(before) => {
                    if let Some((_, newer)) = before.notified.filter(|(at, _)| *at >= read_ns) {
                        values.merge(&newer);
                    }
                    diff(
                        now_ns.saturating_sub(before.at),
                        CounterSource::Sampled,
                        &before.values,
                        &values,
                    )
                }
                // Created since the last pass: from zero.
                None if primed => diff(
                    0,
                    CounterSource::Sampled,
                    &CounterValues::default(),
                    &values,
                ),
                None => None,
            };
            if let Some(change) = change {
                changes.push((cgroup.clone(), change));
            }
            let followed = Followed {
                at: now_ns,
                values,
                notified: None,
            };
            seen.insert(cgroup, followed);
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
        let followed = self.last.get_mut(cgroup)?;
        let change = diff(
            now_ns.saturating_sub(followed.at),
            CounterSource::Notified,
            &followed.values,
            values,
        );
        followed.values.merge(values);
        followed.at = now_ns;
        let (at, read) = followed.notified.get_or_insert_default();
        *at = now_ns;
        read.merge(values);
        change
    }

    /// A followed cgroup's counters as last read or notified.
    pub fn values(&self, cgroup: &str) -> Option<&CounterValues> {
        self.last.get(cgroup).map(|followed| &followed.values)
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
            t.pass(1_000, 1_000, vec![("/a".into(), Some(a.clone()))]),
            Vec::new()
        );
        assert!(
            t.pass(2_000, 2_000, vec![("/a".into(), Some(a))])
                .is_empty(),
            "nothing changed"
        );
        let a = values(&[(Counter::Failcnt, 7), (Counter::DirtyBytes, 4096)]);
        let changes = t.pass(3_000, 3_000, vec![("/a".into(), Some(a))]);
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
            t.pass(1, 1, vec![("/a".into(), Some(CounterValues::default()))]),
            Vec::new()
        );
        let b = values(&[(Counter::OomKill, 1), (Counter::UnderOom, 0)]);
        let changes = t.pass(2, 2, vec![("/b".into(), Some(b))]);
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
        t.pass(1_000, 1_000, vec![("/a".into(), Some(a))]);
        let unread = t.pass(2_000, 2_000, vec![("/a".into(), None)]);
        assert_eq!(
            unread.len(),
            0,
            "a memcg not read changes nothing: {unread:?}"
        );
        assert_eq!(t.values("/a"), Some(&values(&[(Counter::Failcnt, 1)])));
        let changes = t.pass(
            3_000,
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
        t.pass(1_000, 1_000, vec![("/a".into(), Some(a))]);
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
        assert_eq!(
            t.pass(2_000, 2_000, vec![("/a".into(), Some(a))]),
            Vec::new()
        );
    }

    /// A pass that began reading before a notification is taken in after it: the notified
    /// counters keep the notification's (newer) values, and nothing is counted twice.
    #[test]
    fn a_pass_read_before_a_notification_does_not_undo_it() {
        let mut t = CounterTracker::default();
        let a = |high, dirty| values(&[(Counter::High, high), (Counter::DirtyBytes, dirty)]);
        t.pass(1_000, 1_000, vec![("/a".into(), Some(a(0, 0)))]);
        // The pass reads high=490 at 2_000; a notification reads high=500 at 2_100; then the
        // pass is taken in, at 2_200.
        let n = t
            .notified(2_100, "/a", &values(&[(Counter::High, 500)]))
            .expect("changed");
        assert_eq!(
            n.get(Counter::High),
            Some(Change {
                value: 500,
                delta: 500
            })
        );
        let p = t.pass(2_200, 2_000, vec![("/a".into(), Some(a(490, 4096)))]);
        assert_eq!(
            p[0].1.changed,
            vec![(
                Counter::DirtyBytes,
                Change {
                    value: 4096,
                    delta: 4096
                }
            )],
            "high stays at the notification's 500"
        );
        let p = t.pass(3_200, 3_000, vec![("/a".into(), Some(a(507, 4096)))]);
        assert_eq!(
            p[0].1.changed,
            vec![(
                Counter::High,
                Change {
                    value: 507,
                    delta: 7
                }
            )],
            "507 high events in all, not 517"
        );
        // A notification read before the pass began is older than the pass's value.
        t.notified(3_500, "/a", &values(&[(Counter::High, 510)]));
        let p = t.pass(4_200, 4_000, vec![("/a".into(), Some(a(512, 4096)))]);
        assert_eq!(
            p[0].1.get(Counter::High),
            Some(Change {
                value: 512,
                delta: 2
            })
        );
    }
}
