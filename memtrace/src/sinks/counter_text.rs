//! Counters as people read them: `oom_kill 2 (+1), dirty 4.0MiB (-8.0MiB), pressure_some 1.25s
//! (+300ms)`. Byte counters in bytes units and times in seconds, by their names' suffixes.

use std::fmt::Write as _;

use crate::{
    event::{Counter, CounterChanges, CounterSource, CounterValues},
    units::{human_bytes, seconds},
};

/// The name people read: the kernel's, without the unit suffix.
fn name(counter: Counter) -> &'static str {
    let name = counter.name();
    name.strip_suffix("_bytes")
        .or_else(|| name.strip_suffix("_ns"))
        .unwrap_or(name)
}

fn value(counter: Counter, v: u64) -> String {
    let n = counter.name();
    if n.ends_with("_bytes") {
        human_bytes(v)
    } else if n.ends_with("_ns") {
        duration(v)
    } else {
        v.to_string()
    }
}

fn duration(ns: u64) -> String {
    if ns < 1_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{:.2}s", seconds(ns))
    }
}

fn delta(counter: Counter, d: i64) -> String {
    let sign = if d < 0 { "-" } else { "+" };
    format!("{sign}{}", value(counter, d.unsigned_abs()))
}

/// What changed, then how it was noticed: `high 3 (+2), max 1 (+1) in 1.0s` or `… (notified)`.
#[must_use]
pub fn counter_changes(e: &CounterChanges) -> String {
    let changed: Vec<String> = e
        .changed
        .iter()
        .map(|&(c, change)| {
            format!(
                "{} {} ({})",
                name(c),
                value(c, change.value),
                delta(c, change.delta)
            )
        })
        .collect();
    let how = match e.source {
        // A memcg created since the last pass: not "in 0.0s".
        CounterSource::Sampled if e.interval_ns == 0 => "since the cgroup was created".to_owned(),
        CounterSource::Sampled => format!("in {:.1}s", seconds(e.interval_ns)),
        CounterSource::Notified => "(notified)".to_owned(),
    };
    format!("{} {how}{}", changed.join(", "), throttled(e))
}

/// `; THROTTLED at memory.high, stalled 300ms`: said in words on the line itself, as a `high`
/// rise is the kernel holding the container back (v2), which the numbers alone hide.
fn throttled(e: &CounterChanges) -> String {
    let Some(high) = e.get(Counter::High).filter(|c| c.delta > 0) else {
        return String::new();
    };
    let stalled = e
        .get(Counter::PressureSomeNs)
        .filter(|c| c.delta > 0)
        .map_or_else(String::new, |c| {
            format!(", stalled {}", duration(c.delta.unsigned_abs()))
        });
    format!(
        "; THROTTLED at memory.high ({} time{}){stalled}",
        high.delta,
        if high.delta == 1 { "" } else { "s" }
    )
}

/// ` name=value …` for a `stats` line.
#[must_use]
pub fn counter_values(v: &CounterValues) -> String {
    v.0.iter().fold(String::new(), |mut s, &(c, v)| {
        let _ = write!(s, " {}={}", name(c), value(c, v));
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Change;

    #[test]
    fn units_follow_the_names() {
        let e = CounterChanges {
            interval_ns: 1_000_000_000,
            source: CounterSource::Sampled,
            changed: vec![
                (Counter::OomKill, Change { value: 2, delta: 1 }),
                (
                    Counter::PressureSomeNs,
                    Change {
                        value: 1_250_000_000,
                        delta: 300_000_000,
                    },
                ),
                (
                    Counter::DirtyBytes,
                    Change {
                        value: 4 << 20,
                        delta: -(8 << 20),
                    },
                ),
            ],
        };
        assert_eq!(
            counter_changes(&e),
            "oom_kill 2 (+1), pressure_some 1.25s (+300ms), dirty 4.0MiB (-8.0MiB) in 1.0s"
        );
        let new_memcg = CounterChanges {
            interval_ns: 0,
            source: CounterSource::Sampled,
            changed: vec![(Counter::OomKill, Change { value: 1, delta: 1 })],
        };
        assert_eq!(
            counter_changes(&new_memcg),
            "oom_kill 1 (+1) since the cgroup was created"
        );
        let v = CounterValues(vec![(Counter::Failcnt, 7), (Counter::ShmemBytes, 4096)]);
        assert_eq!(counter_values(&v), " failcnt=7 shmem=4.0KiB");
    }

    /// memory.high cannot be crossed on this project's v1 test hosts: a synthetic event.
    #[test]
    fn a_high_rise_is_said_as_throttling() {
        let e = CounterChanges {
            interval_ns: 1_000_000_000,
            source: CounterSource::Notified,
            changed: vec![
                (Counter::High, Change { value: 9, delta: 4 }),
                (
                    Counter::PressureSomeNs,
                    Change {
                        value: 2_000_000_000,
                        delta: 300_000_000,
                    },
                ),
            ],
        };
        assert_eq!(
            counter_changes(&e),
            "high 9 (+4), pressure_some 2.00s (+300ms) (notified); THROTTLED at memory.high (4 \
             times), stalled 300ms"
        );
    }
}
