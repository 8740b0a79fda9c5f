//! The report for people, in a terminal.

use std::fmt::Write as _;

use super::{
    model::{
        ChargeFailures, Charges, ContainerReport, CounterTotal, FileGrowth, OomReport, Report,
        Slab, is_host,
    },
    summary::LineKind,
    verdict::Finding,
};
use crate::{
    attribution::MemoryStats,
    units::{human_bytes, seconds},
};

/// Reclaims that freed nothing, shown one by one (JSON and HTML list more).
const TEXT_FAILURES: usize = 5;

fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}

fn opt_bytes(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), human_bytes)
}

/// The whole report as text: the answer in about ten lines ([`Summary::lines`]), then a
/// section per container, containers and pods before the host's own cgroups.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    title(&mut s, r);
    for line in r.summary.lines() {
        let indent = if line.kind == LineKind::Verdict {
            "  "
        } else {
            ""
        };
        let _ = writeln!(s, "{indent}{}", line.text);
    }
    let t = &r.trace;
    if !t.probes.is_empty() {
        let _ = writeln!(s, "\nprobes: {}", t.probes.join(" "));
    }
    if r.containers.is_empty() && r.containers_left_out == 0 {
        s.push_str("\nno container events in this trace\n");
    }
    let mut host_heading = false;
    for c in &r.containers {
        if is_host(c.kind) && !host_heading {
            s.push_str("\n-- host and system cgroups (not in a container or pod)\n");
            host_heading = true;
        }
        container(&mut s, c);
    }
    if r.containers_left_out > 0 {
        let _ = writeln!(
            s,
            "\n… {} more section{} left out by --top (the summary at the top counts them)",
            r.containers_left_out,
            if r.containers_left_out == 1 { "" } else { "s" }
        );
    }
    if !r.page_cache_growers.is_empty() {
        // A line each: their files are in their sections.
        s.push_str("\n== top page-cache growers\n");
        for (i, g) in r.page_cache_growers.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {}. {} {} at the peak, {} at the end (added {}, removed {}{}){}",
                i + 1,
                g.name,
                signed(g.peak_net_bytes),
                signed(g.net_bytes),
                human_bytes(g.added_bytes),
                human_bytes(g.removed_bytes),
                refaulted(g.refault_bytes),
                g.top_files.first().map_or_else(String::new, |f| format!(
                    "; most in {} {} at the peak",
                    f.name,
                    signed(f.peak_net_bytes)
                ))
            );
        }
    }
    dying(&mut s, r);
    s
}

/// `memtrace report: FILE — host, kernel, when, how many events, lost or cut short`.
fn title(s: &mut String, r: &Report) {
    let t = &r.trace;
    let _ = write!(
        s,
        "memtrace report: {} (host {}, kernel {}, memtrace {}): ",
        t.file, t.host, t.kernel_release, t.memtrace_version
    );
    match (
        &r.first_event,
        &r.last_event,
        r.first_timestamp_ns,
        r.last_timestamp_ns,
    ) {
        (Some(first), Some(last), Some(start_ns), Some(end_ns)) => {
            let _ = write!(
                s,
                "{first} to {last} ({:.1}s), {} events",
                seconds(end_ns.saturating_sub(start_ns)),
                r.events
            );
        }
        _ => s.push_str("no events"),
    }
    match (t.lost_events, &t.cut_short) {
        (_, Some(why)) => {
            let _ = writeln!(s, "; CUT SHORT: {why}");
        }
        (Some(lost), None) => {
            let _ = writeln!(s, ", {lost} lost");
        }
        (None, None) => s.push('\n'),
    }
    if let Some(flight) = &t.flight {
        let _ = writeln!(s, "{}", flight.line());
    }
}

fn container(s: &mut String, c: &ContainerReport) {
    let _ = write!(s, "\n== {}", c.name);
    if c.cgroups.len() == 1 && c.cgroups[0] != c.name {
        let _ = write!(s, " (cgroup {})", c.cgroups[0]);
    } else if c.cgroups.len() > 1 {
        let _ = write!(s, " (cgroups {})", c.cgroups.join(", "));
    }
    s.push('\n');
    // The heading names a container's only cgroup: its lines need not repeat it.
    let only = (c.cgroups.len() == 1).then(|| c.cgroups[0].as_str());
    let in_cgroup = |cgroup: Option<&str>| match cgroup {
        Some(cgroup) if Some(cgroup) == only => String::new(),
        other => format!(" in {}", other.unwrap_or("?")),
    };
    if !c.oom_kills.is_empty() {
        let _ = writeln!(s, "  OOM kills: {}", c.oom_kills.len());
        for kill in &c.oom_kills {
            oom(s, kill, &in_cgroup(kill.cgroup.as_deref()));
        }
    }
    if let Some(risk) = &c.at_risk {
        let _ = writeln!(
            s,
            "  at risk (not OOM-killed): {}: {}",
            risk.kind.label(),
            risk.reason
        );
        evidence(s, &risk.evidence, "    ");
    }
    if let Some(cgroup) = &c.memory_cgroup {
        let peak = c.memory.iter().filter_map(|m| m.usage).max();
        let own = c.memory.iter().rev().find_map(|m| m.limit);
        let limit = match (own, &c.applied_limit) {
            (Some(l), _) => format!(" of {} limit", human_bytes(l)),
            (None, Some(applied)) => format!(
                " of {} limit (none of its own: {}'s applies)",
                opt_bytes(applied.last_bytes()),
                applied.owner
            ),
            (None, None) => " (no limit)".to_owned(),
        };
        let ws = c.memory.iter().filter_map(|m| m.working_set).max();
        let of = if only == Some(cgroup.as_str()) {
            String::new()
        } else {
            format!(" of {cgroup}")
        };
        let _ = writeln!(
            s,
            "  memory: {} samples{of}; peak usage {}{limit}, peak working set {}",
            c.memory.len(),
            opt_bytes(peak),
            opt_bytes(ws),
        );
    }
    let cache = &c.page_cache;
    if cache.intervals > 0 {
        let _ = writeln!(
            s,
            "  page cache: {} at the peak, {} at the end (added {}, removed {}{}) over {} \
             intervals",
            signed(cache.peak_net_bytes),
            signed(cache.net_bytes),
            human_bytes(cache.added_bytes),
            human_bytes(cache.removed_bytes),
            refaulted(cache.refault_bytes),
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
                "freed nothing: {} pid {}{} order {} gfp {} ({:.0}µs)",
                f.time,
                f.pid,
                in_cgroup(f.cgroup.as_deref()),
                f.order,
                f.gfp_flags,
                f.duration_us
            )
        });
    }
    charges(s, &c.charges, &c.charge_failures);
    slab(s, &c.slab);
    counters(s, &c.counters);
}

