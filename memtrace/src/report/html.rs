//! The report as one self-contained HTML file: inline CSS and inline SVG charts, no script and
//! no external URL, so it opens from a mail attachment or an air-gapped laptop as it is.
//!
//! Cgroup paths, container and pod names, comm, slab cache names and file names come from the
//! tenants of the node, so the page is built with maud, which escapes every interpolated value.
//! The only markup passed through as it is ([`PreEscaped`]) is the stylesheet constant and the
//! charts' SVG, whose text plotters' SVG backend escapes itself (tested in `chart`).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{
    chart::{self, ChartError},
    model::{ChargeFailures, Charges, ContainerReport, FileGrowth, Reclaim, Report, Slab, is_host},
    summary::LineKind,
    text::breakdown,
};
use crate::units::human_bytes;

/// Containers charted at most; the rest are listed without a chart (a node with thousands of
/// short-lived cgroups would otherwise make a file no browser opens quickly).
pub const MAX_CHARTS: usize = 100;

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}\
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
section.container{margin:1.5em 0;padding:.5em 1em;border:1px solid #ddd;border-radius:6px}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .5em;\
text-align:left;vertical-align:top;font-size:.9em}th{background:#f4f4f4}\
.verdict{font-weight:bold;color:#b00}\
section.answer{margin:1em 0;padding:.6em 1em;border:2px solid #b00;border-radius:6px;background:#fff8f8}\
section.answer p{margin:.3em 0}section.answer p.oom{font-weight:bold}section.answer p.why{margin-left:1.5em}.meta{color:#555}code{font-size:.85em;word-break:break-all}\
figure{margin:.5em 0}svg{max-width:100%;height:auto}";

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), human_bytes)
}

fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}

/// The whole report as an HTML document.
///
/// # Errors
///
/// When a chart cannot be drawn.
pub fn render(r: &Report) -> Result<String, ChartError> {
    let origin = r.first_timestamp_ns.unwrap_or(0);
    #[expect(clippy::cast_precision_loss, reason = "seconds on a chart axis")]
    let span = r
        .last_timestamp_ns
        .map_or(0.0, |last| last.saturating_sub(origin) as f64 / 1e9);
    let t = &r.trace;
    let containers = r
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let section = container(i, c, (i < MAX_CHARTS).then_some((origin, span)))?;
            Ok((is_host(c.kind), section))
        })
        .collect::<Result<Vec<_>, ChartError>>()?;
    let first_host = containers.iter().position(|(host, _)| *host);
    let dying = dying(r, origin, span)?;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "memtrace report: " (t.file) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "memtrace report: " (t.file) }
                p.meta {
                    "host " b { (t.host) } ", kernel " (t.kernel_release) ", recorded by memtrace "
                    (t.memtrace_version) "; " (r.events) " events from "
                    (r.first_event.as_deref().unwrap_or("-")) " to "
                    (r.last_event.as_deref().unwrap_or("-"))
                    @match (t.lost_events, &t.cut_short) {
                        (_, Some(why)) => { "; " b { "cut short" } ": " (why) }
                        (Some(lost), None) => { "; " (lost) " lost" }
                        (None, None) => {}
                    }
                }
                (answer(r))
                @if !t.probes.is_empty() {
                    p.meta { "probes: " code { (t.probes.join(" ")) } }
                }

                h2 { "Containers and pods" }
                @if first_host == Some(0) || r.containers.is_empty() {
                    p { "No container or pod events in this trace." }
                }
                @for (i, (_, c)) in containers.into_iter().enumerate() {
                    @if first_host == Some(i) {
                        h2 { "Host and system cgroups" }
                    }
                    (c)
                }
                @if r.containers_left_out > 0 {
                    p {
                        (r.containers_left_out) " more sections left out by --top (the summary at "
                        "the top counts them)."
                    }
                }
                @if r.containers.len() > MAX_CHARTS {
                    p {
                        "Charts are drawn for the first " (MAX_CHARTS) " of " (r.containers.len())
                        " containers."
                    }
                }

                h2 { "Top page-cache growers" }
                @if r.page_cache_growers.is_empty() {
                    p { "No container's page cache grew." }
                } @else {
                    table {
                        tr {
                            th { "#" } th { "container" } th { "peak growth" } th { "at the end" }
                            th { "added" } th { "removed" } th { "top files" }
                        }
                        @for (i, g) in r.page_cache_growers.iter().enumerate() {
                            tr {
                                td { (i + 1) }
                                td { (g.name) }
                                td { (signed(g.peak_net_bytes)) }
                                td { (signed(g.net_bytes)) }
                                td { (human_bytes(g.added_bytes)) }
                                td { (human_bytes(g.removed_bytes)) }
                                td {
                                    @for f in &g.top_files {
                                        (f.name) " " (signed(f.peak_net_bytes)) " at the peak"
                                        br;
                                    }
                                }
                            }
                        }
                    }
                }

                (dying)
            }
        }
    };
    let mut page = page.into_string();
    page.push('\n');
    Ok(page)
}

