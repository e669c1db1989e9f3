//! Operator file streams: list an agent's shared folder from the hub's copy of its tree, and watch
//! file events. (Copies are served by [`crate::relay`].) Viewers may do both.

use crate::HubCtx;
use crate::relay::tree::Lookup;
use crate::store;
use deploy::sync::lock;
use flotilla_wire::files::{
    FileEvent, ListEnd, ListReply, ListRequest, SNAPSHOT_CHUNK_ENTRIES, SnapshotReason,
    WatchRequest, normalize_rel_path,
};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_SNAPSHOT_FRAME};
use flotilla_wire::msg::Refusal;
use flotilla_wire::{ErrorCode, IdentityId, Role};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

fn refusal(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// An agent by name or id.
async fn find_agent(ctx: &HubCtx, query: &str) -> Result<(IdentityId, String), Refusal> {
    let q = query.to_owned();
    let row = ctx
        .store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "agent lookup failed");
            e.to_refusal()
        })?;
    row.filter(|r| r.role == Role::Agent)
        .map(|r| (r.id, r.name))
        .ok_or_else(|| {
            refusal(
                ErrorCode::NotFound,
                format!("no agent named or with id {query:?}"),
            )
        })
}

/// Serves one listing request.
pub(super) async fn list(ctx: &HubCtx, send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
    let req = match read_frame::<ListRequest, _>(recv, MAX_CONTROL_FRAME).await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            let code = super::frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            let _ = recv.stop(code.as_u32().into());
            return;
        }
    };
    if let Err(r) = list_inner(ctx, req, send).await {
        let _ = write_frame(send, &ListReply::Error(r), MAX_SNAPSHOT_FRAME).await;
    }
    let _ = send.finish();
}

async fn list_inner(
    ctx: &HubCtx,
    req: ListRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let (id, name) = find_agent(ctx, &req.agent).await?;
    let path =
        normalize_rel_path(&req.path).map_err(|e| refusal(ErrorCode::BadRequest, e.to_string()))?;
    let tree = ctx.files.tree(&id).ok_or_else(|| {
        refusal(
            ErrorCode::NotFound,
            format!("no listing of {name} yet: it has not connected since the hub started"),
        )
    })?;
    let lookup = {
        let t = lock(&tree);
        if !t.ready() {
            return Err(refusal(
                ErrorCode::NotFound,
                format!("{name} is still sending its first snapshot: try again in a moment"),
            ));
        }
        t.lookup(&path)
    };
    let lost = |e: flotilla_wire::io::FrameError| refusal(ErrorCode::Internal, e.to_string());
    let mut total = 0u64;
    match lookup {
        Lookup::Missing => {
            return Err(refusal(
                ErrorCode::NotFound,
                format!("{name}:{path} not found"),
            ));
        }
        Lookup::Leaf(entry) => {
            total = 1;
            write_frame(send, &ListReply::Entries(vec![entry]), MAX_SNAPSHOT_FRAME)
                .await
                .map_err(lost)?;
        }
        Lookup::Dir => {
            let mut after: Option<String> = None;
            // Pages are taken one lock at a time, so a listing of 100,000 entries never holds
            // the tree (or a copy of it) for long.
            loop {
                let page = lock(&tree).page(
                    &path,
                    req.recursive,
                    after.as_deref(),
                    SNAPSHOT_CHUNK_ENTRIES,
                );
                total += page.entries.len() as u64;
                if !page.entries.is_empty() {
                    write_frame(send, &ListReply::Entries(page.entries), MAX_SNAPSHOT_FRAME)
                        .await
                        .map_err(lost)?;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    let (as_of_ms, truncated) = {
        let t = lock(&tree);
        (t.as_of_ms, t.truncated())
    };
    let end = ListEnd {
        agent: id.clone(),
        name,
        online: ctx.registry.is_online(&id),
        as_of_ms,
        total,
        truncated,
    };
    write_frame(send, &ListReply::End(end), MAX_SNAPSHOT_FRAME)
        .await
        .map_err(lost)
}

/// Pushes file events until the operator goes away.
pub(super) async fn watch(
    ctx: &HubCtx,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    cancel: CancellationToken,
) {
    let req = match read_frame::<WatchRequest, _>(recv, MAX_CONTROL_FRAME).await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            let code = super::frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            return;
        }
    };
    let filter = match &req.agent {
        None => None,
        Some(q) => match find_agent(ctx, q).await {
            Ok(found) => Some(found),
            Err(r) => {
                let _ = write_frame(send, &FileEvent::Error(r), MAX_EVENTS_FRAME).await;
                let _ = send.finish();
                return;
            }
        },
    };
    let mut rx = ctx.files.subscribe();
    // What the hub holds now, so a console starts from a known state.
    for (agent, name, entries) in ctx.files.ready_trees() {
        if filter.as_ref().is_some_and(|(id, _)| *id != agent) {
            continue;
        }
        let held = FileEvent::Snapshot {
            agent,
            name,
            entries,
            reason: SnapshotReason::Held,
        };
        if write_frame(send, &held, MAX_EVENTS_FRAME).await.is_err() {
            return;
        }
    }
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => ev,
                Err(RecvError::Lagged(missed)) => FileEvent::Lagged { missed },
                Err(RecvError::Closed) => return,
            },
        };
        if let Some((id, name)) = &filter {
            let prefix = format!("{name}:");
            let keep = match &event {
                FileEvent::Snapshot { agent, .. } | FileEvent::Changed { agent, .. } => agent == id,
                FileEvent::Transfer(t) => t.src.starts_with(&prefix) || t.dst.starts_with(&prefix),
                FileEvent::Lagged { .. } | FileEvent::Error(_) => true,
            };
            if !keep {
                continue;
            }
        }
        if write_frame(send, &event, MAX_EVENTS_FRAME).await.is_err() {
            return;
        }
    }
}
