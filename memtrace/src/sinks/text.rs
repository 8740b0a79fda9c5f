//! One line per event, for people: `TIME TYPE CGROUP [CONTAINER] details…`.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use super::{
    Sink, TextOptions,
    summary::{Line, Summariser},
};
use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        CgroupChange, ChargeFail, ChargeFailFromReclaim, ChargeSource, Charges,
        ChargesFromPageCache, Event, HostClock, Lost, MemorySource, OomKill, PageCache, Reclaim,
        Slab, What,
    },
    units::{human_bytes, micros, seconds},
};

pub struct TextSink<W: Write> {
    out: io::BufWriter<W>,
    clock: HostClock,
    /// Bold red OOM kills (a terminal).
    color: bool,
    /// `None`: every event on its own line (`--each`).
    summariser: Option<Summariser>,
    /// Lines due, reused.
    due: Vec<Line>,
}

impl<W: Write> TextSink<W> {
    /// Every event on its own line, without colour.
    pub fn new(out: W, clock: HostClock) -> Self {
        Self::with_options(
            out,
            clock,
            &TextOptions {
                each: true,
                ..TextOptions::default()
            },
        )
    }

    pub fn with_options(out: W, clock: HostClock, options: &TextOptions) -> Self {
        let grace_ns = u64::try_from(options.dying_grace.as_nanos()).unwrap_or(u64::MAX);
        Self {
            out: io::BufWriter::new(out),
            clock,
            color: options.color,
            summariser: (!options.each).then(|| Summariser::new(clock, grace_ns)),
            due: Vec::new(),
        }
    }

    fn write_due(&mut self) -> io::Result<()> {
        for l in self.due.drain(..) {
            match l {
                Line::Plain(s) => writeln!(self.out, "{s}")?,
                Line::Alarm(s) if self.color => {
                    writeln!(self.out, "\x1b[1;31m{ALARM_PREFIX}{s}\x1b[0m")?;
                }
                Line::Alarm(s) => writeln!(self.out, "{ALARM_PREFIX}{s}")?,
            }
        }
        Ok(())
    }
}

/// Before an OOM kill's line, so an eye scanning the left edge finds it among timestamps.
pub const ALARM_PREFIX: &str = "!!! ";

