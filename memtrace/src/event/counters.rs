//! A memcg's own kernel counters — `memory.events`, PSI stall time, `memory.failcnt` and
//! `memory.oom_control` (v1), and from `memory.stat` refaults, scans, dirty, writeback, shmem and
//! mapped file pages — as values ([`CounterValues`], in `stats` samples) and as what changed
//! ([`CounterChanges`], the `counters` event).
//!
//! A counter the kernel does not have (`oom_group_kill` before 5.17, PSI without
//! `CONFIG_PSI`, v2-only counters on v1) is absent from both, never zero.

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, SeqAccess, Visitor},
    ser::SerializeMap,
};

use crate::named::snake_case_enum;

snake_case_enum! {
    /// One counter, by the kernel's name for it (v2's where v1 and v2 differ). Byte values end in
    /// `_bytes`, times in `_ns`; the others are counts (events or pages). Trace files store a
    /// counter by its position here: add new ones at the end.
    pub enum Counter {
        /// `memory.events` `low`: reclaimed below `memory.low` (v2).
        Low,
        /// `memory.events` `high`: usage went over `memory.high` and the task was throttled (v2).
        High,
        /// `memory.events` `max`: usage was about to go over `memory.max` (v2).
        Max,
        /// `memory.events` `oom`: the OOM killer was invoked (v2).
        Oom,
        /// OOM kills in the memcg or below (v2 `memory.events`, v1 `memory.oom_control`).
        OomKill,
        /// `memory.events` `oom_group_kill` (v2, 5.17+).
        OomGroupKill,
        /// Charges a limit refused (v1): `memory.failcnt` plus, with swap accounting,
        /// `memory.memsw.failcnt` (`memtrace_common::cgroup::v1_failcnt`).
        Failcnt,
        /// `memory.oom_control` `under_oom`: 1 while the memcg is in OOM (v1).
        UnderOom,
        /// `memory.pressure` `some` `total=`: time some task stalled on memory (v2, PSI).
        PressureSomeNs,
        /// `memory.pressure` `full` `total=`: time all non-idle tasks stalled on memory.
        PressureFullNs,
        /// Refaults of evicted anon pages: re-reading what was just evicted is thrashing.
        WorkingsetRefaultAnon,
        /// Refaults of evicted file pages.
        WorkingsetRefaultFile,
        /// Refaults, anon and file together (kernels before 5.9).
        WorkingsetRefault,
        /// Refaulted anon pages that went straight to the active list.
        WorkingsetActivateAnon,
        WorkingsetActivateFile,
        /// Both together (kernels before 5.9).
        WorkingsetActivate,
        /// Pages scanned by reclaim (v2).
        Pgscan,
        /// Pages reclaimed (v2).
        Pgsteal,
        /// Dirty page cache, not yet written back.
        DirtyBytes,
        /// Page cache being written back.
        WritebackBytes,
        /// tmpfs/shmem pages: memory, not reclaimable cache.
        ShmemBytes,
        /// Page cache mapped into processes (v2 `file_mapped`, v1 `mapped_file`).
        FileMappedBytes,
    }
}

impl Counter {
    /// Counters that only go up (until the memcg is gone); the others are levels.
    #[must_use]
    pub const fn is_cumulative(self) -> bool {
        !matches!(
            self,
            Self::UnderOom
                | Self::DirtyBytes
                | Self::WritebackBytes
                | Self::ShmemBytes
                | Self::FileMappedBytes
        )
    }
}

/// The counters read from one memcg at one time, in [`Counter`] order; a counter the kernel
/// lacks is not listed. JSON: an object, `{"oom_kill": 1, "dirty_bytes": 4096}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterValues(pub Vec<(Counter, u64)>);

impl CounterValues {
    #[must_use]
    pub fn get(&self, counter: Counter) -> Option<u64> {
        self.0
            .iter()
            .find_map(|&(c, v)| (c == counter).then_some(v))
    }

