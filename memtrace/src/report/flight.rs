//! What a flight recorder's file (`record --flight`) says about its window, for people: which
//! kills it was written for, the time it covers, and why it covers less than was asked.

use std::{fmt::Write as _, time::Duration};

use serde::Serialize;

use crate::{event::HostClock, trace::FlightWindow, units::human_bytes};

/// A flight file's window, in wall-clock time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlightInfo {
    /// `--flight` and `--flight-after`, e.g. `2m`, `5s`.
    pub before: String,
    pub after: String,
    /// The OOM kills the file was written for.
    pub kills: Vec<String>,
    /// The window asked for.
    pub from: String,
    pub to: String,
    /// Why the file holds less than the window, one sentence per reason; empty when whole.
    pub cut_short: Vec<String>,
}

impl FlightInfo {
    #[must_use]
    pub fn new(w: &FlightWindow, clock: HostClock) -> Self {
        let span = |ns: u64| humantime::format_duration(Duration::from_secs(ns / 1_000_000_000));
        let first_kill = w.kills_ns.first().copied().unwrap_or(w.to_ns);
        let mut cut_short = Vec::new();
        if w.session_start_ns > w.from_ns {
            cut_short.push(format!(
                "memtrace started at {}, {} before the kill: the window starts there",
                clock.wall(w.session_start_ns),
                span(first_kill.saturating_sub(w.session_start_ns)),
            ));
        }
        if let Some(cut) = w.cut_by_bytes {
            cut_short.push(format!(
                "--flight-bytes {} dropped the events up to {} ({} since memtrace started): the \
                 window starts after that",
                human_bytes(w.max_bytes),
                clock.wall(cut.until_ns),
                cut.events,
            ));
        }
        if w.stopped_early {
            cut_short.push("the recording stopped before --flight-after had passed".to_owned());
        }
        Self {
            before: span(w.before_ns).to_string(),
            after: span(w.after_ns).to_string(),
            kills: w.kills_ns.iter().map(|&k| clock.wall(k)).collect(),
            from: clock.wall(w.from_ns),
            to: clock.wall(w.to_ns),
            cut_short,
        }
    }

    /// `flight recording: the 2m before the OOM kill at … and 5s after; WINDOW CUT SHORT: …`.
    #[must_use]
    pub fn line(&self) -> String {
        let mut s = format!(
            "flight recording: the {} before the OOM kill{} at {} and {} after",
            self.before,
            if self.kills.len() == 1 { "" } else { "s" },
            self.kills.join(", "),
            self.after
        );
        if !self.cut_short.is_empty() {
            let _ = write!(s, "; WINDOW CUT SHORT: {}", self.cut_short.join("; "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::FlightCut;

    const CLOCK: HostClock = HostClock {
        boot_time_wall_ns: 1_795_794_421_000_000_000,
        page_size: 4096,
    };

    #[test]
    fn says_what_the_window_covers_and_why_it_is_short() {
        let s = 1_000_000_000;
        let mut w = FlightWindow {
            before_ns: 120 * s,
            after_ns: 5 * s,
            kills_ns: vec![1000 * s],
            from_ns: 880 * s,
            to_ns: 1005 * s,
            session_start_ns: 10 * s,
            max_bytes: 64 << 20,
            cut_by_bytes: None,
            stopped_early: false,
        };
        assert_eq!(
            FlightInfo::new(&w, CLOCK).line(),
            "flight recording: the 2m before the OOM kill at 2026-11-27T16:03:41.000000Z and 5s after"
        );
        w.cut_by_bytes = Some(FlightCut {
            until_ns: 900 * s,
            events: 77,
        });
        w.session_start_ns = 890 * s;
        let line = FlightInfo::new(&w, CLOCK).line();
        assert!(
            line.contains("WINDOW CUT SHORT: memtrace started at"),
            "{line}"
        );
        assert!(line.contains("1m 50s before the kill"), "{line}");
        assert!(
            line.contains("--flight-bytes 64.0MiB dropped the events up to"),
            "{line}"
        );
    }
}
