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
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_REQUEST_FRAME;
use flotilla_wire::msg::StreamOpen;
use tokio::io::AsyncWriteExt;

/// Most reply frames one query reads: 10,000 agents × 10,000 containers at 2,000 rows a frame
/// (the hub's caps) stays below it.
const MAX_FRAMES: usize = 100_000;

/// Sends `q` and hands each reply to `each` as it arrives, up to the hub's end marker; a refusal
/// becomes an error.
pub async fn stream_query(
    client: &Client,
    q: &Query,
    mut each: impl FnMut(QueryReply) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(&StreamOpen::Query, q, MAX_REQUEST_FRAME)
        .await
        .map_err(|e| link.stream_error(e))?;
    let _ = send.shutdown().await;
    for _ in 0..MAX_FRAMES {
        match read_frame::<QueryReply, _>(&mut recv, MAX_REQUEST_FRAME).await {
            Ok(Some(QueryReply::End)) => return Ok(()),
            Ok(Some(QueryReply::Error(r))) => return Err(ClientError::Refused(r)),
            Ok(Some(reply)) => each(reply)?,
            Ok(None) => break,
            Err(e) => return Err(link.stream_error(e)),
        }
    }
    Err(ClientError::Stream(
        "hub ended the query without its end marker".into(),
    ))
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
