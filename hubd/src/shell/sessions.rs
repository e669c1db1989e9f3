//! Shell sessions on the record: each session's row (written by the relay through [`opened`] and [`ended`]), the listing and
//! replay operators ask for, sessions a killed hub left live, and retention of recordings by age
//! and total size. docs/shell.md ("Recording") says what is recorded and who may see it.

pub(crate) mod join;

use super::recording::{CastReader, RecordingSummary};
use crate::admin::Actor;
pub use crate::store::sessions::NewSession;
use crate::store::sessions::{SessionEnd, StoredRecording};
use crate::store::{self, now_ms};
use crate::{HubConfig, HubCtx, HubError};
use flotilla_wire::ErrorCode;
use flotilla_wire::sessions::{
    CastData, EVENTS_PER_FRAME, MAX_SESSION_LIST, RECORDING_FRAME_BYTES, RecordingFrame,
    SessionRow, SessionState,
};
use flotilla_wire::shell::ShellSessionId;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often retention runs besides after each session: age limits are days, so ten minutes late
/// is nothing, and an idle hub does one directory's worth of work per period.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// What a session's row says when the hub stopped during it.
pub const STOPPED_DURING_SESSION: &str =
    "hub stopped during the session; recorded up to its last flush";

/// Where recordings go and how long they stay.
pub struct Sessions {
    dir: PathBuf,
    max_age_ms: u64,
    max_bytes: u64,
    /// Wakes the pruner (a session ended).
    prune: Notify,
}

impl Sessions {
    /// Settings from the hub's configuration (validated: the age parses).
    pub fn new(dir: PathBuf, config: &HubConfig) -> Self {
        let max_age = flotilla_wire::text::parse_duration(&config.recordings_max_age)
            .unwrap_or(Duration::from_secs(90 * 86_400));
        Self {
            dir,
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            max_bytes: config.recordings_max_bytes,
            prune: Notify::new(),
        }
    }

