//! The names of the attach plan: probe points, the strategies that attach them, and which event
//! types each point produces (docs/probe-points.md is the same table for people). Everything
//! that needs to know what attached matches on these enums; their names are only for the
//! command line (`--events`, `--probe-strategy`), `memtrace probes`, the start-up line and the
//! trace header.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{event::EventType, named::snake_case_enum};

snake_case_enum! {
    /// A place in the kernel memtrace hooks, in event-type words.
    pub enum ProbePoint {
        /// A task chosen as OOM victim.
        OomKill,
        /// Memory cgroups created, removed (offline) and freed.
        Cgroup,
        /// Folios added to and removed from the page cache.
        PageCache,
        /// Memcg limit reclaim, begin and end.
        Reclaim,
        /// Pages charged to a memcg.
        Charge,
        /// Charges a memcg's limit refused (`try_charge_memcg` returning an error).
        TryCharge,
        /// Memcg-accounted slab allocations and frees.
        Slab,
    }
}

impl ProbePoint {
    /// The event types this point produces, whichever strategy attached it (a derived strategy
    /// produces its own point's events from another point's data). `stats` and `counters` come
    /// from cgroupfs, not from a probe point.
    #[must_use]
    pub const fn events(self) -> &'static [EventType] {
        match self {
            Self::OomKill => &[EventType::OomKill],
            Self::Cgroup => &[EventType::Cgroup],
            Self::PageCache => &[EventType::Cache],
            Self::Reclaim => &[EventType::Reclaim],
            Self::Charge => &[EventType::Charge],
            Self::TryCharge => &[EventType::ChargeFail],
            Self::Slab => &[EventType::Slab],
        }
    }
}

/// How a probe point is attached: the kind of program, or none of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// At a kernel function's entry, with its arguments typed by BTF.
    Fentry,
    /// At a kernel function's return, with its arguments and its return value.
    Fexit,
    /// A kprobe at a function's entry; with a kretprobe when the return value is needed.
    Kprobe,
    /// Raw tracepoints (no tracefs needed).
    RawTp,
    /// A classic tracepoint (needs tracefs).
    Tracepoint,
    /// No programs of its own: userspace derives the point's events from another point's.
    Derived,
    /// The `slab` raw tracepoints that remember each counted object until its free, for
    /// kernels whose memory map cannot be measured.
    Tracked,
}

impl Strategy {
    pub const ALL: [Self; 7] = [
        Self::Fentry,
        Self::Fexit,
        Self::Kprobe,
        Self::RawTp,
        Self::Tracepoint,
        Self::Derived,
        Self::Tracked,
    ];