/// The summary, in the text report's words, before anything else.
fn answer(r: &Report) -> Markup {
    html! {
        section.answer {
            @for line in r.summary.lines() {
                @match line.kind {
                    LineKind::OomKill => p.oom { (line.text) },
                    LineKind::Verdict => p.why.verdict { (line.text) },
                    LineKind::AtRisk | LineKind::Node => p.why { (line.text) },
                    LineKind::MoreKills | LineKind::NoKills | LineKind::Growth
                    | LineKind::Dying => p { (line.text) },
                }
            }
        }
    }
}

fn container(
    index: usize,
    c: &ContainerReport,
    chart_axis: Option<(u64, f64)>,
) -> Result<Markup, ChartError> {
    let chart = chart_axis
        .map(|(origin, span)| chart::memory_svg(c, origin, span))
        .transpose()?;
    let cache = &c.page_cache;
    Ok(html! {
        section.container id={ "container-" (index) } {
            h3 { (c.name) }
            p.meta { "cgroups: " code { (c.cgroups.join(", ")) } }
            @if let Some(svg) = chart {
                figure.chart.memory-chart { (PreEscaped(svg)) }
            }
            @if !c.oom_kills.is_empty() {
                h4 { "OOM kills" }
                table {
                    tr {
                        th { "time" } th { "victim" } th { "cgroup" } th { "limit that fired" }
                        th { "usage / limit" } th { "memory at the kill" } th { "verdict" }
                    }
                    @for kill in &c.oom_kills {
                        tr {
                            td { (kill.time) }
                            td { "pid " (kill.pid) " (" (kill.comm.as_deref().unwrap_or("?")) ")" }
                            td { code { (kill.cgroup.as_deref().unwrap_or("?")) } }
                            td {
                                code { (kill.limit_cgroup.as_deref().unwrap_or("?")) } " "
                                (kill.constraint.as_deref().unwrap_or(""))
                            }
                            td { (opt(kill.usage_bytes)) " / " (opt(kill.limit_bytes)) }
                            td {
                                (kill.memory.as_ref().map_or_else(|| "?".to_owned(), breakdown))
                                " " small { "(" (kill.memory_source.as_deref().unwrap_or("?")) ")" }
                            }
                            td {
                                span.verdict { (kill.verdict.kind.label()) } ": "
                                (kill.verdict.reason)
                            }
                        }
                    }
                }
            }
            (reclaim(&c.reclaim))
            @if cache.intervals > 0 {
                h4 { "Page cache" }
                p {
                    (signed(cache.peak_net_bytes)) " at the peak, " (signed(cache.net_bytes))
                    " at the end (added " (human_bytes(cache.added_bytes)) ", removed "
                    (human_bytes(cache.removed_bytes))
                    @if let Some(r) = cache.refault_bytes {
                        ", re-read after eviction " (human_bytes(r))
                    }
                    ") over " (cache.intervals) " intervals."
                }
                (files(&cache.top_files))
            }
            (charges(&c.charges, &c.charge_failures))
            (slab(&c.slab))
        }
    })
}

fn charges(charges: &Charges, failures: &ChargeFailures) -> Markup {
    html! {
        @if charges.intervals > 0 {
            h4 { "Charges" }
            p {
                (human_bytes(charges.charged_bytes)) " charged over " (charges.intervals)
                " intervals; the busiest charged " (human_bytes(charges.busiest_interval_bytes))
                " in " (format!("{:.1}", charges.busiest_interval_seconds)) " s (ending "
                (charges.busiest_interval.as_deref().unwrap_or("?")) ")."
            }
        }
        @if failures.count > 0 {
            h4 { "Charge failures" }
            p {
                b { (failures.count) } " charges could not be taken"
                @if failures.derived > 0 {
                    " (" (failures.derived) " derived from limit reclaim)"
                }
                "."
            }
            details {
                summary { "the first " (failures.listed.len()) }
                table {
                    tr {
                        th { "time" } th { "task" } th { "pages" } th { "gfp" } th { "outcome" }
                        th { "seen by" }
                    }
                    @for f in &failures.listed {
                        tr {
                            td { (f.time) }
                            td { "pid " (f.pid) " (" (f.comm.as_deref().unwrap_or("?")) ")" }
                            td { (f.nr_pages.map_or_else(|| "?".to_owned(), |n| n.to_string())) }
                            td { (f.gfp_flags) }
                            td { (f.outcome) }
                            td { (f.source) }
                        }
                    }
                }
            }
        }
    }
}

