//! The output of the last command run from the console: every agent's lines merged with name
//! prefixes, or one agent at a time beside the list of agents and their exit statuses.

use super::Theme;
use crate::app::App;
use crate::app::output::{ExecRun, OutLine, PaneState, duration};
use crate::util::{escaped, escaped_controls};
use flotilla_wire::exec::OutputStream;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

/// Longest name prefix in the merged view; longer names are cut.
const PREFIX_MAX: usize = 16;
/// Width of the agent list beside a single pane.
const LIST_WIDTH: u16 = 24;

pub(super) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(run) = &app.run else {
        let hint = if app.can_act() {
            "no command run yet: mark agents in the fleet view (space, *) and press :"
        } else {
            "no command run yet (a viewer cannot run commands)"
        };
        frame.render_widget(Paragraph::new(Span::styled(hint, theme.dim())), area);
        return;
    };
    let [status_area, body] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(area);
    frame.render_widget(Paragraph::new(status_lines(run, theme)), status_area);
    if app.merged || run.panes.len() <= 1 {
        let width = run
            .panes
            .iter()
            .map(|p| escaped(&p.name).chars().count())
            .max()
            .unwrap_or(0)
            .min(PREFIX_MAX);
        let lines = window(run.merged.iter(), run.merged.len(), app.scroll, body.height)
            .map(|(i, l)| {
                let name: String = escaped(&run.panes[*i].name).chars().take(width).collect();
                let mut spans = vec![
                    Span::styled(format!("{name:<width$}"), theme.heading()),
                    Span::styled(" │ ", theme.dim()),
                ];
                spans.push(text_span(l, &run.panes[*i].state, theme));
                Line::from(spans)
            })
            .collect::<Vec<_>>();
        frame.render_widget(Paragraph::new(lines), body);
        return;
    }
    let [list_area, pane_area] =
        Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(10)]).areas(body);
    let pane_index = app.pane.min(run.panes.len() - 1);
    let visible_rows = list_area.height.saturating_sub(2) as usize;
    let first = pane_index.saturating_sub(visible_rows.saturating_sub(1));
    let list: Vec<Line<'_>> = run
        .panes
        .iter()
        .enumerate()
        .skip(first)
        .take(visible_rows)
        .map(|(i, p)| {
            let (word, style) = state_style(&p.state, theme);
            let name: String = escaped(&p.name)
                .chars()
                .take(LIST_WIDTH as usize - 12)
                .collect();
            let line = Line::from(vec![
                Span::raw(format!("{name:<12} ")),
                Span::styled(word, style),
            ]);
            if i == pane_index {
                line.style(theme.selected())
            } else {
                line
            }
        })
        .collect();
    frame.render_widget(
        Paragraph::new(list).block(Block::default().borders(Borders::RIGHT).title("agents")),
        list_area,
    );
    let pane = &run.panes[pane_index];
    let lines: Vec<Line<'_>> = window(
        pane.lines.iter(),
        pane.lines.len(),
        app.scroll,
        pane_area.height,
    )
    .map(|l| Line::from(text_span(l, &pane.state, theme)))
    .collect();
    frame.render_widget(Paragraph::new(lines), pane_area);
}

/// The `height` lines ending `scroll` lines before the newest.
fn window<'a, T: 'a>(
    items: impl Iterator<Item = &'a T>,
    len: usize,
    scroll: usize,
    height: u16,
) -> impl Iterator<Item = &'a T> {
    let end = len.saturating_sub(scroll);
    let start = end.saturating_sub(height as usize);
    items.skip(start).take(end - start)
}

fn text_span<'a>(l: &'a OutLine, state: &PaneState, theme: Theme) -> Span<'a> {
    match l.stream {
        Some(OutputStream::Stdout) => Span::raw(l.text.as_str()),
        Some(OutputStream::Stderr) => Span::styled(l.text.as_str(), theme.warn()),
        None => Span::styled(l.text.as_str(), state_style(state, theme).1),
    }
}

fn state_style(state: &PaneState, theme: Theme) -> (String, Style) {
    let style = match state {
        PaneState::Waiting => theme.dim(),
        PaneState::Running(_) => theme.warn(),
        s if s.ok() => theme.ok(),
        _ => theme.bad(),
    };
    (state.label(), style)
}

fn status_lines(run: &ExecRun, theme: Theme) -> Vec<Line<'_>> {
    let job = run
        .job
        .map(|j| format!("job {j}"))
        .unwrap_or_else(|| "job …".into());
    let first = Line::from(vec![
        Span::styled(job, theme.heading()),
        Span::raw(match run.panes.len() {
            1 => " · 1 agent · ".to_string(),
            n => format!(" · {n} agents · "),
        }),
        Span::styled(
            format!("$ {}", escaped_controls(&run.command)),
            theme.heading(),
        ),
    ]);
    let (done, ok) = run.progress();
    let second = if let Some(err) = &run.error {
        Line::from(Span::styled(escaped(err).into_owned(), theme.bad()))
    } else if let Some(s) = &run.summary {
        let c = &s.counts;
        let mut parts = vec![format!("{} ok", c.succeeded)];
        for (n, word) in [
            (c.failed, "failed"),
            (c.timed_out, "timed out"),
            (c.cancelled, "cancelled"),
            (c.refused, "refused"),
            (c.unreachable, "unreachable"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {word}"));
            }
        }
        let style = if c.succeeded == s.targets {
            theme.ok()
        } else {
            theme.bad()
        };
        Line::from(vec![
            Span::styled(format!("done: {}", parts.join(", ")), style),
            Span::raw(format!(" in {}", duration(s.duration_ms))),
        ])
    } else {
        let verb = if run.cancelling {
            "cancelling"
        } else {
            "running"
        };
        Line::from(Span::styled(
            format!("{verb}: {done}/{} done, {ok} ok", run.panes.len()),
            theme.warn(),
        ))
    };
    vec![first, second]
}
