//! Workloads across the fleet from the command line: `flotilla ps` (containers) and `flotilla
//! services` (systemd units), whose rows stream from the hub a frame at a time and are printed as
//! they come, so the first host's containers show before the last host's arrive; `flotilla logs`
//! (a container's or unit's log lines, relayed by the hub); `flotilla container`, `flotilla
//! compose` and `flotilla service` (actions run as jobs, rendered like `flotilla exec`).

pub mod actions;
pub mod logs;
pub mod ps;
pub mod services;
pub mod services_cli;

use crate::client::{Client, ClientError};
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::workloads::{ContainerMinute, ContainerRow, UnitRow};

pub use crate::exec::stream_query;

/// Containers of the agents `selector` names (stopped ones too with `all`), every page collected.
pub async fn containers(
    client: &Client,
    selector: String,
    all: bool,
) -> Result<Vec<ContainerRow>, ClientError> {
    let mut rows = Vec::new();
    stream_query(client, &Query::Containers { selector, all }, |r| {
        if let QueryReply::Containers(page) = r {
            rows.extend(page);
        }
        Ok(())
    })
    .await?;
    Ok(rows)
}

/// systemd units of the agents `selector` names (only failed ones with `failed`), every page
/// collected.
pub async fn services(
    client: &Client,
    selector: String,
    failed: bool,
) -> Result<Vec<UnitRow>, ClientError> {
    let mut rows = Vec::new();
    stream_query(client, &Query::Services { selector, failed }, |r| {
        if let QueryReply::Services(page) = r {
            rows.extend(page);
        }
        Ok(())
    })
    .await?;
    Ok(rows)
}

/// One container's last `minutes` of per-minute history, oldest first.
pub async fn container_history(
    client: &Client,
    agent: String,
    container: String,
    minutes: u32,
) -> Result<Vec<ContainerMinute>, ClientError> {
    let mut out = Vec::new();
    let q = Query::ContainerHistory {
        agent,
        container,
        minutes,
    };
    stream_query(client, &q, |r| {
        if let QueryReply::ContainerMinutes(m) = r {
            out.extend(m);
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Prints rows as a JSON array one row per line, or as a table, while pages arrive.
struct Printer {
    json: bool,
    rows: usize,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self { json, rows: 0 }
    }

    /// Writes `header` before the first row (tables) or `[` (JSON).
    fn page<T: serde::Serialize>(
        &mut self,
        header: &str,
        rows: &[T],
        line: impl Fn(&T) -> String,
    ) -> Result<(), ClientError> {
        let mut text = String::new();
        if self.rows == 0 {
            text.push_str(if self.json { "[" } else { header });
        }
        for row in rows {
            if self.json {
                if self.rows > 0 {
                    text.push(',');
                }
                text.push('\n');
                text.push_str(&serde_json::to_string(row).unwrap_or_default());
            } else {
                text.push_str(&line(row));
                text.push('\n');
            }
            self.rows += 1;
        }
        crate::util::out!("{text}").map_err(ClientError::Output)
    }

    /// Closes the JSON array, or prints the header alone for an empty table.
    fn finish(self, header: &str) -> Result<(), ClientError> {
        let text = match (self.json, self.rows) {
            (true, 0) => "[]\n".to_string(),
            (true, _) => "\n]\n".to_string(),
            (false, 0) => header.to_string(),
            (false, _) => return Ok(()),
        };
        crate::util::out!("{text}").map_err(ClientError::Output)
    }
}