fn slab(slab: &Slab) -> Markup {
    if slab.first_kernel_bytes.is_none() && slab.intervals == 0 {
        return html! {};
    }
    html! {
        h4 { "Slab (kernel memory)" }
        @if let (Some(first), Some(last)) = (slab.first_kernel_bytes, slab.last_kernel_bytes) {
            p {
                "Kernel memory: " (human_bytes(first)) " at the first sample, " (human_bytes(last))
                " at the last (" (signed(slab.growth_bytes.unwrap_or(0))) "), peak "
                (opt(slab.peak_kernel_bytes)) "."
            }
        }
        @if slab.intervals > 0 {
            p {
                "Accounted slab: " (signed(slab.peak_net_bytes)) " at the peak, "
                (signed(slab.net_bytes)) " at the end (allocated "
                (human_bytes(slab.allocated_bytes)) ", freed " (human_bytes(slab.freed_bytes))
                ") over " (slab.intervals) " intervals."
            }
            table {
                tr {
                    th { "cache" } th { "peak growth" } th { "at the end" } th { "allocated" }
                    th { "freed" }
                }
                @for c in &slab.caches {
                    tr {
                        td { code { (c.cache) } }
                        td { (signed(c.peak_net_bytes)) }
                        td { (signed(c.net_bytes)) }
                        td { (human_bytes(c.allocated_bytes)) }
                        td { (human_bytes(c.freed_bytes)) }
                    }
                }
            }
        }
    }
}

fn reclaim(reclaim: &Reclaim) -> Markup {
    if reclaim.episodes == 0 {
        return html! {};
    }
    html! {
        h4 { "Reclaim" }
        p {
            (reclaim.episodes) " episodes, " b { (reclaim.failures) " freed nothing" }
            "; reclaimed " (human_bytes(reclaim.reclaimed_bytes)) ", "
            (format!("{:.0}", reclaim.total_duration_us)) " µs in all, longest "
            (format!("{:.0}", reclaim.max_duration_us)) " µs."
        }
        @if !reclaim.listed_failures.is_empty() {
            details {
                summary { "the first " (reclaim.listed_failures.len()) " that freed nothing" }
                table {
                    tr {
                        th { "reclaim that freed nothing" } th { "pid" } th { "cgroup" }
                        th { "order" } th { "gfp" } th { "µs" }
                    }
                    @for f in &reclaim.listed_failures {
                        tr {
                            td { (f.time) }
                            td { (f.pid) }
                            td { code { (f.cgroup.as_deref().unwrap_or("?")) } }
                            td { (f.order) }
                            td { (f.gfp_flags) }
                            td { (format!("{:.0}", f.duration_us)) }
                        }
                    }
                }
            }
        }
    }
}

fn files(files: &[FileGrowth]) -> Markup {
    html! {
        @if !files.is_empty() {
            table {
                tr {
                    th { "file" } th { "peak growth" } th { "at the end" }
                    th { "added" } th { "removed" }
                    th title="pages read again soon after reclaim evicted them, as memtrace \
                              counted them" { "re-read after eviction" }
                }
                @for f in files {
                    tr {
                        td { (f.name) }
                        td { (signed(f.peak_net_bytes)) }
                        td { (signed(f.net_bytes)) }
                        td { (human_bytes(f.added_bytes)) }
                        td { (human_bytes(f.removed_bytes)) }
                        td { (f.refault_bytes.map_or_else(|| "not counted".to_owned(), human_bytes)) }
                    }
                }
            }
        }
    }
}

