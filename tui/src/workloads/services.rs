//! `flotilla services [SELECTOR] [--failed] [--json]`: systemd units across the fleet.

use super::{Printer, stream_query};
use crate::client::{Client, ClientError};
use crate::format;
use crate::util::{Escaped, now_ms};
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::workloads::UnitRow;

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<16} {:<32} {:<10} {:<12} {:<10} {:>6} {:>6}  RESTARTS\n",
        "AGENT", "UNIT", "ACTIVE", "SUB", "SINCE", "MEM", "CPU"
    )
}

/// One table line; text from the agent is escaped.
pub fn line(r: &UnitRow, now_ms: u64) -> String {
    let mem = r
        .stats
        .as_ref()
        .and_then(|s| s.memory_bytes)
        .map(format::bytes)
        .unwrap_or_else(|| "-".into());
    let cpu = r
        .stats
        .as_ref()
        .and_then(|s| s.cpu_pct)
        .map(|c| format!("{c:.1}%"))
        .unwrap_or_else(|| "-".into());
    let since = r
        .info
        .since_ms
        .map(|t| format::ago(t, now_ms))
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<16} {:<32} {:<10} {:<12} {:<10} {:>6} {:>6}  {}",
        Escaped(&r.agent_name),
        Escaped(&r.info.name),
        Escaped(&r.info.active_state),
        Escaped(&r.info.sub_state),
        since,
        mem,
        cpu,
        r.info.restarts
    )
}

/// Runs `flotilla services`: prints rows as they arrive; exit 0 with or without rows.
pub async fn services_command(
    client: &Client,
    selector: Option<&str>,
    failed: bool,
    json: bool,
) -> Result<u8, ClientError> {
    let q = Query::Services {
        selector: selector.unwrap_or("all").to_string(),
        failed,
    };
    let mut printer = Printer::new(json);
    let (now, header) = (now_ms(), header());
    stream_query(client, &q, |reply| match reply {
        QueryReply::Services(rows) => printer.page(&header, &rows, |r| line(r, now)),
        _ => Ok(()),
    })
    .await?;
    printer.finish(&header)?;
    Ok(0)
}
