//! The fleet table. Only the rows that fit are built, so 20,000 agents cost what 40 do.

use super::{Theme, spark};
use crate::app::{App, SORTS};
use crate::util::escaped;
use crate::{format, strings};
use flotilla_wire::msg::Status;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

/// Widths are chosen so the essential columns fit 80 columns; wide terminals add the rest.
const WIDE: u16 = 120;

pub(super) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let show_filter = app.filtering || !app.filter.is_empty();
    let [filter_area, table_area] = Layout::vertical([
        Constraint::Length(u16::from(show_filter)),
        Constraint::Min(1),
    ])
    .areas(area);
    if show_filter {
        let text = if app.filter.is_empty() && app.filtering {
            strings::FILTER_HINT.to_string()
        } else {
            app.filter.clone()
        };
        let cursor = if app.filtering { "▏" } else { "" };
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("/", theme.heading()),
                Span::raw(text),
                Span::raw(cursor),
            ])),
            filter_area,
        );
    }
    if app.visible_len() == 0 {
        let msg = if app.agents.is_empty() {
            strings::NO_AGENTS
        } else {
            strings::NO_MATCH
        };
        frame.render_widget(Paragraph::new(Span::styled(msg, theme.dim())), table_area);
        return;
    }
    let wide = area.width >= WIDE;
    let sort = SORTS[app.sort];
    let title = |name: &'static str, key: &str| {
        if key == sort {
            format!("{name}▼")
        } else {
            name.to_string()
        }
    };
    let mut header = vec![
        Cell::from(" "),
        Cell::from(title("NAME", "name")),
        Cell::from(title("CPU", "cpu")),
        Cell::from(title("MEM", "mem")),
        Cell::from(title("DISK", "disk")),
        Cell::from(title("NET/s", "net")),
        Cell::from("CPU HIST"),
        Cell::from(title("UP", "uptime")),
    ];
    // Agents with an alert firing unsilenced get a `!` after their dot, coloured by the loudest.
    let affected = app.alerts.affected();
    let mut widths = vec![
        Constraint::Length(if affected.is_empty() { 2 } else { 3 }),
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(crate::app::SPARK_POINTS as u16),
        Constraint::Length(6),
    ];
    // Only once an agent reported a container or a unit: a fleet without any keeps its room.
    let show_work = app
        .workload_counts
        .values()
        .any(|c| c.containers_total > 0 || c.units_total > 0);
    if show_work {
        header.push(Cell::from("CTRS !"));
        widths.push(Constraint::Length(9));
    }
    if wide {
        header.extend([
            Cell::from(title("SEEN", "last-seen")),
            Cell::from("VERSION"),
            Cell::from("LABELS"),
        ]);
        widths.extend([
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Min(16),
        ]);
    } else {
        header.push(Cell::from("LABELS"));
        widths.push(Constraint::Min(8));
    }
    let rows_fit = table_area.height.saturating_sub(1) as usize;
    let offset = app.selected.saturating_sub(rows_fit.saturating_sub(1));
    let pct = |o: Option<f32>| {
        o.map(|v| format!("{v:>3.0}%"))
            .unwrap_or_else(|| "   -".into())
    };
    let rows: Vec<Row<'_>> = app
        .visible()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, a)| {
            let (dot, dot_style) = match a.status {
                Status::Online => ("●", theme.ok()),
                Status::Offline => ("○", theme.dim()),
                Status::Revoked => ("✗", theme.bad()),
            };
            let mark = if app.marks.contains(&a.id) { "+" } else { " " };
            let history = app
                .cpu_history
                .get(&a.id)
                .map(|h| spark(h.iter().copied()))
                .unwrap_or_default();
            let uptime = a
                .latest
                .as_ref()
                .map(|s| format::uptime(s.uptime_s))
                .unwrap_or_else(|| "-".into());
            let mut status = vec![Span::raw(mark), Span::styled(dot, dot_style)];
            if let Some(sev) = affected.get(&a.id) {
                status.push(Span::styled("!", super::alerts::severity(theme, *sev).1));
            }
            let mut cells = vec![
                Cell::from(Line::from(status)),
                Cell::from(escaped(&a.name).into_owned()),
                Cell::from(pct(format::cpu(a))).style(theme.level(format::cpu(a).unwrap_or(0.0))),
                Cell::from(pct(format::mem_pct(a)))
                    .style(theme.level(format::mem_pct(a).unwrap_or(0.0))),
                Cell::from(pct(format::disk_pct(a)))
                    .style(theme.level(format::disk_pct(a).unwrap_or(0.0))),
                Cell::from(
                    format::net_bps(a)
                        .map(format::bytes)
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(history),
                Cell::from(uptime),
            ];
            if show_work {
                cells.push(work_cell(app.workload_counts.get(&a.id), theme));
            }
            if wide {
                let seen = if a.status == Status::Online {
                    "now".into()
                } else {
                    format::ago(a.last_seen_ms, app.now_ms)
                };
                cells.extend([
                    Cell::from(seen),
                    Cell::from(escaped(&a.version).into_owned()),
                    Cell::from(format::labels(a)),
                ]);
            } else {
                cells.push(Cell::from(format::labels(a)));
            }
            let mut style = if a.status == Status::Online {
                ratatui::style::Style::default()
            } else {
                theme.dim()
            };
            if i == app.selected {
                style = theme.selected();
            }
            Row::new(cells).style(style)
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.heading()))
        .column_spacing(1);
    frame.render_widget(table, table_area);
}

/// `3/4 2!`: containers running of known, then troubled containers plus failed units in red.
fn work_cell(
    counts: Option<&flotilla_wire::workloads::WorkloadCounts>,
    theme: Theme,
) -> Cell<'static> {
    let Some(c) = counts else {
        return Cell::from("");
    };
    let mut spans = vec![Span::raw(format!(
        "{}/{}",
        c.containers_running, c.containers_total
    ))];
    let trouble = c.containers_troubled + c.units_failed;
    if trouble > 0 {
        spans.push(Span::styled(format!(" {trouble}!"), theme.bad()));
    }
    Cell::from(Line::from(spans))
}
