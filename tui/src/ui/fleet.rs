//! The fleet table. Only the rows that fit are built, so 20,000 agents cost what 40 do.

use super::{Theme, spark};
use crate::app::{App, SORTS};
use crate::util::escaped;
use crate::{format, strings};
use flotilla_wire::host::HostSummary;
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
    // Only once an agent reported a container or a unit: a fleet without any keeps its room.
    let show_work = app
        .workload_counts
        .values()
        .any(|c| c.containers_total > 0 || c.units_total > 0);
    // Likewise a GPU column once any agent has a GPU, a SMART column once any disk failed.
    let show_gpu = app.host_summaries.values().any(|h| h.gpus > 0);
    let show_smart = app.host_summaries.values().any(|h| h.smart_failed > 0);
    // Agents with an alert firing unsilenced get a `!` after their dot, coloured by the loudest.
    let affected = app.alerts.affected();
    let cols = Columns::fit(
        area.width,
        wide,
        !affected.is_empty(),
        show_work,
        show_gpu,
        show_smart,
    );
    let mut header = vec![
        Cell::from(" "),
        Cell::from(title("NAME", "name")),
        Cell::from(title("CPU", "cpu")),
        Cell::from(title("MEM", "mem")),
        Cell::from(title("DISK", "disk")),
        Cell::from(title("NET/s", "net")),
    ];
    if cols.hist {
        header.push(Cell::from("CPU HIST"));
    }
    if cols.uptime {
        header.push(Cell::from(title("UP", "uptime")));
    }
    if show_work {
        header.push(Cell::from("CTRS !"));
    }
    if show_gpu {
        header.push(Cell::from("GPU"));
    }
    if show_smart {
        header.push(Cell::from("SMART"));
    }
    if wide {
        header.extend([
            Cell::from(title("SEEN", "last-seen")),
            Cell::from("VERSION"),
        ]);
    }
    if cols.labels {
        header.push(Cell::from("LABELS"));
    }
    let widths = cols.widths();
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
            ];
            if cols.hist {
                cells.push(Cell::from(history));
            }
            if cols.uptime {
                cells.push(Cell::from(uptime));
            }
            let host = app.host_summaries.get(&a.id);
            if show_work {
                cells.push(work_cell(app.workload_counts.get(&a.id), theme));
            }
            if show_gpu {
                cells.push(gpu_cell(host, theme));
            }
            if show_smart {
                cells.push(smart_cell(host, theme));
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
                ]);
            }
            if cols.labels {
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

/// `2  50%`: GPUs and their mean utilisation, coloured by the busiest; empty without a GPU.
fn gpu_cell(host: Option<&HostSummary>, theme: Theme) -> Cell<'static> {
    let Some(h) = host.filter(|h| h.gpus > 0) else {
        return Cell::from("");
    };
    let util = h
        .gpu_util_mean_pct
        .map_or_else(|| "   -".into(), |p| format!("{p:>3}%"));
    Cell::from(format!("{} {util}", h.gpus))
        .style(theme.level(f32::from(h.gpu_util_max_pct.unwrap_or(0))))
}

/// `1 bad` in red: disks whose SMART self-assessment failed; empty when none did.
fn smart_cell(host: Option<&HostSummary>, theme: Theme) -> Cell<'static> {
    match host.map_or(0, |h| h.smart_failed) {
        0 => Cell::from(""),
        n => Cell::from(Span::styled(format!("{n} bad"), theme.bad())),
    }
}

/// Which optional columns the fleet table shows at a width, and their constraints in order.
#[derive(Debug, Clone, Copy)]
struct Columns {
    alert_mark: bool,
    hist: bool,
    uptime: bool,
    work: bool,
    gpu: bool,
    smart: bool,
    wide: bool,
    labels: bool,
}

impl Columns {
    /// Keeps every column that fits `width`, dropping the least useful first: the CPU sparkline,
    /// then uptime, then labels. The counts, GPU and SMART columns are kept because a fleet only
    /// shows them when some agent has something to say there.
    fn fit(width: u16, wide: bool, alert_mark: bool, work: bool, gpu: bool, smart: bool) -> Self {
        let mut cols = Self {
            alert_mark,
            hist: true,
            uptime: true,
            work,
            gpu,
            smart,
            wide,
            labels: true,
        };
        for drop in [
            |c: &mut Self| c.hist = false,
            |c: &mut Self| c.uptime = false,
            |c: &mut Self| c.labels = false,
        ] {
            if cols.needed() <= width {
                break;
            }
            drop(&mut cols);
        }
        cols
    }

