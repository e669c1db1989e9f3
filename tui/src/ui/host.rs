//! The agent view's time-dependent parts: chart points fitted to the chart's width whatever the
//! span (a 30-day span holds thousands of ten-minute buckets), and the top-process tables of a
//! minute in the past as the hub kept them.

pub(super) mod charts;

use super::Theme;
use crate::app::App;
use crate::format;
use crate::util::escaped;
use flotilla_wire::host::SmartHealth;
use flotilla_wire::msg::MetricsSample;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

/// `data` in at most `width` columns: each column the highest value of its run of points, so a
/// short spike in a long span still shows.
pub(super) fn fit(data: &[u64], width: usize) -> Vec<u64> {
    if width == 0 || data.len() <= width {
        return data.to_vec();
    }
    (0..width)
        .map(|col| {
            let from = col * data.len() / width;
            let to = ((col + 1) * data.len() / width).max(from + 1);
            data[from..to].iter().copied().max().unwrap_or(0)
        })
        .collect()
}

/// Host depth under the usage bars, one line per thing: block device I/O, interface rates,
/// GPUs, each disk's SMART health (failed in the alarm style), and custom series. Lines, not
/// charts, so the panel scrolls (↑↓) and stays readable at 80x24.
pub(super) fn depth_lines(app: &App, theme: Theme, s: &MetricsSample) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for n in &s.nets {
        lines.push(Line::from(format!(
            "net {} rx {}/s tx {}/s",
            escaped(&n.iface),
            format::bytes(n.rx_bps),
            format::bytes(n.tx_bps)
        )));
    }
    let Some(view) = &app.host_time.view else {
        return lines;
    };
    if let Some(d) = &view.detail {
        for io in &d.block_io {
            lines.push(Line::from(format!(
                "io {} r {}/s w {}/s {:.0}%",
                escaped(&io.device),
                format::bytes(io.read_bps),
                format::bytes(io.write_bps),
                io.busy_pct
            )));
        }
        for g in &d.gpus {
            // Only what the driver exposes: a narrow panel has no room for dashes.
            let mut parts = vec![format!("gpu{} {}", g.index, escaped(&g.name))];
            parts.extend(g.util_pct.map(|v| format!("{v:.0}%")));
            if let (Some(used), Some(total)) = (g.mem_used, g.mem_total) {
                parts.push(format!(
                    "mem {}/{}",
                    format::bytes(used),
                    format::bytes(total)
                ));
            }
            parts.extend(g.temp_c.map(|v| format!("{v:.0}°C")));
            parts.extend(g.power_w.map(|v| format!("{v:.0}W")));
            lines.push(Line::from(parts.join(" ")));
        }
        for c in &d.custom {
            lines.push(Line::from(format!(
                "custom {} {}",
                escaped(&c.name),
                c.value
            )));
        }
    }
    if let Some(r) = &view.report {
        for disk in &r.disks {
            let style = match disk.health {
                SmartHealth::Failed => theme.bad(),
                SmartHealth::Passed => theme.ok(),
                _ => theme.dim(),
            };
            let mut spans = vec![
                Span::raw(format!("smart {} ", escaped(&disk.device))),
                Span::styled(disk.health.as_str(), style),
            ];
            if let Some(t) = disk.temp_c {
                spans.push(Span::raw(format!(" {t:.0}°C")));
            }
            if let Some(p) = disk.nvme_pct_used {
                spans.push(Span::raw(format!(" worn {p}%")));
            }
            let bad_sectors = disk.reallocated.unwrap_or(0)
                + disk.pending.unwrap_or(0)
                + disk.uncorrectable.unwrap_or(0);
            if bad_sectors > 0 {
                spans.push(Span::styled(
                    format!(" {bad_sectors} bad sectors"),
                    theme.bad(),
                ));
            }
            lines.push(Line::from(spans));
        }
    }
    lines
}

