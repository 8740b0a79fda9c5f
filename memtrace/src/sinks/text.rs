//! One line per event, for people.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use super::Sink;
use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        CacheEvent, CgroupEvent, ChargeEvent, ChargeFailEvent, Event, Observed, OomKill,
        ReclaimEvent, SlabEvent, StatsEvent,
    },
    units::human_bytes,
};

pub struct TextSink<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: io::BufWriter::new(out),
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn write(&mut self, _observed: &Observed, event: &Event) -> io::Result<()> {
        writeln!(self.out, "{}", line(event))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `TIME TYPE CGROUP details…`
#[must_use]
pub fn line(event: &Event) -> String {
    match event {
        Event::OomKill(e) => oom_kill(e),
        Event::Cgroup(e) => cgroup(e),
        Event::Stats(e) => stats(e),
        Event::Cache(e) => cache(e),
        Event::Reclaim(e) => reclaim(e),
        Event::Charge(e) => charge(e),
        Event::ChargeFail(e) => charge_fail(e),
        Event::Slab(e) => slab(e),
    }
}

fn signed_bytes(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}

fn cache(e: &CacheEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "cache",
        e.cgroup.as_deref().unwrap_or("?")
    );
    who(&mut s, e.container.as_ref());
    let _ = write!(
        s,
        " {} (added {}, removed {}) in {:.1}s",
        signed_bytes(e.net_bytes),
        human_bytes(e.added_bytes),
        human_bytes(e.removed_bytes),
        e.interval_seconds
    );
    if let Some(top) = e.top_files.first() {
        let _ = write!(
            s,
            " top file dev {} inode {} {}",
            top.device,
            top.inode,
            signed_bytes(top.net_bytes)
        );
    }
    s
}

fn charge(e: &ChargeEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "charge",
        e.cgroup.as_deref().unwrap_or("?")
    );
    who(&mut s, e.container.as_ref());
    let _ = write!(
        s,
        " {} charged in {:.1}s",
        human_bytes(e.charged_bytes),
        e.interval_seconds
    );
    match (e.charges, e.source) {
        (Some(n), _) => {
            let _ = write!(s, " ({n} charges)");
        }
        (None, "page_cache") => s.push_str(" (file pages: page cache added)"),
        (None, _) => s.push_str(" (from stat updates)"),
    }
    s
}

fn charge_fail(e: &ChargeFailEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "chargefail",
        e.cgroup.as_deref().unwrap_or("?")
    );
    who(&mut s, e.container.as_ref());
    let _ = write!(s, " pid={}", e.pid);
    if let Some(comm) = &e.comm {
        let _ = write!(s, " comm={comm}");
    }
    if let Some(pages) = e.nr_pages {
        let _ = write!(s, " pages={pages}");
    }
    let _ = write!(s, " gfp={} {}", e.gfp_flags, e.outcome);
    if let (Some(freed), Some(us)) = (e.reclaimed_bytes, e.reclaim_us) {
        let _ = write!(
            s,
            " (derived: reclaim freed {} in {us:.0}us)",
            human_bytes(freed)
        );
    }
    if let Some(n) = e.charge_failures {
        let _ = write!(s, " failcnt={n}");
    }
    s
}

fn slab(e: &SlabEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "slab",
        e.cgroup.as_deref().unwrap_or("?")
    );
    who(&mut s, e.container.as_ref());
    let _ = write!(
        s,
        " {} (allocated {}, freed {}) in {:.1}s",
        signed_bytes(e.net_bytes),
        human_bytes(e.allocated_bytes),
        human_bytes(e.freed_bytes),
        e.interval_seconds
    );
    let top: Vec<String> = e
        .caches
        .iter()
        .take(3)
        .map(|c| format!("{} {}", c.cache, signed_bytes(c.net_bytes)))
        .collect();
    if !top.is_empty() {
        let _ = write!(s, " top: {}", top.join(", "));
    }
    s
}

fn reclaim(e: &ReclaimEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "reclaim",
        e.cgroup.as_deref().unwrap_or("?")
    );
    who(&mut s, e.container.as_ref());
    let _ = write!(
        s,
        " pid={} reclaimed {} in {:.0}us order={} gfp={}",
        e.pid,
        human_bytes(e.reclaimed_bytes),
        e.duration_us,
        e.order,
        e.gfp_flags
    );
    if e.ineffective {
        s.push_str(" INEFFECTIVE (nothing could be freed)");
    }
    s
}

fn bytes_or(value: Option<u64>, missing: &str) -> String {
    value.map_or_else(|| missing.to_owned(), human_bytes)
}

/// ` [ns/pod/container]` when the cgroup belongs to one.
fn who(s: &mut String, container: Option<&ContainerIdentity>) {
    if let Some(c) = container {
        let _ = write!(s, " [{c}]");
    }
}

fn cgroup(e: &CgroupEvent) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "cgroup",
        e.cgroup.as_deref().unwrap_or("?"),
    );
    who(&mut s, e.container.as_ref());
    let _ = write!(s, " {} id={}", e.action, e.memcg_id);
    if let Some(charged) = e.charged_bytes {
        let _ = write!(s, " charged={}", human_bytes(charged));
    }
    if e.dying {
        s.push_str(" DYING (memory still charged keeps it allocated)");
    }
    if let Some(secs) = e.dying_seconds {
        let _ = write!(s, " after {secs:.1}s dying");
    }
    s
}

fn stats(e: &StatsEvent) -> String {
    let mut s = format!("{} {:<9} {}", e.time, "stats", e.cgroup);
    who(&mut s, e.container.as_ref());
    memory(&mut s, &e.memory);
    s
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

fn oom_kill(e: &OomKill) -> String {
    let mut s = format!(
        "{} {:<9} {}",
        e.time,
        "oom_kill",
        e.cgroup.as_deref().unwrap_or("?"),
    );
    who(&mut s, e.container.as_ref());
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
        let _ = write!(
            s,
            " | {} limit_cgroup={}",
            constraint.strip_prefix("CONSTRAINT_").unwrap_or(constraint),
            e.limit_cgroup.as_deref().unwrap_or("none (global)")
        );
        who(&mut s, e.limit_container.as_ref());
    }
    if let Some(m) = &e.memory {
        memory(&mut s, m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_line() {
        let e = OomKill {
            time: "2026-11-27T15:47:01.000001Z".into(),
            timestamp_ns: 1,
            pid: 7,
            tgid: Some(7),
            comm: Some("memhog".into()),
            memcg_id: Some(42),
            cgroup: Some("/x".into()),
            container: None,
            memcg_limit_bytes: Some(64 << 20),
            memcg_usage_bytes: None,
            anon_rss_bytes: Some(63 << 20),
            file_rss_bytes: Some(0),
            shmem_rss_bytes: Some(0),
            constraint: Some("CONSTRAINT_MEMCG".into()),
            probe: Some("raw_tp"),
            limit_cgroup: Some("/".into()),
            limit_container: None,
            memory: None,
            memory_source: None,
        };
        assert_eq!(
            line(&Event::OomKill(e)),
            "2026-11-27T15:47:01.000001Z oom_kill  /x pid=7 comm=memhog anon=63.0MiB file=0B \
             shmem=0B memcg_usage=? memcg_limit=64.0MiB | MEMCG limit_cgroup=/"
        );
    }
}
