//! An agent's snapshot stream: frames in, the hub's copy of its shared-folder tree kept current,
//! changes published to file watchers, and a fresh snapshot asked for when a delta goes missing.

use crate::HubCtx;
use crate::relay::tree::{Applied, TreeError};
use crate::store::now_ms;
use deploy::sync::lock;
use flotilla_wire::files::{FileEvent, HubStreamOpen, SnapshotFrame};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_SNAPSHOT_FRAME};
use flotilla_wire::{ErrorCode, IdentityId};
use std::sync::Arc;
use std::time::Duration;

/// Time to open the resync stream and send its one frame.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads one agent's snapshot stream until it ends. A frame out of order stops this stream with a
/// code and leaves the connection alone.
pub(super) async fn serve(
    ctx: Arc<HubCtx>,
    id: IdentityId,
    name: String,
    mut recv: quinn::RecvStream,
) {
    let tree = ctx.files.tree_for(&id, &name);
    let mut asked = false;
    loop {
        let frame = match read_frame::<SnapshotFrame, _>(&mut recv, MAX_SNAPSHOT_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                let code = super::frame_error_code(&e);
                tracing::warn!(error = %e, ?code, "snapshot stream refused");
                let _ = recv.stop(code.as_u32().into());
                return;
            }
        };
        // Each frame is applied whole under the lock; a panic mid-frame leaves a tree the next
        // snapshot replaces, so a poisoned lock is still usable.
        let applied = lock(&tree).handle(frame, now_ms());
        match applied {
            Ok(Applied::Nothing) => {}
            Ok(Applied::Snapshot { entries, reason }) => {
                asked = false;
                tracing::info!(entries, ?reason, "shared folder snapshot received");
                ctx.files.publish(FileEvent::Snapshot {
                    agent: id.clone(),
                    name: name.clone(),
                    entries,
                    reason,
                });
            }
            Ok(Applied::Changed(changes)) => {
                tracing::debug!(changes = changes.len(), "shared folder changed");
                ctx.files.publish_changes(&id, &name, changes);
            }
            Err(gap @ TreeError::Gap { .. }) => {
                tracing::warn!(error = %gap, "shared folder deltas lost: asking for a fresh snapshot");
                if !asked {
                    asked = true;
                    request_resync(&ctx, &id, gap.to_string()).await;
                }
            }
            Err(e @ TreeError::OutOfOrder(_)) => {
                tracing::warn!(error = %e, "snapshot stream refused");
                let _ = recv.stop(ErrorCode::Malformed.as_u32().into());
                return;
            }
        }
    }
}

/// Opens a stream to the agent asking for a fresh snapshot.
async fn request_resync(ctx: &HubCtx, id: &IdentityId, reason: String) {
    let Some(conn) = ctx.registry.connection(id) else {
        return;
    };
    let ask = async {
        let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(
            &mut send,
            &HubStreamOpen::Resync { reason },
            MAX_CONTROL_FRAME,
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = send.finish();
        Ok::<_, String>(())
    };
    match tokio::time::timeout(RESYNC_TIMEOUT, ask).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not ask for a fresh snapshot"),
        Err(_) => tracing::warn!("could not ask for a fresh snapshot in time"),
    }
}