fn dying(r: &Report, origin: u64, span: f64) -> Result<Markup, ChartError> {
    let d = &r.dying;
    let svg = chart::dying_svg(d, origin, span)?;
    Ok(html! {
        h2 { "Dying memory cgroups" }
        p {
            (d.removed_while_charged) " removed while still charged during the recording, "
            (d.freed_after_dying) " freed later"
            @if let Some(s) = d.longest_dying_seconds {
                " (the longest after " (format!("{s:.1}")) " s)"
            }
            "."
        }
        figure.chart.dying-chart { (PreEscaped(svg)) }
        @if !d.still_dying.is_empty() {
            table {
                tr {
                    th { "still dying at the end" } th { "container" } th { "removed" }
                    th { "charged at removal" }
                }
                @for c in &d.still_dying {
                    tr {
                        td { code { (c.cgroup.as_deref().unwrap_or("?")) } }
                        td { (c.container.as_deref().unwrap_or("-")) }
                        td { (c.removed) }
                        td { (opt(c.charged_bytes)) }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::tests::scenario_report;

    #[test]
    fn one_document_with_a_chart_per_container_and_no_external_url() {
        let html = render(&scenario_report()).expect("html");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</body></html>\n"));
        // Two containers and the dying chart.
        assert_eq!(html.matches("<svg ").count(), 3, "{html}");
        assert!(html.contains("class=\"verdict\">anon growth</span>"));
        let without_svg_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for external in ["http://", "https://", "src=", "<script", "<link"] {
            assert!(
                !without_svg_namespace.contains(external),
                "{external} in a self-contained report"
            );
        }
    }

    /// What a tenant can name its cgroup, its container or its process.
    const HOSTILE: &str = "<script>alert(1)</script>\"&'";

    #[test]
    fn names_from_tenants_are_escaped_in_the_page_and_its_charts() {
        let mut r = scenario_report();
        let cgroup = format!("/kubepods/pod{HOSTILE}/{HOSTILE}");
        r.trace.file = HOSTILE.to_owned();
        r.trace.host = HOSTILE.to_owned();
        let c = &mut r.containers[0];
        c.name = HOSTILE.to_owned();
        c.cgroups = vec![cgroup.clone()];
        c.memory_cgroup = Some(cgroup.clone());
        let kill = &mut c.oom_kills[0];
        kill.comm = Some(HOSTILE.to_owned());
        kill.cgroup = Some(cgroup.clone());
        kill.limit_cgroup = Some(cgroup.clone());
        c.charge_failures.listed[0].comm = Some(HOSTILE.to_owned());
        c.reclaim.listed_failures[0].cgroup = Some(cgroup.clone());
        c.slab.caches[0].cache = HOSTILE.to_owned();
        r.page_cache_growers[0].name = HOSTILE.to_owned();
        r.page_cache_growers[0].top_files[0].name = HOSTILE.to_owned();
        r.dying.still_dying[0].cgroup = Some(cgroup);
        r.dying.still_dying[0].container = Some(HOSTILE.to_owned());
        r.summary.kill_groups[0].container = HOSTILE.to_owned();
        r.summary.grew_most[0].name = HOSTILE.to_owned();

        let html = render(&r).expect("html");
        assert!(!html.to_lowercase().contains("<script"), "{html}");
        assert!(!html.contains(HOSTILE));
        // maud escapes `&<>"` (attributes are always double-quoted, so `'` needs none)...
        let by_maud = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;'";
        // ...and plotters' SVG backend `&<>"'` in the chart captions.
        let by_plotters = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;&apos;";
        let cgroup_by_maud = format!("/kubepods/pod{by_maud}/{by_maud}");
        for fragment in [
            format!("<title>memtrace report: {by_maud}</title>"),
            format!("host <b>{by_maud}</b>"),
            format!("<h3>{by_maud}</h3>"),
            format!("cgroups: <code>{cgroup_by_maud}</code>"),
            format!("<td>pid 42 ({by_maud})</td><td><code>{cgroup_by_maud}</code></td>"),
            format!("<td><code>{cgroup_by_maud}</code> CONSTRAINT_MEMCG</td>"),
            format!("<td>pid 42 ({by_maud})</td><td>1</td>"),
            format!("<td><code>{cgroup_by_maud}</code></td><td>0</td>"),
            format!("<td><code>{by_maud}</code></td>"),
            format!("<td>1</td><td>{by_maud}</td>"),
            format!("<td>{by_maud}</td><td>+"),
            format!("<td><code>{cgroup_by_maud}</code></td><td>{by_maud}</td>"),
            format!(">\n{by_plotters} (/kubepods/pod{by_plotters}/{by_plotters})\n</text>"),
            format!("memhog (pid 42) in {by_maud}; the limit"),
            format!("grew most: {by_maud} anon"),
        ] {
            assert!(html.contains(&fragment), "no {fragment:?} in {html}");
        }
        assert_eq!(
            html.matches("alert(1)").count(),
            html.matches("&lt;script&gt;alert(1)").count(),
            "every name is escaped"
        );
    }
}
