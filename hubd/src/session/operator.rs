//! An operator's session: one stream per request, or a subscription to fleet events.

use super::{describe_close, frame_error_code};
use crate::HubCtx;
use crate::admin::{self, Actor};
use crate::stats::StreamKind;
use crate::store::{self, IdentityRow};
use flotilla_wire::ErrorCode;
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_REQUEST_FRAME};
use flotilla_wire::msg::{FleetEvent, Hello, OpRequest, StreamOpen};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Time an operator's streams get to wind up after its connection ends.
const STREAM_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: Arc<HubCtx>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    _recv: quinn::RecvStream,
    row: IdentityRow,
    hello: Hello,
    remote: SocketAddr,
    cancel: CancellationToken,
) {
    if super::welcome(&ctx, &mut send, &row).await.is_err() {
        return;
    }
    let conn_id = ctx.registry.connect_operator(&row.id, conn.clone());
    if !super::still_allowed(&ctx, &row.id).await {
        super::close(&conn, ErrorCode::Revoked, ErrorCode::Revoked.describe());
        ctx.registry.disconnect_operator(conn_id);
        return;
    }
    let (sid, addr, now) = (row.id.clone(), remote.to_string(), super::now());
    let _ = ctx
        .store
        .call(move |c| {
            Ok(store::identities::touch(
                c,
                &sid,
                &hello.software_version,
                &hello.os,
                &hello.hostname,
                &addr,
                now,
            )?)
        })
        .await;
    tracing::info!(name = %row.name, role = %row.role, "operator attached");
    let actor = Actor {
        name: row.id.to_string(),
        role: row.role,
    };
    let mut streams = JoinSet::new();
    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                super::close(&conn, ErrorCode::ShuttingDown, "hub shutting down");
                break "hub shutting down".to_string();
            }
            accepted = conn.accept_bi() => match accepted {
                Ok((mut send, mut recv)) => {
                    // Checked per stream, not only at the revocation's close: a close that never
                    // reached this task must not leave a revoked identity able to act.
                    if ctx.registry.is_revoked(&row.id) {
                        let code = ErrorCode::Revoked;
                        let _ = send.reset(code.as_u32().into());
                        let _ = recv.stop(code.as_u32().into());
                        tracing::info!(name = %row.name, "request from a revoked identity refused");
                        super::close(&conn, code, code.describe());
                        continue;
                    }
                    let (ctx, actor, cancel) = (ctx.clone(), actor.clone(), cancel.clone());
                    streams.spawn(async move { serve_stream(ctx, actor, send, recv, cancel).await });
                }
                Err(err) => break describe_close(&err),
            },
            Some(joined) = streams.join_next(), if !streams.is_empty() => {
                if let Err(e) = joined && e.is_panic() {
                    tracing::error!(error = %e, "operator stream task panicked");
                }
            }
        }
    };
    // Streams notice the connection or the hub going and wind up on their own (a transfer records
    // how it ended); stragglers are cut off after a short drain.
    let _ = tokio::time::timeout(STREAM_DRAIN, async {
        while streams.join_next().await.is_some() {}
    })
    .await;
    streams.abort_all();
    ctx.registry.disconnect_operator(conn_id);
    tracing::info!(name = %row.name, %reason, "operator detached");
}

