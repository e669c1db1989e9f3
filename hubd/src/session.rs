//! One task per connection: handshake, identity check and the opening exchange under a timeout, then
//! the agent or operator session.

mod agent;
pub(crate) mod enrol;
mod files;
mod logs;
mod metrics;
mod operator;
mod snapshot;

use crate::stats::StreamKind;
use crate::store::{self, now_ms};
use crate::{HubCtx, HubError};
use flotilla_certs::tls::peer_certificate;
use flotilla_wire::io::{FrameError, write_frame};
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{ClientOpen, Refusal, ServerOpen, peek_client_version};
use flotilla_wire::{DecodeError, ErrorCode, PROTOCOL_VERSION};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Time for the TLS handshake and the opening exchange: generous for a loaded hub, short enough that
/// a peer that connects and says nothing cannot hold a handshake slot.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Part of the open timeout left for the hello once the handshake is done. Generous because the
/// client's first stream can stall: until the hub's HANDSHAKE_DONE reaches it, a client arms no probe
/// for application data (RFC 9002 §6.2.1), so on a 200 ms path with 5 % loss one lost HANDSHAKE_DONE
/// held a hello back for up to 6.3 s in 40 connects (the fault-proxy tests in `hubd/tests/faults.rs`
/// met it); at 5 s one connect in twenty was refused.
const HELLO_TIMEOUT: Duration = Duration::from_secs(9);
/// Longest wait for a handshake slot before the connection is refused (clients dial with 10 s).
const PERMIT_WAIT: Duration = Duration::from_secs(3);
/// How long a refused peer gets to read the refusal before the connection is closed under it.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Closes `conn` with `code` and a reason the peer's log will show.
pub(crate) fn close(conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    conn.close(code.as_u32().into(), reason.as_bytes());
}

/// Sends a refusal on the control stream, lets the peer read it, then closes with the same code.
async fn refuse(conn: &quinn::Connection, send: &mut quinn::SendStream, refusal: Refusal) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let _ = write_frame(
            send,
            &ServerOpen::Refused(refusal.clone()),
            MAX_CONTROL_FRAME,
        )
        .await;
        let _ = send.finish();
        conn.closed().await
    })
    .await;
    close(conn, refusal.code, &refusal.message);
}

/// Reads the opening frame, naming both versions when the client speaks another protocol.
async fn read_open<R>(recv: &mut R) -> Result<ClientOpen, Refusal>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let malformed = |m: String| Refusal {
        code: ErrorCode::Malformed,
        message: m,
    };
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| malformed(format!("control stream: {e}")))?;
    let len = match flotilla_wire::frame::peek_len(&header, MAX_CONTROL_FRAME) {
        Ok(len) => len.unwrap_or(0),
        Err(e) => {
            return Err(Refusal {
                code: ErrorCode::TooLarge,
                message: e.to_string(),
            });
        }
    };
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| malformed(format!("control stream: {e}")))?;
    match flotilla_wire::decode_body::<ClientOpen>(&body) {
        Ok(open) => Ok(open),
        Err(err) => match peek_client_version(&body) {
            Some(v) if v != PROTOCOL_VERSION => Err(version_refusal(v)),
            _ => Err(malformed(err.to_string())),
        },
    }
}

fn version_refusal(client: u16) -> Refusal {
    let advice = if client > PROTOCOL_VERSION {
        "upgrade hubd"
    } else {
        "upgrade the client"
    };
    Refusal {
        code: ErrorCode::VersionMismatch,
        message: format!("hub speaks protocol {PROTOCOL_VERSION}, client {client}: {advice}"),
    }
}

/// Maps a frame error on a stream to the code that closes it.
pub(crate) fn frame_error_code(err: &FrameError) -> ErrorCode {
    match err {
        FrameError::Decode(DecodeError::TooLong { .. }) | FrameError::Encode(_) => {
            ErrorCode::TooLarge
        }
        _ => ErrorCode::Malformed,
    }
}

