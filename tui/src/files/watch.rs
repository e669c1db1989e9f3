//! `flotilla watch --files`: the stream of shared-folder changes and transfers, one line each.

use super::FilesError;
use crate::client::{Client, ClientError};
use crate::util::Escaped;
use flotilla_wire::files::{FileEvent, WatchRequest};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_EVENTS_FRAME};
use flotilla_wire::msg::StreamOpen;

/// Subscribes to file events (of one agent, or all).
pub async fn watch_stream(
    client: &Client,
    agent: Option<String>,
) -> Result<(quinn::SendStream, quinn::RecvStream), FilesError> {
    let (mut send, recv) = client.open_stream(&StreamOpen::FileWatch).await?;
    write_frame(&mut send, &WatchRequest { agent }, MAX_CONTROL_FRAME)
        .await
        .map_err(|e| FilesError::Client(ClientError::Stream(e.to_string())))?;
    Ok((send, recv))
}

/// The next file event; `Ok(None)` when the hub ends the watch. Not cancel-safe.
pub async fn next_event(recv: &mut quinn::RecvStream) -> Result<Option<FileEvent>, FilesError> {
    match read_frame::<FileEvent, _>(recv, MAX_EVENTS_FRAME).await {
        Ok(Some(FileEvent::Error(r))) => Err(FilesError::Client(ClientError::Refused(r))),
        Ok(ev) => Ok(ev),
        Err(e) => Err(FilesError::Client(ClientError::Stream(e.to_string()))),
    }
}

/// A file event as one line of text.
pub fn event_line(ev: &FileEvent) -> String {
    match ev {
        FileEvent::Snapshot {
            name,
            entries,
            reason,
            ..
        } => format!(
            "snapshot {:<20} {entries} entries ({reason:?})",
            Escaped(name)
        ),
        FileEvent::Changed { name, changes, .. } => changes
            .iter()
            .map(|c| match c {
                flotilla_wire::files::Change::Upsert(e) => {
                    format!(
                        "changed  {}:{} ({})",
                        Escaped(name),
                        Escaped(&e.path),
                        crate::format::bytes(e.size)
                    )
                }
                flotilla_wire::files::Change::Remove { path } => {
                    format!("removed  {}:{}", Escaped(name), Escaped(path))
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
        FileEvent::Transfer(t) => {
            let state = match &t.state {
                flotilla_wire::files::TransferState::Failed(e) => {
                    format!("failed: {}", Escaped(&e.message))
                }
                other => format!("{other:?}").to_lowercase(),
            };
            format!(
                "transfer {} {} -> {} {}/{} {state}",
                t.transfer,
                Escaped(&t.src),
                Escaped(&t.dst),
                crate::format::bytes(t.bytes),
                crate::format::bytes(t.size)
            )
        }
        FileEvent::Lagged { missed } => {
            format!("(missed {missed} file events: output fell behind)")
        }
        FileEvent::Error(r) => format!("error: {}", Escaped(&r.message)),
    }
}
