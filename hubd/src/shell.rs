//! Interactive shells: `StreamOpen::Shell` relays a PTY on an agent to one operator, and
//! `StreamOpen::ShellJoin` lets an admin watch a live session.

pub mod recording;
pub mod sessions;

use crate::HubCtx;
use crate::admin::Actor;
use flotilla_wire::ErrorCode;
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::shell::ShellFrame;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serves one operator shell stream.
pub(crate) async fn serve(
    _ctx: Arc<HubCtx>,
    _actor: Actor,
    mut send: quinn::SendStream,
    _recv: quinn::RecvStream,
    _cancel: CancellationToken,
) {
    let frame = ShellFrame::refused(ErrorCode::Internal, "shells are not served yet");
    let _ = write_frame(&mut send, &frame, MAX_SHELL_FRAME).await;
    let _ = send.finish();
}

/// Serves one join of a live session (read-only).
pub(crate) async fn serve_join(
    _ctx: Arc<HubCtx>,
    _actor: Actor,
    mut send: quinn::SendStream,
    _recv: quinn::RecvStream,
    _cancel: CancellationToken,
) {
    let frame = ShellFrame::refused(ErrorCode::Internal, "joining is not served yet");
    let _ = write_frame(&mut send, &frame, MAX_SHELL_FRAME).await;
    let _ = send.finish();
}