/// Serves one incoming connection to its end.
pub(crate) async fn serve(
    ctx: Arc<HubCtx>,
    incoming: quinn::Incoming,
    bulk: Arc<quinn::ServerConfig>,
    admitted: crate::accept::AdmissionGuard,
    cancel: CancellationToken,
) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!("conn", %remote, id = tracing::field::Empty);
    ctx.stats.connection_accepted();
    async move {
        // Waiting its turn longer than this means the client's own dial timeout would expire before
        // we answer: refusing at once lets it back off instead of both sides wasting a handshake.
        let Ok(Some(permit)) = tokio::time::timeout(PERMIT_WAIT, admitted.slot()).await else {
            ctx.stats.handshake_refused();
            incoming.refuse();
            return;
        };
        let opened = tokio::time::timeout(OPEN_TIMEOUT, open(&ctx, incoming, bulk)).await;
        drop(permit);
        drop(admitted);
        let (conn, mut send, recv, open) = match opened {
            Ok(Ok(parts)) => parts,
            Ok(Err(reason)) => {
                tracing::debug!(%reason, "connection failed before hello");
                return;
            }
            Err(_) => {
                tracing::debug!("no hello within the open timeout");
                return;
            }
        };
        let cert = peer_certificate(&conn);
        let bulk_lane = matches!(open, ClientOpen::Bulk(_));
        match (cert, open) {
            (None, ClientOpen::Enroll(req)) => enrol::serve(&ctx, &conn, &mut send, req, remote).await,
            (None, ClientOpen::Hello(_) | ClientOpen::Bulk(_)) => {
                let message = "no client certificate: enrol first with a join token".to_string();
                refuse(&conn, &mut send, Refusal { code: ErrorCode::UnknownIdentity, message }).await;
            }
            (Some(_), ClientOpen::Enroll(_)) => {
                let message = "already holds a certificate: connect with hello, not enrol".to_string();
                refuse(&conn, &mut send, Refusal { code: ErrorCode::BadRequest, message }).await;
            }
            (Some(cert), ClientOpen::Hello(hello) | ClientOpen::Bulk(hello)) => {
                if hello.protocol_version != PROTOCOL_VERSION {
                    refuse(&conn, &mut send, version_refusal(hello.protocol_version)).await;
                    return;
                }
                let peer = match flotilla_certs::peer_identity(&cert) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate from our CA without a valid identity");
                        refuse(&conn, &mut send, Refusal { code: ErrorCode::UnknownIdentity, message: e.to_string() }).await;
                        return;
                    }
                };
                if let Err(e) = flotilla_certs::check_current(&cert) {
                    tracing::info!(error = %e, "refused an expired certificate");
                    refuse(&conn, &mut send, Refusal { code: ErrorCode::UnknownIdentity, message: e.to_string() }).await;
                    return;
                }
                tracing::Span::current().record("id", tracing::field::display(&peer.id));
                let id = peer.id.clone();
                let row = match ctx.store.call(move |c| Ok(store::identities::get(c, &id)?)).await {
                    Ok(row) => row,
                    Err(e) => {
                        tracing::error!(error = %e, "registry lookup failed");
                        refuse(&conn, &mut send, e.to_refusal()).await;
                        return;
                    }
                };
                let refusal = match &row {
                    None => Some((ErrorCode::UnknownIdentity, "unknown identity: not in this hub's registry".to_string())),
                    Some(r) if r.revoked_ms.is_some() => Some((ErrorCode::Revoked, "certificate revoked".to_string())),
                    Some(r) if r.role != peer.role => Some((ErrorCode::UnknownIdentity, "certificate role does not match the registry".to_string())),
                    Some(_) => None,
                };
                if let Some((code, message)) = refusal {
                    tracing::info!(code = ?code, "refused");
                    refuse(&conn, &mut send, Refusal { code, message }).await;
                    return;
                }
                let Some(row) = row else { return };
                if bulk_lane {
                    if peer.role.is_operator_kind() {
                        let message = "bulk lanes are for agents: operators dial with hello".to_string();
                        refuse(&conn, &mut send, Refusal { code: ErrorCode::BadRequest, message }).await;
                    } else {
                        agent::run_bulk(ctx, conn, send, row, cancel).await;
                    }
                } else if peer.role.is_operator_kind() {
                    operator::run(ctx, conn, send, recv, row, hello, remote, cancel).await;
                } else {
                    if let Ok(expires) = flotilla_certs::not_after_ms(&cert) {
                        ctx.alerts.note_cert(&row.id, expires);
                    }
                    agent::run(ctx, conn, send, recv, row, hello, remote, cancel).await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

type Opened = (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    ClientOpen,
);

/// Completes the handshake and reads the opening frame.
async fn open(
    ctx: &HubCtx,
    incoming: quinn::Incoming,
    bulk: Arc<quinn::ServerConfig>,
) -> Result<Opened, String> {
    let connecting = if flotilla_certs::dial::is_bulk_cid(&incoming.orig_dst_cid()) {
        incoming.accept_with(bulk)
    } else {
        incoming.accept()
    }
    .map_err(|e| {
        ctx.stats.handshake_failed();
        format!("handshake: {e}")
    })?;
    // A handshake that stalls (a peer that sent its first flight and nothing more) gives its slot
    // back after the handshake timeout, not the whole open timeout.
    let handshake_timeout = Duration::from_secs(u64::from(ctx.config.handshake_timeout_s));
    let conn = match tokio::time::timeout(handshake_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            ctx.stats.handshake_failed();
            return Err(format!("handshake: {e}"));
        }
        Err(_) => {
            ctx.stats.handshake_failed();
            return Err("handshake made no progress within the handshake timeout".into());
        }
    };
    ctx.stats.handshake_ok();
    let first = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| format!("control stream: {e}"))?;
        let open = read_open(&mut ctx.stats.reader(StreamKind::Control, &mut recv)).await;
        Ok::<_, String>((send, recv, open))
    })
    .await;
    let (mut send, recv, open) = match first {
        Ok(r) => r?,
        Err(_) => {
            close(
                &conn,
                ErrorCode::Timeout,
                "no hello within the open timeout",
            );
            return Err("no hello in time".into());
        }
    };
    match open {
        Ok(open) => Ok((conn, send, recv, open)),
        Err(refusal) => {
            tracing::info!(code = ?refusal.code, message = ?refusal.message, "refused opening frame");
            refuse(&conn, &mut send, refusal).await;
            Err("refused".into())
        }
    }
}

