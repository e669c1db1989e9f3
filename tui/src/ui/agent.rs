//! One agent: facts, CPU per core, memory, disks and top processes from the latest sample.

use super::Theme;
use crate::app::App;
use crate::format;
use flotilla_wire::IdentityId;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

fn bar(pct: f32, width: usize) -> String {
    let filled = ((pct.clamp(0.0, 100.0) / 100.0) * width as f32).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

pub(super) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect, id: &IdentityId) {
    let Some(a) = app.agents.get(id) else {
        frame.render_widget(Paragraph::new("agent no longer listed"), area);
        return;
    };
    let [facts_area, rest] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(4)]).areas(area);
    let seen = if a.status == flotilla_wire::msg::Status::Online {
        "now".into()
    } else {
        format::ago(a.last_seen_ms, app.now_ms)
    };
    let facts = vec![
        Line::from(vec![
            Span::styled(a.name.clone(), theme.heading()),
            Span::raw(format!("  {}  {}  seen {seen}", a.id, a.status.as_str())),
        ]),
        Line::from(format!("{} · {} · agentd {}", a.hostname, a.os, a.version)),
        Line::from(format!("labels {}", format::labels(a))),
        Line::from(match &a.latest {
            Some(s) => format!(
                "load {:.2} {:.2} {:.2} · up {} · {} procs",
                s.load[0],
                s.load[1],
                s.load[2],
                super::fleet::uptime(s.uptime_s),
                s.procs
            ),
            None => "no metrics yet".into(),
        }),
    ];
    frame.render_widget(Paragraph::new(facts), facts_area);
    let Some(s) = &a.latest else { return };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(rest);
    let bar_w = (left.width as usize).saturating_sub(16).clamp(4, 40);
    let mem_pct = if s.mem_total > 0 {
        s.mem_used as f32 * 100.0 / s.mem_total as f32
    } else {
        0.0
    };
    let swap_pct = if s.swap_total > 0 {
        s.swap_used as f32 * 100.0 / s.swap_total as f32
    } else {
        0.0
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("cpu  "),
            Span::styled(bar(s.cpu_pct, bar_w), theme.level(s.cpu_pct)),
            Span::raw(format!(" {:>3.0}%", s.cpu_pct)),
        ]),
        Line::from(vec![
            Span::raw("mem  "),
            Span::styled(bar(mem_pct, bar_w), theme.level(mem_pct)),
            Span::raw(format!(" {:>3.0}%", mem_pct)),
        ]),
        Line::from(vec![
            Span::raw("swap "),
            Span::styled(bar(swap_pct, bar_w), theme.level(swap_pct)),
            Span::raw(format!(" {:>3.0}%", swap_pct)),
        ]),
    ];
    for (i, c) in s.per_core_pct.iter().enumerate() {
        lines.push(Line::from(vec![
            Span::raw(format!("c{i:<3} ")),
            Span::styled(bar(*c, bar_w), theme.level(*c)),
            Span::raw(format!(" {c:>3.0}%")),
        ]));
    }
    for d in &s.disks {
        let pct = if d.total > 0 {
            d.used as f32 * 100.0 / d.total as f32
        } else {
            0.0
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<5}", truncate(&d.mount, 5)), theme.heading()),
            Span::styled(bar(pct, bar_w), theme.level(pct)),
            Span::raw(format!(" {pct:>3.0}%")),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title("usage")),
        left,
    );
    let rows: Vec<Row<'_>> = s
        .top_cpu
        .iter()
        .map(|p| {
            Row::new(vec![
                p.pid.to_string(),
                truncate(&p.name, 18),
                format!("{:.1}%", p.cpu_pct),
                format::bytes(p.rss),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Min(8),
            Constraint::Length(6),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(vec!["PID", "TOP CPU", "CPU", "RSS"]).style(theme.heading()))
    .block(Block::default().borders(Borders::TOP).title("processes"));
    frame.render_widget(table, right);
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
