//! The report as one self-contained HTML file: inline CSS and inline SVG charts, no script and
//! no external URL, so it opens from a mail attachment or an air-gapped laptop as it is.

use std::fmt::Write as _;

use super::{
    chart::{self, ChartError},
    model::{ChargeFailures, Charges, ContainerReport, FileGrowth, Reclaim, Report, Slab},
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
.verdict{font-weight:bold;color:#b00}.meta{color:#555}code{font-size:.85em;word-break:break-all}\
figure{margin:.5em 0}svg{max-width:100%;height:auto}";

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>memtrace report: {}</title><style>{STYLE}</style></head><body>\n\
         <h1>memtrace report: {}</h1>\n<p class=\"meta\">host <b>{}</b>, kernel {}, recorded by \
         memtrace {}; {} events from {} to {}",
        esc(&t.file),
        esc(&t.file),
        esc(&t.host),
        esc(&t.kernel_release),
        esc(&t.memtrace_version),
        r.events,
        esc(r.first_event.as_deref().unwrap_or("-")),
        esc(r.last_event.as_deref().unwrap_or("-")),
    );
    match (t.lost_events, &t.cut_short) {
        (_, Some(why)) => {
            let _ = write!(h, "; <b>cut short</b>: {}", esc(why));
        }
        (Some(lost), None) => {
            let _ = write!(h, "; {lost} lost");
        }
        (None, None) => {}
    }
    h.push_str("</p>\n");
    if !t.probes.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"meta\">probes: <code>{}</code></p>",
            esc(&t.probes.join(" "))
        );
    }

    h.push_str("<h2>Containers</h2>\n");
    if r.containers.is_empty() {
        h.push_str("<p>No container events in this trace.</p>\n");
    }
    for (i, c) in r.containers.iter().enumerate() {
        container(&mut h, i, c, (i < MAX_CHARTS).then_some((origin, span)))?;
    }
    if r.containers.len() > MAX_CHARTS {
        let _ = writeln!(
            h,
            "<p>Charts are drawn for the first {MAX_CHARTS} of {} containers.</p>",
            r.containers.len()
        );
    }

    h.push_str("<h2>Top page-cache growers</h2>\n");
    if r.page_cache_growers.is_empty() {
        h.push_str("<p>No container's page cache grew.</p>\n");
    } else {
        h.push_str("<table><tr><th>#</th><th>container</th><th>peak growth</th><th>at the end</th><th>added</th><th>removed</th><th>top files</th></tr>\n");
        for (i, g) in r.page_cache_growers.iter().enumerate() {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
                i + 1,
                esc(&g.name),
                signed(g.peak_net_bytes),
                signed(g.net_bytes),
                human_bytes(g.added_bytes),
                human_bytes(g.removed_bytes)
            );
            for f in &g.top_files {
                let _ = write!(
                    h,
                    "dev {} inode {} {} at the peak<br>",
                    esc(&f.device),
                    f.inode,
                    signed(f.peak_net_bytes)
                );
            }
            h.push_str("</td></tr>\n");
        }
        h.push_str("</table>\n");
    }

    dying(&mut h, r, origin, span)?;
    h.push_str("</body></html>\n");
    Ok(h)
}

fn container(
    h: &mut String,
    index: usize,
    c: &ContainerReport,
    chart_axis: Option<(u64, f64)>,
) -> Result<(), ChartError> {
    let _ = writeln!(
        h,
        "<section class=\"container\" id=\"container-{index}\"><h3>{}</h3>\n<p class=\"meta\">cgroups: <code>{}</code></p>",
        esc(&c.name),
        esc(&c.cgroups.join(", "))
    );
    if let Some((origin, span)) = chart_axis {
        let _ = writeln!(
            h,
            "<figure class=\"chart memory-chart\">{}</figure>",
            chart::memory_svg(c, origin, span)?
        );
    }
    if !c.oom_kills.is_empty() {
        h.push_str("<h4>OOM kills</h4><table><tr><th>time</th><th>victim</th><th>cgroup</th><th>limit that fired</th><th>usage / limit</th><th>memory at the kill</th><th>verdict</th></tr>\n");
        for kill in &c.oom_kills {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>pid {} ({})</td><td><code>{}</code></td><td><code>{}</code> \
                 {}</td><td>{} / {}</td><td>{} <small>({})</small></td><td><span \
                 class=\"verdict\">{}</span>: {}</td></tr>",
                esc(&kill.time),
                kill.pid,
                esc(kill.comm.as_deref().unwrap_or("?")),
                esc(kill.cgroup.as_deref().unwrap_or("?")),
                esc(kill.limit_cgroup.as_deref().unwrap_or("?")),
                esc(kill.constraint.as_deref().unwrap_or("")),
                opt(kill.usage_bytes),
                opt(kill.limit_bytes),
                esc(&kill
                    .memory
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), breakdown)),
                esc(kill.memory_source.as_deref().unwrap_or("?")),
                esc(kill.verdict.kind.label()),
                esc(&kill.verdict.reason),
            );
        }
        h.push_str("</table>\n");
    }
    reclaim(h, &c.reclaim);
    let cache = &c.page_cache;
    if cache.intervals > 0 {
        let _ = writeln!(
            h,
            "<h4>Page cache</h4><p>{} at the peak, {} at the end (added {}, removed {}) over {} \
             intervals.</p>",
            signed(cache.peak_net_bytes),
            signed(cache.net_bytes),
            human_bytes(cache.added_bytes),
            human_bytes(cache.removed_bytes),
            cache.intervals
        );
        files(h, &cache.top_files);
    }
    charges(h, &c.charges, &c.charge_failures);
    slab(h, &c.slab);
    h.push_str("</section>\n");
    Ok(())
}

