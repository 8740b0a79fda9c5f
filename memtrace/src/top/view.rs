//! Drawing: the table of containers, or one container's detail. Reads the [`App`]; changes
//! nothing but the table's scroll position.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line as TextLine, Span},
    widgets::{Block, Paragraph, Row as TableRow, Table, TableState, Wrap},
};

use super::{
    app::{App, Source},
    model::{Column, Line, RECENT, Row},
};
use crate::{
    attribution::MEMCG_ID_LIMIT,
    event::{CgroupAction, Event, HostClock, What},
    units::human_bytes,
};

const KILLED: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const HEADING: Style = Style::new().add_modifier(Modifier::REVERSED);
const SORTED: Style = Style::new()
    .add_modifier(Modifier::REVERSED)
    .add_modifier(Modifier::UNDERLINED);

pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_lines(app)), header);
    let detail = app
        .detail
        .as_deref()
        .and_then(|cgroup| app.model.row(cgroup));
    match detail {
        Some(row) => draw_detail(frame, body, app, row),
        None => draw_table(frame, body, app),
    }
    frame.render_widget(Paragraph::new(footer_line(app)), footer);
}

fn header_lines(app: &App) -> Vec<TextLine<'static>> {
    let model = &app.model;
    let clock = model.clock();
    let when = if model.now_ns == 0 {
        "no events yet".to_owned()
    } else {
        clock.wall(model.now_ns)
    };
    let source = match &app.source {
        Source::Live { host, ended, .. } => format!(
            "memtrace top — live on {host}{}",
            if *ended { " (stopped)" } else { "" }
        ),
        Source::Replay(p) => format!(
            "memtrace top — replay of {} ({}) ×{}{}{}",
            p.file,
            p.host,
            p.speed,
            if p.paused { " PAUSED" } else { "" },
            if p.finished() {
                p.ended
                    .as_deref()
                    .map_or_else(String::new, |e| format!(" — {e}"))
            } else {
                String::new()
            }
        ),
    };
    let dying = &model.dying;
    let on_node = dying.on_node.map_or_else(
        || "dying memcgs:".to_owned(),
        |n| format!("dying memcgs: {n} on the node (of {MEMCG_ID_LIMIT} ids),"),
    );
    let sort = format!(
        "sort {} {}",
        app.sort.column.heading(),
        if app.sort.descending { "↓" } else { "↑" }
    );
    let filter = match (&app.editing, app.filter.is_empty()) {
        (Some(typed), _) => format!("  filter: {typed}▏"),
        (None, false) => format!("  filter: {}", app.filter),
        (None, true) => String::new(),
    };
    vec![
        TextLine::from(vec![
            Span::styled(source, Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("  at {when}  {} events", model.events)),
            if model.lost > 0 {
                Span::styled(
                    format!("  {} lost", model.lost),
                    Style::new().add_modifier(Modifier::BOLD),
                )
            } else {
                Span::raw("")
            },
        ]),
        TextLine::from(format!(
            "{} containers  {on_node} {} removed while watching still dying, {} freed  {sort}{filter}",
            app.lines.len(),
            dying.seen.len(),
            dying.freed,
        )),
    ]
}

fn footer_line(app: &App) -> TextLine<'static> {
    let mut keys = if app.detail.is_some() {
        "Esc back  q quit".to_owned()
    } else {
        let sort: Vec<String> = Column::ALL
            .iter()
            .map(|c| format!("{}:{}", c.key(), c.heading()))
            .collect();
        format!(
            "q quit  ↑↓ select  Enter open  / filter  sort {}",
            sort.join(" ")
        )
    };
    if matches!(app.source, Source::Replay(_)) {
        keys.push_str("  Space pause  . step 1s  +/- speed");
    }
    TextLine::from(Span::styled(keys, Style::new().fg(Color::DarkGray)))
}

fn bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "-".to_owned(), human_bytes)
}

/// `+1.5MiB`, `-200.0KiB`, `0`.
fn signed_bytes(b: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rate for people"
    )]
    let magnitude = b.abs().round() as u64;
    match magnitude {
        0 => "0".to_owned(),
        m if b < 0.0 => format!("-{}", human_bytes(m)),
        m => format!("+{}", human_bytes(m)),
    }
}

