//! The alerts view: a count per group on top, then every alert the console knows of (firing,
//! pending, silenced, recently resolved, loudest first), and the selected alert's summary at the
//! bottom. Only the rows that fit are built.

use super::Theme;
use crate::alerts::text::{self, Group};
use crate::app::{App, Fetched};
use crate::format::ago;
use crate::util::escaped;
use flotilla_wire::alerts::Severity;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

/// Wide terminals add the summary column.
const WIDE: u16 = 120;

/// Severity as a short word, coloured by how loud it is.
pub(super) fn severity(theme: Theme, s: Severity) -> (&'static str, Style) {
    match s {
        Severity::Critical => ("crit", theme.bad()),
        Severity::Warning => ("warn", theme.warn()),
        Severity::Info => ("info", Style::default()),
    }
}

fn group_style(theme: Theme, g: Group) -> Style {
    match g {
        Group::Firing => theme.bad(),
        Group::Pending => theme.warn(),
        Group::Silenced | Group::Resolved => theme.dim(),
    }
}

pub(super) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let board = &app.alerts;
    let [counts_area, table_area, detail_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let mut spans = Vec::new();
    for (i, (g, n)) in board.group_counts().into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" · "));
        }
        let style = if n > 0 {
            group_style(theme, g)
        } else {
            Style::default()
        };
        spans.push(Span::styled(format!("{n} {}", g.as_str()), style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), counts_area);

    if board.is_empty() {
        let (msg, style) = match &board.loaded {
            Fetched::Loading => ("loading…".to_string(), theme.dim()),
            Fetched::Failed(e) => (escaped(e).into_owned(), theme.bad()),
            Fetched::Ready(()) => (
                "no alerts: nothing firing, pending or recently resolved".to_string(),
                theme.dim(),
            ),
        };
        frame.render_widget(Paragraph::new(Span::styled(msg, style)), table_area);
        return;
    }
    let wide = area.width >= WIDE;
    let rows_fit = table_area.height.saturating_sub(1) as usize;
    let offset = board.selected.saturating_sub(rows_fit.saturating_sub(1));
    let rows: Vec<Row<'_>> = board
        .list()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, a)| {
            let g = text::group(a);
            let (sev, sev_style) = severity(theme, a.severity);
            let mut cells = vec![
                Cell::from(g.as_str()).style(group_style(theme, g)),
                Cell::from(sev).style(sev_style),
                Cell::from(escaped(&a.rule).into_owned()),
                Cell::from(escaped(&a.agent_name).into_owned()),
                Cell::from(escaped(&a.subject).into_owned()),
                Cell::from(text::value(a.value)),
                Cell::from(ago(a.since_ms, app.now_ms)),
                Cell::from(text::note(a)),
            ];
            if wide {
                cells.push(Cell::from(escaped(&a.summary).into_owned()));
            }
            let row = Row::new(cells);
            if i == board.selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let mut header = vec![
        "STATE", "SEV", "RULE", "AGENT", "SUBJECT", "VALUE", "SINCE", "NOTE",
    ];
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(4),
        if wide {
            Constraint::Length(24)
        } else {
            Constraint::Min(10)
        },
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(8),
        if wide {
            Constraint::Length(24)
        } else {
            Constraint::Min(8)
        },
    ];
    if wide {
        header.push("SUMMARY");
        widths.push(Constraint::Min(20));
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.heading()))
        .column_spacing(1);
    frame.render_widget(table, table_area);

    if let Some(a) = board.selected_alert() {
        let mut spans = vec![Span::styled(format!("{} ", a.id), theme.dim())];
        if a.summary.is_empty() {
            spans.push(Span::raw(escaped(&a.rule).into_owned()));
        } else {
            spans.push(Span::raw(escaped(&a.summary).into_owned()));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), detail_area);
    }
}

#[cfg(test)]
mod tests {

    use crate::app::alerts::tests::two_alerts;
    use crate::app::workload_tests::{fixture, key};
    use crate::app::{App, View};
    use crate::event::Event;
    use crossterm::event::KeyCode;
    use flotilla_wire::Role;
    use flotilla_wire::alerts::{AlertState, SilenceId};

    fn screen(app: &App, width: u16, height: u16) -> String {
        crate::ui::render_text(app, width, height)
    }

    /// Firing critical on web-1, pending on db-1, one silenced and one resolved.
    fn four_alerts() -> App {
        let mut app = fixture(Role::Operator);
        let mut list = two_alerts();
        let mut muted = list[1].clone();
        muted.rule = "mem-high".into();
        muted.id = flotilla_wire::alerts::AlertId(7);
        muted.state = AlertState::Firing;
        muted.silenced_by = Some(SilenceId(3));
        muted.subject = String::new();
        let mut over = list[0].clone();
        over.rule = "load-high".into();
        over.id = flotilla_wire::alerts::AlertId(8);
        over.state = AlertState::Resolved;
        over.since_ms = 1_000_000;
        list.extend([muted, over]);
        app.update(Event::Alerts(Ok(list)));
        app
    }

    #[test]
    fn the_fleet_view_counts_firing_alerts_and_marks_their_agents() {
        let app = four_alerts();
        let s = screen(&app, 80, 24);
        let header = s.lines().next().unwrap_or_default();
        assert!(header.contains("1 firing"), "{s}");
        let web = s.lines().find(|l| l.contains("web-1")).unwrap_or_default();
        assert!(web.starts_with(" ●!"), "web-1 is marked:\n{s}");
        let db = s.lines().find(|l| l.contains("db-1")).unwrap_or_default();
        assert!(
            db.starts_with(" ● "),
            "db-1's alerts are pending or silenced: no mark\n{s}"
        );
        assert!(screen(&app, 160, 48).lines().any(|l| l.starts_with(" ●!")));
    }

    #[test]
    fn alerts_view() {
        let mut app = four_alerts();
        app.update(key(KeyCode::Char('8')));
        assert_eq!(app.view, View::Alerts);
        insta::assert_snapshot!("alerts_80x24", screen(&app, 80, 24));
        insta::assert_snapshot!("alerts_160x48", screen(&app, 160, 48));
        app.update(key(KeyCode::Char('j')));
        app.update(key(KeyCode::Char('S')));
        insta::assert_snapshot!("alerts_silence_prompt_80x24", screen(&app, 80, 24));

        let viewer = {
            let mut v = fixture(Role::Viewer);
            v.update(Event::Alerts(Ok(two_alerts())));
            v.update(key(KeyCode::Char('8')));
            v
        };
        let s = screen(&viewer, 80, 24);
        let footer = s.lines().last().unwrap_or_default();
        assert!(
            !footer.contains("acknowledge") && !footer.contains("silence"),
            "{footer}"
        );

        let mut empty = fixture(Role::Operator);
        empty.update(key(KeyCode::Char('8')));
        assert!(screen(&empty, 80, 24).contains("loading…"));
        empty.update(Event::Alerts(Ok(Vec::new())));
        assert!(screen(&empty, 80, 24).contains("no alerts"));
        empty.update(Event::Alerts(Err("hub stream: reset".into())));
        assert!(screen(&empty, 80, 24).contains("hub stream: reset"));
    }
}