/// `  kernel counters: oom_kill +1 (now 1), failcnt +120 (now 340), …`
fn counters(s: &mut String, counters: &[CounterTotal]) {
    if counters.is_empty() {
        return;
    }
    let listed: Vec<String> = counters
        .iter()
        .map(|t| {
            let name = t.counter.name();
            let (delta, last) = if name.ends_with("_bytes") {
                (signed(t.delta), human_bytes(t.last))
            } else {
                (format!("{:+}", t.delta), t.last.to_string())
            };
            format!("{name} {delta} (now {last})")
        })
        .collect();
    let _ = writeln!(s, "  kernel counters: {}", listed.join(", "));
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
    if failures.count > 0 && failures.derived == failures.count {
        // Each one is a limit reclaim, listed above: counting them says it all.
        let _ = writeln!(
            s,
            "  charge failures: {} (all derived from the limit reclaims above)",
            failures.count
        );
    } else if failures.count > 0 {
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
    if let (Some(first), Some(last)) = (slab.first_kernel_bytes, slab.last_kernel_bytes)
        && slab.peak_kernel_bytes != Some(0)
    {
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
        // Caches that allocated and freed as much: counted, not listed.
        let (grew, even): (Vec<_>, Vec<_>) = slab
            .caches
            .iter()
            .partition(|c| c.peak_net_bytes != 0 || c.net_bytes != 0);
        for c in grew {
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
        if !even.is_empty() {
            let _ = writeln!(
                s,
                "    and {} that freed all they allocated ({})",
                even.len(),
                even.iter()
                    .map(|c| c.cache.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

fn oom(s: &mut String, k: &OomReport, in_cgroup: &str) {
    let _ = writeln!(
        s,
        "    {} pid {} ({}){in_cgroup}; limit of {} fired: usage {} of {} ({})",
        k.time,
        k.pid,
        k.comm.as_deref().unwrap_or("?"),
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
    evidence(s, &k.verdict.evidence, "        ");
}

/// `evidence: thrashing: file refaults …`, a line each.
fn evidence(s: &mut String, findings: &[Finding], indent: &str) {
    for f in findings {
        let _ = writeln!(s, "{indent}evidence: {}: {}", f.kind.label(), f.text);
    }
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
            "{indent}{} {} at the peak, {} at the end (added {}, removed {}{})",
            f.name,
            signed(f.peak_net_bytes),
            signed(f.net_bytes),
            human_bytes(f.added_bytes),
            human_bytes(f.removed_bytes),
            refaulted(f.refault_bytes)
        );
    }
}

/// `, re-read after eviction N` where memtrace counted refaults and some were; else nothing.
fn refaulted(refault_bytes: Option<u64>) -> String {
    refault_bytes
        .filter(|&r| r > 0)
        .map_or_else(String::new, |r| {
            format!(", re-read after eviction {}", human_bytes(r))
        })
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

    /// The answer comes before anything else, and host cgroups after the containers.
    #[test]
    fn the_first_lines_are_the_answer() {
        let mut r = scenario_report();
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("memtrace report: test.mtrace (host node1"),
            "{text}"
        );
        assert!(
            lines[1].starts_with(
                "OOM kill at 2026-11-27T15:47:03.500000Z: memhog (pid 42) in \
                                  container:4c01db0b339c; the limit that fired: its own, 64.0MiB"
            ),
            "{text}"
        );
        assert!(lines[2].starts_with("  verdict: anon growth: "), "{text}");
        assert!(lines[3].starts_with("grew most: container:4c01db0b339c anon +61.0MiB"));
        assert!(lines[5].starts_with("dying memcgs: "), "{text}");
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
        };
        assert!(at("== container:4c01db0b339c") < at("-- host and system cgroups"));
        assert!(at("-- host and system cgroups") < at("== backup.service"));

        r.keep_top(1);
        let text = render(&r);
        assert!(!text.contains("== backup.service"), "{text}");
        assert!(
            text.contains(
                "\n… 1 more section left out by --top (the summary at the top counts them)\n"
            ),
            "{text}"
        );
    }
}
