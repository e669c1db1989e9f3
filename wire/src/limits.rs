//! Stream kinds and the frame-size limit of each, checked before any body is allocated.

use serde::{Deserialize, Serialize};

/// The kinds of QUIC stream: one per kind of work, so a slow transfer never delays a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamKind {
    /// First bidirectional stream of every connection: hello, welcome, enrolment, hub commands.
    Control,
    /// Agent to hub metrics samples and back-fill.
    Metrics,
    /// Operator request and its reply (one stream each).
    Request,
    /// Fleet events pushed to a subscribed operator.
    Events,
    /// Shared-folder snapshots and deltas.
    Snapshot,
    /// One command execution.
    Exec,
    /// One file transfer.
    Transfer,
    /// One container's or unit's logs.
    Logs,
    /// One interactive shell session (or a join of one).
    Shell,
}

/// Control frames are small: hello, welcome, a CSR and a certificate (a few KiB) with headroom.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// A metrics back-fill batch carries up to [`MAX_BACKFILL_BATCH`] samples of a few KiB each.
pub const MAX_METRICS_FRAME: usize = 1024 * 1024;
/// Operator replies list agents; 4 MiB holds a page of thousands of agents with their latest sample.
pub const MAX_REQUEST_FRAME: usize = 4 * 1024 * 1024;
/// Events carry one agent each, or an initial page of the fleet.
pub const MAX_EVENTS_FRAME: usize = 4 * 1024 * 1024;
/// Snapshot chunks hold at most a few thousand entries, so both ends stay bounded.
pub const MAX_SNAPSHOT_FRAME: usize = 1024 * 1024;
/// Exec output travels in chunks of at most 64 KiB plus the envelope.
pub const MAX_EXEC_FRAME: usize = 128 * 1024;
/// The request that opens an exec stream: its selector may list every agent of a 100,000-agent
/// fleet by id (a console selection of marked agents, about 21 bytes each), plus the command line.
pub const MAX_EXEC_REQUEST_FRAME: usize = 4 * 1024 * 1024;
/// Transfer data chunks of 256 KiB plus the envelope.
pub const MAX_TRANSFER_FRAME: usize = 512 * 1024;
/// Log data travels in chunks of at most 64 KiB plus the envelope, as exec output does.
pub const MAX_LOGS_FRAME: usize = 128 * 1024;
/// Shell frames: terminal data in chunks of at most 16 KiB plus the envelope, or a request whose
/// command line is at most 16 KiB; 64 KiB leaves room for both.
pub const MAX_SHELL_FRAME: usize = 64 * 1024;
/// Samples per back-fill frame: an hour at 1-minute resolution fits in one batch.
pub const MAX_BACKFILL_BATCH: usize = 120;

impl StreamKind {
    /// The largest frame a peer may send on this kind of stream.
    pub fn max_frame(self) -> usize {
        match self {
            Self::Control => MAX_CONTROL_FRAME,
            Self::Metrics => MAX_METRICS_FRAME,
            Self::Request => MAX_REQUEST_FRAME,
            Self::Events => MAX_EVENTS_FRAME,
            Self::Snapshot => MAX_SNAPSHOT_FRAME,
            Self::Exec => MAX_EXEC_FRAME,
            Self::Transfer => MAX_TRANSFER_FRAME,
            Self::Logs => MAX_LOGS_FRAME,
            Self::Shell => MAX_SHELL_FRAME,
        }
    }
}
