//! The sessions view: recorded shell sessions, newest first, fitting 80 columns; wider
//! terminals add the full start time and the command.

use super::Theme;
use super::records::placeholder;
use crate::app::{App, Fetched};
use crate::util::{escaped, utc};
use flotilla_wire::sessions::{SessionRow, SessionState};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

/// Wide terminals add the date and the command.
const WIDE: u16 = 120;

/// How long a session ran, short: `42s`, `3m05s`, `2h10m`, `live`.
fn ran(s: &SessionRow) -> String {
    match (s.state, s.ended_ms) {
        (SessionState::Live, _) => "live".into(),
        (_, Some(end)) => {
            let secs = end.saturating_sub(s.started_ms) / 1000;
            match secs {
                0..60 => format!("{secs}s"),
                60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
                _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
            }
        }
        (_, None) => "?".into(),
    }
}

pub(super) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let list = &app.sessions;
    if placeholder(&list.rows, theme, frame, area) {
        return;
    }
    let Fetched::Ready(rows) = &list.rows else {
        return;
    };
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no shell sessions recorded yet", theme.dim())),
            area,
        );
        return;
    }
    let wide = area.width >= WIDE;
    let rows_fit = area.height.saturating_sub(1) as usize;
    let offset = list.selected.saturating_sub(rows_fit.saturating_sub(1));
    let table_rows: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, s)| {
            let started = utc(s.started_ms);
            // Narrow: month, day and minute; wide: the whole time.
            let started = if wide {
                started
            } else {
                started.get(5..16).unwrap_or(&started).to_string()
            };
            let place = if s.container.is_empty() {
                s.agent.clone()
            } else {
                format!("{}/{}", s.agent, s.container)
            };
            let size = if s.recorded {
                crate::format::bytes(s.size)
            } else {
                "pruned".into()
            };
            let state_style = match s.state {
                SessionState::Live => theme.warn(),
                SessionState::Ended => theme.ok(),
                _ => theme.bad(),
            };
            let mut cells = vec![
                Cell::from(s.id.to_string()),
                Cell::from(started),
                Cell::from(escaped(&s.operator_name).into_owned()),
                Cell::from(escaped(&place).into_owned()),
                Cell::from(ran(s)),
                Cell::from(s.exit.map_or_else(|| "-".to_string(), |c| c.to_string())),
                Cell::from(size),
                Cell::from(s.state.as_str()).style(state_style),
            ];
            if wide {
                let command = if s.command.is_empty() {
                    "(login shell)".into()
                } else {
                    escaped(&s.command).into_owned()
                };
                cells.push(Cell::from(command));
            }
            let row = Row::new(cells);
            if i == list.selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let mut header = vec![
        "SESSION", "STARTED", "WHO", "WHERE", "TIME", "EXIT", "SIZE", "STATE",
    ];
    let mut widths = vec![
        Constraint::Length(18),
        Constraint::Length(if wide { 20 } else { 11 }),
        Constraint::Length(if wide { 14 } else { 6 }),
        Constraint::Length(if wide { 20 } else { 9 }),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(11),
    ];
    if wide {
        header.push("COMMAND");
        widths.push(Constraint::Min(10));
    }
    frame.render_widget(
        Table::new(table_rows, widths).header(Row::new(header).style(theme.heading())),
        area,
    );
}

#[cfg(test)]
mod tests {

    use crate::action::Action;
    use crate::app::{App, View};
    use crate::event::Event;
    use flotilla_wire::Role;
    use flotilla_wire::sessions::{SessionRow, SessionState};
    use flotilla_wire::shell::ShellSessionId;

    fn screen(app: &App, width: u16, height: u16) -> String {
        let out = crate::ui::render_text(app, width, height);
        assert!(
            !out.chars()
                .any(|c| c != '\n' && crate::util::must_escape(c)),
            "{out:?}"
        );
        out
    }

    fn session(
        n: u64,
        who: &str,
        agent: &str,
        container: &str,
        state: SessionState,
        secs: u64,
    ) -> SessionRow {
        let started_ms = 1_765_000_000_000 - n * 3_600_000;
        SessionRow {
            id: ShellSessionId(0x1f2e_3d4c_5b6a_0000 + n),
            operator: format!("o-{who}"),
            operator_name: who.into(),
            agent: agent.into(),
            container: container.into(),
            command: if container.is_empty() {
                String::new()
            } else {
                "sh".into()
            },
            started_ms,
            ended_ms: (state == SessionState::Ended).then_some(started_ms + secs * 1000),
            exit: (state == SessionState::Ended).then_some(if n == 2 { 130 } else { 0 }),
            reason: String::new(),
            bytes: 4096 * n,
            size: 1500 * n,
            recorded: n != 4,
            state,
        }
    }

    fn sessions_app(role: Role) -> App {
        let mut app = App::new(0);
        app.update(Event::Connected(Box::new(flotilla_wire::msg::Welcome {
            protocol_version: flotilla_wire::PROTOCOL_VERSION,
            hub_version: "0.1.0".into(),
            identity: flotilla_wire::IdentityId::from_random(Role::Admin, [9; 8]),
            role,
            name: "root".into(),
            metrics_interval_ms: 5000,
        })));
        app.apply(Action::Show(View::Sessions));
        app.update(Event::Sessions(Ok(vec![
            session(0, "alice", "web-1", "", SessionState::Live, 0),
            session(1, "bob\x1b[2J", "db-1", "postgres", SessionState::Ended, 42),
            session(2, "alice", "web-1", "", SessionState::Ended, 3725),
            session(3, "carol", "build-7", "", SessionState::Interrupted, 0),
            session(4, "alice", "web-2", "", SessionState::Ended, 185),
        ])));
        app.apply(Action::Move(1));
        app
    }

    #[test]
    fn sessions_view() {
        let app = sessions_app(Role::Admin);
        insta::assert_snapshot!("sessions_80x24", screen(&app, 80, 24));
        insta::assert_snapshot!("sessions_160x48", screen(&app, 160, 48));
    }

    #[test]
    fn operators_see_no_join_key() {
        let app = sessions_app(Role::Operator);
        let shown = screen(&app, 80, 24);
        assert!(shown.contains("enter replay"), "{shown}");
        assert!(!shown.contains("join"), "{shown}");
    }
}
