//! Containers and units: an agent's tabs, the fleet-wide lists with their host column, and the
//! logs pane. Every name here comes from an agent (or a container's own output) and is shown
//! escaped. Only the rows that fit are built.

use super::{Theme, spark};
use crate::app::workloads::{
    LogState, LogView, Trend, WorkKind, WorkList, WorkRow, container_status,
};
use crate::app::{App, Fetched, View};
use crate::format;
use crate::util::escaped;
use flotilla_wire::IdentityId;
use flotilla_wire::workloads::{ContainerRow, UnitRow};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};

/// From this width the lists add restarts, uptime, ports or enablement, and a memory sparkline.
const WIDE: u16 = 120;
/// Sparkline cells at 80 columns; wide terminals show every point kept.
const SPARK_NARROW: usize = 10;

/// The first `n` characters of `s` as shown: escaped, then cut.
fn cut(s: &str, n: usize) -> String {
    escaped(s).chars().take(n).collect()
}

/// The tab line of an agent's view: overview, containers, services, with their counts.
pub(super) fn render_tabs(
    app: &App,
    theme: Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    id: &IdentityId,
    current: Option<WorkKind>,
) {
    let counts = app.workload_counts.get(id);
    let tab = |label: String, on: bool| {
        if on {
            Span::styled(format!(" {label} "), theme.selected())
        } else {
            Span::raw(format!(" {label} "))
        }
    };
    let containers = match counts {
        Some(c) => format!("containers {}/{}", c.containers_running, c.containers_total),
        None => "containers".into(),
    };
    let services = match counts {
        Some(c) => format!("services {}", c.units_total),
        None => "services".into(),
    };
    let mut spans = vec![
        tab("overview".into(), current.is_none()),
        Span::styled("│", theme.dim()),
        tab(containers, current == Some(WorkKind::Containers)),
    ];
    if let Some(c) = counts.filter(|c| c.containers_troubled > 0) {
        spans.push(Span::styled(
            format!("{} troubled ", c.containers_troubled),
            theme.bad(),
        ));
    }
    spans.extend([
        Span::styled("│", theme.dim()),
        tab(services, current == Some(WorkKind::Services)),
    ]);
    if let Some(c) = counts.filter(|c| c.units_failed > 0) {
        spans.push(Span::styled(
            format!("{} failed ", c.units_failed),
            theme.bad(),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A containers or units list: one agent's (with its tab line) or the fleet's (with a host
/// column).
pub(super) fn render_list(
    app: &App,
    theme: Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    agent: Option<&IdentityId>,
    kind: WorkKind,
) {
    let [tabs, status, table] = Layout::vertical([
        Constraint::Length(u16::from(agent.is_some())),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(area);
    if let Some(id) = agent {
        render_tabs(app, theme, frame, tabs, id, Some(kind));
    }
    let filtering = app.filtering && matches!(app.view, View::Workloads { .. });
    match kind {
        WorkKind::Containers => {
            let list = &app.containers;
            render_status(theme, frame, status, list, kind, filtering);
            if ready(list, theme, frame, table, kind) {
                containers_table(app, theme, frame, table, agent.is_none());
            }
        }
        WorkKind::Services => {
            let list = &app.services;
            render_status(theme, frame, status, list, kind, filtering);
            if ready(list, theme, frame, table, kind) {
                units_table(app, theme, frame, table, agent.is_none());
            }
        }
    }
}

/// Says why there are no rows, or returns true when there are.
fn ready<R: WorkRow>(
    list: &WorkList<R>,
    theme: Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    kind: WorkKind,
) -> bool {
    let msg = match &list.rows {
        Fetched::Loading => format!("asking the hub for {}…", kind.title()),
        Fetched::Failed(e) => format!("no {}: {}", kind.title(), escaped(e)),
        Fetched::Ready(rows) if rows.is_empty() => format!("no {} reported", kind.title()),
        Fetched::Ready(_) if list.visible_len() == 0 => {
            format!("no {} match the filter", kind.title())
        }
        Fetched::Ready(_) => return true,
    };
    let style = if matches!(list.rows, Fetched::Failed(_)) {
        theme.bad()
    } else {
        theme.dim()
    };
    frame.render_widget(Paragraph::new(Span::styled(msg, style)), area);
    false
}

/// `12 containers · 1 troubled · sort trouble · /web▏`
fn render_status<R: WorkRow>(
    theme: Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    list: &WorkList<R>,
    kind: WorkKind,
    filtering: bool,
) {
    let total = match &list.rows {
        Fetched::Ready(r) => r.len(),
        _ => 0,
    };
    let mut spans = vec![Span::styled(
        format!("{total} {}", kind.title()),
        theme.heading(),
    )];
    if list.visible_len() != total {
        spans.push(Span::raw(format!(" ({} shown)", list.visible_len())));
    }
    let troubled = list.troubled();
    if troubled > 0 {
        let word = match kind {
            WorkKind::Containers => "troubled",
            WorkKind::Services => "failed",
        };
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(format!("{troubled} {word}"), theme.bad()));
    }
    let sorts = kind.sorts();
    spans.push(Span::styled(
        format!(" · sort {}", sorts[list.sort % sorts.len()]),
        theme.dim(),
    ));
    if filtering || !list.filter.is_empty() {
        spans.push(Span::raw("  "));
        spans.push(Span::styled("/", theme.heading()));
        if list.filter.is_empty() && filtering {
            spans.push(Span::styled("name, host=, state=, image=", theme.dim()));
        } else {
            spans.push(Span::raw(list.filter.clone()));
        }
        if filtering {
            spans.push(Span::raw("▏"));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Sparkline of the last `width` points, scaled 0-100 (CPU can pass 100: several cores).
fn trend_spark(
    points: &std::collections::VecDeque<f32>,
    width: usize,
    scale_to_max: bool,
) -> String {
    let skip = points.len().saturating_sub(width);
    let max = points.iter().copied().fold(0.0f32, f32::max);
    spark(points.iter().skip(skip).map(|&p| {
        if scale_to_max && max > 0.0 {
            p * 100.0 / max
        } else {
            p
        }
    }))
}

fn pct(o: Option<f32>) -> String {
    o.map(|v| format!("{v:>3.0}%"))
        .unwrap_or_else(|| "   -".into())
}

fn title(name: &'static str, key: &str, sort: &str) -> String {
    if key == sort {
        format!("{name}▼")
    } else {
        name.to_string()
    }
}

/// The row window that keeps the cursor in view.
fn window(selected: usize, height: u16) -> (usize, usize) {
    let rows_fit = height.saturating_sub(1) as usize;
    (
        selected.saturating_sub(rows_fit.saturating_sub(1)),
        rows_fit,
    )
}

/// Rows from which the containers list shows the selected container's last hour below it.
const HISTORY_FROM_ROWS: u16 = 30;
/// Rows of that history panel.
const HISTORY_ROWS: u16 = 6;

fn containers_table(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect, fleet: bool) {
    let area = if area.height >= HISTORY_FROM_ROWS {
        let [table, history] =
            Layout::vertical([Constraint::Min(4), Constraint::Length(HISTORY_ROWS)]).areas(area);
        render_history(app, theme, frame, history);
        table
    } else {
        area
    };
    let list = &app.containers;
    let wide = area.width >= WIDE;
    let spark_w = if wide {
        crate::app::workloads::TREND_POINTS
    } else {
        SPARK_NARROW
    };
    let sort = WorkKind::Containers.sorts()[list.sort % WorkKind::Containers.sorts().len()];
    let mut header = vec![Cell::from(" ")];
    let mut widths = vec![Constraint::Length(1)];
    if fleet {
        header.push(Cell::from(title("HOST", "host", sort)));
        widths.push(Constraint::Length(if wide { 16 } else { 10 }));
    }
    header.extend([
        Cell::from(title("NAME", "name", sort)),
        Cell::from(title("STATE", "trouble", sort)),
        Cell::from(title("CPU", "cpu", sort)),
        Cell::from(title("MEM", "mem", sort)),
        Cell::from("CPU HIST"),
    ]);
    widths.extend([
        Constraint::Min(12),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(spark_w as u16),
    ]);
    if wide {
        header.extend([
            Cell::from("MEM HIST"),
            Cell::from("RST"),
            Cell::from("UP"),
            Cell::from("PORTS"),
        ]);
        widths.extend([
            Constraint::Length(spark_w as u16),
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Length(16),
        ]);
    }
    header.push(Cell::from("IMAGE"));
    widths.push(Constraint::Min(8));
    let (offset, rows_fit) = window(list.selected, area.height);
    let rows: Vec<Row<'_>> = list
        .visible_rows()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, r)| {
            container_row(
                r,
                list.trends.get(&r.key()),
                app,
                theme,
                fleet,
                wide,
                spark_w,
                i == list.selected,
            )
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.heading()))
        .column_spacing(1);
    frame.render_widget(table, area);
}

/// The selected container's CPU and memory over the last hour, a point a minute, from the hub's
/// history (`Query::ContainerHistory`).
fn render_history(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(row) = app.containers.selected_row() else {
        return;
    };
    let name = escaped(&row.info.name);
    let minutes = match app.container_history.as_ref().map(|h| &h.minutes) {
        Some(Fetched::Ready(m)) if !m.is_empty() => m,
        other => {
            let msg = match other {
                Some(Fetched::Failed(e)) => format!("{name}: no history: {}", escaped(e)),
                Some(Fetched::Ready(_)) => {
                    format!("{name}: no history yet (the hub keeps a point a minute)")
                }
                _ => format!("{name}: asking for its last hour…"),
            };
            frame.render_widget(
                Paragraph::new(Span::styled(msg, theme.dim()))
                    .block(Block::default().borders(Borders::TOP)),
                area,
            );
            return;
        }
    };
    let [cpu_area, mem_area] =
        Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(area);
    let tail = |w: u16| minutes.len().saturating_sub(w.saturating_sub(1) as usize);
    let cpu: Vec<u64> = minutes.iter().map(|m| m.cpu_avg.round() as u64).collect();
    let mem: Vec<u64> = minutes.iter().map(|m| m.mem_avg).collect();
    let last_cpu = cpu.last().copied().unwrap_or(0);
    let last_mem = mem.last().copied().unwrap_or(0);
    for (area, title, data, last, max) in [
        (
            cpu_area,
            format!("{name} cpu 1h "),
            &cpu,
            format!("{last_cpu}%"),
            Some(cpu.iter().copied().max().unwrap_or(0).max(100)),
        ),
        (
            mem_area,
            "mem 1h ".to_string(),
            &mem,
            format::bytes(last_mem),
            None,
        ),
    ] {
        let block = Block::default()
            .borders(Borders::TOP)
            .title(Line::from(vec![
                Span::styled(title, theme.heading()),
                Span::raw(last),
            ]));
        let data = &data[tail(area.width).min(data.len())..];
        let mut spark = Sparkline::default().block(block).data(data);
        if let Some(max) = max {
            spark = spark.max(max);
        }
        frame.render_widget(spark.style(theme.ok()), area);
    }
}

#[allow(clippy::too_many_arguments)]
fn container_row<'a>(
    r: &'a ContainerRow,
    trend: Option<&Trend>,
    app: &App,
    theme: Theme,
    fleet: bool,
    wide: bool,
    spark_w: usize,
    selected: bool,
) -> Row<'a> {
    let status = container_status(r.info.state, r.info.health);
    let (dot, dot_style) = if r.troubled() {
        ("!", theme.bad())
    } else if r.info.state == flotilla_wire::workloads::ContainerState::Running {
        ("●", theme.ok())
    } else {
        ("○", theme.dim())
    };
    let mut cells = vec![Cell::from(Span::styled(dot, dot_style))];
    if fleet {
        cells.push(Cell::from(escaped(&r.agent_name).into_owned()));
    }
    let mem_pct = r.mem_pct();
    cells.extend([
        Cell::from(escaped(&r.info.name).into_owned()),
        Cell::from(status).style(if r.troubled() {
            theme.bad()
        } else {
            Style::default()
        }),
        Cell::from(pct(r.cpu())).style(theme.level(r.cpu().unwrap_or(0.0))),
        Cell::from(r.mem().map(format::bytes).unwrap_or_else(|| "-".into()))
            .style(theme.level(mem_pct.unwrap_or(0.0))),
        Cell::from(
            trend
                .map(|t| trend_spark(&t.cpu, spark_w, false))
                .unwrap_or_default(),
        ),
    ]);
    if wide {
        let up = match (r.info.state, r.info.started_ms) {
            (flotilla_wire::workloads::ContainerState::Running, Some(ms)) => {
                format::uptime(app.now_ms.saturating_sub(ms) / 1000)
            }
            _ => "-".into(),
        };
        let ports = r
            .info
            .ports
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| format!("{}→{}", p.host_port, p.container_port))
            .collect::<Vec<_>>()
            .join(",");
        cells.extend([
            Cell::from(
                trend
                    .map(|t| trend_spark(&t.mem, spark_w, false))
                    .unwrap_or_default(),
            ),
            Cell::from(r.info.restart_count.to_string()),
            Cell::from(up),
            Cell::from(ports),
        ]);
    }
    cells.push(Cell::from(cut(&r.info.image, 60)));
    let mut style = if r.info.state == flotilla_wire::workloads::ContainerState::Running {
        Style::default()
    } else {
        theme.dim()
    };
    if selected {
        style = theme.selected();
    }
    Row::new(cells).style(style)
}

fn units_table(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect, fleet: bool) {
    let list = &app.services;
    let wide = area.width >= WIDE;
    let spark_w = if wide {
        crate::app::workloads::TREND_POINTS
    } else {
        SPARK_NARROW
    };
    let sort = WorkKind::Services.sorts()[list.sort % WorkKind::Services.sorts().len()];
    let mut header = vec![Cell::from(" ")];
    let mut widths = vec![Constraint::Length(1)];
    if fleet {
        header.push(Cell::from(title("HOST", "host", sort)));
        widths.push(Constraint::Length(if wide { 16 } else { 10 }));
    }
    // At 80 columns the host column of a fleet list takes the sub-state's room: unit names are
    // long, and `failed` says what matters.
    let sub = wide || !fleet;
    header.extend([
        Cell::from(title("UNIT", "name", sort)),
        Cell::from(title("ACTIVE", "trouble", sort)),
    ]);
    widths.extend([Constraint::Min(20), Constraint::Length(8)]);
    if sub {
        header.push(Cell::from("SUB"));
        widths.push(Constraint::Length(9));
    }
    header.extend([
        Cell::from(title("CPU", "cpu", sort)),
        Cell::from(title("MEM", "mem", sort)),
        Cell::from("CPU HIST"),
    ]);
    widths.extend([
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(spark_w as u16),
    ]);
    if wide {
        header.extend([
            Cell::from("MEM HIST"),
            Cell::from("RST"),
            Cell::from("SINCE"),
            Cell::from("ENABLED"),
        ]);
        widths.extend([
            Constraint::Length(spark_w as u16),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(9),
        ]);
    }
    header.push(Cell::from("DESCRIPTION"));
    widths.push(Constraint::Min(8));
    let (offset, rows_fit) = window(list.selected, area.height);
    let rows: Vec<Row<'_>> = list
        .visible_rows()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, r)| {
            let trend = list.trends.get(&r.key());
            unit_row(
                r,
                trend,
                app,
                theme,
                fleet,
                wide,
                spark_w,
                i == list.selected,
            )
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.heading()))
        .column_spacing(1);
    frame.render_widget(table, area);
}

#[allow(clippy::too_many_arguments)]
fn unit_row<'a>(
    r: &'a UnitRow,
    trend: Option<&Trend>,
    app: &App,
    theme: Theme,
    fleet: bool,
    wide: bool,
    spark_w: usize,
    selected: bool,
) -> Row<'a> {
    let active = r.info.active_state == "active";
    let (dot, dot_style) = if r.troubled() {
        ("!", theme.bad())
    } else if active {
        ("●", theme.ok())
    } else {
        ("○", theme.dim())
    };
    let mut cells = vec![Cell::from(Span::styled(dot, dot_style))];
    if fleet {
        cells.push(Cell::from(escaped(&r.agent_name).into_owned()));
    }
    cells.extend([
        Cell::from(escaped(&r.info.name).into_owned()),
        Cell::from(cut(&r.info.active_state, 8)).style(if r.troubled() {
            theme.bad()
        } else {
            Style::default()
        }),
    ]);
    if wide || !fleet {
        cells.push(Cell::from(cut(&r.info.sub_state, 9)));
    }
    cells.extend([
        Cell::from(pct(r.cpu())).style(theme.level(r.cpu().unwrap_or(0.0))),
        Cell::from(r.mem().map(format::bytes).unwrap_or_else(|| "-".into())),
        Cell::from(
            trend
                .map(|t| trend_spark(&t.cpu, spark_w, false))
                .unwrap_or_default(),
        ),
    ]);
    if wide {
        cells.extend([
            // Units have no memory limit: the sparkline is scaled to its own peak.
            Cell::from(
                trend
                    .map(|t| trend_spark(&t.mem, spark_w, true))
                    .unwrap_or_default(),
            ),
            Cell::from(r.info.restarts.to_string()),
            Cell::from(
                r.info
                    .since_ms
                    .map(|ms| format::ago(ms, app.now_ms))
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(cut(&r.info.unit_file_state, 9)),
        ]);
    }
    cells.push(Cell::from(cut(&r.info.description, 80)));
    let mut style = if active || r.troubled() {
        Style::default()
    } else {
        theme.dim()
    };
    if selected {
        style = theme.selected();
    }
    Row::new(cells).style(style)
}

/// The logs pane: a status line, then the newest lines that fit (or those scrolled back to).
pub(super) fn render_logs(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(logs) = &app.logs else {
        frame.render_widget(
            Paragraph::new(Span::styled(
                "no log open: press l on a container or unit",
                theme.dim(),
            )),
            area,
        );
        return;
    };
    let [status, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let filtering = app.filtering && app.view == View::Logs;
    frame.render_widget(Paragraph::new(status_line(logs, theme, filtering)), status);
    let shown: Vec<_> = logs.shown().collect();
    let end = shown.len().saturating_sub(logs.scroll);
    let start = end.saturating_sub(body.height as usize);
    let lines: Vec<Line<'_>> = shown[start..end]
        .iter()
        .map(|l| {
            let base = if l.stderr {
                theme.warn()
            } else {
                Style::default()
            };
            highlight(&l.text, &logs.search, base, theme)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), body);
}

fn status_line(logs: &LogView, theme: Theme, filtering: bool) -> Line<'static> {
    let what = match &logs.source {
        flotilla_wire::workloads::LogSource::Container(_) => "container",
        flotilla_wire::workloads::LogSource::Unit(_) => "unit",
    };
    let mut spans = vec![Span::styled(
        format!(
            "{what} {} on {}",
            escaped(logs.what()),
            escaped(&logs.agent_name)
        ),
        theme.heading(),
    )];
    let (state, style) = match &logs.state {
        LogState::Opening => ("opening…".to_string(), theme.dim()),
        LogState::Streaming(_) if logs.paused => ("paused".to_string(), theme.warn()),
        LogState::Streaming(_) if logs.scroll > 0 => {
            (format!("{} lines below", logs.scroll), theme.warn())
        }
        LogState::Streaming(_) => ("following".to_string(), theme.ok()),
        LogState::Ended => ("ended".to_string(), theme.dim()),
        LogState::Failed(e) => (format!("failed: {}", escaped(e)), theme.bad()),
    };
    spans.push(Span::raw(" · "));
    spans.push(Span::styled(state, style));
    spans.push(Span::styled(
        format!(" · {} lines", logs.lines.len()),
        theme.dim(),
    ));
    if filtering || !logs.search.is_empty() {
        spans.push(Span::raw("  "));
        spans.push(Span::styled("/", theme.heading()));
        spans.push(Span::raw(logs.search.clone()));
        if filtering {
            spans.push(Span::raw("▏"));
        }
    }
    Line::from(spans)
}

/// A log line with every occurrence of `term` in reverse video.
fn highlight<'a>(text: &'a str, term: &str, base: Style, theme: Theme) -> Line<'a> {
    if term.is_empty() {
        return Line::from(Span::styled(text, base));
    }
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(term) {
        if at > 0 {
            spans.push(Span::styled(&rest[..at], base));
        }
        spans.push(Span::styled(&rest[at..at + term.len()], theme.selected()));
        rest = &rest[at + term.len()..];
    }
    if !rest.is_empty() {
        spans.push(Span::styled(rest, base));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {

    use crate::app::workload_tests::{
        all_containers, all_units, container, containers_open, fixture, key, web1,
    };
    use crate::app::{App, View};
    use crate::event::{Event, LogUpdate};
    use crossterm::event::KeyCode;
    use flotilla_wire::Role;
    use flotilla_wire::exec::OutputStream;
    use flotilla_wire::workloads::{ContainerState, Health, LogFrame};

    fn screen(app: &App, width: u16, height: u16) -> String {
        let out = crate::ui::render_text(app, width, height);
        assert!(
            !out.chars()
                .any(|c| c != '\n' && crate::util::must_escape(c)),
            "{out:?}"
        );
        out
    }

    fn both(name: &str, app: &App) {
        insta::assert_snapshot!(format!("{name}_80x24"), screen(app, 80, 24));
        insta::assert_snapshot!(format!("{name}_160x48"), screen(app, 160, 48));
    }

    fn answer_twice(app: &mut App) {
        // Two answers make a two-point sparkline.
        let mut rows = all_containers();
        for r in &mut rows {
            if let Some(s) = r.stats.as_mut() {
                s.cpu_pct = (s.cpu_pct * 0.5).round();
            }
        }
        app.update(Event::Containers {
            selector: app.containers.selector(),
            result: Ok(rows),
        });
        app.update(Event::Containers {
            selector: app.containers.selector(),
            result: Ok(all_containers()),
        });
    }

    #[test]
    fn fleet_containers() {
        let mut app = containers_open(Role::Operator);
        answer_twice(&mut app);
        // db-1's cache is selected; its last hour fills the panel under a tall list.
        let minutes = (0..60)
            .map(|i| flotilla_wire::workloads::ContainerMinute {
                start_ms: i * 60_000,
                cpu_avg: (i % 20) as f32 * 5.0,
                cpu_max: 100.0,
                mem_avg: (64 + i) << 20,
                ..Default::default()
            })
            .collect();
        let (agent, container) = app
            .container_history
            .as_ref()
            .map(|h| (h.agent.clone(), h.container.clone()))
            .expect("history asked");
        app.update(Event::ContainerHistory {
            agent,
            container,
            result: Ok(minutes),
        });
        both("fleet_containers", &app);
    }

    #[test]
    fn fleet_services() {
        let mut app = fixture(Role::Operator);
        app.update(key(KeyCode::Char('7')));
        app.update(Event::Services {
            selector: "all".into(),
            result: Ok(all_units()),
        });
        both("fleet_services", &app);
    }

    #[test]
    fn agent_tabs() {
        let mut app = fixture(Role::Operator);
        app.view = View::Agent(web1());
        insta::assert_snapshot!("agent_overview_tab_80x24", screen(&app, 80, 24));
        app.update(key(KeyCode::Tab));
        let rows = all_containers()
            .into_iter()
            .filter(|r| r.agent == web1())
            .collect::<Vec<_>>();
        app.update(Event::Containers {
            selector: web1().to_string(),
            result: Ok(rows),
        });
        both("agent_containers_tab", &app);
        app.update(key(KeyCode::Tab));
        app.update(Event::Services {
            selector: web1().to_string(),
            result: Ok(all_units()
                .into_iter()
                .filter(|r| r.agent == web1())
                .collect()),
        });
        insta::assert_snapshot!("agent_services_tab_80x24", screen(&app, 80, 24));
    }

    #[test]
    fn fleet_with_workload_counts() {
        let app = fixture(Role::Operator);
        insta::assert_snapshot!("fleet_with_counts_80x24", screen(&app, 80, 24));
    }

    #[test]
    fn confirmation_and_help() {
        let mut app = containers_open(Role::Operator);
        let pos = app
            .containers
            .visible_rows()
            .position(|r| r.info.name == "worker")
            .expect("worker");
        app.containers.selected = pos;
        app.update(key(KeyCode::Char('K')));
        insta::assert_snapshot!("confirm_kill_80x24", screen(&app, 80, 24));
        app.update(key(KeyCode::Char('n')));
        app.update(key(KeyCode::Char('?')));
        insta::assert_snapshot!("containers_help_80x24", screen(&app, 80, 24));
    }

    #[test]
    fn logs_pane() {
        let mut app = containers_open(Role::Viewer);
        app.update(key(KeyCode::Char('l')));
        let id = app.logs.as_ref().map(|l| l.id).expect("logs");
        let frame = |f: LogFrame| Event::Log {
            id,
            update: LogUpdate::Frame(Box::new(f)),
        };
        app.update(frame(LogFrame::Started {
            resolved: "x".into(),
        }));
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("GET /item/{i} 200\n"));
        }
        text.push_str("evil \x1b[2J\u{202e}line\n");
        app.update(frame(LogFrame::Data {
            stream: OutputStream::Stdout,
            at_ms: None,
            data: flotilla_wire::Chunk(text.into_bytes()),
        }));
        app.update(frame(LogFrame::Data {
            stream: OutputStream::Stderr,
            at_ms: None,
            data: flotilla_wire::Chunk(b"warning: slow request /item/39\n".to_vec()),
        }));
        both("logs_following", &app);
        app.update(key(KeyCode::Char('/')));
        for c in "item/3".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        app.update(key(KeyCode::Enter));
        app.update(key(KeyCode::Char(' ')));
        insta::assert_snapshot!("logs_search_paused_80x24", screen(&app, 80, 24));
    }

    #[test]
    fn hostile_names_are_shown_escaped() {
        let mut app = containers_open(Role::Operator);
        let mut evil = container(
            &web1(),
            "web\x1b[2J-1",
            "x\u{9b}y\u{202e}",
            ContainerState::Running,
            Health::None,
            1.0,
        );
        evil.info.image = "img\x07".into();
        evil.info.id = "ab".repeat(32);
        app.update(Event::Containers {
            selector: "all".into(),
            result: Ok(vec![evil]),
        });
        let shown = screen(&app, 160, 48);
        for s in [r"web\x1b[2J-1", r"x\u{9b}y\u{202e}", r"img\x07"] {
            assert!(shown.contains(s), "no {s} in\n{shown}");
        }
        // The confirmation, the footer's notice and the logs pane show it escaped, once; a name
        // that is no valid request name is sent by id.
        app.update(key(KeyCode::Char('K')));
        let id = "ab".repeat(32);
        let shown = screen(&app, 160, 48);
        assert!(
            shown.contains(&format!(r"kill {id} on web\x1b[2J-1? y/N")),
            "{shown}"
        );
        app.update(key(KeyCode::Char('y')));
        let shown = screen(&app, 160, 48);
        assert!(
            shown.contains(&format!(r"container kill {id} on web\x1b[2J-1: running")),
            "{shown}"
        );
        app.update(key(KeyCode::Char('l')));
        let shown = screen(&app, 160, 48);
        assert!(
            shown.contains(r"container x\u{9b}y\u{202e} on web\x1b[2J-1 · opening"),
            "{shown}"
        );
    }
}
