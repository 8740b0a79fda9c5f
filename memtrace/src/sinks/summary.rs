//! The live text stream, summarised so that a person can read it under pressure.
//!
//! Events that can arrive thousands of times a second (reclaim episodes and charge failures,
//! kernel-seen or derived) are counted per memcg and written as one line per memcg per
//! interval: how many, how much they freed, the stall, how many freed nothing, the worst one.
//! The interval's page-cache, charge and slab events (one per memcg per interval already) are
//! written beside it, so a container's lines for an interval stand together. OOM kills are
//! written at once, on their own. A memcg removed while memory is still charged is called dying
//! only when it outlives a grace period; freed within it, its removal and release are one calm
//! line. Every event is counted in some line: nothing is dropped.
//!
//! Intervals end when the pipeline says so ([`Summariser::interval_end`], live), else where the
//! events' own timestamps say (a replayed trace: the page-cache, charge and slab events of an
//! interval are stamped with its end).

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
};

use super::text::{line, who};
use crate::{
    event::{CgroupAction, ChargeFail, Event, HostClock, Memcg, Reclaim, What},
    units::{human_bytes, micros, seconds},
};

/// When no interval event says how long intervals are (a trace of one-by-one events only).
const DEFAULT_INTERVAL_NS: u64 = 1_000_000_000;

/// A line of text, and whether it must stand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Plain(String),
    /// An OOM kill.
    Alarm(String),
}

/// Counts what the text stream summarises, per memcg, and decides when each line is written.
pub struct Summariser {
    clock: HostClock,
    grace_ns: u64,
    interval_ns: u64,
    /// The pipeline ends intervals itself: the events' timestamps do not.
    ticked: bool,
    /// When the open interval began (the last one's end, or the first event).
    start_ns: Option<u64>,
    /// An interval event's end: the interval ends there once an event after it arrives.
    pending_end: Option<u64>,
    /// Memcgs with something to say this interval, in the order they first spoke.
    buckets: Vec<Bucket>,
    /// Removed within the grace: by memcg id.
    removals: HashMap<u64, Event>,
    /// Said to be dying (removed with memory charged, not freed within the grace).
    dying: HashSet<u64>,
    /// The latest time seen (events and interval ends): what the grace is measured against.
    now_ns: u64,
}

/// One memcg's interval.
struct Bucket {
    memcg: Memcg,
    /// Its interval events (page cache, charges, slab), as they came.
    intervals: Vec<Event>,
    pressure: Pressure,
}

/// Reclaim episodes and charge failures of one memcg in one interval.
#[derive(Default)]
struct Pressure {
    /// The first of them, written as it is when it stays alone.
    first: Option<Event>,
    count: u64,
    reclaims: u64,
    freed_bytes: u64,
    stall_ns: u64,
    freed_nothing: u64,
    /// The longest stall, and when.
    worst: Option<(u64, Reclaim)>,
    /// Charge failures the kernel reported (`try_charge_memcg` returned an error).
    failed: u64,
    failed_pages: u64,
    /// The largest refused charge, and when.
    worst_fail: Option<(u64, ChargeFail)>,
    /// Charge failures inferred from limit reclaim episodes (one per episode).
    derived: u64,
    /// The memcg's own failure count, last seen.
    failcnt: Option<u64>,
    first_ns: u64,
    last_ns: u64,
}

impl Pressure {
    fn add(&mut self, event: &Event) {
        if self.count == 0 {
            self.first = Some(event.clone());
            self.first_ns = event.timestamp_ns;
        }
        self.count += 1;
        self.last_ns = self.last_ns.max(event.timestamp_ns);
        match &event.what {
            What::Reclaim(r) => {
                self.reclaims += 1;
                self.freed_bytes += r.reclaimed_bytes;
                self.stall_ns += r.duration_ns;
                if r.ineffective || r.reclaimed_bytes == 0 {
                    self.freed_nothing += 1;
                }
                if self
                    .worst
                    .as_ref()
                    .is_none_or(|(_, w)| r.duration_ns > w.duration_ns)
                {
                    self.worst = Some((event.timestamp_ns, r.clone()));
                }
            }
            What::ChargeFail(f) => {
                self.failed += 1;
                self.failed_pages += u64::from(f.nr_pages);
                if self
                    .worst_fail
                    .as_ref()
                    .is_none_or(|(_, w)| f.nr_pages > w.nr_pages)
                {
                    self.worst_fail = Some((event.timestamp_ns, f.clone()));
                }
                self.failcnt = f.charge_failures.or(self.failcnt);
            }
            What::ChargeFailFromReclaim(f) => {
                self.derived += 1;
                self.failcnt = f.charge_failures.or(self.failcnt);
            }
            _ => {}
        }
    }