impl<W: Write> Sink for TextSink<W> {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        match &mut self.summariser {
            Some(summariser) => summariser.event(event, &mut self.due),
            None if matches!(event.what, What::OomKill(_)) => {
                self.due.push(Line::Alarm(line(event, self.clock)));
            }
            None => self.due.push(Line::Plain(line(event, self.clock))),
        }
        self.write_due()
    }

    fn interval_end(&mut self, end_ns: u64) -> io::Result<()> {
        if let Some(summariser) = &mut self.summariser {
            summariser.interval_end(end_ns, &mut self.due);
        }
        self.write_due()
    }

    fn end(&mut self) -> io::Result<()> {
        if let Some(summariser) = &mut self.summariser {
            summariser.end(&mut self.due);
        }
        self.write_due()?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `TIME TYPE CGROUP [CONTAINER] details…`
#[must_use]
pub fn line(event: &Event, clock: HostClock) -> String {
    let label = match &event.what {
        What::ChargeFail(_) | What::ChargeFailFromReclaim(_) => "chargefail",
        // A loss is memtrace's own, of no memcg: said as such, not as a cgroup `?`.
        What::Lost(e) => return format!("{} {}", clock.wall(event.timestamp_ns), lost(e)),
        what => what.type_name(),
    };
    let mut s = format!(
        "{} {label:<9} {}",
        clock.wall(event.timestamp_ns),
        event.memcg.cgroup.as_deref().unwrap_or("?")
    );
    who(&mut s, event.memcg.container.as_ref());
    match &event.what {
        What::OomKill(e) => oom_kill(&mut s, e),
        What::Cgroup(e) => cgroup(&mut s, e, event.memcg.id),
        What::Stats(m) => {
            memory(&mut s, m);
            s.push_str(&super::counter_values(&m.counters));
        }
        What::Counters(e) => {
            s.push(' ');
            s.push_str(&super::counter_changes(e));
        }
        What::Cache(e) => cache(&mut s, e),
        What::Reclaim(e) => reclaim(&mut s, e),
        What::Charge(e) => charge(&mut s, e),
        What::ChargeFromPageCache(e) => charge_from_page_cache(&mut s, e),
        What::ChargeFail(e) => charge_fail(&mut s, e),
        What::ChargeFailFromReclaim(e) => charge_fail_from_reclaim(&mut s, e),
        What::Slab(e) => slab(&mut s, e),
        What::Lost(_) => {}
    }
    s
}

/// `lost     1859 cgroup events (1859 in all): the ring buffer was full; …`
fn lost(e: &Lost) -> String {
    format!(
        "lost      {} {} event{} ({} in all, {}): {}",
        e.count,
        e.kind.name(),
        if e.count == 1 { "" } else { "s" },
        e.total,
        e.cause.name(),
        e.advice
    )
}

fn signed_bytes(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}

/// ` +1.0MiB (added 1.5MiB, removed 512.0KiB) in 1.0s`: an interval's growth.
fn growth(s: &mut String, net: i64, [(came, added), (went, removed)]: [(&str, u64); 2], ns: u64) {
    let _ = write!(
        s,
        " {} ({came} {}, {went} {}) in {:.1}s",
        signed_bytes(net),
        human_bytes(added),
        human_bytes(removed),
        seconds(ns)
    );
}

fn cache(s: &mut String, e: &PageCache) {
    let counts = [("added", e.added_bytes), ("removed", e.removed_bytes)];
    growth(s, e.net_bytes, counts, e.interval_ns);
    refaults(s, e.refault_bytes);
    let Some(top) = e.top_files.first() else {
        return;
    };
    let _ = write!(
        s,
        " top file {} {}",
        top.name(),
        signed_bytes(top.net_bytes)
    );
    refaults(s, top.refault_bytes);
    // Thrashing is the news: name the file re-read most when it is not the top one.
    let most = e
        .top_files
        .iter()
        .filter(|f| f.refault_bytes.unwrap_or(0) > 0)
        .max_by_key(|f| f.refault_bytes);
    if let Some(most) = most
        && (most.device, most.inode) != (top.device, top.inode)
    {
        let _ = write!(
            s,
            ", most refaults in {} {}",
            most.name(),
            human_bytes(most.refault_bytes.unwrap_or(0))
        );
    }
}

/// ` (48.0MiB refaults)`: of the pages added, those read again soon after their eviction.
fn refaults(s: &mut String, bytes: Option<u64>) {
    if let Some(bytes) = bytes.filter(|&b| b > 0) {
        let _ = write!(s, " ({} refaults)", human_bytes(bytes));
    }
}

fn charge(s: &mut String, e: &Charges) {
    let _ = write!(
        s,
        " {} charged in {:.1}s",
        human_bytes(e.charged_bytes),
        seconds(e.interval_ns)
    );
    match (e.charges, e.source) {
        (Some(n), _) => {
            let _ = write!(s, " ({n} charges)");
        }
        (None, ChargeSource::StatUpdates | ChargeSource::Charge) => {
            s.push_str(" (from stat updates)");
        }
    }
}

fn charge_from_page_cache(s: &mut String, e: &ChargesFromPageCache) {
    let _ = write!(
        s,
        " {} charged in {:.1}s (file pages: page cache added)",
        human_bytes(e.charged_bytes),
        seconds(e.interval_ns)
    );
}

fn charge_fail(s: &mut String, e: &ChargeFail) {
    let _ = write!(
        s,
        " pid={} comm={} pages={} gfp={:#x} {}",
        e.pid,
        e.comm,
        e.nr_pages,
        e.gfp_flags,
        e.error()
    );
    failcnt(s, e.charge_failures);
}

fn charge_fail_from_reclaim(s: &mut String, e: &ChargeFailFromReclaim) {
    let outcome = if e.reclaimed_bytes == 0 {
        "limit_reclaim_freed_nothing"
    } else {
        "limit_reclaim"
    };
    let _ = write!(
        s,
        " pid={} gfp={:#x} {outcome} (derived: reclaim freed {} in {:.0}us)",
        e.pid,
        e.gfp_flags,
        human_bytes(e.reclaimed_bytes),
        micros(e.reclaim_ns)
    );
    failcnt(s, e.charge_failures);
}

fn failcnt(s: &mut String, charge_failures: Option<u64>) {
    if let Some(n) = charge_failures {
        let _ = write!(s, " failcnt={n}");
    }
}

fn slab(s: &mut String, e: &Slab) {
    let counts = [("allocated", e.allocated_bytes), ("freed", e.freed_bytes)];
    growth(s, e.net_bytes, counts, e.interval_ns);
    let top: Vec<String> = e
        .caches
        .iter()
        .take(3)
        .map(|c| format!("{} {}", c.cache, signed_bytes(c.net_bytes)))
        .collect();
    if !top.is_empty() {
        let _ = write!(s, " top: {}", top.join(", "));
    }
}

fn reclaim(s: &mut String, e: &Reclaim) {
    let _ = write!(
        s,
        " pid={} reclaimed {} in {:.0}us order={} gfp={:#x}",
        e.pid,
        human_bytes(e.reclaimed_bytes),
        micros(e.duration_ns),
        e.order,
        e.gfp_flags
    );
    if e.ineffective {
        s.push_str(" INEFFECTIVE (nothing could be freed)");
    }
}

fn bytes_or(value: Option<u64>, missing: &str) -> String {
    value.map_or_else(|| missing.to_owned(), human_bytes)
}

/// ` [ns/pod/container]` when the cgroup belongs to one.
pub(super) fn who(s: &mut String, container: Option<&ContainerIdentity>) {
    if let Some(c) = container {
        let _ = write!(s, " [{c}]");
    }
}

fn cgroup(s: &mut String, e: &CgroupChange, memcg_id: Option<u64>) {
    let _ = write!(s, " {}", e.action.name());
    if let Some(id) = memcg_id {
        let _ = write!(s, " id={id}");
    }
    if let Some(charged) = e.charged_bytes {
        let _ = write!(s, " charged={}", human_bytes(charged));
    }
    if e.dying {
        s.push_str(" DYING (memory still charged keeps it allocated)");
    }
    if let Some(ns) = e.dying_ns {
        // A memcg freed within a second of its removal is common: 35 ms is not "0.0s".
        if ns < 1_000_000_000 {
            let _ = write!(s, " after {:.0}ms dying", micros(ns) / 1e3);
        } else {
            let _ = write!(s, " after {:.1}s dying", seconds(ns));
        }
    }
}

/// `usage=… limit=… working_set=… anon=… file=…(active …/inactive …) kernel=… shmem=…`
fn memory(s: &mut String, m: &MemoryStats) {
    let _ = write!(
        s,
        " usage={} limit={} working_set={} anon={} file={}",
        bytes_or(m.usage_bytes, "?"),
        bytes_or(m.limit_bytes, "none"),
        bytes_or(m.working_set_bytes, "?"),
        bytes_or(m.anon_bytes, "?"),
        bytes_or(m.file_bytes, "?"),
    );
    if let (Some(active), Some(inactive)) = (m.active_file_bytes, m.inactive_file_bytes) {
        let _ = write!(
            s,
            "(active {}/inactive {})",
            human_bytes(active),
            human_bytes(inactive)
        );
    }
    let _ = write!(
        s,
        " kernel={} shmem={}",
        bytes_or(m.kernel_bytes, "?"),
        bytes_or(m.shmem_bytes, "?")
    );
}

fn oom_kill(s: &mut String, e: &OomKill) {
    let _ = write!(s, " pid={}", e.pid);
    if let Some(tgid) = e.tgid.filter(|&t| t != e.pid) {
        let _ = write!(s, " tgid={tgid}");
    }
    if let Some(comm) = &e.comm {
        let _ = write!(s, " comm={comm}");
    }
    for (name, value) in [
        ("anon", e.anon_rss_bytes),
        ("file", e.file_rss_bytes),
        ("shmem", e.shmem_rss_bytes),
    ] {
        if let Some(v) = value {
            let _ = write!(s, " {name}={}", human_bytes(v));
        }
    }
    let _ = write!(
        s,
        " memcg_usage={} memcg_limit={}",
        bytes_or(e.memcg_usage_bytes, "?"),
        bytes_or(e.memcg_limit_bytes, "none"),
    );
    if let Some(constraint) = &e.constraint {
        // Which limit fired: the victim's own, an ancestor's (the pod's), or none (global).
        let name = constraint.name();
        let _ = write!(
            s,
            " | {} limit_cgroup={}",
            name.strip_prefix("CONSTRAINT_").unwrap_or(name),
            e.limit_cgroup.as_deref().unwrap_or("none (global)")
        );
        who(s, e.limit_container.as_ref());
    }
    if let Some(m) = &e.memory {
        // Read after the kill, the victim's memory may be freed already: say so, or the numbers
        // read as if the container had been small.
        if e.memory_source == Some(MemorySource::CgroupfsAfterKill) {
            s.push_str(" | after the kill:");
        }
        memory(s, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::{CLOCK, oom_kill};

    #[test]
    fn dying_times_under_a_second_are_in_milliseconds() {
        // The sample's memcg (id 42, `/x`), freed.
        let freed = |dying_ns| Event {
            what: What::Cgroup(CgroupChange {
                action: crate::event::CgroupAction::Freed,
                dying: false,
                charged_bytes: None,
                dying_ns: Some(dying_ns),
            }),
            ..oom_kill()
        };
        assert!(line(&freed(35_240_000), CLOCK).ends_with(" freed id=42 after 35ms dying"));
        assert!(line(&freed(2_040_000_000), CLOCK).ends_with(" freed id=42 after 2.0s dying"));
    }

    #[test]
    fn oom_kills_stand_out_and_are_red_only_on_a_terminal() {
        let event = oom_kill();
        for (options, expected) in [
            (
                TextOptions::default(),
                format!("!!! {}\n", line(&event, CLOCK)),
            ),
            (
                TextOptions {
                    each: true,
                    ..TextOptions::default()
                },
                format!("!!! {}\n", line(&event, CLOCK)),
            ),
            (
                TextOptions {
                    color: true,
                    ..TextOptions::default()
                },
                format!("\x1b[1;31m!!! {}\x1b[0m\n", line(&event, CLOCK)),
            ),
        ] {
            let mut out = Vec::new();
            let mut sink = TextSink::with_options(&mut out, CLOCK, &options);
            sink.write(&event).expect("write");
            sink.end().expect("end");
            drop(sink);
            assert_eq!(String::from_utf8(out).expect("utf-8"), expected);
        }
    }

    #[test]
    fn each_writes_every_event_as_it_comes() {
        let reclaim = Event {
            what: What::Reclaim(Reclaim {
                pid: 9,
                duration_ns: 1_000,
                reclaimed_bytes: 0,
                order: 0,
                gfp_flags: 0,
                ineffective: true,
            }),
            ..oom_kill()
        };
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out, CLOCK);
        for _ in 0..3 {
            sink.write(&reclaim).expect("write");
        }
        sink.flush().expect("flush");
        drop(sink);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().all(|l| l == line(&reclaim, CLOCK)), "{text}");
    }

    #[test]
    fn oom_kill_line() {
        let event = oom_kill();
        assert_eq!(
            line(&event, CLOCK),
            "2026-11-27T15:47:01.000001Z oom_kill  /x pid=7 comm=memhog anon=63.0MiB file=0B \
             shmem=0B memcg_usage=? memcg_limit=64.0MiB | MEMCG limit_cgroup=/"
        );
    }
}