fn cells(line: &Line) -> Vec<String> {
    let oom = match (&line.verdict, line.kills) {
        (Some(v), n) => format!("{n} {}", v.kind.label()),
        (None, _) => String::new(),
    };
    let mut name = line.name.clone();
    match line.removed {
        Some(true) => name.push_str(" (dying)"),
        Some(false) => name.push_str(" (gone)"),
        None => {}
    }
    Column::ALL
        .iter()
        .map(|c| match c {
            Column::Name => name.clone(),
            Column::WorkingSet => bytes(line.working_set),
            Column::LimitShare => line
                .limit_share
                .map_or_else(|| "-".to_owned(), |s| format!("{:.0}%", s * 100.0)),
            Column::Anon => bytes(line.anon),
            Column::ActiveFile => bytes(line.active_file),
            Column::InactiveFile => bytes(line.inactive_file),
            Column::Shmem => bytes(line.shmem),
            Column::Kernel => bytes(line.kernel),
            Column::CacheGrowth => signed_bytes(line.cache_per_s),
            Column::Reclaims => format!("{:.1}", line.reclaims_per_s),
            Column::Stall => format!("{:.0}ms", line.stall_per_s * 1000.0),
            Column::ChargeFailures => line.charge_failures.to_string(),
            Column::OomKills => oom.clone(),
        })
        .collect()
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let header = TableRow::new(Column::ALL.iter().map(|&c| {
        let style = if c == app.sort.column {
            SORTED
        } else {
            HEADING
        };
        Span::styled(c.heading(), style)
    }))
    .style(HEADING);
    let rows = app.lines.iter().map(|line| {
        let row = TableRow::new(cells(line));
        if line.kills > 0 {
            row.style(KILLED)
        } else {
            row
        }
    });
    let widths = Column::ALL.iter().map(|c| match c {
        Column::Name => Constraint::Min(24),
        Column::OomKills => Constraint::Min(14),
        Column::LimitShare | Column::Reclaims | Column::ChargeFailures => Constraint::Length(6),
        _ => Constraint::Length(9),
    });
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::new());
    let mut state = TableState::new().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &App, row: &Row) {
    let clock = app.model.clock();
    let summary = summary(app, row);
    let summary_height = u16::try_from(summary.len() + 1).unwrap_or(u16::MAX);
    let [top, lists, recent] = Layout::vertical([
        Constraint::Length(summary_height),
        Constraint::Percentage(50),
        Constraint::Min(6),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary).wrap(Wrap { trim: false }), top);
    let [files, slab] =
        Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)]).areas(lists);
    draw_files(frame, files, row);
    draw_slab(frame, slab, row);
    let shown = usize::from(recent.height.saturating_sub(2));
    let events: Vec<TextLine<'static>> = row
        .recent
        .iter()
        .rev()
        .take(shown)
        .map(|e| {
            TextLine::from(format!(
                "{} {}",
                time_of(clock, e.timestamp_ns),
                describe(e)
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(events).block(
            Block::bordered().title(format!("recent events (latest first, last {RECENT} kept)")),
        ),
        recent,
    );
}

/// The container's memory, rates and OOM kills with their verdicts.
fn summary(app: &App, row: &Row) -> Vec<TextLine<'static>> {
    let clock = app.model.clock();
    let line = app.lines.iter().find(|l| l.cgroup == row.cgroup);
    let mut summary: Vec<TextLine<'static>> = vec![TextLine::from(Span::styled(
        format!("{}  {}", row.name(), row.cgroup),
        Style::new().add_modifier(Modifier::BOLD),
    ))];
    let m = row.memory.as_ref();
    let limit = app.model.limit(&row.cgroup).map_or_else(
        || "no limit".to_owned(),
        |(l, whose)| match whose {
            Some(c) => format!("limit {} (of {c})", human_bytes(l)),
            None => format!("limit {}", human_bytes(l)),
        },
    );
    summary.push(TextLine::from(format!(
        "usage {}  working set {}  {limit}  anon {}  file {} (active {}, inactive {})  shmem {}  kernel {}",
        bytes(m.and_then(|m| m.usage_bytes)),
        bytes(m.and_then(|m| m.working_set_bytes)),
        bytes(m.and_then(|m| m.anon_bytes)),
        bytes(m.and_then(|m| m.file_bytes)),
        bytes(m.and_then(|m| m.active_file_bytes)),
        bytes(m.and_then(|m| m.inactive_file_bytes)),
        bytes(m.and_then(|m| m.shmem_bytes)),
        bytes(m.and_then(|m| m.kernel_bytes)),
    )));
    if let Some(line) = line {
        summary.push(TextLine::from(format!(
            "page cache {}/s  reclaim {:.1}/s stalling {:.0}ms/s ({} episodes, {} freed nothing)  charge failures {}",
            signed_bytes(line.cache_per_s),
            line.reclaims_per_s,
            line.stall_per_s * 1000.0,
            row.reclaims_total,
            row.ineffective_reclaims,
            row.charge_failures,
        )));
    }
    for kill in &row.kills {
        summary.push(TextLine::from(Span::styled(
            format!(
                "OOM kill {} pid {} {} — {}: {}",
                time_of(clock, kill.timestamp_ns),
                kill.pid,
                kill.comm.as_deref().unwrap_or("?"),
                kill.verdict.kind.label(),
                kill.verdict.reason,
            ),
            KILLED,
        )));
        if let Some(limit) = &kill.limit_cgroup {
            summary.push(TextLine::from(format!("  the limit that fired: {limit}")));
        }
    }
    summary
}

