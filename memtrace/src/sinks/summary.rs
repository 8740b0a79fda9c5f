//! The live text stream, summarised so that a person can read it under pressure.
//!
//! Events that can arrive thousands of times a second (reclaim episodes and charge failures,
//! kernel-seen or derived) are counted per memcg and written as one line per memcg per
//! interval: how many, how much they freed, the stall, how many freed nothing, the worst one.
//! The interval's page-cache, charge and slab events (one per memcg per interval already) are
//! written beside it, so a container's lines for an interval stand together; those that moved
//! too little to be worth a line are merged into the next (`carry`). OOM kills are
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

use super::{
    carry::{Carry, interval_of},
    text::{line, who},
};
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
    /// Interval events too small to read yet.
    carry: Carry,
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
    /// An OOM kill was written this interval, after the pressure before it.
    killed: bool,
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
                " {} episode{} in {span:.1}s: freed {}, stall {}, {} freed nothing",
                self.reclaims,
                if self.reclaims == 1 { "" } else { "s" },
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
                " {} refused charge{} ({} pages)",
                self.failed,
                if self.failed == 1 { "" } else { "s" },
                self.failed_pages
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

/// Counted into a line per memcg per interval.
fn summarised(what: &What) -> bool {
    matches!(
        what,
        What::Reclaim(_) | What::ChargeFail(_) | What::ChargeFailFromReclaim(_)
    )
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
            carry: Carry::default(),
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
        if let Some(interval) = interval_of(&event.what) {
            self.interval_ns = interval.max(1);
            if !self.ticked {
                self.pending_end = Some(at);
            }
            if let Some(worth_reading) = self.carry.take(event) {
                self.bucket(&event.memcg).intervals.push(worth_reading);
            }
            return;
        }
        if summarised(&event.what) {
            self.bucket(&event.memcg).pressure.add(event);
            return;
        }
        match &event.what {
            What::OomKill(_) => {
                // What led to it first, so the kill reads as the end of that story; in an OOM
                // storm, only before the interval's first kill (the rest is counted at its end).
                if let Some(i) = self.find(&event.memcg)
                    && !self.buckets[i].killed
                {
                    self.buckets[i].killed = true;
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
        for carried in self.carry.drain() {
            self.bucket(&carried.memcg).intervals.push(carried);
        }
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
            && (at > end || (interval_of(&event.what).is_some() && at != end))
        {
            self.pending_end = None;
            self.close(end, out);
        } else if let Some(start) = self.start_ns
            && self.pending_end.is_none()
            && at > start + self.interval_ns + self.interval_ns / 2
        {
            self.close(start + self.interval_ns, out);
            // After a quiet gap, the next interval begins with this event.
            if at > start + 2 * self.interval_ns {
                self.start_ns = Some(at);
            }
        }
    }

    /// Writes the interval ending at `end_ns`: each memcg's interval events, then its summary.
    fn close(&mut self, end_ns: u64, out: &mut Vec<Line>) {
        let span = end_ns.saturating_sub(self.start_ns.unwrap_or(end_ns));
        for bucket in self.buckets.drain(..) {
            for event in &bucket.intervals {
                out.push(Line::Plain(line(event, self.clock)));
            }
            if let Some(s) = bucket
                .pressure
                .line(&bucket.memcg, end_ns, span, self.clock)
            {
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
                killed: false,
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
        if self.removals.is_empty() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        CgroupChange, ChargeFailFromReclaim, ChargeProbe, PageCache,
        samples::{CLOCK, oom_kill},
    };

    const SECOND: u64 = 1_000_000_000;
    const GRACE: u64 = 2 * SECOND;

    fn memcg(id: u64) -> Memcg {
        Memcg {
            id: Some(id),
            cgroup: Some(format!("/pod/c{id}")),
            container: None,
        }
    }

    fn at(ns: u64, id: u64, what: What) -> Event {
        Event {
            timestamp_ns: ns,
            memcg: memcg(id),
            what,
        }
    }

    fn reclaim(ns: u64, id: u64, freed: u64, took: u64) -> Event {
        at(
            ns,
            id,
            What::Reclaim(Reclaim {
                pid: 9,
                duration_ns: took,
                reclaimed_bytes: freed,
                order: 0,
                gfp_flags: 0xcc0,
                ineffective: freed == 0,
            }),
        )
    }

    fn derived_fail(ns: u64, id: u64, failcnt: u64) -> Event {
        at(
            ns,
            id,
            What::ChargeFailFromReclaim(ChargeFailFromReclaim {
                pid: 9,
                gfp_flags: 0xcc0,
                reclaimed_bytes: 0,
                reclaim_ns: 1_000,
                charge_failures: Some(failcnt),
            }),
        )
    }

    fn cgroup(ns: u64, id: u64, action: CgroupAction, dying_ns: Option<u64>) -> Event {
        at(
            ns,
            id,
            What::Cgroup(CgroupChange {
                action,
                dying: action == CgroupAction::Removed,
                charged_bytes: (action == CgroupAction::Removed).then_some(3 << 20),
                dying_ns,
            }),
        )
    }

    fn cache(ns: u64, id: u64) -> Event {
        at(
            ns,
            id,
            What::Cache(PageCache::new(SECOND, 8 << 20, 4 << 20)),
        )
    }

    fn text(lines: &[Line]) -> Vec<&str> {
        lines
            .iter()
            .map(|l| match l {
                Line::Plain(s) | Line::Alarm(s) => s.as_str(),
            })
            .collect()
    }

    /// The number before `word` in `line` (`350 episodes`).
    fn count_before(line: &str, word: &str) -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == word)
            .unwrap_or_else(|| panic!("no {word:?} in {line}"));
        words[i - 1].parse().expect("a count")
    }

    #[test]
    fn thousands_of_reclaims_and_charge_failures_are_one_line_per_memcg_that_counts_them_all() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        let mut expected = [(0u64, 0u64, 0u64); 2];
        for i in 0..5_000u64 {
            let id = 1 + i % 2;
            let freed = if i % 3 == 0 { 0 } else { 4096 * (i % 7) };
            let took = 1_000 + i;
            s.event(&reclaim(10 + i, id, freed, took), &mut out);
            s.event(&derived_fail(10 + i, id, i), &mut out);
            let e = &mut expected[usize::try_from(id - 1).expect("small")];
            e.0 += 1;
            e.1 += freed;
            e.2 += u64::from(freed == 0);
        }
        assert!(out.is_empty(), "nothing before the interval ends: {out:?}");
        s.event(&cache(SECOND, 1), &mut out);
        s.interval_end(SECOND, &mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        // Memcg 1's lines together: its interval event, then its summary.
        assert!(
            lines[0].contains(" cache ") && lines[0].contains("/pod/c1"),
            "{lines:#?}"
        );
        for (line, (id, (episodes, freed, nothing))) in lines[1..].iter().zip((1..).zip(expected)) {
            assert!(line.contains(&format!(" /pod/c{id} ")), "{line}");
            assert!(line.contains(" reclaim "), "{line}");
            assert_eq!(count_before(line, "episodes"), episodes, "{line}");
            assert!(
                line.contains(&format!("freed {},", human_bytes(freed))),
                "{line}"
            );
            assert!(
                line.contains(&format!(", {nothing} freed nothing")),
                "{line}"
            );
            assert_eq!(
                count_before(line, "(derived:"),
                episodes,
                "every derived charge failure counted: {line}"
            );
            // The worst is the longest stall: the last episode of that memcg.
            assert!(line.contains("; worst 6us (pid 9"), "{line}");
        }
        out.clear();
        s.interval_end(2 * SECOND, &mut out);
        assert!(out.is_empty(), "a quiet interval says nothing: {out:?}");
    }

    #[test]
    fn one_episode_with_its_derived_charge_failure_is_one_line() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        s.event(&reclaim(10, 1, 0, 2_000), &mut out);
        s.event(&derived_fail(10, 1, 5), &mut out);
        s.interval_end(SECOND, &mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains(" reclaim   /pod/c1 1 episode in 1.0s: freed 0B, stall 2us, 1 freed nothing; worst 2us")
                && lines[0].ends_with(" | chargefail 1 (derived: one per limit reclaim episode) failcnt=5"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn a_lone_event_keeps_its_own_line() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        let event = reclaim(10, 1, 0, 2_000);
        s.event(&event, &mut out);
        s.interval_end(SECOND, &mut out);
        assert_eq!(text(&out), [line(&event, CLOCK)]);
    }

    #[test]
    fn kernel_charge_failures_name_the_largest() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        for pages in [1, 8, 2] {
            let fail = ChargeFail {
                pid: 40 + pages,
                tgid: 40,
                comm: "dd".into(),
                nr_pages: pages,
                gfp_flags: 0,
                errno: 12,
                probe: ChargeProbe::Fexit,
                charge_failures: Some(u64::from(pages)),
            };
            s.event(&at(10, 1, What::ChargeFail(fail)), &mut out);
        }
        s.interval_end(SECOND, &mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(" chargefail /pod/c1 3 refused charges (11 pages) in 1.0s; largest pid=48 comm=dd pages=8 ENOMEM"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(" failcnt=2"), "{}", lines[0]);
    }

    #[test]
    fn an_oom_kill_stands_alone_after_what_led_to_it() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        let kill = oom_kill();
        let victim = kill.memcg.id.expect("id");
        for i in 0..3 {
            let mut r = reclaim(i, victim, 0, 500);
            r.memcg = kill.memcg.clone();
            s.event(&r, &mut out);
        }
        s.event(&kill, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], Line::Plain(l) if l.contains(" 3 episodes ")),
            "{out:?}"
        );
        assert_eq!(out[1], Line::Alarm(line(&kill, CLOCK)));
        out.clear();
        // A storm: the next kills of the interval are their own lines, the pressure between
        // them is counted at its end.
        for i in 0..4 {
            let mut r = reclaim(2_000 + i, victim, 0, 500);
            r.memcg = kill.memcg.clone();
            s.event(&r, &mut out);
            s.event(&kill, &mut out);
        }
        assert_eq!(out, vec![Line::Alarm(line(&kill, CLOCK)); 4]);
        out.clear();
        s.interval_end(SECOND, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            matches!(&out[0], Line::Plain(l) if l.contains(" 4 episodes ")),
            "{out:?}"
        );
    }

    #[test]
    fn a_removal_freed_within_the_grace_is_one_calm_line() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        s.event(&cgroup(SECOND, 7, CgroupAction::Removed, None), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let freed_after = 40_000_000;
        let freed = cgroup(
            SECOND + freed_after,
            7,
            CgroupAction::Freed,
            Some(freed_after),
        );
        s.event(&freed, &mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with(" cgroup    /pod/c7 removed id=7 charged=3.0MiB, freed 40ms later"),
            "{}",
            lines[0]
        );
        assert!(
            !lines[0].contains("DYING") && !lines[0].contains("dying"),
            "{}",
            lines[0]
        );
        // Stamped at the removal.
        assert!(lines[0].starts_with(&CLOCK.wall(SECOND)), "{}", lines[0]);
    }

    #[test]
    fn a_removal_that_outlives_the_grace_is_dying_once_and_its_release_says_how_long() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        s.event(&cgroup(SECOND, 7, CgroupAction::Removed, None), &mut out);
        s.interval_end(2 * SECOND, &mut out);
        assert!(out.is_empty(), "within the grace: {out:?}");
        s.interval_end(3 * SECOND, &mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&CLOCK.wall(3 * SECOND)),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(" cgroup    /pod/c7 DYING id=7: removed at ")
                && lines[0].contains(" with 3.0MiB charged, not freed within 2.0s"),
            "{}",
            lines[0]
        );
        out.clear();
        s.interval_end(4 * SECOND, &mut out);
        assert!(out.is_empty(), "said once: {out:?}");
        let dying = 9 * SECOND;
        s.event(
            &cgroup(10 * SECOND, 7, CgroupAction::Freed, Some(dying)),
            &mut out,
        );
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with(" freed id=7 after 9.0s dying"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn without_ticks_interval_events_end_the_interval_they_close() {
        // A replayed trace: reclaims, then the interval's events stamped with its end, then
        // the next interval's reclaims.
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        for i in 0..10 {
            s.event(&reclaim(SECOND / 2 + i, 1, 4096, 100), &mut out);
        }
        s.event(&cache(SECOND, 1), &mut out);
        s.event(&cache(SECOND, 2), &mut out);
        assert!(out.is_empty(), "{out:?}");
        s.event(&reclaim(SECOND + 5, 1, 4096, 100), &mut out);
        s.event(&reclaim(SECOND + 6, 1, 4096, 100), &mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].contains(" cache ") && lines[0].contains("/pod/c1"),
            "{lines:#?}"
        );
        assert_eq!(count_before(lines[1], "episodes"), 10, "{lines:#?}");
        assert!(
            lines[2].contains(" cache ") && lines[2].contains("/pod/c2"),
            "{lines:#?}"
        );
        out.clear();
        // Without interval events, an interval ends when events come well past it; after the
        // gap, the next one begins with them.
        s.event(&reclaim(5 * SECOND, 1, 4096, 100), &mut out);
        assert_eq!(count_before(text(&out)[0], "episodes"), 2, "{out:#?}");
        out.clear();
        s.event(&reclaim(5 * SECOND + SECOND / 10, 1, 4096, 100), &mut out);
        s.event(&reclaim(5 * SECOND + SECOND / 5, 1, 4096, 100), &mut out);
        assert!(out.is_empty(), "{out:#?}");
        s.end(&mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(count_before(text(&out)[0], "episodes"), 3, "{out:#?}");
    }

    #[test]
    fn interval_lines_too_small_to_read_wait_for_more_and_the_end() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        let small = |ns| at(ns, 1, What::Cache(PageCache::new(SECOND, 300 << 10, 0)));
        for i in 1..=5 {
            s.event(&small(i * SECOND), &mut out);
            s.interval_end(i * SECOND, &mut out);
        }
        // 1.2 MiB after the fourth second: one line for four.
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains(" +1.2MiB (added 1.2MiB, removed 0B) in 4.0s"),
            "{}",
            lines[0]
        );
        out.clear();
        s.end(&mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains(" +300.0KiB (added 300.0KiB, removed 0B) in 1.0s"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn the_end_writes_what_is_held() {
        let mut s = Summariser::new(CLOCK, GRACE);
        let mut out = Vec::new();
        s.event(&reclaim(10, 1, 0, 100), &mut out);
        s.event(&reclaim(20, 1, 0, 100), &mut out);
        s.event(&cgroup(30, 7, CgroupAction::Removed, None), &mut out);
        s.end(&mut out);
        let lines = text(&out);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(count_before(lines[0], "episodes"), 2, "{lines:#?}");
        assert!(
            lines[1].ends_with(
                "removed id=7 charged=3.0MiB, not freed when the stream ended (0us after removal)"
            ),
            "{}",
            lines[1]
        );
    }
}