    /// The recordings directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Records a session that has started (its agent answered): the `live` row listing and join
/// go by. `row.operator_name` is looked up from `row.operator` when empty. Failures are logged:
/// the session goes on (the audit log has its `shell.open`).
pub(crate) async fn opened(ctx: &HubCtx, mut row: NewSession) {
    if row.operator_name.is_empty() {
        let op = row.operator.clone();
        row.operator_name = match ctx
            .store
            .call(move |c| Ok(store::identities::find(c, &op)?))
            .await
        {
            Ok(Some(identity)) => identity.name,
            _ => row.operator.clone(),
        };
    }
    let id = row.id;
    if let Err(e) = ctx
        .store
        .call(move |c| Ok(store::sessions::begin(c, &row)?))
        .await
    {
        tracing::error!(session = %id, error = %e, "cannot record a shell session's start");
    }
}

/// Records how a session ended (`bytes`: output its client was sent; `summary`: its recording,
/// if one was written) and lets retention run.
pub(crate) async fn ended(
    ctx: &HubCtx,
    id: ShellSessionId,
    exit: Option<i32>,
    reason: &str,
    bytes: u64,
    summary: Option<&RecordingSummary>,
) {
    let end = SessionEnd {
        ended_ms: Some(now_ms()),
        exit,
        reason: reason.to_owned(),
        bytes,
        size: summary.map_or(0, |s| s.size),
        state: SessionState::Ended,
    };
    if let Err(e) = ctx
        .store
        .call(move |c| Ok(store::sessions::finish(c, id, &end)?))
        .await
    {
        tracing::error!(session = %id, error = %e, "cannot record how a shell session ended");
    }
    ctx.sessions.prune.notify_one();
}

/// The file name a recording at `path` is listed under (empty: none).
pub(crate) fn file_name(path: Option<&Path>) -> String {
    path.and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn forbidden(actor: &Actor, what: &str) -> HubError {
    HubError::refused(
        ErrorCode::Forbidden,
        format!("{what} needs the operator role; you are {}", actor.role),
    )
}

/// The newest `limit` sessions, newest first: every session for an admin, an operator's own
/// otherwise; viewers are refused (sessions are the audit trail of shells they cannot open).
pub(crate) async fn list(
    ctx: &HubCtx,
    actor: &Actor,
    limit: u32,
) -> Result<Vec<SessionRow>, HubError> {
    if !actor.role.can_act() {
        return Err(forbidden(actor, "listing shell sessions"));
    }
    let limit = limit.clamp(1, MAX_SESSION_LIST);
    let only = (!actor.role.can_admin()).then(|| actor.name.clone());
    ctx.store
        .call(move |c| Ok(store::sessions::list(c, limit, only.as_deref())?))
        .await
}

/// A recording being sent to an operator, one frame at a time.
pub(crate) struct Replay {
    reader: Option<CastReader>,
    sent_header: bool,
    done: bool,
}

impl Replay {
    /// Checks that `actor` may replay `id` (admins any session, operators their own) and opens its
    /// recording. A live session replays up to its last flush.
    pub(crate) async fn open(
        ctx: &HubCtx,
        actor: &Actor,
        id: ShellSessionId,
    ) -> Result<Self, HubError> {
        if !actor.role.can_act() {
            return Err(forbidden(actor, "replaying shell sessions"));
        }
        let found = ctx
            .store
            .call(move |c| Ok(store::sessions::get(c, id)?))
            .await?;
        let Some((row, file)) = found else {
            return Err(HubError::refused(
                ErrorCode::NotFound,
                format!("no session {id}"),
            ));
        };
        if !actor.role.can_admin() && row.operator != actor.name {
            return Err(HubError::refused(
                ErrorCode::Forbidden,
                format!("session {id} is another operator's: only admins replay those"),
            ));
        }
        if file.is_empty() {
            return Err(HubError::refused(
                ErrorCode::NotFound,
                format!("session {id} has no recording (retention deleted it)"),
            ));
        }
        let path = ctx.sessions.dir.join(&file);
        let reader = tokio::task::spawn_blocking(move || CastReader::open(&path))
            .await
            .map_err(|e| HubError::io("open recording", std::io::Error::other(e.to_string())))?
            .map_err(|e| {
                tracing::error!(session = %id, error = %e, "cannot read a recording");
                HubError::refused(
                    ErrorCode::Internal,
                    format!("the recording of {id} cannot be read; see the hub's log"),
                )
            })?;
        Ok(Self {
            reader: Some(reader),
            sent_header: false,
            done: false,
        })
    }

    /// The next frame: the header, events, then `End`; `None` after that. Reads off the runtime.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<RecordingFrame>, HubError> {
        if self.done {
            return Ok(None);
        }
        let Some(mut reader) = self.reader.take() else {
            return Ok(None);
        };
        if !self.sent_header {
            self.sent_header = true;
            let header = reader.header().clone();
            self.reader = Some(reader);
            return Ok(Some(RecordingFrame::Header(header)));
        }
        let (reader, batch) = tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            let mut bytes = 0;
            let result = loop {
                if events.len() >= EVENTS_PER_FRAME || bytes >= RECORDING_FRAME_BYTES {
                    break Ok(());
                }
                match reader.next_event() {
                    Ok(Some(ev)) => {
                        bytes += match &ev.data {
                            CastData::Output(c) | CastData::Input(c) => c.0.len(),
                            CastData::Resize { .. } => 4,
                        };
                        events.push(ev);
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            (reader, result.map(|()| events))
        })
        .await
        .map_err(|e| HubError::io("read recording", std::io::Error::other(e.to_string())))?;
        let events = batch.map_err(|e| {
            tracing::error!(error = %e, "a recording went bad while replayed");
            HubError::refused(
                ErrorCode::Internal,
                "the recording cannot be read past this point; see the hub's log",
            )
        })?;
        if events.is_empty() {
            self.done = true;
            return Ok(Some(RecordingFrame::End {
                truncated: reader.truncated(),
            }));
        }
        self.reader = Some(reader);
        Ok(Some(RecordingFrame::Events(events)))
    }
}

/// Marks the sessions a previous hub process left live as interrupted, with what their recordings
/// hold (read up to the last flush): their output bytes, the file's size and the last event's
/// time as the end.
pub(crate) async fn recover(ctx: &HubCtx) {
    let left = match ctx.store.call(|c| Ok(store::sessions::left_live(c)?)).await {
        Ok(left) => left,
        Err(e) => {
            tracing::error!(error = %e, "cannot list shell sessions left live");
            return;
        }
    };
    for (id, file) in left {
        let path = ctx.sessions.dir.join(&file);
        let measured = tokio::task::spawn_blocking(move || measure(&path))
            .await
            .unwrap_or_default();
        let end = SessionEnd {
            ended_ms: measured.last_ms,
            exit: None,
            reason: STOPPED_DURING_SESSION.to_owned(),
            bytes: measured.bytes,
            size: measured.size,
            state: SessionState::Interrupted,
        };
        if let Err(e) = ctx
            .store
            .call(move |c| Ok(store::sessions::finish(c, id, &end)?))
            .await
        {
            tracing::error!(session = %id, error = %e, "cannot mark a shell session interrupted");
        } else {
            tracing::warn!(session = %id, "shell session interrupted by the previous hub stop");
        }
    }
}

#[derive(Default)]
struct Measured {
    bytes: u64,
    size: u64,
    last_ms: Option<u64>,
}

/// What a recording holds up to where it can be read. Blocking.
fn measure(path: &Path) -> Measured {
    let mut m = Measured {
        size: std::fs::metadata(path).map(|md| md.len()).unwrap_or(0),
        ..Measured::default()
    };
    let Ok(mut reader) = CastReader::open(path) else {
        return m;
    };
    let start = reader.header().started_ms;
    while let Ok(Some(ev)) = reader.next_event() {
        if let CastData::Output(c) = &ev.data {
            m.bytes += c.0.len() as u64;
        }
        m.last_ms = Some(start + ev.at_ms);
    }
    m
}

/// Deletes recordings past the age limit, then the oldest until the rest fit the size limit.
/// Live sessions' recordings are never deleted (they count towards the total). Their rows stay,
/// as the audit record, with no recording. Returns how many were deleted.
pub async fn prune(ctx: &HubCtx) -> usize {
    let recs = match ctx
        .store
        .call(|c| Ok(store::sessions::recordings(c)?))
        .await
    {
        Ok(recs) => recs,
        Err(e) => {
            tracing::error!(error = %e, "cannot list recordings to prune");
            return 0;
        }
    };
    let dir = ctx.sessions.dir.clone();
    let doomed = doomed(
        recs,
        &dir,
        now_ms(),
        ctx.sessions.max_age_ms,
        ctx.sessions.max_bytes,
    )
    .await;
    let mut deleted = 0;
    for rec in doomed {
        let path = dir.join(&rec.file);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a recording");
                continue;
            }
        }
        let id = rec.id;
        match ctx
            .store
            .call(move |c| Ok(store::sessions::forget_recording(c, id)?))
            .await
        {
            Ok(()) => deleted += 1,
            Err(e) => {
                tracing::error!(session = %id, error = %e, "cannot record a pruned recording")
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "shell recordings past retention deleted");
    }
    deleted
}

/// The recordings retention deletes, oldest first. Sizes of live recordings are read from disk
/// (their rows say 0 until they end).
async fn doomed(
    mut recs: Vec<StoredRecording>,
    dir: &Path,
    now: u64,
    max_age_ms: u64,
    max_bytes: u64,
) -> Vec<StoredRecording> {
    for rec in recs.iter_mut().filter(|r| r.live) {
        rec.size = tokio::fs::metadata(dir.join(&rec.file))
            .await
            .map(|m| m.len())
            .unwrap_or(0);
    }
    let cut = now.saturating_sub(max_age_ms);
    let mut total: u64 = recs.iter().map(|r| r.size).sum();
    let mut out = Vec::new();
    for rec in recs {
        if rec.live {
            continue;
        }
        if rec.started_ms < cut || total > max_bytes {
            total = total.saturating_sub(rec.size);
            out.push(rec);
        }
    }
    out
}

/// Runs retention after each session and every [`PRUNE_INTERVAL`], until cancelled (the hub's
/// start prunes once before serving).
pub(crate) async fn pruner(ctx: std::sync::Arc<HubCtx>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
            () = ctx.sessions.prune.notified() => {}
        }
        prune(&ctx).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::recording::RECORDING_SUFFIX;