fn draw_files(frame: &mut Frame<'_>, area: Rect, row: &Row) {
    let file_rows = row.files_by_growth().into_iter().map(|f| {
        TableRow::new(vec![
            signed_bytes(f64_of(f.net_bytes())),
            human_bytes(f.added_bytes),
            human_bytes(f.removed_bytes),
            // Re-read after eviction; `-` where the probe strategy does not count refaults.
            f.refault_bytes.map_or_else(|| "-".to_owned(), human_bytes),
            f.file.name().to_string(),
        ])
    });
    let files_table = Table::new(
        file_rows,
        [
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(20),
        ],
    )
    .header(TableRow::new(["NET", "ADDED", "REMOVED", "RE-READ", "FILE"]).style(HEADING))
    .block(Block::bordered().title(format!("page cache by file ({})", row.files.len())));
    frame.render_widget(files_table, area);
}

fn draw_slab(frame: &mut Frame<'_>, area: Rect, row: &Row) {
    let slab_rows = row
        .slab_by_growth()
        .into_iter()
        .map(|(name, s)| TableRow::new(vec![signed_bytes(f64_of(s.net_bytes())), name.to_owned()]));
    let slab_table = Table::new(slab_rows, [Constraint::Length(10), Constraint::Min(12)])
        .header(TableRow::new(["NET", "SLAB CACHE"]).style(HEADING))
        .block(Block::bordered().title(format!("slab caches ({})", row.slab.len())));
    frame.render_widget(slab_table, area);
}

#[expect(clippy::cast_precision_loss, reason = "sizes for people")]
fn f64_of(n: i64) -> f64 {
    n as f64
}

/// `15:47:01.123`: the wall time of day, the date being in the header.
fn time_of(clock: HostClock, timestamp_ns: u64) -> String {
    let wall = clock.wall(timestamp_ns);
    wall.split_once('T').map_or(wall.clone(), |(_, t)| {
        t.trim_end_matches('Z').chars().take(12).collect()
    })
}

