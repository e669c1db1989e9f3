//! The local admin socket: `hubd token …`, `hubd revoke …` and `hubd agents` reach a running hub
//! through `<data-dir>/admin.sock`. File mode 0600 in a 0700 directory is the authentication: only
//! the hub's own user can connect, and it acts as admin. On Windows it is a named pipe (see
//! [`crate::local_socket`]).

use crate::admin::{self, Actor};
use crate::local_socket::{self, LocalListener, LocalStream};
use crate::{HubCtx, HubError};
use flotilla_wire::Role;
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_REQUEST_FRAME;
use flotilla_wire::msg::{OpRequest, OpResponse};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A local client that does not finish its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the socket (replacing a stale one: the data-dir lock proves no other hub owns it).
pub(crate) fn bind(path: &Path) -> Result<LocalListener, HubError> {
    LocalListener::bind(path).map_err(|e| HubError::io(format!("bind {}", path.display()), e))
}

/// Accepts local admin clients until cancelled.
pub(crate) async fn serve(
    ctx: Arc<HubCtx>,
    mut listener: LocalListener,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve_one(&ctx, stream)).await;
        });
    }
}

async fn serve_one(ctx: &HubCtx, mut stream: LocalStream) {
    let actor = Actor {
        name: "local-admin".into(),
        role: Role::Admin,
    };
    match read_frame::<OpRequest, _>(&mut stream, MAX_REQUEST_FRAME).await {
        Ok(Some(req)) => {
            let resp = admin::handle(ctx, &actor, req).await;
            let _ = flotilla_wire::io::write_response(&mut stream, resp).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "bad request on admin socket"),
    }
}

/// Sends one request to a running hub; `Ok(None)` if no hub listens on `path`.
pub async fn request(path: &Path, req: &OpRequest) -> Result<Option<OpResponse>, HubError> {
    let Some(mut stream) = local_socket::connect(path)
        .await
        .map_err(|e| HubError::io(format!("connect {}", path.display()), e))?
    else {
        return Ok(None);
    };
    let io = |e: flotilla_wire::io::FrameError| {
        HubError::Config(format!("admin socket {}: {e}", path.display()))
    };
    write_frame(&mut stream, req, MAX_REQUEST_FRAME)
        .await
        .map_err(io)?;
    match flotilla_wire::io::read_response(&mut stream)
        .await
        .map_err(io)?
    {
        Some(resp) => Ok(Some(resp)),
        None => Err(HubError::Config(format!(
            "admin socket {}: hub closed without answering",
            path.display()
        ))),
    }
}
