//! The logs stream the hub opens (`HubStreamOpen::Logs`): a container's output from the engine,
//! or a unit's journal.
//!
//! Flow control: the engine's response body is read only when the previous frame was written to
//! QUIC, so a container that logs gigabytes is held back by the hub's (and the operator's) read
//! pace; agentd holds one engine frame and one encoded frame at a time, whatever the volume.

use super::Workloads;
use super::containers::{EngineError, valid_container_ref};
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use flotilla_wire::exec::{MAX_CHUNK, OutputStream};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_LOGS_FRAME;
use flotilla_wire::msg::Refusal;
use flotilla_wire::workloads::{Access, LogFrame, LogSource, LogsOpen, MAX_LOG_TAIL};
use flotilla_wire::{Chunk, ErrorCode};
use futures::StreamExt;
use std::sync::Arc;

/// How long a logs request may wait for the engine's first bytes: as long as anyone reads.
const LOGS_WAIT: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// Why unit logs are refused where there is no journal (Windows).
#[cfg(not(unix))]
const NO_JOURNAL: &str = "unit logs are not available on this agent";

async fn refuse(send: &mut quinn::SendStream, code: ErrorCode, message: String) {
    tracing::info!(%code, %message, "logs refused");
    let _ = write_frame(
        send,
        &LogFrame::Error(Refusal { code, message }),
        MAX_LOGS_FRAME,
    )
    .await;
    let _ = send.finish();
}

/// A unit's journal: the services policy and name rules are checked by the journal reader.
#[cfg(unix)]
async fn serve_unit(
    workloads: &Workloads,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    open: &LogsOpen,
    unit: String,
) {
    use super::journal::{JournalRequest, serve};
    use super::services::Bus;
    tracing::info!(actor = %open.actor, %unit, tail = open.tail, follow = open.follow, "unit logs");
    let req = JournalRequest {
        unit,
        tail: open.tail.min(MAX_LOG_TAIL),
        follow: open.follow,
        user: Bus::for_this_process() == Bus::Session,
        directory: None,
    };
    // The hub dropping its end (or the connection closing) stops journalctl. The receive half
    // stays open meanwhile: stopping it would tell the hub the stream failed.
    let stopped = send.stopped();
    let closed = async move {
        let _keep = recv;
        let _ = stopped.await;
    };
    serve(workloads.settings.services, req, send, closed).await;
}

/// Serves one logs stream until its source ends, it fails, or the hub goes away.
pub async fn serve(
    workloads: Arc<Workloads>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    open: LogsOpen,
) {
    let name = match &open.source {
        #[cfg(unix)]
        LogSource::Unit(unit) => {
            let unit = unit.clone();
            return serve_unit(&workloads, send, recv, &open, unit).await;
        }
        #[cfg(not(unix))]
        LogSource::Unit(_) => {
            return refuse(&mut send, ErrorCode::NotFound, NO_JOURNAL.into()).await;
        }
        LogSource::Container(name) => name.clone(),
    };
    if workloads.settings.containers == Access::Off {
        let message =
            "refused by this agent's container policy (containers = \"off\"): logs need containers = \"read\" or \"manage\" in agent.toml".to_string();
        return refuse(&mut send, ErrorCode::Forbidden, message).await;
    }
    if !valid_container_ref(&name) {
        let message = format!(
            "{:?} is not a container name or id (letters, digits, '_', '.', '-')",
            name
        );
        return refuse(&mut send, ErrorCode::BadRequest, message).await;
    }
    let engine = &workloads.engine;
    let id = match engine.resolve(&name).await {
        Ok(id) => id,
        Err(e @ EngineError::NotFound(_)) => {
            return refuse(&mut send, ErrorCode::NotFound, e.to_string()).await;
        }
        Err(e) => return refuse(&mut send, ErrorCode::Internal, e.to_string()).await,
    };
    let docker = match engine.docker().await {
        // Podman answers a follow only with its first line: the usual request timeout would end
        // a quiet container's stream. The hub going away ends it instead.
        Ok(d) => d.with_timeout(LOGS_WAIT),
        Err(e) => return refuse(&mut send, ErrorCode::Internal, e.to_string()).await,
    };
    tracing::info!(actor = %open.actor, container = %name, id = %id, tail = open.tail, follow = open.follow, "logs");
    if write_frame(
        &mut send,
        &LogFrame::Started {
            resolved: id.clone(),
        },
        MAX_LOGS_FRAME,
    )
    .await
    .is_err()
    {
        return;
    }
    let tail = open.tail.min(MAX_LOG_TAIL).to_string();
    let mut lines = docker.logs(
        &id,
        Some(LogsOptions {
            follow: open.follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            tail,
            ..Default::default()
        }),
    );
    // The hub keeps its side open while it wants lines; its end or a reset means stop.
    let mut probe = [0u8; 1];
    let hub_gone = recv.read(&mut probe);
    tokio::pin!(hub_gone);
    loop {
        let item = tokio::select! {
            _ = &mut hub_gone => return,
            item = lines.next() => item,
        };
        let out = match item {
            None => break,
            Some(Ok(out)) => out,
            Some(Err(e)) => {
                let message = engine.error(&id, e).to_string();
                return refuse(&mut send, ErrorCode::Internal, message).await;
            }
        };
        let (stream, bytes) = match out {
            LogOutput::StdErr { message } => (OutputStream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (OutputStream::Stdout, message)
            }
            LogOutput::StdIn { .. } => continue,
        };
        let (at_ms, data) = split_timestamp(&bytes);
        for piece in data.chunks(MAX_CHUNK) {
            let frame = LogFrame::Data {
                stream,
                at_ms,
                data: Chunk(piece.to_vec()),
            };
            let write = write_frame(&mut send, &frame, MAX_LOGS_FRAME);
            let written = tokio::select! {
                _ = &mut hub_gone => return,
                w = write => w,
            };
            if written.is_err() {
                return;
            }
        }
    }
    let _ = write_frame(&mut send, &LogFrame::End, MAX_LOGS_FRAME).await;
    let _ = send.finish();
}

/// The engine's timestamp (asked with `timestamps=1`) and the line after it.
fn split_timestamp(bytes: &[u8]) -> (Option<u64>, &[u8]) {
    let Some(space) = bytes.iter().take(40).position(|&b| b == b' ') else {
        return (None, bytes);
    };
    match std::str::from_utf8(&bytes[..space])
        .ok()
        .and_then(super::parse_rfc3339_ms)
    {
        Some(ms) => (Some(ms), &bytes[space + 1..]),
        None => (None, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps_are_split_off() {
        assert_eq!(
            split_timestamp(b"1970-01-01T00:00:01.5Z hello\n"),
            (Some(1500), &b"hello\n"[..])
        );
        assert_eq!(
            split_timestamp(b"no stamp here\n"),
            (None, &b"no stamp here\n"[..])
        );
        assert_eq!(split_timestamp(b""), (None, &b""[..]));
    }
}
