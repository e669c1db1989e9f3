//! The agent view's charts panel (`c`): the agent's per-device series on the left, one picked with
//! ↑↓, and its history over the picker's span on the right as a line chart with a time axis
//! (`-1h` … `now`) and a value axis, titled like the host-total charts (`net eth0 1h`) with the
//! live values after the title.

use crate::app::App;
use crate::app::host::charts::{ChartSeries, custom_series_name, gpu_series_name};
use crate::format;
use crate::ui::Theme;
use crate::util::escaped;
use flotilla_wire::history::{Metric, SeriesKind, SeriesPoints};
use flotilla_wire::host::SmartHealth;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Chart, Dataset, GraphType, LegendPosition, Paragraph,
};

/// Narrowest and widest series list: `net enp0s31f6` fits 18 columns, and the chart keeps the
/// rest of an 80-column terminal.
const LIST_WIDTH: (u16, u16) = (14, 24);

/// Draws the list and the chart of the picked series into `area`.
pub(in crate::ui) fn render(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let (list, at) = app.charted();
    let list_w = (area.width / 4).clamp(LIST_WIDTH.0, LIST_WIDTH.1);
    let [list_area, chart_area] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(10)])
            .spacing(1)
            .areas(area);
    render_list(theme, frame, list_area, &list, at);
    let Some(series) = at.and_then(|i| list.get(i)) else {
        let block = Block::default().borders(Borders::TOP).title("charts");
        frame.render_widget(
            Paragraph::new("no per-device series reported yet").block(block),
            chart_area,
        );
        return;
    };
    render_chart(app, theme, frame, chart_area, series);
}

fn render_list(
    theme: Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    list: &[ChartSeries],
    at: Option<usize>,
) {
    let rows = usize::from(area.height.saturating_sub(1)).max(1);
    let at = at.unwrap_or(0);
    // Keep the pick in view: scroll once it would fall below the last row.
    let first = (at + 1).saturating_sub(rows);
    let width = usize::from(area.width.saturating_sub(1));
    let lines: Vec<Line<'_>> = list
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, c)| {
            let text: String = c.label().chars().take(width.saturating_sub(2)).collect();
            if i == at {
                Line::from(Span::styled(format!("› {text}"), theme.selected()))
            } else {
                Line::from(format!("  {text}"))
            }
        })
        .collect();
    let title = format!("series {}/{}", (at + 1).min(list.len()), list.len());
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

/// A value of `metric` as the axis and title show it: bytes (per second for rates), percent,
/// degrees, or the bare number.
fn value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::DiskPct | Metric::GpuUtil | Metric::IoBusy => format!("{v:.0}%"),
        Metric::Temp => format!("{v:.0}°C"),
        Metric::DiskUsed | Metric::GpuMem => format::bytes(v.max(0.0) as u64),
        m if m.is_bytes() => format!("{}/s", format::bytes(v.max(0.0) as u64)),
        _ if v.abs() >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// The live values of `series` after its title: from the polled sample (mounts, interfaces,
/// temperatures) or the hub's host depth (devices, GPUs, custom series).
fn live(app: &App, series: &ChartSeries) -> String {
    let name = series.selector.name.as_str();
    let sample = app.focused_sample();
    let detail = app.host_time.view.as_ref().and_then(|v| v.detail.as_ref());
    let metric = series.metrics.first().copied();
    match series.selector.kind {
        SeriesKind::Disk => sample
            .and_then(|s| s.disks.iter().find(|d| d.mount == name))
            .map(|d| {
                let pct = if d.total > 0 {
                    d.used as f64 * 100.0 / d.total as f64
                } else {
                    0.0
                };
                format!("{pct:.0}% of {}", format::bytes(d.total))
            }),
        SeriesKind::Net => sample
            .and_then(|s| s.nets.iter().find(|n| n.iface == name))
            .map(|n| {
                format!(
                    "rx {}/s tx {}/s",
                    format::bytes(n.rx_bps),
                    format::bytes(n.tx_bps)
                )
            }),
        SeriesKind::Io => detail
            .and_then(|d| d.block_io.iter().find(|io| io.device == name))
            .map(|io| {
                format!(
                    "read {}/s write {}/s",
                    format::bytes(io.read_bps),
                    format::bytes(io.write_bps)
                )
            }),
        SeriesKind::Temp => sample
            .and_then(|s| s.temps.iter().find(|t| t.label == name))
            .map(|t| format!("{:.0}°C", t.celsius)),
        SeriesKind::Gpu => detail
            .and_then(|d| d.gpus.iter().find(|g| gpu_series_name(g) == name))
            .and_then(|g| match metric {
                Some(Metric::GpuMem) => g.mem_used.map(|used| {
                    let total = g.mem_total.map(format::bytes).unwrap_or_default();
                    format!("{} / {total}", format::bytes(used))
                }),
                _ => g.util_pct.map(|u| format!("{u:.0}%")),
            }),
        SeriesKind::Custom => detail.and_then(|d| {
            d.custom.iter().find_map(|c| {
                let listed = custom_series_name(&c.name, &c.labels);
                (listed == name).then(|| value(Metric::Custom, c.value))
            })
        }),
    }
    .unwrap_or_default()
}