async fn serve_stream(
    ctx: Arc<HubCtx>,
    actor: Actor,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let refuse = |send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, code: ErrorCode| {
        let _ = send.reset(code.as_u32().into());
        let _ = recv.stop(code.as_u32().into());
    };
    let open = match read_frame::<StreamOpen, _>(&mut recv, MAX_CONTROL_FRAME).await {
        Ok(Some(open)) => open,
        Ok(None) => return,
        Err(e) => return refuse(&mut send, &mut recv, frame_error_code(&e)),
    };
    match open {
        StreamOpen::Request => {
            let read = read_frame::<OpRequest, _>(
                &mut ctx.stats.reader(StreamKind::Request, &mut recv),
                MAX_REQUEST_FRAME,
            )
            .await;
            let req = match read {
                Ok(Some(req)) => req,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "bad operator request");
                    return refuse(&mut send, &mut recv, frame_error_code(&e));
                }
            };
            tracing::debug!(?req, "operator request");
            let resp = admin::handle(&ctx, &actor, req).await;
            let written = flotilla_wire::io::write_response(
                &mut ctx.stats.writer(StreamKind::Request, &mut send),
                resp,
            )
            .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "could not send operator response");
                return refuse(&mut send, &mut recv, frame_error_code(&e));
            }
            let _ = send.finish();
        }
        StreamOpen::Events => serve_events(&ctx, &mut send, cancel).await,
        StreamOpen::WatchAgent { query } => {
            let q = query.clone();
            let row = match ctx
                .store
                .call(move |c| Ok(store::identities::find(c, &q)?))
                .await
            {
                Ok(Some(row)) => row,
                Ok(None) => return refuse(&mut send, &mut recv, ErrorCode::NotFound),
                Err(e) => {
                    tracing::error!(error = %e, "watch lookup failed");
                    return refuse(&mut send, &mut recv, ErrorCode::Internal);
                }
            };
            let _guard = ctx.registry.watch(&row.id);
            tracing::debug!(agent = %row.name, "operator watching");
            // Held until the operator closes the stream (or the connection goes).
            let mut buf = [0u8; 16];
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = recv.read(&mut buf) => {}
            }
        }
        StreamOpen::Logs => super::logs::serve(&ctx, &actor, send, recv, cancel).await,
        StreamOpen::Exec => crate::exec::serve_exec(ctx, actor, send, recv, cancel).await,
        StreamOpen::Query => crate::exec::serve_query(ctx, actor, send, recv, cancel).await,
        StreamOpen::FileList => super::files::list(&ctx, &mut send, &mut recv).await,
        StreamOpen::FileWatch => super::files::watch(&ctx, &mut send, &mut recv, cancel).await,
        StreamOpen::Copy => {
            if !actor.role.can_act() {
                // The relay refuses it; the refusal is recorded here, before the request is read.
                let reason = format!("copying needs the operator role; you are {}", actor.role);
                admin::audit_denied(&ctx, &actor, "copy", String::new(), &reason).await;
            }
            crate::relay::copy(ctx, actor, send, recv, cancel).await
        }
        StreamOpen::Shell => crate::shell::serve(ctx, actor, send, recv, cancel).await,
        StreamOpen::ShellJoin => crate::shell::serve_join(ctx, actor, send, recv, cancel).await,
        StreamOpen::Metrics | StreamOpen::Snapshot => {
            refuse(&mut send, &mut recv, ErrorCode::Forbidden)
        }
    }
}

/// Pushes a snapshot, then every event, until the operator goes away or falls hopelessly behind.
async fn serve_events(ctx: &HubCtx, send: &mut quinn::SendStream, cancel: CancellationToken) {
    let mut rx = ctx.registry.subscribe();
    let rows = match ctx
        .store
        .call(|c| Ok(store::identities::list(c, true)?))
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list agents for a subscriber");
            let _ = send.reset(ErrorCode::Internal.as_u32().into());
            return;
        }
    };
    let fleet: Vec<_> = rows.iter().map(|r| admin::summary_of(ctx, r)).collect();
    let mut chunks = fleet.chunks(flotilla_wire::msg::AGENTS_PER_FRAME);
    let first = FleetEvent::Snapshot(chunks.next().map(<[_]>::to_vec).unwrap_or_default());
    if write_frame(
        &mut ctx.stats.writer(StreamKind::Events, send),
        &first,
        MAX_EVENTS_FRAME,
    )
    .await
    .is_err()
    {
        return;
    }
    for chunk in chunks {
        if write_frame(
            &mut ctx.stats.writer(StreamKind::Events, send),
            &FleetEvent::SnapshotMore(chunk.to_vec()),
            MAX_EVENTS_FRAME,
        )
        .await
        .is_err()
        {
            return;
        }
    }
    // Then the workload counts of every agent that reported any, so a console's count column is
    // complete without a query per agent.
    for (id, counts) in ctx.workloads.all_counts() {
        if write_frame(
            &mut ctx.stats.writer(StreamKind::Events, send),
            &FleetEvent::Workloads { id, counts },
            MAX_EVENTS_FRAME,
        )
        .await
        .is_err()
        {
            return;
        }
    }
    // And the host summaries (GPUs, failed disks) that are not empty.
    for (id, summary) in ctx.host.summaries() {
        if write_frame(
            &mut ctx.stats.writer(StreamKind::Events, send),
            &FleetEvent::Host { id, summary },
            MAX_EVENTS_FRAME,
        )
        .await
        .is_err()
        {
            return;
        }
    }
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => ev,
                Err(RecvError::Lagged(missed)) => FleetEvent::Lagged { missed },
                Err(RecvError::Closed) => return,
            },
        };
        let mut out = ctx.stats.writer(StreamKind::Events, send);
        if write_frame(&mut out, &event, MAX_EVENTS_FRAME)
            .await
            .is_err()
        {
            return;
        }
    }
}
