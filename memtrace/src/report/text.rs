//! The report for people, in a terminal.

use std::fmt::Write as _;

use super::model::{ChargeFailures, Charges, ContainerReport, FileGrowth, OomReport, Report, Slab};
use crate::{attribution::MemoryStats, units::human_bytes};

/// Reclaims that freed nothing, shown one by one (JSON and HTML list more).
const TEXT_FAILURES: usize = 5;

fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}

fn opt_bytes(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), human_bytes)
}

/// The whole report as text.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let t = &r.trace;
    let _ = writeln!(
        s,
        "memtrace report: {} (host {}, kernel {}, recorded by memtrace {})",
        t.file, t.host, t.kernel_release, t.memtrace_version
    );
    let _ = write!(
        s,
        "{} events from {} to {}",
        r.events,
        r.first_event.as_deref().unwrap_or("-"),
        r.last_event.as_deref().unwrap_or("-"),
    );
    match (t.lost_events, &t.cut_short) {
        (_, Some(why)) => {
            let _ = writeln!(s, "; cut short: {why}");
        }
        (Some(lost), None) => {
            let _ = writeln!(s, "; {lost} lost");
        }
        (None, None) => s.push('\n'),
    }
    if !t.probes.is_empty() {
        let _ = writeln!(s, "probes: {}", t.probes.join(" "));
    }
    if r.containers.is_empty() {
        s.push_str("\nno container events in this trace\n");
    }
    for c in &r.containers {
        container(&mut s, c);
    }
    if !r.page_cache_growers.is_empty() {
        s.push_str("\n== top page-cache growers\n");
        for (i, g) in r.page_cache_growers.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {}. {} {} at the peak, {} at the end (added {}, removed {})",
                i + 1,
                g.name,
                signed(g.peak_net_bytes),
                signed(g.net_bytes),
                human_bytes(g.added_bytes),
                human_bytes(g.removed_bytes)
            );
            files(&mut s, &g.top_files, "       ");
        }
    }
    dying(&mut s, r);
    s
}

fn container(s: &mut String, c: &ContainerReport) {
    let _ = write!(s, "\n== {}", c.name);
    if c.cgroups.len() == 1 && c.cgroups[0] != c.name {
        let _ = write!(s, " (cgroup {})", c.cgroups[0]);
    } else if c.cgroups.len() > 1 {
        let _ = write!(s, " (cgroups {})", c.cgroups.join(", "));
    }
    s.push('\n');
    if !c.oom_kills.is_empty() {
        let _ = writeln!(s, "  OOM kills: {}", c.oom_kills.len());
        for kill in &c.oom_kills {
            oom(s, kill);
        }
    }
    if let Some(cgroup) = &c.memory_cgroup {
        let peak = c.memory.iter().filter_map(|m| m.usage).max();
        let limit = c.memory.iter().rev().find_map(|m| m.limit);
        let ws = c.memory.iter().filter_map(|m| m.working_set).max();
        let _ = writeln!(
            s,
            "  memory: {} samples of {cgroup}; peak usage {}{}, peak working set {}",
            c.memory.len(),
            opt_bytes(peak),
            limit.map_or_else(String::new, |l| format!(" of {} limit", human_bytes(l))),
            opt_bytes(ws),
        );
    }
    let cache = &c.page_cache;
    if cache.intervals > 0 {
        let _ = writeln!(
            s,
            "  page cache: {} at the peak, {} at the end (added {}, removed {}) over {} intervals",
            signed(cache.peak_net_bytes),
            signed(cache.net_bytes),
            human_bytes(cache.added_bytes),
            human_bytes(cache.removed_bytes),
            cache.intervals
        );
        files(s, &cache.top_files, "    ");
    }
    let reclaim = &c.reclaim;
    if reclaim.episodes > 0 {
        let _ = writeln!(
            s,
            "  reclaim: {} episodes, {} freed nothing; reclaimed {}, {:.0}µs in all, longest \
             {:.0}µs",
            reclaim.episodes,
            reclaim.failures,
            human_bytes(reclaim.reclaimed_bytes),
            reclaim.total_duration_us,
            reclaim.max_duration_us
        );
        list_some(s, &reclaim.listed_failures, reclaim.failures, |f| {
            format!(
                "freed nothing: {} pid {} in {} order {} gfp {} ({:.0}µs)",
                f.time,
                f.pid,
                f.cgroup.as_deref().unwrap_or("?"),
                f.order,
                f.gfp_flags,
                f.duration_us
            )
        });
    }
    charges(s, &c.charges, &c.charge_failures);
    slab(s, &c.slab);
}

