//! Timeline charts as SVG text, drawn with plotters, for inlining in the HTML report.
//!
//! plotters is built without its `ttf` feature: the SVG backend writes `<text>` elements and
//! lets the browser pick the font, so no font files are read or embedded. That backend escapes
//! the text it writes (`&<>"'`), which matters: the captions name containers and cgroups, and
//! the HTML report inserts the SVG as it is.

use plotters::{
    coord::Shift,
    prelude::{
        BLACK, ChartBuilder, Color as _, DrawingArea, IntoDrawingArea as _, LineSeries,
        PathElement, RGBColor, SVGBackend, ShapeStyle, WHITE,
    },
};

use super::model::{ContainerReport, DyingReport, MarkKind, MemoryPoint};

const SIZE: (u32, u32) = (960, 340);
const MIB: f64 = 1_048_576.0;

/// plotters' error, whatever the backend: it is only ever shown.
#[derive(Debug, thiserror::Error)]
#[error("drawing a chart: {0}")]
pub struct ChartError(String);

fn err(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

/// Seconds since `origin_ns`.
#[expect(clippy::cast_precision_loss, reason = "seconds on a chart axis")]
fn seconds(ns: u64, origin_ns: u64) -> f64 {
    ns.saturating_sub(origin_ns) as f64 / 1e9
}

#[expect(clippy::cast_precision_loss, reason = "MiB on a chart axis")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

pub const USAGE: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub const LIMIT: RGBColor = RGBColor(0xd6, 0x27, 0x28);
pub const WORKING_SET: RGBColor = RGBColor(0x9e, 0x9e, 0x9e);
pub const ANON: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub const FILE: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
pub const KERNEL: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
pub const RECLAIM: RGBColor = RGBColor(0xbb, 0xbb, 0xdd);
pub const RECLAIM_FAILED: RGBColor = RGBColor(0x94, 0x67, 0xbd);
pub const OOM: RGBColor = RGBColor(0xd6, 0x27, 0x28);
pub const CHARGE_FAIL: RGBColor = RGBColor(0x8c, 0x56, 0x4b);

/// How each mark kind is drawn and named in the legend.
const fn mark_style(kind: MarkKind) -> (RGBColor, u32, &'static str) {
    match kind {
        MarkKind::Reclaim => (RECLAIM, 1, "reclaim"),
        MarkKind::ReclaimFailed => (RECLAIM_FAILED, 2, "reclaim that freed nothing"),
        MarkKind::ChargeFail => (CHARGE_FAIL, 2, "charge failure"),
        MarkKind::OomKill => (OOM, 3, "OOM kill"),
    }
}

/// Name, colour, stroke width and what to plot.
type Series = (&'static str, RGBColor, u32, fn(&MemoryPoint) -> Option<u64>);
/// A series with its points (seconds, MiB).
type Drawn = (&'static str, RGBColor, u32, Vec<(f64, f64)>);

const MEMORY_SERIES: [Series; 5] = [
    ("usage", USAGE, 2, |m| m.usage),
    ("working set", WORKING_SET, 1, |m| m.working_set),
    ("anon", ANON, 2, |m| m.anon),
    ("page cache", FILE, 2, |m| m.file),
    ("kernel (slab)", KERNEL, 2, |m| m.kernel),
];

/// A limit this many times above the largest value is left off: it would flatten the rest.
const LIMIT_SCALE_CAP: f64 = 4.0;

/// The container's memory over time (usage, limit, working set, anon, page cache, kernel) with
/// its reclaims and OOM kills as vertical marks. `span_s` is the trace's length, so every
/// container's chart has the same time axis.
///
/// # Errors
///
/// When plotters fails to draw (it writes to a string, so only on bad coordinates).
pub fn memory_svg(c: &ContainerReport, origin_ns: u64, span_s: f64) -> Result<String, ChartError> {
    let x_max = span_s.max(1.0);
    let points = |f: fn(&MemoryPoint) -> Option<u64>| -> Vec<(f64, f64)> {
        c.memory
            .iter()
            .filter_map(|m| Some((seconds(m.timestamp_ns, origin_ns), mib(f(m)?))))
            .collect()
    };
    let series: Vec<Drawn> = MEMORY_SERIES
        .iter()
        .map(|&(name, color, width, f)| (name, color, width, points(f)))
        .filter(|s| !s.3.is_empty())
        .collect();
    let highest = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (limit, limit_label) = limit_series(c, origin_ns);
    let limit_max = limit.iter().map(|p| p.1).fold(0.0, f64::max);
    // An OOM kill happened at the limit: it is drawn however far above the samples it is.
    let killed = c.marks.iter().any(|m| m.kind == MarkKind::OomKill);
    let show_limit =
        !limit.is_empty() && (killed || limit_max <= highest.max(1.0) * LIMIT_SCALE_CAP);
    let y_max = (if show_limit {
        highest.max(limit_max)
    } else {
        highest
    })
    .max(1.0)
        * 1.08;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = chart(&root, &caption(c), x_max, y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first event")
            .y_desc("MiB")
            .draw()
            .map_err(err)?;
        for (name, color, width, data) in series {
            chart
                .draw_series(LineSeries::new(data, color.stroke_width(width)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| legend_line(x, y, color.stroke_width(width)));
        }
        if !limit.is_empty() {
            // A limit far above what the container uses would flatten its lines: it is named
            // in the legend but not drawn.
            let (drawn, label) = if show_limit {
                (limit, limit_label)
            } else {
                (Vec::new(), format!("{limit_label}, above this scale"))
            };
            chart
                .draw_series(LineSeries::new(drawn, LIMIT.stroke_width(1)))
                .map_err(err)?
                .label(label)
                .legend(|(x, y)| legend_line(x, y, LIMIT.stroke_width(1)));
        }
        for kind in [
            MarkKind::Reclaim,
            MarkKind::ReclaimFailed,
            MarkKind::ChargeFail,
            MarkKind::OomKill,
        ] {
            let (color, width, name) = mark_style(kind);
            let xs: Vec<f64> = c
                .marks
                .iter()
                .filter(|m| m.kind == kind)
                .map(|m| seconds(m.timestamp_ns, origin_ns))
                .collect();
            if xs.is_empty() {
                continue;
            }
            let style = color.stroke_width(width);
            chart
                .draw_series(
                    xs.into_iter()
                        .map(move |x| PathElement::new(vec![(x, 0.0), (x, y_max)], style)),
                )
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| legend_line(x, y, style));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The container and the cgroup its samples are of.
fn caption(c: &ContainerReport) -> String {
    match &c.memory_cgroup {
        Some(cgroup) if c.memory.is_empty() => format!("{} ({cgroup}): no samples", c.name),
        Some(cgroup) => format!("{} ({cgroup})", c.name),
        None => format!(
            "{}: no stats samples (record with --stats-interval)",
            c.name
        ),
    }
}

/// The container's own limit, else the one that applies to it (the nearest ancestor's, e.g.
/// the pod's), as points (seconds, MiB), and its legend label with the last value.
fn limit_series(c: &ContainerReport, origin_ns: u64) -> (Vec<(f64, f64)>, String) {
    let (limit, label): (Vec<(f64, f64)>, String) = match &c.applied_limit {
        Some(applied) if c.memory.iter().all(|m| m.limit.is_none()) => (
            applied
                .timeline
                .iter()
                .map(|p| (seconds(p.timestamp_ns, origin_ns), mib(p.bytes)))
                .collect(),
            format!("limit ({}'s)", applied.owner),
        ),
        _ => (
            c.memory
                .iter()
                .filter_map(|m| Some((seconds(m.timestamp_ns, origin_ns), mib(m.limit?))))
                .collect(),
            "limit".to_owned(),
        ),
    };
    let label = match limit.last() {
        Some(&(_, last)) => format!("{label} {last:.0} MiB"),
        None => label,
    };
    (limit, label)
}

/// How many memcgs were dying (removed, still charged) over the recording.
///
/// # Errors
///
/// As [`memory_svg`].
pub fn dying_svg(d: &DyingReport, origin_ns: u64, span_s: f64) -> Result<String, ChartError> {
    let x_max = span_s.max(1.0);
    // A step line: the count holds until the next change.
    let mut steps: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    for p in &d.timeline {
        let x = seconds(p.timestamp_ns, origin_ns);
        let previous = steps.last().map_or(0.0, |s| s.1);
        #[expect(clippy::cast_precision_loss, reason = "a count on a chart axis")]
        let count = p.dying as f64;
        steps.push((x, previous));
        steps.push((x, count));
    }
    steps.push((x_max, steps.last().map_or(0.0, |s| s.1)));
    let y_max = steps.iter().map(|s| s.1).fold(0.0, f64::max).max(1.0) * 1.15;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, 220)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = chart(
            &root,
            "dying memory cgroups (removed during the recording, still charged)",
            x_max,
            y_max,
        )?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first event")
            .y_desc("dying memcgs")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(steps, RECLAIM_FAILED.stroke_width(2)))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

type Chart<'a, 'b> = plotters::chart::ChartContext<
    'a,
    SVGBackend<'b>,
    plotters::coord::cartesian::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

fn chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x_max: f64,
    y_max: f64,
) -> Result<Chart<'a, 'b>, ChartError> {
    ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)
}

fn legend_line(x: i32, y: i32, style: ShapeStyle) -> PathElement<(i32, i32)> {
    PathElement::new(vec![(x, y), (x + 20, y)], style)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::tests::scenario_report;

    #[test]
    fn memory_chart_has_every_series_and_mark_in_its_legend() {
        let r = scenario_report();
        let origin = r.first_timestamp_ns.expect("events");
        let svg = memory_svg(&r.containers[0], origin, 3.1).expect("svg");
        assert!(svg.starts_with("<svg"), "{svg}");
        for label in [
            "usage",
            "anon",
            "page cache",
            "kernel (slab)",
            "limit",
            "reclaim that freed nothing",
            "charge failure",
            "OOM kill",
        ] {
            assert!(svg.contains(label), "no {label} in the legend");
        }
        assert!(svg.contains("polyline"), "lines are drawn");
    }

    /// The caption names the container and its cgroup, which come from tenants; the HTML
    /// report inserts this SVG as it is, so plotters' SVG backend has to escape its text.
    #[test]
    fn tenant_names_in_the_caption_are_escaped() {
        let mut c = scenario_report().containers.swap_remove(0);
        c.name = "<script>alert(1)</script>\"&'".to_owned();
        c.memory_cgroup = Some("/x/</text><script>".to_owned());
        let svg = memory_svg(&c, 0, 3.1).expect("svg");
        assert!(!svg.contains("<script"), "{svg}");
        assert!(
            svg.contains(
                "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;&apos; \
                 (/x/&lt;/text&gt;&lt;script&gt;)"
            ),
            "{svg}"
        );
    }

    /// A container without a limit of its own is drawn against the pod's.
    #[test]
    fn a_container_without_a_limit_shows_the_one_that_applies() {
        use crate::report::model::tests::{CLOCK, pod_path, stats_with_limit};
        let container = format!("{}/{}", pod_path(), "c".repeat(64));
        let mut b = crate::report::ReportBuilder::new(CLOCK);
        for at in [0, 1_000_000_000] {
            b.add(&stats_with_limit(
                at,
                &pod_path(),
                40 << 20,
                Some(256 << 20),
            ));
            b.add(&stats_with_limit(at, &container, 30 << 20, None));
        }
        let r = b.finish(crate::report::TraceInfo::default());
        let c = r
            .containers
            .iter()
            .find(|c| c.memory_cgroup.as_deref() == Some(container.as_str()))
            .expect("the container");
        let applied = c.applied_limit.as_ref().expect("the pod's limit applies");
        assert_eq!(applied.cgroup, pod_path());
        assert_eq!(applied.last_bytes(), Some(256 << 20));
        let svg = memory_svg(c, 0, 1.0).expect("svg");
        assert!(
            svg.contains(
                "limit (pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0&apos;s) 256 MiB, above this scale"
            ),
            "{svg}"
        );
        let mut near = c.clone();
        for p in &mut near.applied_limit.as_mut().expect("applied").timeline {
            p.bytes = 40 << 20;
        }
        let svg = memory_svg(&near, 0, 1.0).expect("svg");
        assert!(
            svg.contains("limit (pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0&apos;s) 40 MiB\n"),
            "a limit near the usage is drawn: {svg}"
        );
        let pod = r
            .containers
            .iter()
            .find(|c| c.memory_cgroup.as_deref() == Some(pod_path().as_str()))
            .expect("the pod");
        assert_eq!(pod.applied_limit, None, "it has its own");
    }

    #[test]
    fn dying_chart_draws_even_when_nothing_died() {
        let svg = dying_svg(&DyingReport::default(), 0, 0.0).expect("svg");
        assert!(svg.contains("dying memcgs"));
    }
}
