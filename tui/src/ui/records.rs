//! Past jobs (and one job's results), and the audit log: what the hub recorded.

use super::Theme;
use crate::app::{App, Fetched};
use crate::exec::{job_detail, job_state, utc};
use crate::util::{escaped, escaped_controls};
use flotilla_wire::IdentityId;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};

/// Wide terminals add the selector and timing columns.
const WIDE: u16 = 120;

pub(super) fn placeholder<T>(
    fetched: &Fetched<T>,
    theme: Theme,
    frame: &mut Frame<'_>,
    area: Rect,
) -> bool {
    let (text, style) = match fetched {
        Fetched::Loading => ("loading…".to_string(), theme.dim()),
        Fetched::Failed(e) => (escaped(e).into_owned(), theme.bad()),
        Fetched::Ready(_) => return false,
    };
    frame.render_widget(Paragraph::new(Span::styled(text, style)), area);
    true
}

pub(super) fn render_jobs(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    if let Some(detail) = &app.job_detail {
        if placeholder(detail, theme, frame, area) {
            return;
        }
        if let Fetched::Ready((info, results)) = detail {
            // Names in it are escaped already; the output tails are the agents' bytes.
            let text = job_detail(info, results);
            let lines: Vec<Line<'_>> = text
                .lines()
                .map(|l| escaped_controls(&l.replace('\t', " ")).into_owned())
                .map(|l| {
                    if l.starts_with("--- ") {
                        Line::from(Span::styled(l, theme.heading()))
                    } else {
                        Line::from(l)
                    }
                })
                .collect();
            frame.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .scroll((app.detail_scroll.min(u16::MAX as usize) as u16, 0)),
                area,
            );
        }
        return;
    }
    if placeholder(&app.jobs, theme, frame, area) {
        return;
    }
    let Fetched::Ready(jobs) = &app.jobs else {
        return;
    };
    if jobs.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no jobs yet", theme.dim())),
            area,
        );
        return;
    }
    let wide = area.width >= WIDE;
    let rows_fit = area.height.saturating_sub(1) as usize;
    let offset = app.job_selected.saturating_sub(rows_fit.saturating_sub(1));
    let rows: Vec<Row<'_>> = jobs
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, j)| {
            let state = job_state(j);
            let style = match state {
                "ok" => theme.ok(),
                "running" => theme.warn(),
                _ => theme.bad(),
            };
            let started = utc(j.started_ms);
            // Narrow: the time of day only; the date is in the job's detail.
            let started = if wide {
                started
            } else {
                started
                    .split_once(' ')
                    .map(|(_, t)| t.to_string())
                    .unwrap_or(started)
            };
            let mut cells = vec![
                Cell::from(j.job.to_string()),
                Cell::from(started),
                Cell::from(escaped(&j.actor_name).into_owned()),
                Cell::from(format!("{}/{}", j.counts.succeeded, j.targets)),
                Cell::from(state).style(style),
            ];
            if wide {
                let who: Vec<String> = j.selector.split(',').map(|t| name_or_id(app, t)).collect();
                cells.push(Cell::from(who.join(",")));
            }
            cells.push(Cell::from(
                escaped_controls(&j.command.display()).into_owned(),
            ));
            let row = Row::new(cells);
            if i == app.job_selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let mut header = vec!["JOB", "STARTED", "BY", "OK", "STATE"];
    let mut widths = vec![
        Constraint::Length(5),
        Constraint::Length(if wide { 20 } else { 9 }),
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(11),
    ];
    if wide {
        header.push("AGENTS");
        widths.push(Constraint::Length(20));
    }
    header.push("COMMAND");
    widths.push(Constraint::Min(10));
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(theme.heading()))
            .column_spacing(1),
        area,
    );
}

/// An agent's name where the console knows the id (ids are unreadable in a narrow column), as
/// shown (escaped).
fn name_or_id(app: &App, s: &str) -> String {
    let shown = IdentityId::parse(s)
        .and_then(|id| app.agents.get(&id))
        .map_or(s, |a| a.name.as_str());
    escaped(shown).into_owned()
}

pub(super) fn render_audit(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    if placeholder(&app.audit, theme, frame, area) {
        return;
    }
    let Fetched::Ready(entries) = &app.audit else {
        return;
    };
    if entries.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("the audit log is empty", theme.dim())),
            area,
        );
        return;
    }
    let wide = area.width >= WIDE;
    let rows_fit = area.height.saturating_sub(1) as usize;
    // Newest at the bottom, as in a log; scrolling moves up.
    let end = entries.len().saturating_sub(app.audit_scroll);
    let start = end.saturating_sub(rows_fit);
    let rows: Vec<Row<'_>> = entries[start..end]
        .iter()
        .map(|e| {
            let at = utc(e.at_ms);
            let at = if wide {
                at
            } else {
                at.split_once(' ').map(|(_, t)| t.to_string()).unwrap_or(at)
            };
            let style = if e.action.ends_with("denied") || e.action.contains("revoke") {
                theme.warn()
            } else {
                ratatui::style::Style::default()
            };
            Row::new(vec![
                Cell::from(at),
                Cell::from(name_or_id(app, &e.actor)),
                Cell::from(escaped(&e.action).into_owned()).style(style),
                Cell::from(name_or_id(app, &e.target)),
                Cell::from(escaped(&e.detail).into_owned()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(if wide { 20 } else { 9 }),
        Constraint::Length(if wide { 20 } else { 14 }),
        Constraint::Length(15),
        Constraint::Length(if wide { 22 } else { 12 }),
        Constraint::Min(10),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(
                Row::new(vec!["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"])
                    .style(theme.heading()),
            )
            .column_spacing(1),
        area,
    );
}