    fn rec(id: u64, started_ms: u64, size: u64, live: bool) -> StoredRecording {
        StoredRecording {
            id: ShellSessionId(id),
            file: format!("{}{RECORDING_SUFFIX}", ShellSessionId(id)),
            size,
            started_ms,
            live,
        }
    }

    fn ids(v: &[StoredRecording]) -> Vec<u64> {
        v.iter().map(|r| r.id.0).collect()
    }

    #[tokio::test]
    async fn retention_deletes_by_age_then_oldest_first_by_size_never_live() {
        let dir = tempfile::tempdir().expect("tmp");
        let recs = vec![
            rec(1, 100, 10, false),
            rec(2, 200, 10, true),
            rec(3, 300, 10, false),
            rec(4, 400, 10, false),
        ];
        // The live one's file says how big it is now.
        std::fs::write(dir.path().join(&recs[1].file), vec![0u8; 50]).expect("live file");
        // By age: older than 1000 - 750 = 250, not live.
        let d = doomed(recs.clone(), dir.path(), 1000, 750, u64::MAX).await;
        assert_eq!(ids(&d), [1]);
        // By size: 80 bytes in all, 65 allowed: 1 goes (70), then 3 (60).
        let d = doomed(recs.clone(), dir.path(), 1000, u64::MAX, 65).await;
        assert_eq!(ids(&d), [1, 3]);
        // Both at once, and nothing when everything fits.
        let d = doomed(recs.clone(), dir.path(), 1000, 750, 65).await;
        assert_eq!(ids(&d), [1, 3]);
        assert!(
            doomed(recs, dir.path(), 1000, 10_000, 1000)
                .await
                .is_empty()
        );
    }
}
