//! The `stats` event: a periodic sample of a memcg from cgroupfs, its memory and its counters.

use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CounterValues;
use crate::attribution::MemoryStats;

/// A `stats` sample. Derefs to its [`MemoryStats`]: most outputs read only the memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub memory: MemoryStats,
    /// The memcg's counters when they were read with it; empty in trace files before format 5,
    /// and when counters are not read (`--counters-interval 0`).
    pub counters: CounterValues,
}

impl Deref for Sample {
    type Target = MemoryStats;

    fn deref(&self) -> &MemoryStats {
        &self.memory
    }
}

impl From<MemoryStats> for Sample {
    fn from(memory: MemoryStats) -> Self {
        Self {
            memory,
            counters: CounterValues::default(),
        }
    }
}

thread_local! {
    /// Whether samples are (de)serialized as trace formats 3 and 4 stored them (the memory
    /// only): while such a file is read, or their encoding is pinned.
    static BEFORE_VERSION_5: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with samples (de)serialized as trace formats 3 and 4 had them.
pub(crate) fn with_layout_before_version_5<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BEFORE_VERSION_5.with(|v| v.set(self.0));
        }
    }
    let _reset = Reset(BEFORE_VERSION_5.with(|v| v.replace(true)));
    f()
}

pub(crate) fn before_version_5() -> bool {
    BEFORE_VERSION_5.with(std::cell::Cell::get)
}

/// JSON: the memory's fields, then `counters` (an object) when there are some.
#[derive(Serialize, Deserialize)]
struct Shown<M, C> {
    #[serde(flatten)]
    memory: M,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counters: Option<C>,
}

impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            Shown {
                memory: &self.memory,
                counters: (!self.counters.is_empty()).then_some(&self.counters),
            }
            .serialize(serializer)
        } else if before_version_5() {
            self.memory.serialize(serializer)
        } else {
            (&self.memory, &self.counters).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let shown = Shown::<MemoryStats, CounterValues>::deserialize(deserializer)?;
            Ok(Self {
                memory: shown.memory,
                counters: shown.counters.unwrap_or_default(),
            })
        } else if before_version_5() {
            MemoryStats::deserialize(deserializer).map(Self::from)
        } else {
            let (memory, counters) = <(MemoryStats, CounterValues)>::deserialize(deserializer)?;
            Ok(Self { memory, counters })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Counter;

    fn sample() -> Sample {
        let mut counters = CounterValues::default();
        counters.set(Counter::Failcnt, 3);
        Sample {
            memory: MemoryStats {
                usage_bytes: Some(8192),
                ..MemoryStats::default()
            },
            counters,
        }
    }

    #[test]
    fn json_has_the_memory_flat_and_the_counters_as_an_object() {
        let json = serde_json::to_value(sample()).expect("json");
        assert_eq!(json["usage_bytes"], 8192);
        assert_eq!(json["counters"], serde_json::json!({"failcnt": 3}));
        let without = serde_json::to_value(Sample::from(MemoryStats::default())).expect("json");
        assert!(without.get("counters").is_none(), "{without}");
    }

    #[test]
    fn trace_files_keep_the_counters_and_older_ones_read_without() {
        let s = sample();
        let stored = postcard::to_stdvec(&s).expect("encode");
        assert_eq!(postcard::from_bytes::<Sample>(&stored).expect("decode"), s);
        let old = postcard::to_stdvec(&s.memory).expect("encode");
        let back =
            with_layout_before_version_5(|| postcard::from_bytes::<Sample>(&old)).expect("decode");
        assert_eq!(back, Sample::from(s.memory.clone()));
        assert!(!before_version_5(), "the layout is reset");
    }
}
