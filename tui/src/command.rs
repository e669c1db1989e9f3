//! What the console asks its network task to do. `App` only queues these (see `App::take_commands`),
//! so key handling never waits on the network and tests can read what a key asked for.

use crate::files::Place;
use flotilla_wire::alerts::AlertId;
use flotilla_wire::exec::{ExecRequest, JobId};
use flotilla_wire::workloads::LogsRequest;

/// A request from the UI to the network task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a job; its events come back as `Event::Exec` tagged with `run`.
    Exec {
        /// The console's number for this run.
        run: u64,
        /// What to run where.
        request: ExecRequest,
    },
    /// Cancel the job of run `run` (agents kill the process group).
    CancelExec {
        /// Which run.
        run: u64,
    },
    /// List an agent's whole shared folder (the hub's copy of its tree).
    List {
        /// Agent id.
        agent: String,
    },
    /// Copy between agents; progress comes back as `Event::Copy` tagged with `id`.
    Copy {
        /// The console's number for this transfer.
        id: u64,
        /// Source.
        src: Place,
        /// Destination.
        dst: Place,
        /// Copy a directory tree.
        recursive: bool,
    },
    /// Cancel transfer `id` on both ends.
    CancelCopy {
        /// Which transfer.
        id: u64,
    },
    /// The newest jobs.
    Jobs,
    /// One job with its per-agent results.
    Job(JobId),
    /// The newest audit entries.
    Audit,
    /// Containers of the selected agents, stopped ones too; answered by `Event::Containers`.
    Containers {
        /// An agent id, or `all`.
        selector: String,
    },
    /// Units of the selected agents; answered by `Event::Services`.
    Services {
        /// An agent id, or `all`.
        selector: String,
    },
    /// Follow a log; frames come back as `Event::Log` tagged with `id`.
    Logs {
        /// The console's number for this stream.
        id: u64,
        /// What to read.
        request: LogsRequest,
    },
    /// One container's last hour, a point a minute; answered by `Event::ContainerHistory`.
    ContainerHistory {
        /// Agent id.
        agent: String,
        /// Full container id.
        container: String,
    },
    /// Stop following log `id`.
    CloseLogs {
        /// Which stream.
        id: u64,
    },
    /// Every alert, recently resolved ones too; answered by `Event::Alerts`.
    Alerts,
    /// Acknowledge a firing alert; answered by `Event::AlertDone`.
    AckAlert {
        /// Which alert.
        id: AlertId,
        /// Rule and agent in words, for the footer.
        label: String,
    },
    /// Add a silence of `rule` on one agent from now; answered by `Event::AlertDone`.
    SilenceAlert {
        /// Rule name.
        rule: String,
        /// Agent id.
        agent: String,
        /// How long, ms.
        duration_ms: u64,
        /// Why.
        comment: String,
        /// Rule and agent in words, for the footer.
        label: String,
    },
    /// One agent's top processes in `[from_ms, to_ms)`; answered by `Event::HostTop`.
    HostTop {
        /// Agent id.
        agent: String,
        /// Minute start, ms since the epoch.
        from_ms: u64,
        /// End of the span, ms (exclusive).
        to_ms: u64,
    },
    /// The recorded shell sessions; answered by `Event::Sessions`.
    Sessions,
    /// One per-device series of an agent over a span, as `flotilla metrics --series` asks;
    /// answered by `Event::HostSeries`.
    HostSeries {
        /// Agent id.
        agent: String,
        /// The series and the metrics charted.
        series: crate::app::host::charts::ChartSeries,
        /// How far back, seconds.
        since_s: u64,
    },
}