/// A block device's SMART health after its title (`smart passed`, `failed` in the alarm style),
/// where the agent's report names the device (`/dev/sda` for `io sda`).
fn smart(app: &App, theme: Theme, series: &ChartSeries) -> Option<Span<'static>> {
    if series.selector.kind != SeriesKind::Io {
        return None;
    }
    let report = app.host_time.view.as_ref()?.report.as_ref()?;
    let disk = report
        .disks
        .iter()
        .find(|d| d.device.rsplit('/').next() == Some(series.selector.name.as_str()))?;
    let style = match disk.health {
        SmartHealth::Failed => theme.bad(),
        SmartHealth::Passed => theme.ok(),
        _ => theme.dim(),
    };
    Some(Span::styled(
        format!(" smart {}", disk.health.as_str()),
        style,
    ))
}

fn render_chart(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect, series: &ChartSeries) {
    let span_label = app.host_time.range_label();
    let span_s = app.history_span_s() as f64;
    let mut title = vec![
        Span::styled(format!("{} {span_label} ", series.label()), theme.heading()),
        Span::raw(escaped(&live(app, series)).into_owned()),
    ];
    title.extend(smart(app, theme, series));
    let title = Line::from(title);
    let block = Block::default().borders(Borders::TOP).title(title);
    let Some(answer) = app.chart_answer() else {
        frame.render_widget(Paragraph::new("asking the hub…").block(block), area);
        return;
    };
    let found = match &answer.result {
        Ok(found) => found,
        Err(e) => {
            let text = format!("cannot read: {}", escaped(e));
            frame.render_widget(Paragraph::new(text).block(block), area);
            return;
        }
    };
    let now = app.now_ms as f64;
    let lines: Vec<(Metric, Vec<(f64, f64)>)> = series
        .metrics
        .iter()
        .map(|m| {
            let points = found
                .iter()
                .filter(|s: &&SeriesPoints| s.metric == *m)
                .flat_map(|s| &s.points)
                .map(|p| (((p.start_ms as f64 - now) / 1000.0).max(-span_s), p.avg))
                .collect();
            (*m, points)
        })
        .collect();
    let Some(unit) = series.metrics.first().copied() else {
        return;
    };
    let top = if series.is_pct() {
        100.0
    } else {
        let peak = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(0.0_f64, f64::max);
        if peak > 0.0 { peak * 1.1 } else { 1.0 }
    };
    let styles = [theme.ok(), theme.warn()];
    let markers = [Marker::Braille, Marker::Dot];
    let datasets: Vec<Dataset<'_>> = lines
        .iter()
        .enumerate()
        .map(|(i, (m, points))| {
            Dataset::default()
                .name(m.field())
                .marker(markers[i % markers.len()])
                .graph_type(GraphType::Line)
                .style(styles[i % styles.len()])
                .data(points)
        })
        .collect();
    let empty = lines.iter().all(|(_, p)| p.is_empty());
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .bounds([-span_s, 0.0])
                .labels([format!("-{span_label}"), "now".to_string()])
                .style(theme.dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels([value(unit, 0.0), value(unit, top)])
                .style(theme.dim()),
        )
        // The legend over the oldest points, not the newest.
        .legend_position(Some(LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)));
    frame.render_widget(chart, area);
    if empty && area.height > 2 {
        let note = Rect {
            y: area.y + 1,
            height: 1,
            x: area.x + area.width / 3,
            width: area.width - area.width / 3,
        };
        frame.render_widget(Paragraph::new("no history kept yet"), note);
    }
}

#[cfg(test)]
mod tests {
    use crate::app::View;
    use crate::app::host::charts::ChartAnswer;
    use crate::app::workload_tests::{fixture, key, web1};
    use crate::event::Event;

    use crossterm::event::KeyCode;
    use flotilla_wire::Role;
    use flotilla_wire::history::{Metric, SeriesPoint, SeriesPoints};
    use flotilla_wire::msg::{DiskUsage, MetricsSample, NetRate};

    fn screen(app: &crate::app::App, width: u16, height: u16) -> String {
        crate::ui::render_text(app, width, height)
    }

