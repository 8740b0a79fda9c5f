//! `lost`: events memtrace could not deliver one by one, counted instead and said in the stream
//! itself, so that every output (text, JSON Lines, trace files, `report`) carries the loss, not
//! only stderr. A kind that overflows degrades to counting: each interval in which its counter
//! grew gets one `lost` event with how many, so what was delivered plus what was counted is
//! what the kernel saw.

use memtrace_common::LostKind;
use serde::{Deserialize, Serialize};

use super::EventType;

/// Events of one kind that were counted instead of delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// The type of the events lost.
    pub kind: EventType,
    /// How many since the last `lost` event of this kind and cause.
    pub count: u64,
    /// How many in the whole session, of this kind and cause.
    pub total: u64,
    pub cause: LossCause,
    /// What to do about it: the flag that makes room.
    pub advice: String,
}

/// Where events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossCause {
    /// In the kernel: the ring buffer (or the map pairing a reclaim episode's begin and end,
    /// or a kprobe with its kretprobe) was full, the reserve failed; the program counted it.
    RingBufferFull,
    /// In the kernel: neither an aggregation map nor its spill map could take a new key; the
    /// program counted it.
    AggregationMapFull,
    /// In memtrace: its output was blocked (stdout not read) and it already held
    /// `--max-held-events` events; it drained the ring buffer on and counted what it dropped.
    OutputBlocked,
}

impl LossCause {
    /// The kernel side's cause for a kind's lost counter.
    #[must_use]
    pub const fn in_kernel(kind: LostKind) -> Self {
        match kind {
            LostKind::OomKill | LostKind::Cgroup | LostKind::Reclaim | LostKind::ChargeFail => {
                Self::RingBufferFull
            }
            LostKind::PageCache | LostKind::Charge | LostKind::Slab => Self::AggregationMapFull,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingBufferFull => "ring_buffer_full",
            Self::AggregationMapFull => "aggregation_map_full",
            Self::OutputBlocked => "output_blocked",
        }
    }

    /// What happened and what to do about it, in a user's words.
    #[must_use]
    pub const fn advice(self, kind: LostKind) -> &'static str {
        match (self, kind) {
            (Self::RingBufferFull, LostKind::Reclaim | LostKind::ChargeFail) => {
                "the ring buffer (or the map pairing an episode's begin and end) was full; a \
                 larger --ring-buffer-size holds more"
            }
            (Self::RingBufferFull, _) => {
                "the ring buffer was full; a larger --ring-buffer-size holds more"
            }
            (Self::AggregationMapFull, _) => {
                "an aggregation map and its spill map could not take a new key (full, or no \
                 kernel memory at once); a shorter --interval empties them more often"
            }
            (Self::OutputBlocked, _) => {
                "the output was not read and memtrace held --max-held-events already; read \
                 stdout faster or hold more"
            }
        }
    }
}

/// The event type a lost counter counts (the names are the same).
#[must_use]
pub const fn event_type(kind: LostKind) -> EventType {
    match kind {
        LostKind::OomKill => EventType::OomKill,
        LostKind::Cgroup => EventType::Cgroup,
        LostKind::Reclaim => EventType::Reclaim,
        LostKind::PageCache => EventType::Cache,
        LostKind::Charge => EventType::Charge,
        LostKind::ChargeFail => EventType::ChargeFail,
        LostKind::Slab => EventType::Slab,
    }
}

/// Turns totals read now and then into `lost` payloads for what grew since the last reading.
#[derive(Debug)]
pub struct LossTally {
    cause: Option<LossCause>,
    before: [u64; LostKind::COUNT as usize],
}

impl LossTally {
    /// Counters of the kernel side (each kind's own cause).
    #[must_use]
    pub const fn kernel() -> Self {
        Self {
            cause: None,
            before: [0; LostKind::COUNT as usize],
        }
    }

    /// Counters of one cause.
    #[must_use]
    pub const fn of(cause: LossCause) -> Self {
        Self {
            cause: Some(cause),
            before: [0; LostKind::COUNT as usize],
        }
    }

    /// A `lost` payload per kind whose total grew since the last call.
    pub fn grown(&mut self, totals: &[(LostKind, u64)]) -> Vec<Lost> {
        let mut out = Vec::new();
        for &(kind, total) in totals {
            let Some(before) = self.before.get_mut(kind as usize) else {
                continue;
            };
            if total > *before {
                let cause = self.cause.unwrap_or(LossCause::in_kernel(kind));
                out.push(Lost {
                    kind: event_type(kind),
                    count: total - *before,
                    total,
                    cause,
                    advice: cause.advice(kind).to_owned(),
                });
                *before = total;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_counts_the_event_type_of_its_name() {
        for kind in LostKind::ALL {
            assert_eq!(event_type(kind).name(), kind.name());
        }
    }

    #[test]
    fn a_tally_says_what_grew_once() {
        let mut tally = LossTally::kernel();
        assert_eq!(tally.grown(&[(LostKind::Cgroup, 0)]), []);
        let lost = tally.grown(&[(LostKind::Cgroup, 5), (LostKind::Slab, 2)]);
        assert_eq!(lost.len(), 2);
        assert_eq!(
            (lost[0].kind, lost[0].count, lost[0].total),
            (EventType::Cgroup, 5, 5)
        );
        assert_eq!(lost[0].cause, LossCause::RingBufferFull);
        assert!(lost[0].advice.contains("--ring-buffer-size"));
        assert_eq!(lost[1].cause, LossCause::AggregationMapFull);
        assert_eq!(tally.grown(&[(LostKind::Cgroup, 5)]), []);
        let lost = tally.grown(&[(LostKind::Cgroup, 7)]);
        assert_eq!((lost[0].count, lost[0].total), (2, 7));
        let mut blocked = LossTally::of(LossCause::OutputBlocked);
        let lost = blocked.grown(&[(LostKind::Reclaim, 3)]);
        assert_eq!(lost[0].cause, LossCause::OutputBlocked);
        assert!(lost[0].advice.contains("--max-held-events"));
    }
}