    /// The smallest width the columns take, spacing included.
    fn needed(&self) -> u16 {
        let widths = self.widths();
        let sum: u16 = widths
            .iter()
            .map(|c| match c {
                Constraint::Length(n) | Constraint::Min(n) => *n,
                _ => 0,
            })
            .sum();
        sum + u16::try_from(widths.len().saturating_sub(1)).unwrap_or(u16::MAX)
    }

    fn widths(&self) -> Vec<Constraint> {
        let mut w = vec![
            Constraint::Length(if self.alert_mark { 3 } else { 2 }),
            Constraint::Min(12),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(7),
        ];
        if self.hist {
            w.push(Constraint::Length(crate::app::SPARK_POINTS as u16));
        }
        if self.uptime {
            w.push(Constraint::Length(6));
        }
        if self.work {
            w.push(Constraint::Length(9));
        }
        if self.gpu {
            w.push(Constraint::Length(7));
        }
        if self.smart {
            w.push(Constraint::Length(6));
        }
        if self.wide {
            w.extend([Constraint::Length(9), Constraint::Length(8)]);
        }
        if self.labels {
            w.push(Constraint::Min(if self.wide { 16 } else { 8 }));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use crate::app::App;
    use crate::app::workload_tests::{db1, fixture, web1};
    use crate::event::Event;

    use flotilla_wire::Role;
    use flotilla_wire::host::HostSummary;
    use flotilla_wire::msg::FleetEvent;

    fn screen(app: &App, width: u16, height: u16) -> String {
        crate::ui::render_text(app, width, height)
    }

    fn host(app: &mut App, id: flotilla_wire::IdentityId, summary: HostSummary) {
        app.update(Event::Fleet(Box::new(FleetEvent::Host { id, summary })));
    }

    /// web-1 has two GPUs, db-1 a failed disk.
    fn gpu_and_failed_disk() -> App {
        let mut app = fixture(Role::Operator);
        host(
            &mut app,
            web1(),
            HostSummary {
                gpus: 2,
                gpu_util_mean_pct: Some(45),
                gpu_util_max_pct: Some(90),
                smart_failed: 0,
            },
        );
        host(
            &mut app,
            db1(),
            HostSummary {
                smart_failed: 1,
                ..HostSummary::default()
            },
        );
        app
    }

    fn row<'a>(screen: &'a str, name: &str) -> &'a str {
        screen
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{screen}"))
    }

    #[test]
    fn fleet_with_gpu_and_failed_smart() {
        let app = gpu_and_failed_disk();
        let narrow = screen(&app, 80, 24);
        for line in narrow.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        insta::assert_snapshot!("fleet_gpu_smart_80x24", narrow);
        insta::assert_snapshot!("fleet_gpu_smart_160x48", screen(&app, 160, 48));
    }

    #[test]
    fn host_event_updates_the_row_and_a_snapshot_clears_it() {
        let app = fixture(Role::Operator);
        let before = screen(&app, 80, 24);
        assert!(
            !before.contains("GPU") && !before.contains("SMART"),
            "{before}"
        );
        let mut app2 = gpu_and_failed_disk();
        let shown = screen(&app2, 80, 24);
        assert!(row(&shown, "web-1").contains("2  45%"), "{shown}");
        assert!(row(&shown, "db-1").contains("1 bad"), "{shown}");
        assert!(!row(&shown, "web-1").contains("bad"), "{shown}");

        // A changed summary replaces the old one; an empty one removes the agent's entry.
        host(
            &mut app2,
            web1(),
            HostSummary {
                gpus: 2,
                gpu_util_mean_pct: Some(5),
                gpu_util_max_pct: Some(7),
                smart_failed: 0,
            },
        );
        host(&mut app2, db1(), HostSummary::default());
        assert!(!app2.host_summaries.contains_key(&db1()));
        let shown = screen(&app2, 80, 24);
        assert!(row(&shown, "web-1").contains("2   5%"), "{shown}");
        assert!(!shown.contains("SMART"), "{shown}");

        // A new snapshot starts over: summaries follow it again.
        app2.update(Event::Fleet(Box::new(FleetEvent::Snapshot(Vec::new()))));
        assert!(app2.host_summaries.is_empty());
    }
}
