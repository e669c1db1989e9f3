//! What the console reacts to: keys, hub news, the clock, and answers to its own commands.

use crate::files::{CopyEvent, CopyReport, Listing};
use crossterm::event::KeyEvent;
use flotilla_wire::alerts::AlertInfo;
use flotilla_wire::exec::{AgentResult, AuditEntry, ExecEvent, JobInfo};
use flotilla_wire::msg::{AgentInfo, FleetEvent, MetricsSeries, Welcome};
use flotilla_wire::workloads::{ContainerMinute, ContainerRow, LogFrame, UnitRow};

/// News of a job started from the console.
#[derive(Debug)]
pub enum ExecUpdate {
    /// An event from the hub.
    Event(Box<ExecEvent>),
    /// The job could not start or its stream broke; nothing more comes.
    Failed(String),
}

/// News of a log followed in the console.
#[derive(Debug)]
pub enum LogUpdate {
    /// A frame from the hub.
    Frame(Box<LogFrame>),
    /// The stream could not open or broke; nothing more comes.
    Failed(String),
}

/// News of a transfer started from the console.
#[derive(Debug)]
pub enum CopyUpdate {
    /// Progress.
    Event(CopyEvent),
    /// The copy returned.
    Finished(Result<CopyReport, String>),
}

/// Something happened.
#[derive(Debug)]
pub enum Event {
    /// A key was pressed.
    Key(KeyEvent),
    /// The terminal was resized.
    Resize,
    /// The hub accepted us.
    Connected(Box<Welcome>),
    /// A fleet event arrived.
    Fleet(Box<FleetEvent>),
    /// The hub went away; the console reconnects by itself.
    Disconnected(String),
    /// One second passed (relative times move on).
    Tick,
    /// Full detail of the agent in view (polled every second while its view is open).
    Detail(Box<AgentInfo>),
    /// History of the agent in view.
    History(Box<MetricsSeries>),
    /// A job started from the console moved on.
    Exec {
        /// The console's number for the run.
        run: u64,
        /// What happened.
        update: ExecUpdate,
    },
    /// A shared folder's listing, or why there is none.
    Listing {
        /// Agent id as asked.
        agent: String,
        /// The listing.
        result: Result<Box<Listing>, String>,
    },
    /// A transfer moved on.
    Copy {
        /// The console's number for it.
        id: u64,
        /// When, ms since the epoch (rates are computed from these, so tests are deterministic).
        at_ms: u64,
        /// What happened.
        update: CopyUpdate,
    },
    /// The newest jobs.
    Jobs(Result<Vec<JobInfo>, String>),
    /// One job with its results.
    Job(Result<Box<(JobInfo, Vec<AgentResult>)>, String>),
    /// The newest audit entries.
    Audit(Result<Vec<AuditEntry>, String>),
    /// Containers, as asked with this selector.
    Containers {
        /// The selector asked (answers for a list since replaced are dropped).
        selector: String,
        /// The rows, or why not.
        result: Result<Vec<ContainerRow>, String>,
    },
    /// Units, as asked with this selector.
    Services {
        /// The selector asked.
        selector: String,
        /// The rows, or why not.
        result: Result<Vec<UnitRow>, String>,
    },
    /// One container's minutes, as asked for agent and container id.
    ContainerHistory {
        /// Agent id as asked.
        agent: String,
        /// Container id as asked.
        container: String,
        /// Oldest first, or why not.
        result: Result<Vec<ContainerMinute>, String>,
    },
    /// A log stream moved on.
    Log {
        /// The console's number for it.
        id: u64,
        /// What happened.
        update: LogUpdate,
    },
    /// Every alert the hub holds, or why not.
    Alerts(Result<Vec<AlertInfo>, String>),
    /// An acknowledgement or silence asked from the console: the footer's words and the alert as
    /// it now stands (none for a silence, whose alerts are asked for again), or why it failed.
    AlertDone(Result<(String, Option<Box<AlertInfo>>), String>),
    /// Top processes of the minute starting at `from_ms`, as asked by `Command::HostTop`.
    HostTop {
        /// Minute start as asked.
        from_ms: u64,
        /// The minutes found (none when the hub kept nothing), or why not.
        result: Result<Vec<flotilla_wire::history::TopMinute>, String>,
    },
    /// Host depth of the agent in view, as the hub holds it.
    HostView(Box<flotilla_wire::host::HostView>),
    /// The hub's history of one per-device series, as asked by `Command::HostSeries`.
    HostSeries {
        /// Agent id as asked.
        agent: String,
        /// The series, span and buckets (or why not).
        answer: Box<crate::app::host::charts::ChartAnswer>,
    },
    /// Recorded shell sessions, newest first, or why not.
    Sessions(Result<Vec<flotilla_wire::sessions::SessionRow>, String>),
}
