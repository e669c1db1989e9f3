//! An agent's session: welcome, registry entry, control messages out, metrics streams in, and the
//! offline mark when the connection ends for whatever reason.

use super::{describe_close, mark_offline};
use crate::HubCtx;
use crate::admin::info_of;
use crate::stats::StreamKind;
use crate::store::{self, IdentityRow};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{FleetEvent, Hello, HubControl};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Control messages queued for one agent; more than this means it is not reading, and newer ones
/// are dropped rather than buffered.
const CONTROL_QUEUE: usize = 16;

/// Shortest reconnect window a stopping hub asks for: even a small fleet should not come back in
/// one burst of the same millisecond.
const MIN_RECONNECT_WINDOW_MS: u32 = 1000;

/// The window over which `online` agents should spread their reconnects so that the next hub
/// admits about `per_s` a second.
fn reconnect_window_ms(online: usize, per_s: u32) -> u32 {
    let ms = (online as u64).saturating_mul(1000) / u64::from(per_s.max(1));
    u32::try_from(ms)
        .unwrap_or(u32::MAX)
        .max(MIN_RECONNECT_WINDOW_MS)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: Arc<HubCtx>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    row: IdentityRow,
    hello: Hello,
    remote: SocketAddr,
    cancel: CancellationToken,
) {
    let id = row.id.clone();
    if let Err(e) = super::welcome(&ctx, &mut send, &row).await {
        tracing::debug!(error = %e, "agent left before welcome");
        return;
    }
    let (control_tx, mut control_rx) = mpsc::channel::<HubControl>(CONTROL_QUEUE);
    let conn_id = ctx.registry.connect(&id, conn.clone(), Some(control_tx));
    if !super::still_allowed(&ctx, &id).await {
        ctx.registry.kick(&id, flotilla_wire::ErrorCode::Revoked);
        return;
    }
    let addr = remote.to_string();
    let (sid, h) = (id.clone(), hello.clone());
    let now = super::now();
    if let Err(e) = ctx
        .store
        .call(move |c| {
            Ok(store::identities::touch(
                c,
                &sid,
                &h.software_version,
                &h.os,
                &h.hostname,
                &addr,
                now,
            )?)
        })
        .await
    {
        tracing::warn!(error = %e, "could not record hello");
    }
    let mut info = info_of(&ctx, &row);
    info.version = hello.software_version.clone();
    info.os = hello.os.clone();
    info.hostname = hello.hostname.clone();
    info.addr = remote.to_string();
    info.last_seen_ms = now;
    ctx.alerts.agent_online(&ctx, crate::alerts::facts_of(&row));
    ctx.registry.publish(FleetEvent::Online(info));
    tracing::info!(name = %row.name, version = ?hello.software_version, "agent online");
    if ctx.registry.is_watched(&id) {
        let interval_ms = crate::registry::WATCHED_INTERVAL_MS;
        ctx.registry
            .send_control(&id, HubControl::SetMetricsInterval { interval_ms });
    }

    let mut streams = JoinSet::new();
    let mut control_buf = [0u8; 64];
    let mut control_open = true;
    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let within = ctx.registry.restart_window_ms(|online| reconnect_window_ms(online, ctx.config.reconnect_per_s));
                let reason = flotilla_wire::codes::shutdown_reason(within);
                super::close(&conn, flotilla_wire::ErrorCode::ShuttingDown, &reason);
                break "hub shutting down".to_string();
            }
            err = conn.closed() => break describe_close(&err),
            Some(msg) = control_rx.recv() => {
                let mut out = ctx.stats.writer(StreamKind::Control, &mut send);
                if let Err(e) = write_frame(&mut out, &msg, MAX_CONTROL_FRAME).await {
                    tracing::debug!(error = %e, "control write failed");
                }
            }
            // The agent sends nothing more on the control stream; reading notices if it misbehaves.
            // After its end the branch is disabled, or the finished stream would spin this loop.
            read = recv.read(&mut control_buf), if control_open => {
                if let Ok(Some(_)) = read {
                    super::close(&conn, flotilla_wire::ErrorCode::Malformed, "unexpected data on control stream");
                }
                control_open = matches!(read, Ok(Some(_)));
            }
            accepted = conn.accept_uni() => match accepted {
                Ok(stream) => {
                    let (ctx, id, name) = (ctx.clone(), id.clone(), row.name.clone());
                    streams.spawn(super::serve_agent_uni(ctx, id, name, stream));
                }
                Err(err) => break describe_close(&err),
            },
            Some(joined) = streams.join_next(), if !streams.is_empty() => {
                if let Err(e) = joined && e.is_panic() {
                    tracing::error!(error = %e, "stream task panicked");
                }
            }
        }
    };
    streams.abort_all();
    ctx.history.flush_agent(&id).await;
    if ctx.registry.disconnect(&id, conn_id) {
        tracing::info!(name = %row.name, %reason, "agent offline");
        let minutes = ctx.workloads.offline(&id);
        ctx.container_history.record(minutes).await;
        mark_offline(&ctx, &id, reason).await;
    }
}

/// An agent's bulk lane: welcomed only while its control connection is live, then held open for
/// the transfer streams the hub opens on it until the agent closes it (idle) or the hub stops.
pub(super) async fn run_bulk(
    ctx: Arc<HubCtx>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    row: IdentityRow,
    cancel: CancellationToken,
) {
    let id = row.id.clone();
    if !ctx.registry.attach_bulk(&id, conn.clone()) {
        let message = "bulk lane without a control connection: say hello first".to_string();
        super::refuse(
            &conn,
            &mut send,
            flotilla_wire::msg::Refusal {
                code: flotilla_wire::ErrorCode::BadRequest,
                message,
            },
        )
        .await;
        return;
    }
    if super::welcome(&ctx, &mut send, &row).await.is_ok() {
        ctx.stats.bulk_lane_opened();
        tracing::debug!(name = %row.name, "bulk lane open");
        tokio::select! {
            _ = cancel.cancelled() => {
                super::close(&conn, flotilla_wire::ErrorCode::ShuttingDown, "hub shutting down");
            }
            err = conn.closed() => {
                tracing::debug!(name = %row.name, reason = %describe_close(&err), "bulk lane closed");
            }
        }
    }
    ctx.registry.detach_bulk(&id, &conn);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_window_grows_with_the_fleet() {
        assert_eq!(reconnect_window_ms(3, 1000), MIN_RECONNECT_WINDOW_MS);
        assert_eq!(reconnect_window_ms(5_000, 1000), 5_000);
        assert_eq!(reconnect_window_ms(100_000, 2000), 50_000);
        assert_eq!(
            reconnect_window_ms(10, 0),
            10_000,
            "a zero rate cannot divide by zero"
        );
    }
}
