//! One agent's shared folder as a tree, and the transfers started from this console.

use super::{Theme, bar};
use crate::app::App;
use crate::app::tree::TransferState;
use crate::files::mode_string;
use crate::format;
use crate::util::{Escaped, escaped};
use flotilla_wire::files::EntryKind;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

/// Wide terminals add the mode and modification time columns.
const WIDE: u16 = 100;

pub(super) fn render_tree(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(tree) = &app.tree else {
        frame.render_widget(
            Paragraph::new(Span::styled(
                "no folder open: select an agent in the fleet view and press f",
                theme.dim(),
            )),
            area,
        );
        return;
    };
    let [title_area, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let online = app
        .agents
        .get(&tree.agent)
        .is_some_and(|a| a.status == flotilla_wire::msg::Status::Online);
    let mut title = vec![
        Span::styled(format!("{}:/", Escaped(&tree.name)), theme.heading()),
        Span::raw(match &tree.entries {
            Some(e) => format!(" · {} entries", e.len()),
            None => " · loading…".into(),
        }),
    ];
    if tree.truncated {
        title.push(Span::styled(
            " · truncated at the hub's limit",
            theme.warn(),
        ));
    }
    if !online {
        title.push(Span::styled(" · offline: last known tree", theme.dim()));
    }
    frame.render_widget(Paragraph::new(Line::from(title)), title_area);
    if let Some(err) = &tree.error {
        frame.render_widget(
            Paragraph::new(Span::styled(escaped(err).into_owned(), theme.bad())),
            table_area,
        );
        return;
    }
    if tree.entries.is_some() && tree.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("the shared folder is empty", theme.dim())),
            table_area,
        );
        return;
    }
    let wide = area.width >= WIDE;
    let rows_fit = table_area.height.saturating_sub(1) as usize;
    let offset = tree.selected.saturating_sub(rows_fit.saturating_sub(1));
    let rows: Vec<Row<'_>> = tree
        .rows()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, r)| {
            let (icon, suffix) = match &r.entry.kind {
                EntryKind::Dir if r.open => ("▾ ", "/".to_string()),
                EntryKind::Dir => ("▸ ", "/".to_string()),
                EntryKind::Symlink { target } => ("  ", format!(" → {}", Escaped(target))),
                _ => ("  ", String::new()),
            };
            let name = format!("{}{icon}{}{suffix}", "  ".repeat(r.depth), Escaped(r.label));
            let size = match r.entry.kind {
                EntryKind::Dir => String::new(),
                _ => format::bytes(r.entry.size),
            };
            let mut cells = vec![Cell::from(name), Cell::from(size)];
            if wide {
                cells.push(Cell::from(mode_string(&r.entry.kind, r.entry.mode)));
                cells.push(Cell::from(crate::files::utc_minute(r.entry.mtime_ms)));
            }
            let row = Row::new(cells);
            if i == tree.selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let mut header = vec![Cell::from("NAME"), Cell::from("SIZE")];
    let mut widths = vec![Constraint::Min(20), Constraint::Length(8)];
    if wide {
        header.extend([Cell::from("MODE"), Cell::from("MODIFIED")]);
        widths.extend([Constraint::Length(10), Constraint::Length(17)]);
    }
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(theme.heading()))
            .column_spacing(1),
        table_area,
    );
}

pub(super) fn render_transfers(app: &App, theme: Theme, frame: &mut Frame<'_>, area: Rect) {
    if app.transfers.is_empty() {
        let hint = if app.can_act() {
            "no transfers yet: open an agent's files (f), pick a file and press c"
        } else {
            "no transfers yet (a viewer cannot copy files)"
        };
        frame.render_widget(Paragraph::new(Span::styled(hint, theme.dim())), area);
        return;
    }
    let wide = area.width >= WIDE;
    let bar_w = if wide { 20 } else { 10 };
    let rows_fit = area.height.saturating_sub(1) as usize;
    let offset = app
        .transfer_selected
        .saturating_sub(rows_fit.saturating_sub(1));
    let rows: Vec<Row<'_>> = app
        .transfers
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, t)| {
            let (state, style) = match &t.state {
                TransferState::Starting => ("starting".to_string(), theme.dim()),
                TransferState::Running => (
                    t.rate()
                        .map(|r| format!("{}/s", format::bytes(r)))
                        .unwrap_or_else(|| "running".into()),
                    theme.warn(),
                ),
                TransferState::Retrying(e) => (format!("retrying: {}", Escaped(e)), theme.warn()),
                TransferState::Done(r) => (
                    format!("done: {} file(s), {}", r.files, format::bytes(r.bytes)),
                    theme.ok(),
                ),
                TransferState::Failed(e) => (format!("failed: {}", Escaped(e)), theme.bad()),
                TransferState::Cancelling => ("cancelling".to_string(), theme.warn()),
                TransferState::Cancelled => ("cancelled".to_string(), theme.bad()),
            };
            let progress = format!("{} {:>3.0}%", bar(t.pct(), bar_w), t.pct());
            let row = Row::new(vec![
                Cell::from(escaped(&t.src).into_owned()),
                Cell::from(escaped(&t.dst).into_owned()),
                Cell::from(progress),
                Cell::from(state).style(style),
            ]);
            if i == app.transfer_selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(vec!["FROM", "TO", "PROGRESS", "STATE"]).style(theme.heading());
    let widths = [
        Constraint::Percentage(25),
        Constraint::Percentage(25),
        Constraint::Length(bar_w as u16 + 5),
        Constraint::Min(10),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        area,
    );
}
