//! `flotilla shell --join`: an admin watches a live session, read-only. The joiner gets what the
//! session's operator sees from the moment it joins; the operator is told who joined and left.
//! A joiner that falls behind misses output (it is told how much) and never slows the session.

use crate::HubCtx;
use crate::admin::{self, Actor};
use crate::shell::LiveEvent;
use crate::store::{self, now_ms};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::shell::{ShellEnd, ShellFrame, ShellJoin};
use flotilla_wire::{Chunk, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Time a joiner gets to name the session after opening the stream.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn refuse(send: &mut quinn::SendStream, code: ErrorCode, message: impl Into<String>) {
    let _ = write_frame(send, &ShellFrame::refused(code, message), MAX_SHELL_FRAME).await;
    let _ = send.finish();
}

/// Serves one join stream.
pub(crate) async fn serve(
    ctx: Arc<HubCtx>,
    actor: Actor,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let join = match tokio::time::timeout(
        JOIN_TIMEOUT,
        read_frame::<ShellJoin, _>(&mut recv, MAX_SHELL_FRAME),
    )
    .await
    {
        Ok(Ok(Some(join))) => join,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let code = crate::session::frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            let _ = recv.stop(code.as_u32().into());
            return;
        }
        Err(_) => {
            return refuse(
                &mut send,
                ErrorCode::Timeout,
                "no session named within 10 s",
            )
            .await;
        }
    };
    let id = join.session_id;
    if !actor.role.can_admin() {
        let reason = format!(
            "joining a shell session needs the admin role; you are {}",
            actor.role
        );
        admin::audit_denied(&ctx, &actor, "shell.join", id.to_string(), &reason).await;
        return refuse(&mut send, ErrorCode::Forbidden, reason).await;
    }
    let Some(live) = ctx.shells.get(id) else {
        let message = format!("no live session {id} (it ended, or never started)");
        return refuse(&mut send, ErrorCode::NotFound, message).await;
    };
    // Subscribed before anything else: everything from here on reaches the joiner.
    let mut output = live.subscribe();
    let who = actor.name.clone();
    let name = match ctx
        .store
        .call(move |c| Ok(store::identities::find(c, &who)?))
        .await
    {
        Ok(Some(row)) => row.name,
        _ => actor.name.clone(),
    };
    let (who, target, detail) = (
        actor.name.clone(),
        id.to_string(),
        format!("operator={} agent={}", live.operator, live.agent),
    );
    if let Err(e) = ctx
        .store
        .call(move |c| {
            Ok(store::audit::append(
                c,
                now_ms(),
                &who,
                "shell.join",
                &target,
                &detail,
            )?)
        })
        .await
    {
        tracing::error!(error = %e, "could not write audit record");
    }
    tracing::info!(session = %id, joiner = %name, "shell session joined");
    live.notify(format!("{name} joined (read-only)"));
    let opening = [
        ShellFrame::Started { session_id: id },
        ShellFrame::Resize(live.size()),
    ];
    for frame in &opening {
        if write_frame(&mut send, frame, MAX_SHELL_FRAME)
            .await
            .is_err()
        {
            return;
        }
    }
    let mut scratch = [0u8; 1024];
    let ended = loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => Some(ShellFrame::Closed {
                reason: ShellEnd::HubShuttingDown,
                message: "the hub is shutting down".into(),
            }),
            // Read-only: whatever the joiner sends is dropped; its finish or reset means it left.
            read = recv.read(&mut scratch) => match read {
                Ok(Some(_)) => continue,
                _ => break false,
            },
            event = output.recv() => match event {
                Ok(LiveEvent::Output(bytes)) => Some(ShellFrame::Data(Chunk(bytes.to_vec()))),
                Ok(LiveEvent::Resize(size)) => Some(ShellFrame::Resize(size)),
                Ok(LiveEvent::Ended(last)) => Some(last),
                Err(RecvError::Lagged(missed)) => Some(ShellFrame::Notice(format!(
                    "you fell behind and missed {missed} pieces of output"
                ))),
                Err(RecvError::Closed) => Some(ShellFrame::Closed {
                    reason: ShellEnd::Error,
                    message: "the session ended".into(),
                }),
            },
        };
        let Some(frame) = frame else { continue };
        let last = frame.is_last();
        if write_frame(&mut send, &frame, MAX_SHELL_FRAME)
            .await
            .is_err()
        {
            break false;
        }
        if last {
            let _ = send.finish();
            break true;
        }
    };
    if !ended {
        live.notify(format!("{name} left"));
    }
    tracing::info!(session = %id, joiner = %name, "shell session join ended");
}
