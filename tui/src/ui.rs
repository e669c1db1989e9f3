//! Drawing: a pure function of `&App` into a ratatui frame, at any size from 80x24 up.

mod agent;
mod alerts;
mod files;
mod fleet;
mod host;
mod output;
mod records;
mod sessions;
mod workloads;

use crate::app::{App, Conn, PromptKind, View};
use crate::util::{Escaped, escaped};
use crate::{keymap, strings};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

/// Colours, or none at all when `NO_COLOR` is set.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    /// Whether to use colour.
    pub color: bool,
}

impl Theme {
    /// From the environment: colour unless `NO_COLOR` is set to anything.
    pub fn from_env() -> Self {
        Self {
            color: std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Style of dimmed (offline) rows.
    pub fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    /// Style of good news.
    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    /// Style of bad news.
    pub fn bad(self) -> Style {
        self.fg(Color::Red)
    }

    /// Style of warnings.
    pub fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    /// Style of the selected row.
    pub fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// Style of headings.
    pub fn heading(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    /// A percentage coloured by how worrying it is.
    pub fn level(self, pct: f32) -> Style {
        if pct >= 90.0 {
            self.bad()
        } else if pct >= 70.0 {
            self.warn()
        } else {
            Style::default()
        }
    }
}

/// Draws the whole console.
pub fn render(app: &App, theme: Theme, frame: &mut Frame<'_>) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(app, theme, frame, header);
    match &app.view {
        View::Fleet => fleet::render(app, theme, frame, body),
        View::Agent(id) => {
            let [tabs, rest] =
                Layout::vertical([Constraint::Length(1), Constraint::Min(2)]).areas(body);
            workloads::render_tabs(app, theme, frame, tabs, id, None);
            agent::render(app, theme, frame, rest, id);
        }
        View::Workloads { agent, kind } => {
            workloads::render_list(app, theme, frame, body, agent.as_ref(), *kind);
        }
        View::Logs => workloads::render_logs(app, theme, frame, body),
        View::Output => output::render(app, theme, frame, body),
        View::Files => files::render_tree(app, theme, frame, body),
        View::Transfers => files::render_transfers(app, theme, frame, body),
        View::Jobs => records::render_jobs(app, theme, frame, body),
        View::Audit => records::render_audit(app, theme, frame, body),
        View::Alerts => alerts::render(app, theme, frame, body),
        View::Sessions => sessions::render(app, theme, frame, body),
    }
    render_footer(app, theme, frame, footer);
    if app.picker.is_some() {
        render_picker(app, theme, frame);
    }
    if app.help {
        render_help(theme, frame, &keymap::help(&app.view, app.grants()));
    }
}

/// The bottom line: the prompt being typed, else a notice, else the view's keys.
fn render_footer(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let line = if let Some(prompt) = &app.prompt {
        let label = match &prompt.kind {
            PromptKind::Exec { who, .. } => format!("run on {}: ", Escaped(who)),
            PromptKind::CopyTo { name, .. } => format!("copy to {}:", Escaped(name)),
            PromptKind::Silence { rule, who, .. } => {
                format!(
                    "silence {} on {} (e.g. 2h deploy): ",
                    Escaped(rule),
                    Escaped(who)
                )
            }
        };
        // Keep the end of a long line in view, as a shell does.
        let room = (area.width as usize).saturating_sub(label.chars().count() + 1);
        let count = prompt.text.chars().count();
        let text: String = prompt
            .text
            .chars()
            .skip(count.saturating_sub(room))
            .collect();
        Line::from(vec![
            Span::styled(label, theme.heading()),
            Span::raw(text),
            Span::raw("▏"),
        ])
    } else if let Some(confirm) = &app.confirm {
        Line::from(Span::styled(confirm.question.clone(), theme.bad()))
    } else if let Some(notice) = &app.notice {
        Line::from(Span::styled(escaped(notice).into_owned(), theme.warn()))
    } else if app.filtering {
        Line::from(Span::styled(
            "type to filter  enter keep  esc clear",
            theme.dim(),
        ))
    } else {
        Line::from(Span::styled(
            keymap::footer(&app.view, app.grants()),
            theme.dim(),
        ))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The destination picker of a copy.
fn render_picker(app: &App, theme: Theme, frame: &mut Frame<'_>) {
    let Some(picker) = &app.picker else { return };
    let area = frame.area();
    let items: Vec<_> = picker.items().collect();
    let height = (items.len() as u16 + 3).clamp(5, area.height.saturating_sub(2).max(5));
    let width = 50.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height: height.min(area.height),
    };
    let rows_fit = popup.height.saturating_sub(3) as usize;
    let first = picker.selected.saturating_sub(rows_fit.saturating_sub(1));
    let mut lines = vec![Line::from(vec![
        Span::styled("to: ", theme.heading()),
        Span::raw(picker.filter.clone()),
        Span::raw("▏"),
    ])];
    lines.extend(
        items
            .iter()
            .enumerate()
            .skip(first)
            .take(rows_fit)
            .map(|(i, (_, name))| {
                let line = Line::from(format!(" {}", Escaped(name)));
                if i == picker.selected {
                    line.style(theme.selected())
                } else {
                    line
                }
            }),
    );
    if items.is_empty() {
        lines.push(Line::from(Span::styled(" no agent matches", theme.dim())));
    }
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(format!(
            "copy {}:{} to",
            Escaped(&picker.src_name),
            Escaped(&picker.src_path)
        ))),
        popup,
    );
}

fn render_header(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let (online, total) = app.counts();
    let conn = match &app.conn {
        Conn::Connecting => Span::styled(strings::CONNECTING, theme.warn()),
        Conn::Connected {
            name,
            role,
            hub_version,
        } => Span::styled(
            format!("hub {} · {} ({role})", Escaped(hub_version), Escaped(name)),
            theme.ok(),
        ),
        Conn::Reconnecting(reason) => Span::styled(
            format!("{}: {}", strings::RECONNECTING, Escaped(reason)),
            theme.bad(),
        ),
    };
    let mut title = strings::TITLE.to_string();
    if app.view != View::Fleet {
        title = format!("{title} {}", app.view.title());
    }
    let mut spans = vec![
        Span::styled(format!("{title} "), theme.heading()),
        Span::raw(format!("{online}/{total} online · ")),
    ];
    if !app.marks.is_empty() {
        spans.push(Span::styled(
            format!("{} marked · ", app.marks.len()),
            theme.warn(),
        ));
    }
    let firing = app.alerts.firing();
    if firing > 0 {
        spans.push(Span::styled(format!("{firing} firing · "), theme.bad()));
    }
    spans.push(conn);
    let line = Line::from(spans);
    frame.render_widget(Paragraph::new(line), area);
}

fn render_help(theme: Theme, frame: &mut Frame<'_>, bindings: &[&keymap::Binding]) {
    let area = frame.area();
    let height = (bindings.len() as u16 + 2).min(area.height);
    let width = 48.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line<'_>> = bindings
        .iter()
        .map(|b| {
            Line::from(vec![
                Span::styled(format!("{:>8}  ", b.keys), theme.heading()),
                Span::raw(b.help),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(strings::HELP_TITLE),
        ),
        popup,
    );
}

/// A sparkline drawn with block characters, one per point, scaled 0-100.
pub fn spark(points: impl Iterator<Item = f32>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    points
        .map(|p| BARS[((p.clamp(0.0, 100.0) / 100.0) * 7.0).round() as usize])
        .collect()
}

/// A horizontal bar of `width` cells, filled to `pct` percent.
pub(crate) fn bar(pct: f32, width: usize) -> String {
    let filled = ((pct.clamp(0.0, 100.0) / 100.0) * width as f32).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// The console drawn at `width`×`height` without colour, as text: one line per row, trailing
/// blanks trimmed (what the views' snapshot tests compare).
#[cfg(test)]
pub(crate) fn render_text(app: &App, width: u16, height: u16) -> String {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))
        .expect("terminal");
    terminal
        .draw(|f| render(app, Theme { color: false }, f))
        .expect("draw");
    let buf = terminal.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Fetched;
    use crate::app::tree::{Transfer, TransferState};
    use flotilla_wire::exec::{AuditEntry, ExecCommand, JobCounts, JobId, JobInfo};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(160, 12)).expect("terminal");
        terminal
            .draw(|f| render(app, Theme { color: false }, f))
            .expect("draw");
        let buf = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..12 {
            for x in 0..160 {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn assert_shown(screen: &str, shown: &[&str]) {
        for s in shown {
            assert!(screen.contains(s), "no {s} in\n{screen}");
        }
        assert!(
            !screen
                .chars()
                .any(|c| c != '\n' && crate::util::must_escape(c)),
            "{screen:?}"
        );
    }

    /// The jobs, audit and transfers views show what agents and hubs chose escaped.
    #[test]
    fn records_and_transfers_show_control_characters_escaped() {
        let mut app = App::new(0);
        app.view = View::Jobs;
        app.jobs = Fetched::Ready(vec![JobInfo {
            job: JobId(1),
            actor: "o-1".into(),
            actor_name: "ops\x1b[2J".into(),
            selector: "all".into(),
            command: ExecCommand::Argv {
                argv: vec!["printf".into(), "'a\\n\u{202e}'".into()],
                shell: true,
            },
            timeout_ms: 0,
            batch: 0,
            started_ms: 0,
            ended_ms: None,
            targets: 1,
            counts: JobCounts::default(),
            cancelled_by: None,
            interrupted: false,
        }]);
        assert_shown(&screen(&app), &[r"ops\x1b[2J", r"printf 'a\\n\u{202e}'"]);

        app.view = View::Audit;
        app.audit = Fetched::Ready(vec![AuditEntry {
            seq: 1,
            at_ms: 0,
            actor: "o-1".into(),
            action: "enrol".into(),
            target: "t\u{9b}".into(),
            detail: "name=\x07bell".into(),
        }]);
        assert_shown(&screen(&app), &[r"t\u{9b}", r"name=\x07bell"]);

        app.view = View::Transfers;
        let mut t = Transfer::new(1, "web-1:evil\x1b[2Jname".into(), "db-1:x\u{2067}".into());
        t.state = TransferState::Failed("web-1:evil\x1b[2Jname vanished".into());
        app.transfers.push(t);
        assert_shown(
            &screen(&app),
            &[
                r"web-1:evil\x1b[2Jname",
                r"db-1:x\u{2067}",
                r"failed: web-1:evil\x1b",
            ],
        );
    }
}