    /// Sets a counter, keeping [`Counter`] order.
    pub fn set(&mut self, counter: Counter, value: u64) {
        match self
            .0
            .binary_search_by_key(&(counter as usize), |(c, _)| *c as usize)
        {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (counter, value)),
        }
    }

    /// Takes in the counters `other` has, replacing those it has too.
    pub fn merge(&mut self, other: &Self) {
        for &(c, v) in &other.0 {
            self.set(c, v);
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A counter's new value and how much it moved since the memcg's last `counters` event (or
/// since it was created, for a memcg that appeared while memtrace ran).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub value: u64,
    pub delta: i64,
}

/// The `counters` event: a memcg's counters that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterChanges {
    /// Since the memcg's counters were last read; 0 for a memcg created since the last pass
    /// (its counters count from its creation).
    pub interval_ns: u64,
    /// How the change was noticed.
    pub source: CounterSource,
    /// Only counters that changed, in [`Counter`] order. JSON: an object,
    /// `{"oom_kill": {"value": 2, "delta": 1}}`.
    #[serde(with = "pairs")]
    pub changed: Vec<(Counter, Change)>,
}

impl CounterChanges {
    #[must_use]
    pub fn get(&self, counter: Counter) -> Option<Change> {
        self.changed
            .iter()
            .find_map(|&(c, change)| (c == counter).then_some(change))
    }
}

/// How a `counters` event was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterSource {
    /// Read on the counters interval (`--counters-interval`).
    Sampled,
    /// The kernel notified a change, read at once: v2 `memory.events` (`cgroup_file_notify`,
    /// seen with inotify); v1 an OOM in `memory.oom_control` (an eventfd registered through
    /// `cgroup.event_control`), read at once and again shortly after, as the kill follows.
    Notified,
}

impl Serialize for CounterValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        pairs::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for CounterValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        pairs::deserialize(deserializer).map(Self)
    }
}

/// `(Counter, T)` lists: an object keyed by counter name for people and JSON, a sequence of
/// pairs in trace files.
pub mod pairs {
    use super::{
        Counter, Deserialize, Deserializer, MapAccess, SeqAccess, Serialize, SerializeMap as _,
        Serializer, Visitor,
    };

    pub fn serialize<T: Serialize, S: Serializer>(
        pairs: &[(Counter, T)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let mut map = serializer.serialize_map(Some(pairs.len()))?;
            for (c, v) in pairs {
                map.serialize_entry(c.name(), v)?;
            }
            map.end()
        } else {
            serializer.collect_seq(pairs)
        }
    }

    struct PairsVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for PairsVisitor<T> {
        type Value = Vec<(Counter, T)>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("counters")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = seq.next_element()? {
                out.push(pair);
            }
            Ok(out)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = map.next_entry()? {
                out.push(pair);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(Counter, T)>, D::Error> {
        let visitor = PairsVisitor(std::marker::PhantomData);
        if deserializer.is_human_readable() {
            deserializer.deserialize_map(visitor)
        } else {
            deserializer.deserialize_seq(visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_counter_order_and_absent_counters_are_not_listed() {
        let mut v = CounterValues::default();
        v.set(Counter::DirtyBytes, 4096);
        v.set(Counter::OomKill, 1);
        v.set(Counter::OomKill, 2);
        assert_eq!(
            v.0,
            vec![(Counter::OomKill, 2), (Counter::DirtyBytes, 4096)]
        );
        assert_eq!(v.get(Counter::OomGroupKill), None, "absent, not zero");
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"oom_kill": 2, "dirty_bytes": 4096})
        );
        let stored = postcard::to_stdvec(&v).expect("postcard");
        assert_eq!(
            postcard::from_bytes::<CounterValues>(&stored).expect("back"),
            v
        );
    }

    #[test]
    fn changes_are_an_object_in_json_and_round_trip_in_trace_files() {
        let e = CounterChanges {
            interval_ns: 1_000_000_000,
            source: CounterSource::Sampled,
            changed: vec![(Counter::Failcnt, Change { value: 7, delta: 3 })],
        };
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "interval_ns": 1_000_000_000u64,
                "source": "sampled",
                "changed": {"failcnt": {"value": 7, "delta": 3}},
            })
        );
        let stored = postcard::to_stdvec(&e).expect("postcard");
        assert_eq!(
            postcard::from_bytes::<CounterChanges>(&stored).expect("back"),
            e
        );
    }
}