/// One event in a few words, for the detail view's list.
fn describe(event: &Event) -> String {
    let took = |ns: u64| {
        if ns < 1_000_000 {
            format!("{:.0}µs", crate::units::micros(ns))
        } else {
            format!("{:.1}ms", crate::units::micros(ns) / 1000.0)
        }
    };
    match &event.what {
        What::OomKill(k) => format!(
            "oom_kill pid {} {}{}",
            k.pid,
            k.comm.as_deref().unwrap_or("?"),
            k.limit_cgroup
                .as_deref()
                .map_or_else(String::new, |l| format!(", limit of {l}")),
        ),
        What::Cgroup(c) => format!(
            "cgroup {}{}{}",
            c.action.name(),
            if c.dying && c.action == CgroupAction::Removed {
                " DYING"
            } else {
                ""
            },
            c.charged_bytes
                .map_or_else(String::new, |b| format!(", {} charged", human_bytes(b))),
        ),
        What::Stats(m) => format!("stats usage {}", bytes(m.usage_bytes)),
        What::Counters(c) => format!("counters {}", crate::sinks::counter_changes(c)),
        What::Lost(l) => format!("lost {} {} ({})", l.count, l.kind.name(), l.cause.name()),
        What::Cache(c) => format!(
            "cache +{} -{} ({} files)",
            human_bytes(c.added_bytes),
            human_bytes(c.removed_bytes),
            c.top_files.len()
        ),
        What::Reclaim(r) => format!(
            "reclaim {} freed {}{}",
            took(r.duration_ns),
            human_bytes(r.reclaimed_bytes),
            if r.ineffective {
                " (freed nothing)"
            } else {
                ""
            }
        ),
        What::Charge(c) => format!("charge {}", human_bytes(c.charged_bytes)),
        What::ChargeFromPageCache(c) => {
            format!("charge {} (page cache)", human_bytes(c.charged_bytes))
        }
        What::ChargeFail(f) => format!(
            "charge_fail pid {} {} {} pages {}",
            f.pid,
            f.comm,
            f.nr_pages,
            f.error()
        ),
        What::ChargeFailFromReclaim(f) => format!(
            "charge_fail pid {} (from reclaim: {}, freed {})",
            f.pid,
            took(f.reclaim_ns),
            human_bytes(f.reclaimed_bytes)
        ),
        What::Slab(s) => format!(
            "slab +{} -{} ({} caches)",
            human_bytes(s.allocated_bytes),
            human_bytes(s.freed_bytes),
            s.caches.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        attribution::{ContainerIdentity, MemoryStats},
        event::{Memcg, OomKill},
        top::{app::Source, model::Model},
    };

    /// The table and the detail view drawn on a test backend show the kill and the container.
    #[test]
    fn draws_the_table_and_the_detail() {
        let clock = crate::event::samples::CLOCK;
        let mut model = Model::new(clock);
        let cgroup = "/docker/0ad1c0ffee5eed5a1ad0b5e55ed0d00d2bad1dea5c0de5ca1ab1e0ddba11f00d";
        let memcg = Memcg {
            id: Some(1),
            cgroup: Some(cgroup.into()),
            container: Some(ContainerIdentity::from_cgroup_path(cgroup)),
        };
        model.apply(&Event {
            timestamp_ns: 1_000,
            memcg: memcg.clone(),
            what: What::Stats(
                MemoryStats {
                    usage_bytes: Some(60 << 20),
                    limit_bytes: Some(64 << 20),
                    anon_bytes: Some(59 << 20),
                    ..MemoryStats::default()
                }
                .into(),
            ),
        });
        model.apply(&Event {
            timestamp_ns: 2_000,
            memcg,
            what: What::OomKill(OomKill {
                pid: 7,
                comm: Some("memhog".into()),
                ..OomKill::default()
            }),
        });
        let (_tx, rx) = std::sync::mpsc::channel();
        let mut app = App::new(
            model,
            Source::Live {
                events: rx,
                stop: None,
                hierarchy: crate::attribution::MemoryHierarchy {
                    root: "/nonexistent".into(),
                    version: crate::attribution::CgroupVersion::V2,
                },
                host: "node1".into(),
                ended: false,
            },
        );
        app.refresh();
        let mut terminal = Terminal::new(TestBackend::new(200, 30)).expect("terminal");
        let text = |terminal: &Terminal<TestBackend>| -> String {
            let buffer = terminal.backend().buffer();
            buffer
                .content()
                .chunks(usize::from(buffer.area.width))
                .map(|l| {
                    l.iter()
                        .map(ratatui::buffer::Cell::symbol)
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        terminal.draw(|f| draw(f, &app)).expect("draw");
        let table = text(&terminal);
        assert!(table.contains("docker:0ad1c0ffee5e"), "{table}");
        assert!(table.contains("1 limit set too low"), "{table}");
        assert!(table.contains("94%"), "{table}");
        app.detail = app.selected.clone();
        terminal.draw(|f| draw(f, &app)).expect("draw");
        let detail = text(&terminal);
        assert!(detail.contains("OOM kill"), "{detail}");
        assert!(detail.contains("pid 7 memhog"), "{detail}");
        assert!(detail.contains("page cache by file"), "{detail}");
        assert!(detail.contains("oom_kill pid 7 memhog"), "{detail}");
    }
}