/// The top tables of the minute the user stepped back to: waiting, the hub's error, nothing kept
/// for that minute, or the processes with their user and command line.
pub(super) fn render_past_top(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let back = app.host_time.top_back_min;
    let Some((from_ms, answer)) = &app.host_time.top else {
        return;
    };
    let when = format!("{} ({back}m ago)", format::clock(*from_ms));
    let note = match answer {
        None => Some("asking the hub…".to_string()),
        Some(Err(e)) => Some(format!("cannot read: {}", escaped(e))),
        Some(Ok(None)) => Some("nothing kept for this minute".to_string()),
        Some(Ok(Some(_))) => None,
    };
    if let Some(note) = note {
        let block = Block::default()
            .borders(Borders::TOP)
            .title(format!("top by cpu at {when}"));
        frame.render_widget(Paragraph::new(note).block(block), area);
        return;
    }
    let Some(Ok(Some(minute))) = answer else {
        return;
    };
    let [top_cpu, top_mem] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    for (list, title, area) in [
        (&minute.by_cpu, "top by cpu", top_cpu),
        (&minute.by_mem, "top by memory", top_mem),
    ] {
        frame.render_widget(past_table(list, &format!("{title} at {when}"), theme), area);
    }
}

fn past_table<'a>(
    list: &'a [flotilla_wire::host::TopProcess],
    title: &str,
    theme: Theme,
) -> Table<'a> {
    let rows: Vec<Row<'_>> = list
        .iter()
        .map(|p| {
            let name = if p.cmd.is_empty() { &p.name } else { &p.cmd };
            Row::new(vec![
                p.pid.to_string(),
                escaped(&p.user).chars().take(8).collect(),
                escaped(name).into_owned(),
                format!("{:.1}%", p.cpu_pct),
                format::bytes(p.mem),
            ])
        })
        .collect();
    Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Min(8),
            Constraint::Length(6),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(vec!["PID", "USER", "COMMAND", "CPU", "RSS"]).style(theme.heading()))
    .block(
        Block::default()
            .borders(Borders::TOP)
            .title(title.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::*;
    use crate::app::View;
    use crate::app::workload_tests::{fixture, key, web1};
    use crate::event::Event;
    use crossterm::event::KeyCode;
    use flotilla_wire::Role;
    use flotilla_wire::host::{DiskHealth, Gpu, HostDetail, HostReport, HostView};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal
            .draw(|f| render(app, Theme { color: false }, f))
            .expect("draw");
        let buf = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..24 {
            for x in 0..80 {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn host_depth_fits_80x24_with_a_failed_disk_and_a_gpu_and_scrolls() {
        let mut app = fixture(Role::Operator);
        app.view = View::Agent(web1());
        let view = HostView {
            id: web1(),
            name: "web-1".into(),
            detail: Some(HostDetail {
                gpus: vec![Gpu {
                    name: "H100".into(),
                    util_pct: Some(87.0),
                    mem_used: Some(40 << 30),
                    mem_total: Some(80 << 30),
                    temp_c: Some(61.0),
                    ..Gpu::default()
                }],
                ..HostDetail::default()
            }),
            report: Some(HostReport {
                disks: vec![DiskHealth {
                    device: "/dev/sda".into(),
                    health: SmartHealth::Failed,
                    pending: Some(8),
                    ..DiskHealth::default()
                }],
                ..HostReport::default()
            }),
        };
        assert!(app.update(Event::HostView(Box::new(view))));
        let before = screen(&app);
        for shown in [
            "gpu0 H100 87% mem 40.0G/80.0G 61°C",
            "smart /dev/sda failed 8 bad sectors",
            "cpu % 1h",
        ] {
            assert!(before.contains(shown), "no {shown} in\n{before}");
        }
        app.update(key(KeyCode::Char(']')));
        app.update(key(KeyCode::Down));
        app.update(key(KeyCode::Down));
        let after = screen(&app);
        assert!(after.contains("cpu % 6h"), "{after}");
        assert!(
            after.contains("usage ↑") && !after.contains("cpu  █"),
            "{after}"
        );
        assert!(after.contains("smart /dev/sda failed"), "{after}");
    }

    #[test]
    fn fitting_keeps_short_series_and_the_peak_of_each_column_of_long_ones() {
        assert_eq!(fit(&[1, 2, 3], 10), vec![1, 2, 3]);
        let long: Vec<u64> = (0..4320).map(|i| if i == 100 { 99 } else { 1 }).collect();
        let fitted = fit(&long, 24);
        assert_eq!(fitted.len(), 24);
        assert_eq!(fitted.iter().filter(|v| **v == 99).count(), 1);
        assert_eq!(fitted[0], 99, "the spike is in the first column's run");
    }
}