    /// `TIME reclaim CGROUP [CONTAINER] 350 episodes in 1.0s: …`, or the one event's own line.
    fn line(&self, memcg: &Memcg, end_ns: u64, span_ns: u64, clock: HostClock) -> Option<String> {
        let first = self.first.as_ref()?;
        if self.count == 1 {
            return Some(line(first, clock));
        }
        let label = if self.reclaims > 0 {
            "reclaim"
        } else {
            "chargefail"
        };
        let mut s = format!(
            "{} {label:<9} {}",
            clock.wall(end_ns),
            memcg.cgroup.as_deref().unwrap_or("?")
        );
        who(&mut s, memcg.container.as_ref());
        let span = seconds(span_ns.max(self.last_ns - self.first_ns));
        if self.reclaims > 0 {
            let _ = write!(
                s,
                " {} episodes in {span:.1}s: freed {}, stall {}, {} freed nothing",
                self.reclaims,
                human_bytes(self.freed_bytes),
                duration(self.stall_ns),
                self.freed_nothing,
            );
            if let Some((at, w)) = &self.worst {
                let _ = write!(
                    s,
                    "; worst {} (pid {}, freed {}, at {})",
                    duration(w.duration_ns),
                    w.pid,
                    human_bytes(w.reclaimed_bytes),
                    time_of_day(&clock.wall(*at)),
                );
            }
            if self.failed + self.derived > 0 {
                s.push_str(" | chargefail");
            }
        }
        if self.failed > 0 {
            let _ = write!(
                s,
                " {} refused charges ({} pages)",
                self.failed, self.failed_pages
            );
            if self.reclaims == 0 {
                let _ = write!(s, " in {span:.1}s");
            }
            if let Some((at, f)) = &self.worst_fail {
                let _ = write!(
                    s,
                    "; largest pid={} comm={} pages={} {} at {}",
                    f.pid,
                    f.comm,
                    f.nr_pages,
                    f.error(),
                    time_of_day(&clock.wall(*at)),
                );
            }
        }
        if self.derived > 0 {
            let _ = write!(
                s,
                " {} (derived: one per limit reclaim episode)",
                self.derived
            );
        }
        if let Some(n) = self.failcnt {
            let _ = write!(s, " failcnt={n}");
        }
        Some(s)
    }
}

/// `35ms`, `2.1ms`, `850us`, `1.2s`: a stall for people.
fn duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.1}s", seconds(ns))
    } else if ns >= 10_000_000 {
        format!("{:.0}ms", micros(ns) / 1e3)
    } else if ns >= 1_000_000 {
        format!("{:.1}ms", micros(ns) / 1e3)
    } else {
        format!("{:.0}us", micros(ns))
    }
}

/// A lifecycle event's line without the alarm word: `removed id=42 charged=1.2MiB`, `freed
/// id=42`.
fn calm(event: &Event, clock: HostClock) -> String {
    let mut event = event.clone();
    if let What::Cgroup(change) = &mut event.what {
        change.dying = false;
        change.dying_ns = None;
    }
    line(&event, clock)
}

/// `15:47:01.000001` from `2026-11-27T15:47:01.000001Z`: the date is on the line already.
fn time_of_day(wall: &str) -> &str {
    wall.split_once('T')
        .map_or(wall, |(_, t)| t.trim_end_matches('Z'))
}