/// Writes the first [`TEXT_FAILURES`] of `listed`, one `line` each, then how many of `total`
/// were left out.
fn list_some<T>(s: &mut String, listed: &[T], total: u64, line: impl Fn(&T) -> String) {
    for item in listed.iter().take(TEXT_FAILURES) {
        let _ = writeln!(s, "    {}", line(item));
    }
    let shown = listed.len().min(TEXT_FAILURES) as u64;
    if total > shown {
        let _ = writeln!(s, "    … and {} more", total - shown);
    }
}

fn charges(s: &mut String, charges: &Charges, failures: &ChargeFailures) {
    if charges.intervals > 0 {
        let _ = writeln!(
            s,
            "  charged: {} over {} intervals; busiest {} in {:.1}s ending {}",
            human_bytes(charges.charged_bytes),
            charges.intervals,
            human_bytes(charges.busiest_interval_bytes),
            charges.busiest_interval_seconds,
            charges.busiest_interval.as_deref().unwrap_or("?")
        );
    }
    if failures.count > 0 {
        let _ = writeln!(
            s,
            "  charge failures: {}{}",
            failures.count,
            if failures.derived > 0 {
                format!(" ({} derived from limit reclaim)", failures.derived)
            } else {
                String::new()
            }
        );
        list_some(s, &failures.listed, failures.count, |f| {
            format!(
                "{} pid {}{}{} gfp {}: {} [{}]",
                f.time,
                f.pid,
                f.comm
                    .as_deref()
                    .map_or_else(String::new, |c| format!(" ({c})")),
                f.nr_pages
                    .map_or_else(String::new, |n| format!(" {n} pages")),
                f.gfp_flags,
                f.outcome,
                f.source
            )
        });
    }
}

fn slab(s: &mut String, slab: &Slab) {
    if let (Some(first), Some(last)) = (slab.first_kernel_bytes, slab.last_kernel_bytes) {
        let _ = writeln!(
            s,
            "  kernel memory: {} at the first sample, {} at the last ({}), peak {}",
            human_bytes(first),
            human_bytes(last),
            signed(slab.growth_bytes.unwrap_or(0)),
            opt_bytes(slab.peak_kernel_bytes)
        );
    }
    if slab.intervals > 0 {
        let _ = writeln!(
            s,
            "  slab (accounted): {} at the peak, {} at the end (allocated {}, freed {}) over {} \
             intervals",
            signed(slab.peak_net_bytes),
            signed(slab.net_bytes),
            human_bytes(slab.allocated_bytes),
            human_bytes(slab.freed_bytes),
            slab.intervals
        );
        for c in &slab.caches {
            let _ = writeln!(
                s,
                "    {} {} at the peak, {} at the end (allocated {}, freed {})",
                c.cache,
                signed(c.peak_net_bytes),
                signed(c.net_bytes),
                human_bytes(c.allocated_bytes),
                human_bytes(c.freed_bytes)
            );
        }
    }
}

fn oom(s: &mut String, k: &OomReport) {
    let _ = writeln!(
        s,
        "    {} pid {} ({}) in {}; limit of {} fired: usage {} of {} ({})",
        k.time,
        k.pid,
        k.comm.as_deref().unwrap_or("?"),
        k.cgroup.as_deref().unwrap_or("?"),
        k.limit_cgroup
            .as_deref()
            .unwrap_or("? (global OOM or not reported)"),
        opt_bytes(k.usage_bytes),
        opt_bytes(k.limit_bytes),
        k.constraint.as_deref().unwrap_or("constraint unknown"),
    );
    if let Some(m) = &k.memory {
        let _ = writeln!(
            s,
            "      memory at the kill ({}): {}",
            k.memory_source.as_deref().unwrap_or("?"),
            breakdown(m)
        );
    }
    let _ = writeln!(
        s,
        "      verdict: {}: {}",
        k.verdict.kind.label(),
        k.verdict.reason
    );
}

