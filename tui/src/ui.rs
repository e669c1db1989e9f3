//! Drawing: a pure function of `&App` into a ratatui frame, at any size from 80x24 up.

mod agent;
mod fleet;

use crate::app::{App, Conn, View};
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
        View::Agent(id) => agent::render(app, theme, frame, body, id),
    }
    let bindings = match app.view {
        View::Fleet => keymap::FLEET,
        View::Agent(_) => keymap::AGENT,
    };
    let hint = if app.filtering {
        "type to filter  enter keep  esc clear".to_string()
    } else {
        keymap::footer(bindings)
    };
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(hint, theme.dim()))),
        footer,
    );
    if app.help {
        render_help(theme, frame, bindings);
    }
}

fn render_header(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let (online, total) = app.counts();
    let conn = match &app.conn {
        Conn::Connecting => Span::styled(strings::CONNECTING, theme.warn()),
        Conn::Connected {
            name,
            role,
            hub_version,
        } => Span::styled(format!("hub {hub_version} · {name} ({role})"), theme.ok()),
        Conn::Reconnecting(reason) => {
            Span::styled(format!("{}: {reason}", strings::RECONNECTING), theme.bad())
        }
    };
    let line = Line::from(vec![
        Span::styled(format!("{} ", strings::TITLE), theme.heading()),
        Span::raw(format!("{online}/{total} online · ")),
        conn,
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn render_help(theme: Theme, frame: &mut Frame<'_>, bindings: &[keymap::Binding]) {
    let area = frame.area();
    let height = (bindings.len() as u16 + 2).min(area.height);
    let width = 40.min(area.width);
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