    /// What `--probe-strategy POINT=NAME` names.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::Kprobe => "kprobe",
            Self::RawTp => "raw_tp",
            Self::Tracepoint => "tracepoint",
            Self::Derived => "derived",
            Self::Tracked => "tracked",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--events` help: each point with the event types it produces.
#[must_use]
pub fn events_help() -> String {
    let points: Vec<String> = ProbePoint::ALL
        .iter()
        .map(|p| {
            let events: Vec<&str> = p.events().iter().map(|e| e.name()).collect();
            if events == [p.name()] {
                format!("`{p}`")
            } else {
                format!("`{p}` (`{}` events)", events.join("`, `"))
            }
        })
        .collect();
    format!(
        "Attach only these probe points (comma-separated): {}; the others produce the events of \
         their own name; `stats` and `counters` come from cgroupfs (--stats-interval, \
         --counters-interval). Default: all that \
         this kernel allows (a point it refuses is left out with a warning; one named here must \
         attach).",
        points.join(", ")
    )
}

/// Parses a probe point name for `--events`; an event type's name gets a hint at its point.
///
/// # Errors
///
/// A message naming the known points.
pub fn parse_point(value: &str) -> Result<ProbePoint, String> {
    if let Some(point) = ProbePoint::from_name(value) {
        return Ok(point);
    }
    let names: Vec<&str> = ProbePoint::ALL.iter().map(|p| p.name()).collect();
    let hint = match EventType::from_name(value) {
        Some(EventType::Stats) => {
            " (`stats` come from cgroupfs: --stats-interval sets how often)".to_owned()
        }
        Some(EventType::Counters) => {
            " (`counters` come from cgroupfs: --counters-interval sets how often)".to_owned()
        }
        Some(EventType::Lost) => {
            " (`lost` events come whenever events of any point are lost)".to_owned()
        }
        Some(event) => ProbePoint::ALL
            .iter()
            .find(|p| p.events().contains(&event))
            .map(|p| format!(" ({value} events come from {p})"))
            .unwrap_or_default(),
        None => String::new(),
    };
    Err(format!(
        "no probe point {value:?}{hint}; there are {}",
        names.join(", ")
    ))
}

/// Parses `POINT=STRATEGY` for `--probe-strategy`: the point must have the strategy in its
/// plan. `fentry` is still accepted for the points whose function is probed at its return
/// (`charge`, `try_charge`: fexit), as it was named before.
///
/// # Errors
///
/// A message naming the known points or strategies.
pub fn parse_forced(value: &str) -> Result<(ProbePoint, Strategy), String> {
    let (point, strategy) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not POINT=STRATEGY (e.g. oom_kill=kprobe)"))?;
    let point = parse_point(point)?;
    let has = |s: Strategy| {
        super::plan::strategies(point)
            .iter()
            .any(|c| c.strategy == s)
    };
    match Strategy::from_name(strategy) {
        Some(s) if has(s) => Ok((point, s)),
        Some(Strategy::Fentry) if has(Strategy::Fexit) => Ok((point, Strategy::Fexit)),
        _ => {
            let mut names: Vec<&str> = super::plan::strategies(point)
                .iter()
                .map(|c| c.strategy.name())
                .collect();
            // A strategy tried under two function names is one strategy.
            names.dedup();
            Err(format!(
                "{point} has no strategy {strategy:?}; it has {}",
                names.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for &p in ProbePoint::ALL {
            assert_eq!(ProbePoint::from_name(p.name()), Some(p));
            assert_eq!(
                serde_json::to_value(p).expect("json"),
                serde_json::json!(p.name())
            );
        }
        for s in Strategy::ALL {
            assert_eq!(Strategy::from_name(s.name()), Some(s));
            assert_eq!(
                serde_json::to_value(s).expect("json"),
                serde_json::json!(s.name())
            );
        }
    }

    #[test]
    fn every_event_type_but_those_from_cgroupfs_has_exactly_one_point() {
        for &event in EventType::ALL {
            let points: Vec<ProbePoint> = ProbePoint::ALL
                .iter()
                .copied()
                .filter(|p| p.events().contains(&event))
                .collect();
            let expected = usize::from(!matches!(
                event,
                EventType::Stats | EventType::Counters | EventType::Lost
            ));
            assert_eq!(points.len(), expected, "{event:?}: {points:?}");
        }
        assert_eq!(ProbePoint::TryCharge.events(), [EventType::ChargeFail]);
        assert_eq!(ProbePoint::PageCache.events(), [EventType::Cache]);
    }

    #[test]
    fn forced_strategies_are_checked_against_the_plan() {
        for (forced, point, strategy) in [
            ("oom_kill=kprobe", ProbePoint::OomKill, Strategy::Kprobe),
            (
                "try_charge=derived",
                ProbePoint::TryCharge,
                Strategy::Derived,
            ),
            ("charge=fexit", ProbePoint::Charge, Strategy::Fexit),
            // The name these strategies had before they were called what they are.
            ("charge=fentry", ProbePoint::Charge, Strategy::Fexit),
            ("try_charge=fentry", ProbePoint::TryCharge, Strategy::Fexit),
        ] {
            assert_eq!(parse_forced(forced), Ok((point, strategy)), "{forced}");
        }
        assert!(parse_forced("oom_kill").is_err());
        // Refused, with what there is instead.
        for (forced, instead) in [
            (
                "nope=kprobe",
                "oom_kill, cgroup, page_cache, reclaim, charge, try_charge, slab",
            ),
            ("cgroup=fentry", "raw_tp"),
            // oom_kill has fentry, not fexit.
            ("oom_kill=fexit", "fentry, kprobe, raw_tp"),
        ] {
            let refused = parse_forced(forced).expect_err("must be refused");
            assert!(refused.contains(instead), "{forced}: {refused}");
        }
    }

    #[test]
    fn events_name_points_and_hint_at_event_types() {
        assert_eq!(parse_point("reclaim"), Ok(ProbePoint::Reclaim));
        assert_eq!(parse_point("slab"), Ok(ProbePoint::Slab));
        assert!(parse_point("kmem").is_err());
        let hint = parse_point("cache").expect_err("an event type, not a point");
        assert!(hint.contains("cache events come from page_cache"), "{hint}");
        let hint = parse_point("charge_fail").expect_err("an event type, not a point");
        assert!(hint.contains("from try_charge"), "{hint}");
        assert!(
            parse_point("stats")
                .expect_err("cgroupfs")
                .contains("--stats-interval")
        );
        let help = events_help();
        assert!(help.contains("`page_cache` (`cache` events)"), "{help}");
        assert!(
            help.contains("`try_charge` (`charge_fail` events)"),
            "{help}"
        );
        assert!(help.contains("`oom_kill`,"), "{help}");
    }

    #[test]
    fn docs_table_is_the_plan() {
        let doc = include_str!("../../../docs/probe-points.md");
        for &point in ProbePoint::ALL {
            let events: Vec<String> = point
                .events()
                .iter()
                .map(|e| format!("`{}`", e.name()))
                .collect();
            let head = format!("| `{point}` | {} | ", events.join(", "));
            let row = doc
                .lines()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("docs/probe-points.md has no row {head:?}"));
            let mut at = 0;
            for c in super::super::plan::strategies(point) {
                let named = format!("`{}`", c.describe());
                let found = row[at..]
                    .find(&named)
                    .unwrap_or_else(|| panic!("{point}: {named} missing or out of order in {row}"));
                at += found + named.len();
            }
        }
    }
}
