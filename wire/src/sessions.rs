//! Recorded shell sessions: the listing an operator sees and the recording replayed to it.
//!
//! A recording is stored on the hub as asciicast v2 (see docs/shell.md); on the wire it travels as
//! typed frames ([`RecordingFrame`]) holding the exact bytes the session's client saw, so a replay
//! is byte-identical whatever the bytes were (asciicast itself can only hold text).

use crate::Chunk;
use crate::shell::ShellSessionId;
use serde::{Deserialize, Serialize};

/// Most events one [`RecordingFrame::Events`] carries by count; the hub also closes a frame once
/// its data passes [`RECORDING_FRAME_BYTES`]. Small events (keystroke echoes of a few bytes) would
/// otherwise cost a frame header each.
pub const EVENTS_PER_FRAME: usize = 4096;

/// Bytes of event data after which the hub closes a [`RecordingFrame::Events`]: 256 KiB keeps a
/// frame (with per-event overhead of a few bytes) far under the query stream's 4 MiB limit while
/// a replay still moves in large pieces.
pub const RECORDING_FRAME_BYTES: usize = 256 * 1024;

/// Most sessions one listing returns: a glance, not a report.
pub const MAX_SESSION_LIST: u32 = 10_000;

/// Rows of a listing per [`crate::exec::QueryReply::Sessions`] frame: at a few hundred bytes a
/// row, 1,000 stay far under the 4 MiB limit.
pub const SESSIONS_PER_FRAME: usize = 1000;

/// How a shell session stands in the hub's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The session is running; admins may join it.
    Live,
    /// The session ended while the hub ran; its recording is complete.
    Ended,
    /// The hub stopped (or was killed) during the session; its recording holds everything up to
    /// the last flush before that.
    Interrupted,
}

impl SessionState {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Ended => "ended",
            Self::Interrupted => "interrupted",
        }
    }

    /// Reads the stored word back; `None` for a word this version does not know.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "ended" => Some(Self::Ended),
            "interrupted" => Some(Self::Interrupted),
            _ => None,
        }
    }
}

/// One shell session as listed by `flotilla sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Session id.
    pub id: ShellSessionId,
    /// Identity id of the operator who opened it.
    pub operator: String,
    /// That operator's display name when the session opened.
    pub operator_name: String,
    /// Agent name when the session opened.
    pub agent: String,
    /// Container name or id, empty for a shell on the agent itself.
    pub container: String,
    /// Command line run, empty for the login shell.
    pub command: String,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// End, ms since the epoch; `None` while live (and for an interrupted session: unknown).
    pub ended_ms: Option<u64>,
    /// Exit status of the shell, when it exited (not when it was cut off).
    pub exit: Option<i32>,
    /// Why it ended, in words (empty while live).
    pub reason: String,
    /// Output bytes the session produced (what its client saw).
    pub bytes: u64,
    /// Size of the recording file on disk, bytes (compressed); 0 once pruned.
    pub size: u64,
    /// Whether its recording is still on disk (retention prunes old ones).
    pub recorded: bool,
    /// Where it stands.
    pub state: SessionState,
}

/// The recording's header: what the session's terminal was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CastHeader {
    /// Terminal columns at the start.
    pub cols: u16,
    /// Terminal rows at the start.
    pub rows: u16,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// Command line run, empty for the login shell.
    pub command: String,
    /// Title (`operator@agent`).
    pub title: String,
    /// The client's `TERM`.
    pub term: String,
}

/// What one recorded event holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CastData {
    /// Bytes the session wrote to the client's terminal, exactly.
    Output(Chunk),
    /// Bytes typed by the session's client (recorded only when the hub records input).
    Input(Chunk),
    /// The client's terminal changed size.
    Resize {
        /// New columns.
        cols: u16,
        /// New rows.
        rows: u16,
    },
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CastEvent {
    /// Time since the session started, ms.
    pub at_ms: u64,
    /// What happened.
    pub data: CastData,
}

/// Hub to operator on a replay: `Header`, then `Events` frames, then `End` (inside
/// [`crate::exec::QueryReply::Recording`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordingFrame {
    /// The terminal the session had; first.
    Header(CastHeader),
    /// Events in order, at most [`EVENTS_PER_FRAME`] or about [`RECORDING_FRAME_BYTES`] of data.
    Events(Vec<CastEvent>),
    /// The recording is complete as stored.
    End {
        /// The file ended before its end mark (the hub was killed mid-session, or the session is
        /// still live): everything up to its last flush was sent.
        truncated: bool,
    },
}