/// `anon 62.0MiB, file 1.0MiB (active …, inactive …), kernel 1.0MiB, shmem 0B`, what is known.
#[must_use]
pub fn breakdown(m: &MemoryStats) -> String {
    let mut parts = Vec::new();
    if let Some(a) = m.anon_bytes {
        parts.push(format!("anon {}", human_bytes(a)));
    }
    if let Some(f) = m.file_bytes {
        let mut p = format!("file {}", human_bytes(f));
        if let (Some(a), Some(i)) = (m.active_file_bytes, m.inactive_file_bytes) {
            let _ = write!(
                p,
                " (active {}, inactive {})",
                human_bytes(a),
                human_bytes(i)
            );
        }
        parts.push(p);
    }
    if let Some(k) = m.kernel_bytes {
        parts.push(format!("kernel {}", human_bytes(k)));
    }
    if let Some(sh) = m.shmem_bytes {
        parts.push(format!("shmem {}", human_bytes(sh)));
    }
    if parts.is_empty() {
        "no breakdown".to_owned()
    } else {
        parts.join(", ")
    }
}

fn files(s: &mut String, files: &[FileGrowth], indent: &str) {
    for f in files {
        let _ = writeln!(
            s,
            "{indent}{} {} at the peak, {} at the end (added {}, removed {})",
            f.name,
            signed(f.peak_net_bytes),
            signed(f.net_bytes),
            human_bytes(f.added_bytes),
            human_bytes(f.removed_bytes)
        );
    }
}

fn dying(s: &mut String, r: &Report) {
    let d = &r.dying;
    s.push_str("\n== dying memory cgroups (removed while still charged)\n");
    if d.removed_while_charged == 0 {
        s.push_str("  none removed while charged during the recording\n");
        return;
    }
    let peak = d.timeline.iter().map(|p| p.dying).max().unwrap_or(0);
    let _ = write!(
        s,
        "  {} removed while charged, {} freed later",
        d.removed_while_charged, d.freed_after_dying
    );
    if let Some(longest) = d.longest_dying_seconds {
        let _ = write!(s, " (longest {longest:.1}s dying)");
    }
    let _ = writeln!(s, "; at most {peak} dying at once");
    for c in &d.still_dying {
        let _ = writeln!(
            s,
            "  still dying at the end: {}{} (removed {}, {} charged)",
            c.cgroup.as_deref().unwrap_or("?"),
            c.container
                .as_ref()
                .map_or_else(String::new, |n| format!(" [{n}]")),
            c.removed,
            opt_bytes(c.charged_bytes)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::tests::scenario_report;

    #[test]
    fn says_container_verdict_growers_and_dying() {
        let text = render(&scenario_report());
        for needle in [
            "== container:4c01db0b339c",
            "OOM kills: 1",
            "pid 42 (memhog)",
            "memory at the kill (kernel_oom_report): anon 62.0MiB",
            "verdict: anon growth: anon memory grew by 61.0MiB",
            "reclaim: 3 episodes, 2 freed nothing",
            "== top page-cache growers\n  1. backup.service +47.0MiB at the peak",
            "/data/file11 +40.0MiB at the peak",
            "2 removed while charged, 1 freed later (longest 2.5s dying); at most 1 dying",
            "still dying at the end: /gone-102",
            "charged: 60.0MiB over 2 intervals; busiest 31.0MiB",
            "charge failures: 1\n",
            "pid 42 (memhog) 1 pages gfp 0xcc0: ENOMEM [fexit]",
            "slab (accounted): +4.0MiB at the peak, +3.0MiB at the end",
            "    dentry +3.0MiB at the peak, +1.0MiB at the end",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
    }
}