/// Sends the welcome that accepts `row` on its control stream (agent, operator or bulk lane alike).
pub(crate) async fn welcome(
    ctx: &HubCtx,
    send: &mut quinn::SendStream,
    row: &store::IdentityRow,
) -> Result<(), FrameError> {
    let welcome = flotilla_wire::msg::Welcome {
        protocol_version: PROTOCOL_VERSION,
        hub_version: env!("CARGO_PKG_VERSION").into(),
        identity: row.id.clone(),
        role: row.role,
        name: row.name.clone(),
        metrics_interval_ms: ctx.registry.default_interval_ms(),
    };
    write_frame(
        &mut ctx.stats.writer(StreamKind::Control, send),
        &ServerOpen::Welcome(welcome),
        MAX_CONTROL_FRAME,
    )
    .await
}

/// Milliseconds now, re-exported for the session modules.
pub(crate) fn now() -> u64 {
    now_ms()
}

/// Whether `id` is still un-revoked, checked after registering a connection: a revocation that
/// committed between the hello check and the registration would otherwise miss this connection.
pub(crate) async fn still_allowed(ctx: &HubCtx, id: &flotilla_wire::IdentityId) -> bool {
    let sid = id.clone();
    match ctx
        .store
        .call(move |c| Ok(store::identities::get(c, &sid)?))
        .await
    {
        Ok(Some(row)) => row.revoked_ms.is_none(),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "revocation re-check failed; keeping the connection");
            true
        }
    }
}

/// Records a disconnect in the store and tells subscribers.
pub(crate) async fn mark_offline(ctx: &HubCtx, id: &flotilla_wire::IdentityId, reason: String) {
    let at_ms = now();
    let sid = id.clone();
    if let Err(e) = ctx
        .store
        .call(move |c| Ok(store::identities::set_last_seen(c, &sid, at_ms)?))
        .await
    {
        tracing::warn!(error = %e, "could not record last seen");
    }
    ctx.alerts.agent_offline(ctx, id);
    ctx.registry
        .publish(flotilla_wire::msg::FleetEvent::Offline {
            id: id.clone(),
            at_ms,
            reason,
        });
}

/// Words for why a connection ended.
pub(crate) fn describe_close(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            match ErrorCode::from_u32(close.error_code.into_inner()) {
                Some(ErrorCode::Goodbye) => "agent shut down".into(),
                Some(code) => code.describe().into(),
                None => format!("closed with code {}", close.error_code),
            }
        }
        quinn::ConnectionError::TimedOut => {
            "no packets within the idle timeout (killed or cut off)".into()
        }
        quinn::ConnectionError::LocallyClosed => "closed by hub".into(),
        other => other.to_string(),
    }
}

/// Reads the opening frame of an agent's unidirectional stream and serves it as its kind.
pub(crate) async fn serve_agent_uni(
    ctx: Arc<HubCtx>,
    id: flotilla_wire::IdentityId,
    name: String,
    mut recv: quinn::RecvStream,
) {
    use flotilla_wire::msg::StreamOpen;
    match flotilla_wire::io::read_frame::<StreamOpen, _>(&mut recv, MAX_CONTROL_FRAME).await {
        Ok(Some(StreamOpen::Metrics)) => metrics::serve(ctx, id, recv).await,
        Ok(Some(StreamOpen::Snapshot)) => snapshot::serve(ctx, id, name, recv).await,
        Ok(Some(other)) => {
            tracing::warn!(?other, "agent opened a stream kind it may not open");
            let _ = recv.stop(ErrorCode::Forbidden.as_u32().into());
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "bad stream header");
            let _ = recv.stop(frame_error_code(&e).as_u32().into());
        }
    }
}

impl From<HubError> for Refusal {
    fn from(e: HubError) -> Self {
        e.to_refusal()
    }
}
