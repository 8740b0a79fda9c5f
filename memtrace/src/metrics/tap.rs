//! The exporter tapped into a live session's output: every event feeds the metrics, and the
//! session's own sink (stream, recording, `top`) gets them as it would without `--metrics`.
//!
//! With `--metrics` the pipeline samples containers' memory at least every
//! [`STATS_INTERVAL`](super::STATS_INTERVAL), so that gauges are fresh for a scrape every
//! second; the session's sink still gets `stats` samples at the `--stats-interval` the user
//! chose (none with 0), so a terminal or a log pipeline is not flooded by them.

use std::{io, time::Duration};

use super::Exporter;
use crate::{
    event::{Event, What},
    sinks::Sink,
};

/// Every `Sink` method other than `write` goes to `inner` unchanged (the exporter needs none).
pub struct Tap<'a> {
    pub exporter: &'a Exporter,
    pub inner: &'a mut dyn Sink,
    stats: Thinning,
}

impl<'a> Tap<'a> {
    /// `stats_every`: how often `inner` wants `stats` samples (`None`: never); `sampled`: how
    /// often the pipeline takes them.
    pub fn new(
        exporter: &'a Exporter,
        inner: &'a mut dyn Sink,
        stats_every: Option<Duration>,
        sampled: Duration,
    ) -> Self {
        Self {
            exporter,
            inner,
            stats: Thinning {
                every: stats_every,
                slack: sampled / 2,
                passing: None,
            },
        }
    }
}

impl Sink for Tap<'_> {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.exporter.observe(event);
        if matches!(event.what, What::Stats(_)) && !self.stats.passes(event.timestamp_ns) {
            return Ok(());
        }
        self.inner.write(event)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn interval_end(&mut self, end_ns: u64) -> io::Result<()> {
        self.inner.interval_end(end_ns)
    }

    fn end(&mut self) -> io::Result<()> {
        self.inner.end()
    }
}

/// Passes whole walks of the hierarchy (every sample of one walk has its timestamp) at most
/// every `every`, give or take `slack` (walks start on a ticker, not exactly on time).
struct Thinning {
    every: Option<Duration>,
    slack: Duration,
    /// The walk being passed, and so the last one passed.
    passing: Option<u64>,
}

impl Thinning {
    fn passes(&mut self, timestamp_ns: u64) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        match self.passing {
            Some(walk) if walk == timestamp_ns => true,
            Some(walk)
                if u128::from(timestamp_ns.saturating_sub(walk)) + self.slack.as_nanos()
                    < every.as_nanos() =>
            {
                false
            }
            _ => {
                self.passing = Some(timestamp_ns);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn passes_whole_walks_at_the_users_interval() {
        let mut t = Thinning {
            every: Some(Duration::from_secs(10)),
            slack: Duration::from_millis(500),
            passing: None,
        };
        // Walks a little over a second apart, three samples each.
        let walks: Vec<u64> = (0..25).map(|i| 5 * S + i * (S + 3_000_000)).collect();
        let mut passed = Vec::new();
        for w in walks {
            let samples: Vec<bool> = (0..3).map(|_| t.passes(w)).collect();
            assert!(
                samples.iter().all(|&p| p == samples[0]),
                "a walk passes whole"
            );
            if samples[0] {
                passed.push(w);
            }
        }
        assert_eq!(passed.len(), 3, "{passed:?}");
        assert!(
            passed.windows(2).all(|p| p[1] - p[0] >= 9 * S),
            "{passed:?}"
        );
    }

    #[test]
    fn none_passes_when_the_user_turned_samples_off() {
        let mut t = Thinning {
            every: None,
            slack: Duration::ZERO,
            passing: None,
        };
        assert!(!t.passes(S));
    }

    #[test]
    fn a_faster_user_interval_passes_every_walk() {
        let mut t = Thinning {
            every: Some(Duration::from_millis(200)),
            slack: Duration::from_millis(100),
            passing: None,
        };
        assert!((1..10).all(|i| t.passes(i * 200_000_000)));
    }
}