/// Written per interval: summarised, or grouped with the memcg's other lines.
fn summarised(what: &What) -> bool {
    matches!(
        what,
        What::Reclaim(_) | What::ChargeFail(_) | What::ChargeFailFromReclaim(_)
    ) || interval_ns(what).is_some()
}

/// The length of an interval event's interval.
fn interval_ns(what: &What) -> Option<u64> {
    match what {
        What::Cache(e) => Some(e.interval_ns),
        What::Charge(e) => Some(e.interval_ns),
        What::ChargeFromPageCache(e) => Some(e.interval_ns),
        What::Slab(e) => Some(e.interval_ns),
        _ => None,
    }
}

impl Summariser {
    /// Removals freed within `grace_ns` are not called dying.
    #[must_use]
    pub fn new(clock: HostClock, grace_ns: u64) -> Self {
        Self {
            clock,
            grace_ns,
            interval_ns: DEFAULT_INTERVAL_NS,
            ticked: false,
            start_ns: None,
            pending_end: None,
            buckets: Vec::new(),
            removals: HashMap::new(),
            dying: HashSet::new(),
            now_ns: 0,
        }
    }

    /// Takes an event in; `out` gets the lines that are due.
    pub fn event(&mut self, event: &Event, out: &mut Vec<Line>) {
        let at = event.timestamp_ns;
        if !self.ticked {
            self.end_by_timestamps(event, out);
        }
        self.start_ns.get_or_insert(at);
        self.now_ns = self.now_ns.max(at);
        self.expire_removals(out);
        if summarised(&event.what) {
            let bucket = self.bucket(&event.memcg);
            if let Some(interval) = interval_ns(&event.what) {
                bucket.intervals.push(event.clone());
                self.interval_ns = interval.max(1);
                if !self.ticked {
                    self.pending_end = Some(at);
                }
            } else {
                bucket.pressure.add(event);
            }
            return;
        }
        match &event.what {
            What::OomKill(_) => {
                // What led to it first, so the kill reads as the end of that story.
                if let Some(i) = self.find(&event.memcg) {
                    let pressure = std::mem::take(&mut self.buckets[i].pressure);
                    let span = at.saturating_sub(self.start_ns.unwrap_or(at));
                    if let Some(s) = pressure.line(&event.memcg, at, span, self.clock) {
                        out.push(Line::Plain(s));
                    }
                }
                out.push(Line::Alarm(line(event, self.clock)));
            }
            What::Cgroup(c) => self.cgroup(event, c.action, out),
            _ => out.push(Line::Plain(line(event, self.clock))),
        }
    }

    /// The pipeline ended an interval at `end_ns`: its lines are due.
    pub fn interval_end(&mut self, end_ns: u64, out: &mut Vec<Line>) {
        self.ticked = true;
        self.pending_end = None;
        self.now_ns = self.now_ns.max(end_ns);
        self.close(end_ns, out);
        self.expire_removals(out);
    }

    /// The stream ended: everything held is due.
    pub fn end(&mut self, out: &mut Vec<Line>) {
        let end = self.pending_end.take().unwrap_or(self.now_ns);
        self.close(end, out);
        self.expire_removals(out);
        let mut left: Vec<Event> = self.removals.drain().map(|(_, e)| e).collect();
        left.sort_by_key(|e| e.timestamp_ns);
        for removed in left {
            let mut s = calm(&removed, self.clock);
            let _ = write!(
                s,
                ", not freed when the stream ended ({} after removal)",
                duration(self.now_ns.saturating_sub(removed.timestamp_ns))
            );
            out.push(Line::Plain(s));
        }
    }

    /// Without the pipeline's ticks: an interval ends after its interval events (stamped with
    /// its end) once a later event comes, or an interval after it began when none come.
    fn end_by_timestamps(&mut self, event: &Event, out: &mut Vec<Line>) {
        let at = event.timestamp_ns;
        if let Some(end) = self.pending_end
            && (at > end || (interval_ns(&event.what).is_some() && at != end))
        {
            self.pending_end = None;
            self.close(end, out);
        } else if let Some(start) = self.start_ns
            && self.pending_end.is_none()
            && at > start + self.interval_ns + self.interval_ns / 2
        {
            self.close(start + self.interval_ns, out);
        }
    }

