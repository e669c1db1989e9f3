//! Interactive shells: `StreamOpen::Shell` relays a PTY on an agent to one operator, records it,
//! and offers its output live to admins who join (`StreamOpen::ShellJoin`).
//!
//! [`Shells`] holds the live sessions: each has a broadcast of what its operator sees
//! ([`LiveEvent`]) and a queue of notices for its operator ([`LiveSession::notify`]). The relay
//! itself is in [`relay`].

pub mod recording;
mod relay;
pub mod sessions;

use crate::HubCtx;
use crate::admin::Actor;
use flotilla_wire::shell::{ShellFrame, ShellSessionId, WindowSize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Output chunks a joiner may fall behind by before it misses some: 64 chunks of at most 16 KiB
/// bound a session's broadcast at 1 MiB, and a joiner on a live link never falls that far behind
/// a human-paced session.
pub const LIVE_BACKLOG: usize = 64;
/// Folder of the recordings inside the hub's data directory.
pub const RECORDINGS_DIR: &str = "recordings";
/// Notices waiting for the operator's stream: joins are rare; beyond this they are dropped.
const NOTICE_QUEUE: usize = 16;

/// What the operator of a live session sees, as joiners receive it.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// Terminal output (at most one chunk).
    Output(bytes::Bytes),
    /// The operator's terminal changed size.
    Resize(WindowSize),
    /// The session ended with this frame (`Exit` or `Closed`); nothing follows.
    Ended(ShellFrame),
}

/// One live session, as [`Shells`] lists it.
#[derive(Debug)]
pub struct LiveSession {
    /// The session.
    pub id: ShellSessionId,
    /// The operator's audit name.
    pub operator: String,
    /// The agent's name.
    pub agent: String,
    /// The container, if the shell runs in one.
    pub container: Option<String>,
    /// Program and arguments; empty for the login shell.
    pub command: Vec<String>,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// The terminal's size now, for a joiner to start with.
    size: Mutex<WindowSize>,
    output: broadcast::Sender<LiveEvent>,
    notices: mpsc::Sender<String>,
}

impl LiveSession {
    /// Everything the operator sees from now on. A receiver that falls more than
    /// [`LIVE_BACKLOG`] chunks behind gets `Lagged` and misses them; the session never waits.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.output.subscribe()
    }

    /// Shows `text` to the session's operator as a [`ShellFrame::Notice`]; false if the queue is
    /// full or the session is ending.
    pub fn notify(&self, text: impl Into<String>) -> bool {
        self.notices.try_send(text.into()).is_ok()
    }

    /// The terminal's size now.
    pub fn size(&self) -> WindowSize {
        *deploy::sync::lock(&self.size)
    }

    fn set_size(&self, size: WindowSize) {
        *deploy::sync::lock(&self.size) = size;
    }

    fn publish(&self, event: LiveEvent) {
        // No receiver is not an error: nobody has joined.
        let _ = self.output.send(event);
    }
}

/// The hub's shells: where recordings go, how they are kept, and the sessions live now.
#[derive(Debug)]
pub struct Shells {
    /// Folder of the recordings (`<data>/recordings`).
    pub recordings_dir: PathBuf,
    /// Record keystrokes too (`recordings_input`): off by default, since they hold passwords.
    pub record_input: bool,
    /// End a session whose recording cannot be written, and refuse new ones
    /// (`recordings_required`, default on); off: the session goes on unrecorded.
    pub recording_required: bool,
    live: Mutex<HashMap<ShellSessionId, Arc<LiveSession>>>,
}

impl Shells {
    /// No live session yet.
    pub fn new(recordings_dir: PathBuf, record_input: bool, recording_required: bool) -> Self {
        Self {
            recordings_dir,
            record_input,
            recording_required,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// A live session by id.
    pub fn get(&self, id: ShellSessionId) -> Option<Arc<LiveSession>> {
        deploy::sync::lock(&self.live).get(&id).cloned()
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<Arc<LiveSession>> {
        let mut all: Vec<_> = deploy::sync::lock(&self.live).values().cloned().collect();
        all.sort_by_key(|s| (s.started_ms, s.id));
        all
    }

    /// Registers a session; it is listed until the guard drops.
    fn register(self: &Arc<Self>, session: LiveSession) -> (Arc<LiveSession>, LiveGuard) {
        let session = Arc::new(session);
        deploy::sync::lock(&self.live).insert(session.id, session.clone());
        let guard = LiveGuard {
            shells: self.clone(),
            id: session.id,
        };
        (session, guard)
    }
}

/// Removes a live session from [`Shells`] when its relay ends, however it ends.
struct LiveGuard {
    shells: Arc<Shells>,
    id: ShellSessionId,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        deploy::sync::lock(&self.shells.live).remove(&self.id);
    }
}

/// Serves one operator shell stream.
pub(crate) async fn serve(
    ctx: Arc<HubCtx>,
    actor: Actor,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    relay::serve(ctx, actor, send, recv, cancel).await
}

/// Serves one join of a live session (read-only).
pub(crate) async fn serve_join(
    ctx: Arc<HubCtx>,
    actor: Actor,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    sessions::join::serve(ctx, actor, send, recv, cancel).await
}