fn charges(h: &mut String, charges: &Charges, failures: &ChargeFailures) {
    if charges.intervals > 0 {
        let _ = writeln!(
            h,
            "<h4>Charges</h4><p>{} charged over {} intervals; the busiest charged {} in {:.1} s \
             (ending {}).</p>",
            human_bytes(charges.charged_bytes),
            charges.intervals,
            human_bytes(charges.busiest_interval_bytes),
            charges.busiest_interval_seconds,
            esc(charges.busiest_interval.as_deref().unwrap_or("?"))
        );
    }
    if failures.count == 0 {
        return;
    }
    let _ = writeln!(
        h,
        "<h4>Charge failures</h4><p><b>{}</b> charges could not be taken{}.</p>",
        failures.count,
        if failures.derived > 0 {
            format!(" ({} derived from limit reclaim)", failures.derived)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        h,
        "<details><summary>the first {}</summary><table><tr><th>time</th><th>task</th>\
         <th>pages</th><th>gfp</th><th>outcome</th><th>seen by</th></tr>",
        failures.listed.len()
    );
    for f in &failures.listed {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>pid {} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.time),
            f.pid,
            esc(f.comm.as_deref().unwrap_or("?")),
            f.nr_pages.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            esc(&f.gfp_flags),
            esc(&f.outcome),
            esc(&f.source)
        );
    }
    h.push_str("</table></details>\n");
}

fn slab(h: &mut String, slab: &Slab) {
    if slab.first_kernel_bytes.is_none() && slab.intervals == 0 {
        return;
    }
    h.push_str("<h4>Slab (kernel memory)</h4>");
    if let (Some(first), Some(last)) = (slab.first_kernel_bytes, slab.last_kernel_bytes) {
        let _ = writeln!(
            h,
            "<p>Kernel memory: {} at the first sample, {} at the last ({}), peak {}.</p>",
            human_bytes(first),
            human_bytes(last),
            signed(slab.growth_bytes.unwrap_or(0)),
            opt(slab.peak_kernel_bytes)
        );
    }
    if slab.intervals == 0 {
        return;
    }
    let _ = writeln!(
        h,
        "<p>Accounted slab: {} at the peak, {} at the end (allocated {}, freed {}) over {} \
         intervals.</p>",
        signed(slab.peak_net_bytes),
        signed(slab.net_bytes),
        human_bytes(slab.allocated_bytes),
        human_bytes(slab.freed_bytes),
        slab.intervals
    );
    h.push_str("<table><tr><th>cache</th><th>peak growth</th><th>at the end</th><th>allocated</th><th>freed</th></tr>\n");
    for c in &slab.caches {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.cache),
            signed(c.peak_net_bytes),
            signed(c.net_bytes),
            human_bytes(c.allocated_bytes),
            human_bytes(c.freed_bytes)
        );
    }
    h.push_str("</table>\n");
}

fn reclaim(h: &mut String, reclaim: &Reclaim) {
    if reclaim.episodes > 0 {
        let _ = writeln!(
            h,
            "<h4>Reclaim</h4><p>{} episodes, <b>{} freed nothing</b>; reclaimed {}, {:.0} µs in \
             all, longest {:.0} µs.</p>",
            reclaim.episodes,
            reclaim.failures,
            human_bytes(reclaim.reclaimed_bytes),
            reclaim.total_duration_us,
            reclaim.max_duration_us
        );
        if !reclaim.listed_failures.is_empty() {
            let _ = write!(
                h,
                "<details><summary>the first {} that freed nothing</summary>",
                reclaim.listed_failures.len()
            );
            h.push_str("<table><tr><th>reclaim that freed nothing</th><th>pid</th><th>cgroup</th><th>order</th><th>gfp</th><th>µs</th></tr>\n");
            for f in &reclaim.listed_failures {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
                    esc(&f.time),
                    f.pid,
                    esc(f.cgroup.as_deref().unwrap_or("?")),
                    f.order,
                    esc(&f.gfp_flags),
                    f.duration_us
                );
            }
            h.push_str("</table></details>\n");
        }
    }
}

fn files(h: &mut String, files: &[FileGrowth]) {
    if files.is_empty() {
        return;
    }
    h.push_str(
        "<table><tr><th>device</th><th>inode</th><th>peak growth</th><th>at the end</th><th>added</th><th>removed</th></tr>\n",
    );
    for f in files {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.device),
            f.inode,
            signed(f.peak_net_bytes),
            signed(f.net_bytes),
            human_bytes(f.added_bytes),
            human_bytes(f.removed_bytes)
        );
    }
    h.push_str("</table>\n");
}

fn dying(h: &mut String, r: &Report, origin: u64, span: f64) -> Result<(), ChartError> {
    let d = &r.dying;
    h.push_str("<h2>Dying memory cgroups</h2>\n");
    let _ = writeln!(
        h,
        "<p>{} removed while still charged during the recording, {} freed later{}.</p>",
        d.removed_while_charged,
        d.freed_after_dying,
        d.longest_dying_seconds
            .map_or_else(String::new, |s| format!(" (the longest after {s:.1} s)"))
    );
    let _ = writeln!(
        h,
        "<figure class=\"chart dying-chart\">{}</figure>",
        chart::dying_svg(d, origin, span)?
    );
    if !d.still_dying.is_empty() {
        h.push_str("<table><tr><th>still dying at the end</th><th>container</th><th>removed</th><th>charged at removal</th></tr>\n");
        for c in &d.still_dying {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c.cgroup.as_deref().unwrap_or("?")),
                esc(c.container.as_deref().unwrap_or("-")),
                esc(&c.removed),
                opt(c.charged_bytes)
            );
        }
        h.push_str("</table>\n");
    }
    Ok(())
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

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