    /// Writes the interval ending at `end_ns`: each memcg's interval events, then its summary.
    fn close(&mut self, end_ns: u64, out: &mut Vec<Line>) {
        let span = end_ns.saturating_sub(self.start_ns.unwrap_or(end_ns));
        for bucket in self.buckets.drain(..) {
            for event in &bucket.intervals {
                out.push(Line::Plain(line(event, self.clock)));
            }
            if let Some(s) = bucket.pressure.line(&bucket.memcg, end_ns, span, self.clock) {
                out.push(Line::Plain(s));
            }
        }
        self.start_ns = Some(end_ns);
    }

    fn find(&self, memcg: &Memcg) -> Option<usize> {
        self.buckets
            .iter()
            .position(|b| b.memcg.id == memcg.id && b.memcg.cgroup == memcg.cgroup)
    }

    fn bucket(&mut self, memcg: &Memcg) -> &mut Bucket {
        let i = self.find(memcg).unwrap_or_else(|| {
            self.buckets.push(Bucket {
                memcg: memcg.clone(),
                intervals: Vec::new(),
                pressure: Pressure::default(),
            });
            self.buckets.len() - 1
        });
        &mut self.buckets[i]
    }

    /// A removal waits out the grace: freed within it, removal and release are one line.
    fn cgroup(&mut self, event: &Event, action: CgroupAction, out: &mut Vec<Line>) {
        let What::Cgroup(change) = &event.what else {
            return;
        };
        match (action, event.memcg.id) {
            (CgroupAction::Removed, Some(id)) => {
                self.removals.insert(id, event.clone());
            }
            (CgroupAction::Freed, Some(id)) if self.removals.contains_key(&id) => {
                let removed = self.removals.remove(&id).expect("checked");
                let mut s = calm(&removed, self.clock);
                let after = change
                    .dying_ns
                    .unwrap_or(event.timestamp_ns.saturating_sub(removed.timestamp_ns));
                let _ = write!(s, ", freed {} later", duration(after));
                out.push(Line::Plain(s));
            }
            (CgroupAction::Freed, Some(id)) if !self.dying.remove(&id) => {
                // Removed before the grace ran out without memory charged: not dying either.
                let mut s = calm(event, self.clock);
                if let Some(ns) = change.dying_ns {
                    let _ = write!(s, ", {} after its removal", duration(ns));
                }
                out.push(Line::Plain(s));
            }
            _ => out.push(Line::Plain(line(event, self.clock))),
        }
    }

    /// Removals that outlived the grace are dying: said once, stamped when the grace ran out.
    fn expire_removals(&mut self, out: &mut Vec<Line>) {
        let now = self.now_ns;
        let grace = self.grace_ns;
        let mut expired: Vec<u64> = self
            .removals
            .iter()
            .filter(|(_, e)| e.timestamp_ns.saturating_add(grace) <= now)
            .map(|(&id, _)| id)
            .collect();
        expired.sort_by_key(|id| self.removals[id].timestamp_ns);
        for id in expired {
            let removed = self.removals.remove(&id).expect("listed");
            let What::Cgroup(change) = &removed.what else {
                continue;
            };
            if !change.dying {
                // Nothing was charged at the removal: only its line was held.
                out.push(Line::Plain(line(&removed, self.clock)));
                continue;
            }
            self.dying.insert(id);
            let mut s = format!(
                "{} {:<9} {}",
                self.clock.wall(removed.timestamp_ns.saturating_add(grace)),
                "cgroup",
                removed.memcg.cgroup.as_deref().unwrap_or("?")
            );
            who(&mut s, removed.memcg.container.as_ref());
            let _ = write!(
                s,
                " DYING id={id}: removed at {} with {} charged, not freed within {} \
                 (memory still charged keeps it allocated)",
                time_of_day(&self.clock.wall(removed.timestamp_ns)),
                change.charged_bytes.map_or_else(|| "?".into(), human_bytes),
                duration(grace),
            );
            out.push(Line::Plain(s));
        }
    }
}
