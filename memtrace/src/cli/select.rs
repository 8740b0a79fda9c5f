//! Which recorded events to show: the live filters (`--cgroup`, `--container`, `--pod`) plus
//! event types and a time window, for `replay` (and anything else that reads trace files).

use std::time::{Duration, UNIX_EPOCH};

use clap::builder::PossibleValuesParser;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::live::FilterArgs;
use crate::{
    attribution::Filter,
    event::{Event, What},
    trace::TraceHeader,
};

pub const TIME_HELP: &str = "\
Times (--since, --until): an RFC 3339 wall time, e.g. 2026-11-27T15:47:01Z or
2026-11-27T16:47:01+01:00 (2026-11-27 15:47:01 is taken as UTC), or a duration after the
start of the recording, e.g. 90s, 5m, 1h30m.";

#[derive(Debug, Default, clap::Args)]
pub struct SelectArgs {
    /// Only these event types (comma-separated).
    #[arg(long = "type", value_name = "TYPE,...", value_delimiter = ',',
          value_parser = PossibleValuesParser::new(What::TYPES))]
    pub types: Option<Vec<String>>,
    /// Only events at or after this time (see Times below).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<TimeBound>,
    /// Only events at or before this time (see Times below).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<TimeBound>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// A time given on the command line, before the trace says when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    /// ns since the Unix epoch.
    Wall(u64),
    /// After the start of the recording.
    AfterStart(Duration),
}

/// Parses `--since`/`--until`.
///
/// # Errors
///
/// A message for clap naming both accepted forms.
pub fn parse_time(value: &str) -> Result<TimeBound, String> {
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return u64::try_from(t.unix_timestamp_nanos())
            .map(TimeBound::Wall)
            .map_err(|_| format!("{value} is before 1970"));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        let since_epoch = t.duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
        return u64::try_from(since_epoch.as_nanos())
            .map(TimeBound::Wall)
            .map_err(|_| format!("{value} is too far in the future"));
    }
    humantime::parse_duration(value)
        .map(TimeBound::AfterStart)
        .map_err(|_| {
            format!(
                "{value:?} is neither an RFC 3339 time (2026-11-27T15:47:01Z) nor a duration \
                 after the start (90s, 5m, 1h30m)"
            )
        })
}

impl TimeBound {
    fn wall_ns(self, started_wall_ns: u64) -> u64 {
        match self {
            Self::Wall(ns) => ns,
            Self::AfterStart(d) => {
                started_wall_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// [`SelectArgs`] resolved against a trace's header.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    types: Option<Vec<String>>,
    filter: Filter,
    /// `CLOCK_BOOTTIME` ns of the recording host, inclusive.
    since_ns: Option<u64>,
    until_ns: Option<u64>,
}

impl Selection {
    #[must_use]
    pub fn new(args: &SelectArgs, header: &TraceHeader) -> Self {
        let boot_ns = |bound: TimeBound| {
            bound
                .wall_ns(header.started_wall_ns)
                .saturating_sub(header.boot_time_wall_ns)
        };
        Self {
            types: args.types.clone(),
            filter: args.filter.filter(),
            since_ns: args.since.map(boot_ns),
            until_ns: args.until.map(boot_ns),
        }
    }

    /// Whether the user asked for this event. An OOM kill is wanted when its own cgroup or the
    /// one whose limit fired matches, as live.
    #[must_use]
    pub fn wants(&self, event: &Event) -> bool {
        if let Some(types) = &self.types
            && !types.iter().any(|t| t == event.what.type_name())
        {
            return false;
        }
        let at = event.timestamp_ns;
        if self.since_ns.is_some_and(|s| at < s) || self.until_ns.is_some_and(|u| at > u) {
            return false;
        }
        self.filter.matches(
            event.memcg.cgroup.as_deref(),
            event.memcg.container.as_ref(),
        ) || event
            .limit_cgroup()
            .is_some_and(|(cgroup, container)| self.filter.matches(cgroup, container))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Memcg, Reclaim};

    #[test]
    fn times_are_rfc3339_or_a_duration_after_the_start() {
        assert_eq!(
            parse_time("2026-11-27T15:47:01Z"),
            Ok(TimeBound::Wall(1_795_794_421_000_000_000))
        );
        assert_eq!(
            parse_time("2026-11-27T16:47:01.5+01:00"),
            Ok(TimeBound::Wall(1_795_794_421_500_000_000))
        );
        assert_eq!(
            parse_time("2026-11-27 15:47:01"),
            Ok(TimeBound::Wall(1_795_794_421_000_000_000))
        );
        assert_eq!(
            parse_time("1m30s"),
            Ok(TimeBound::AfterStart(Duration::from_secs(90)))
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn selects_by_type_time_and_cgroup() {
        let header = TraceHeader {
            memtrace_version: String::new(),
            host: String::new(),
            kernel_release: String::new(),
            boot_time_wall_ns: 1_000_000_000_000,
            clock: String::new(),
            page_size: 4096,
            started_wall_ns: 1_000_000_000_000 + 50_000_000_000,
            probes: Vec::new(),
            cgroup_version: String::new(),
            memcgs_at_start: None,
            flight: None,
        };
        let reclaim = |at_s: u64, cgroup: &str| Event {
            timestamp_ns: at_s * 1_000_000_000,
            memcg: Memcg {
                id: Some(1),
                cgroup: Some(cgroup.into()),
                container: None,
            },
            what: What::Reclaim(Reclaim {
                pid: 1,
                duration_ns: 1,
                reclaimed_bytes: 0,
                order: 0,
                gfp_flags: 0,
                ineffective: true,
            }),
        };
        let args = SelectArgs {
            types: Some(vec!["reclaim".into()]),
            since: Some(TimeBound::AfterStart(Duration::from_secs(10))),
            until: Some(TimeBound::Wall(header.boot_time_wall_ns + 70_000_000_000)),
            filter: FilterArgs {
                cgroup: Some("/a".into()),
                ..FilterArgs::default()
            },
        };
        let s = Selection::new(&args, &header);
        let wants = |e: &Event| s.wants(e);
        assert!(
            !wants(&reclaim(59, "/a")),
            "before --since (start + 10 s = boot + 60 s)"
        );
        assert!(wants(&reclaim(60, "/a/b")));
        assert!(wants(&reclaim(70, "/a")));
        assert!(!wants(&reclaim(71, "/a")), "after --until");
        assert!(!wants(&reclaim(65, "/b")), "other cgroup");
        let other_type = SelectArgs {
            types: Some(vec!["oom_kill".into()]),
            ..SelectArgs::default()
        };
        let s = Selection::new(&other_type, &header);
        assert!(!s.wants(&reclaim(65, "/a")));
    }
}