    /// web-1's view with the charts panel open on `eth0` and an hour of its history answered:
    /// receive climbing to 10 KiB/s, send flat at 1 KiB/s.
    fn charted() -> crate::app::App {
        let mut app = fixture(Role::Viewer);
        app.now_ms = 1_800_000_000_000;
        app.view = View::Agent(web1());
        app.agents.get_mut(&web1()).expect("web-1").latest = Some(MetricsSample {
            disks: vec![DiskUsage {
                mount: "/".into(),
                used: 1 << 30,
                total: 4 << 30,
            }],
            nets: vec![NetRate {
                iface: "eth0".into(),
                rx_bps: 10 << 10,
                tx_bps: 1 << 10,
            }],
            ..MetricsSample::default()
        });
        app.update(key(KeyCode::Char('c')));
        app.update(key(KeyCode::Char('j')));
        let (list, at) = app.charted();
        let series = list[at.expect("pick")].clone();
        let minute = |i: u64| app.now_ms - (60 - i) * 60_000;
        let points = |f: &dyn Fn(u64) -> f64| -> Vec<SeriesPoint> {
            (0..60)
                .map(|i| SeriesPoint {
                    start_ms: minute(i),
                    samples: 12,
                    avg: f(i),
                    max: f(i),
                })
                .collect()
        };
        let found = vec![
            SeriesPoints {
                metric: Metric::NetRx,
                name: "eth0".into(),
                resolution_s: 60,
                points: points(&|i| (i * 10240 / 59) as f64),
            },
            SeriesPoints {
                metric: Metric::NetTx,
                name: "eth0".into(),
                resolution_s: 60,
                points: points(&|_| 1024.0),
            },
            SeriesPoints {
                metric: Metric::NetRxErrors,
                name: "eth0".into(),
                resolution_s: 60,
                points: points(&|_| 0.0),
            },
        ];
        assert!(app.update(Event::HostSeries {
            agent: web1().to_string(),
            answer: Box::new(ChartAnswer {
                series,
                since_s: 3600,
                result: Ok(found),
            }),
        }));
        app
    }

    #[test]
    fn an_interface_chart_has_its_title_live_values_and_axes_at_80x24() {
        let app = charted();
        let shown = screen(&app, 80, 24);
        for want in [
            "series 2/2",
            "› net eth0",
            "net eth0 1h rx 10.0K/s tx 1.0K/s",
            "-1h",
            "now",
            "11.0K/s",
        ] {
            assert!(shown.contains(want), "no {want:?} in\n{shown}");
        }
        insta::assert_snapshot!("charts_net_80x24", shown);
        insta::assert_snapshot!("charts_net_160x48", screen(&app, 160, 48));
    }

    #[test]
    fn a_block_device_chart_says_its_disks_smart_health() {
        use flotilla_wire::host::{BlockIo, DiskHealth, HostDetail, HostReport, HostView};
        let mut app = charted();
        let view = HostView {
            id: web1(),
            name: "web-1".into(),
            detail: Some(HostDetail {
                block_io: vec![BlockIo {
                    device: "sda".into(),
                    read_bps: 2048,
                    ..BlockIo::default()
                }],
                ..HostDetail::default()
            }),
            report: Some(HostReport {
                disks: vec![DiskHealth {
                    device: "/dev/sda".into(),
                    health: flotilla_wire::host::SmartHealth::Failed,
                    ..DiskHealth::default()
                }],
                ..HostReport::default()
            }),
        };
        assert!(app.update(Event::HostView(Box::new(view))));
        // The block device comes before the interfaces: one up from eth0.
        app.update(key(KeyCode::Char('k')));
        let shown = screen(&app, 80, 24);
        assert!(
            shown.contains("io sda 1h read 2.0K/s write 0B/s smart failed"),
            "{shown}"
        );
        assert!(shown.contains("series 2/3"), "{shown}");
    }

    #[test]
    fn a_longer_span_waits_for_its_own_answer_and_an_error_is_said() {
        let mut app = charted();
        app.update(key(KeyCode::Char(']')));
        let shown = screen(&app, 80, 24);
        assert!(
            shown.contains("net eth0 6h") && shown.contains("asking the hub…"),
            "{shown}"
        );
        let (list, at) = app.charted();
        app.update(Event::HostSeries {
            agent: web1().to_string(),
            answer: Box::new(ChartAnswer {
                series: list[at.expect("pick")].clone(),
                since_s: 6 * 3600,
                result: Err("no agent \"web-1\"".into()),
            }),
        });
        let shown = screen(&app, 80, 24);
        assert!(shown.contains("cannot read: no agent \"web-1\""), "{shown}");
    }
}
