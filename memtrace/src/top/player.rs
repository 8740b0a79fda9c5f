//! `top --replay`: a trace file played into the model at the speed it was recorded (or
//! faster, slower, paused, a second at a time).

use std::path::Path;

use crate::{
    attribution::Filter,
    event::{Event, HostClock},
    trace::{TraceItem, TraceReader, cut_short},
};

use super::model::Model;

/// How far `step` moves when paused.
pub const STEP_NS: u64 = 1_000_000_000;
const MAX_SPEED: f64 = 1024.0;
const MIN_SPEED: f64 = 1.0 / 16.0;

pub struct Player {
    reader: TraceReader,
    /// The next event, read but not yet played.
    next: Option<Event>,
    /// How far into the recording the screen is (a `CLOCK_BOOTTIME` timestamp).
    pub at_ns: u64,
    pub speed: f64,
    pub paused: bool,
    /// The file is played to its end (or to damage, said here).
    pub ended: Option<String>,
    pub file: String,
    pub clock: HostClock,
    pub host: String,
    /// `--cgroup`, `--container`, `--pod`: as `replay` applies them.
    filter: Filter,
}

impl Player {
    /// Opens `file` and reads up to its first event; plays only what `filter` wants.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a trace.
    pub fn open(file: &Path, filter: Filter) -> anyhow::Result<Self> {
        let reader = TraceReader::open(file)?;
        let header = reader.header().clone();
        let mut player = Self {
            reader,
            next: None,
            at_ns: 0,
            speed: 1.0,
            paused: false,
            ended: None,
            file: file.display().to_string(),
            clock: HostClock {
                boot_time_wall_ns: header.boot_time_wall_ns,
                page_size: header.page_size,
            },
            host: header.host,
            filter,
        };
        player.read_next();
        player.at_ns = player.next.as_ref().map_or(0, |e| e.timestamp_ns);
        Ok(player)
    }

    fn read_next(&mut self) {
        self.next = None;
        while self.ended.is_none() {
            match self.reader.next_item() {
                Ok(Some(TraceItem::Event(event))) => {
                    self.next = Some(event);
                    return;
                }
                Ok(Some(TraceItem::End { events, .. })) => {
                    self.ended = Some(format!("end of the recording ({events} events)"));
                }
                Ok(Some(TraceItem::TailCut {
                    offset,
                    events,
                    dropped_bytes,
                })) => {
                    self.ended = Some(cut_short(&self.file, offset, events, dropped_bytes));
                }
                Ok(None) => self.ended = Some("end of the recording".to_owned()),
                Err(e) => self.ended = Some(format!("cannot read further: {e}")),
            }
        }
    }

    /// Plays what was recorded up to `at_ns` into `model`.
    fn play_to(&mut self, at_ns: u64, model: &mut Model) {
        self.at_ns = self.at_ns.max(at_ns);
        while let Some(event) = self.next.take_if(|e| e.timestamp_ns <= self.at_ns) {
            if self.wants(&event) {
                model.apply(&event);
            }
            self.read_next();
        }
    }

    /// An event about a memcg the filter wants, or an OOM kill whose limit is one's (a pod's
    /// limit fired on its container), as `replay` selects.
    fn wants(&self, event: &Event) -> bool {
        let filter = &self.filter;
        filter.matches(
            event.memcg.cgroup.as_deref(),
            event.memcg.container.as_ref(),
        ) || event
            .limit_cgroup()
            .is_some_and(|(cgroup, container)| filter.matches(cgroup, container))
    }

    /// `elapsed_ns` of wall time went by on the screen: plays that much of the recording
    /// (times the speed) unless paused.
    pub fn tick(&mut self, elapsed_ns: u64, model: &mut Model) {
        if self.paused {
            return;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a positive speed times a short wall time"
        )]
        let played = (elapsed_ns as f64 * self.speed) as u64;
        self.play_to(self.at_ns.saturating_add(played), model);
    }

    /// One [`STEP_NS`] further, and paused.
    pub fn step(&mut self, model: &mut Model) {
        self.paused = true;
        self.play_to(self.at_ns.saturating_add(STEP_NS), model);
    }

    pub fn faster(&mut self) {
        self.speed = (self.speed * 2.0).min(MAX_SPEED);
    }

    pub fn slower(&mut self) {
        self.speed = (self.speed / 2.0).max(MIN_SPEED);
    }

    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
    }

    /// Every event is played.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.next.is_none() && self.ended.is_some()
    }
}
