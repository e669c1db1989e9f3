//! `StreamOpen::Logs`: relays a container's or unit's log lines from one agent to an operator.
//!
//! The hub reads the next frame from the agent only once the last was written to the operator,
//! so it holds one frame per stream and QUIC flow control slows the agent (and the agent the
//! engine) to the operator's pace. Either side closing its stream ends both.

use crate::HubCtx;
use crate::admin::Actor;
use crate::store;
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_LOGS_FRAME;
use flotilla_wire::msg::{HubStreamOpen, Refusal};
use flotilla_wire::workloads::{
    LogFrame, LogSource, LogsOpen, LogsRequest, MAX_LOG_TAIL, valid_workload_name,
};
use flotilla_wire::{ErrorCode, Role};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest wait for the operator's request and for the agent to take the stream: a peer that
/// opens a stream and says nothing must not hold it for ever.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

async fn refuse(send: &mut quinn::SendStream, code: ErrorCode, message: String) {
    let _ = write_frame(
        send,
        &LogFrame::Error(Refusal { code, message }),
        MAX_LOGS_FRAME,
    )
    .await;
    let _ = send.finish();
}

/// Serves one operator logs stream. Viewers may read logs; the agent's policy has the last word.
pub(super) async fn serve(
    ctx: &HubCtx,
    actor: &Actor,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let read = read_frame::<LogsRequest, _>(&mut recv, MAX_LOGS_FRAME);
    let req = match tokio::time::timeout(SETUP_TIMEOUT, read).await {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "bad logs request");
            let code = super::frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            let _ = recv.stop(code.as_u32().into());
            return;
        }
    };
    let name = match &req.source {
        LogSource::Container(n) | LogSource::Unit(n) => n,
    };
    if !valid_workload_name(name) {
        let message = format!(
            "{name:?} is not a container or unit name (1-255 bytes, no '/', no control characters, not starting with '-')"
        );
        return refuse(&mut send, ErrorCode::BadRequest, message).await;
    }
    if req.tail > MAX_LOG_TAIL {
        let message = format!(
            "tail of {} lines exceeds the {MAX_LOG_TAIL}-line limit",
            req.tail
        );
        return refuse(&mut send, ErrorCode::BadRequest, message).await;
    }
    let q = req.agent.clone();
    let row = match ctx
        .store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await
    {
        Ok(Some(row)) if row.role == Role::Agent => row,
        Ok(_) => {
            let message = format!("no agent named {:?}", req.agent);
            return refuse(&mut send, ErrorCode::NotFound, message).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "logs lookup failed");
            return refuse(&mut send, ErrorCode::Internal, "lookup failed".into()).await;
        }
    };
    let Some(conn) = ctx.registry.connection(&row.id) else {
        let message = format!("agent {} is offline", row.name);
        return refuse(&mut send, ErrorCode::NotFound, message).await;
    };
    let open = HubStreamOpen::Logs(LogsOpen {
        source: req.source.clone(),
        tail: req.tail,
        follow: req.follow,
        actor: actor.name.clone(),
    });
    let opened = tokio::time::timeout(SETUP_TIMEOUT, async {
        let (mut s, r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut s, &open, MAX_LOGS_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((s, r))
    })
    .await;
    let (mut agent_send, mut agent_recv) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::info!(agent = %row.name, error = %e, "logs: agent unreachable");
            let message = format!("could not reach agent {}", row.name);
            return refuse(&mut send, ErrorCode::NotFound, message).await;
        }
        Err(_) => {
            let message = format!(
                "agent {} did not take the logs stream within {} s",
                row.name,
                SETUP_TIMEOUT.as_secs()
            );
            return refuse(&mut send, ErrorCode::Timeout, message).await;
        }
    };
    tracing::info!(actor = %actor.name, agent = %row.name, source = ?req.source, follow = req.follow, "logs");
    // The operator keeps its side open while it wants lines; its end or a reset means stop.
    let mut probe = [0u8; 1];
    let operator_gone = recv.read(&mut probe);
    tokio::pin!(operator_gone);
    let stop_agent = |agent_send: &mut quinn::SendStream, agent_recv: &mut quinn::RecvStream| {
        let code = ErrorCode::Cancelled.as_u32().into();
        let _ = agent_send.reset(code);
        let _ = agent_recv.stop(code);
    };
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => {
                stop_agent(&mut agent_send, &mut agent_recv);
                return refuse(&mut send, ErrorCode::ShuttingDown, "hub shutting down".into()).await;
            }
            _ = &mut operator_gone => return stop_agent(&mut agent_send, &mut agent_recv),
            f = read_frame::<LogFrame, _>(&mut agent_recv, MAX_LOGS_FRAME) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => LogFrame::Error(Refusal {
                code: ErrorCode::Internal,
                message: format!("agent {} ended the logs stream early", row.name),
            }),
            Err(e) => {
                tracing::info!(agent = %row.name, error = %e, "logs: agent stream failed");
                stop_agent(&mut agent_send, &mut agent_recv);
                LogFrame::Error(Refusal {
                    code: ErrorCode::Internal,
                    message: format!("agent {} stopped sending logs", row.name),
                })
            }
        };
        let last = matches!(frame, LogFrame::End | LogFrame::Error(_));
        let written = tokio::select! {
            _ = &mut operator_gone => return stop_agent(&mut agent_send, &mut agent_recv),
            w = write_frame(&mut send, &frame, MAX_LOGS_FRAME) => w,
        };
        if written.is_err() {
            return stop_agent(&mut agent_send, &mut agent_recv);
        }
        if last {
            let _ = send.finish();
            let _ = agent_send.finish();
            return;
        }
    }
}
