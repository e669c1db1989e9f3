//! One agent: facts, an hour of history, CPU per core, memory, disks and top processes. Live values
//! come from the detail the console polls every second while this view is open.

use super::{Theme, bar};
use crate::app::App;
use crate::format;
use crate::util::{Escaped, escaped};
use flotilla_wire::IdentityId;
use flotilla_wire::msg::{MetricsSample, Status};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table};

/// The first `n` characters of `s` as shown: escaped, then cut.
fn truncate(s: &str, n: usize) -> String {
    escaped(s).chars().take(n).collect()
}

pub(super) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect, id: &IdentityId) {
    let Some(listed) = app.agents.get(id) else {
        frame.render_widget(Paragraph::new("agent no longer listed"), area);
        return;
    };
    // The polled detail has the full sample; the list only a summary.
    let a = app
        .detail
        .as_ref()
        .filter(|d| d.id == *id)
        .unwrap_or(listed);
    let status = listed.status;
    let history_h = if area.height >= 30 { 8 } else { 5 };
    let [facts_area, history_area, rest] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(history_h),
        Constraint::Min(4),
    ])
    .areas(area);
    let seen = if status == Status::Online {
        "now".into()
    } else {
        format::ago(a.last_seen_ms, app.now_ms)
    };
    let facts = vec![
        Line::from(vec![
            Span::styled(escaped(&a.name).into_owned(), theme.heading()),
            Span::raw(format!("  {}  {}  seen {seen}", a.id, status.as_str())),
        ]),
        Line::from(format!(
            "{} · {} · agentd {}",
            Escaped(&a.hostname),
            Escaped(&a.os),
            Escaped(&a.version)
        )),
        Line::from(format!("labels {}", format::labels(a))),
        Line::from(match &a.latest {
            Some(s) => format!(
                "load {:.2} {:.2} {:.2} · up {} · {} procs",
                s.load[0],
                s.load[1],
                s.load[2],
                format::uptime(s.uptime_s),
                s.procs
            ),
            None => "no metrics yet".into(),
        }),
    ];
    frame.render_widget(Paragraph::new(facts), facts_area);
    render_history(app, theme, frame, history_area);
    if app.host_time.charts.open {
        super::host::charts::render(app, theme, frame, rest);
        return;
    }
    let Some(s) = &a.latest else { return };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(rest);
    render_usage(app, theme, frame, left, s);
    if app.host_time.top_back_min > 0 {
        super::host::render_past_top(app, theme, frame, right);
    } else {
        render_processes(theme, frame, right, s);
    }
}

fn render_history(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let cols = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(area);
    let points = app
        .history
        .as_ref()
        .map(|h| h.points.as_slice())
        .unwrap_or(&[]);
    let span = app.host_time.range_label();
    let series: [(&str, Vec<u64>); 3] = [
        (
            "cpu %",
            points.iter().map(|p| p.cpu_avg.round() as u64).collect(),
        ),
        (
            "mem %",
            points
                .iter()
                .map(|p| (p.mem_avg * 100).checked_div(p.mem_total).unwrap_or(0))
                .collect(),
        ),
        (
            "net",
            points.iter().map(|p| p.net_rx_avg + p.net_tx_avg).collect(),
        ),
    ];
    for (i, (title, data)) in series.iter().enumerate() {
        let area = cols[i];
        let last = data
            .last()
            .map(|v| {
                if i == 2 {
                    format::bytes(*v) + "/s"
                } else {
                    format!("{v}%")
                }
            })
            .unwrap_or_default();
        let block = Block::default()
            .borders(Borders::TOP)
            .title(Line::from(vec![
                Span::styled(format!("{title} {span} "), theme.heading()),
                Span::raw(last),
            ]));
        let data = super::host::fit(data, area.width as usize);
        let mut spark = Sparkline::default().block(block).data(&data);
        if i < 2 {
            spark = spark.max(100);
        }
        frame.render_widget(spark.style(theme.ok()), area);
    }
}

fn render_usage(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect, s: &MetricsSample) {
    let bar_w = (area.width as usize).saturating_sub(12).clamp(4, 40);
    let pct = |used: u64, total: u64| {
        if total > 0 {
            used as f32 * 100.0 / total as f32
        } else {
            0.0
        }
    };
    let line = |label: String, p: f32| {
        Line::from(vec![
            Span::raw(format!("{label:<5}")),
            Span::styled(bar(p, bar_w), theme.level(p)),
            Span::raw(format!(" {p:>3.0}%")),
        ])
    };
    let mut lines = vec![
        line("cpu".into(), s.cpu_pct),
        line("mem".into(), pct(s.mem_used, s.mem_total)),
        line("swap".into(), pct(s.swap_used, s.swap_total)),
    ];
    lines.extend(
        s.per_core_pct
            .iter()
            .enumerate()
            .map(|(i, c)| line(format!("c{i}"), *c)),
    );
    lines.extend(
        s.disks
            .iter()
            .map(|d| line(truncate(&d.mount, 5), pct(d.used, d.total))),
    );
    lines.extend(super::host::depth_lines(app, theme, s));
    let title = if app.host_time.scroll > 0 {
        "usage ↑".to_string()
    } else {
        "usage".to_string()
    };
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((app.host_time.scroll, 0))
            .block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn render_processes(theme: Theme, frame: &mut Frame<'_>, area: Rect, s: &MetricsSample) {
    let [top_cpu, top_mem] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    for (list, title, area) in [
        (&s.top_cpu, "top by cpu", top_cpu),
        (&s.top_mem, "top by memory", top_mem),
    ] {
        let rows: Vec<Row<'_>> = list
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
        .header(Row::new(vec!["PID", "NAME", "CPU", "RSS"]).style(theme.heading()))
        .block(Block::default().borders(Borders::TOP).title(title));
        frame.render_widget(table, area);
    }
}
