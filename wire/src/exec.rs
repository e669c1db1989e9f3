//! Exec: running one command on many agents, and the job, audit and ping queries around it.
//!
//! Flow of one job:
//!
//! 1. The operator opens a bidirectional stream with [`crate::msg::StreamOpen::Exec`] and sends one
//!    [`ExecRequest`]. It may later send [`ExecControl::Cancel`] on the same stream (Ctrl-C).
//! 2. The hub checks the role, resolves the selector and answers [`ExecEvent::Accepted`] and
//!    [`ExecEvent::Targets`] (or [`ExecEvent::Refused`] and nothing else).
//! 3. For each target the hub opens one bidirectional stream on the agent's connection with
//!    [`HubStreamOpen::Exec`]; the agent answers [`AgentEvent`]s (started, output chunks, exit or
//!    failure) and reads [`ExecControl`] from the hub. Each agent event is forwarded to the operator
//!    wrapped in [`ExecEvent::Agent`]; events of one agent keep their order.
//! 4. When every target has an outcome the hub sends [`ExecEvent::Done`] and finishes the stream.
//!
//! Output is never buffered without bound: the agent reads its pipes only as fast as the hub reads the
//! agent stream, and the hub reads it only as fast as the operator reads, so QUIC flow control carries
//! back-pressure from the console to the command.
//!
//! Queries ([`Query`] on [`crate::msg::StreamOpen::Query`]) list past jobs, one job with its per-agent
//! results, the audit log, and ping agents. They live here rather than in `OpRequest` so that other
//! features extending the operator API never collide with these variants.

// Messages live briefly on the way to or from a frame; boxing variants would only add allocations.
#![allow(clippy::large_enum_variant)]

use crate::IdentityId;
use crate::msg::Refusal;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest output chunk an agent sends: one pipe read, and a frame well within
/// [`crate::limits::MAX_EXEC_FRAME`] with its envelope.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Output kept per agent and stream for `flotilla job ID`: enough for the end of a build log or a
/// stack trace, small enough that a 1,000-agent job stays in the low hundreds of MiB at worst.
pub const OUTPUT_TAIL: usize = 64 * 1024;
/// Targets per [`ExecEvent::Targets`] frame: about 90 bytes each keeps a frame under 128 KiB.
pub const TARGETS_PER_FRAME: usize = 1000;
/// Most bytes of command line (argv, a NUL after each) a request may carry.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Most bytes of selector a request may carry: what is left of
/// [`crate::limits::MAX_EXEC_REQUEST_FRAME`] after the command line and the envelope.
pub const MAX_SELECTOR_BYTES: usize =
    crate::limits::MAX_EXEC_REQUEST_FRAME - MAX_COMMAND_BYTES - 4096;
/// Longest timeout an operator may ask for (a week): longer jobs belong in a service manager.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;

/// Id of a job: one [`ExecRequest`] and its executions on every target. Assigned by the hub's
/// database, so ids only grow and an operator can type them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub use crate::chunk::Chunk;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecCommand {
    /// A program and its arguments. With `shell`, the words are joined with spaces and given to
    /// `/bin/sh -c`, as ssh does.
    Argv {
        /// Program first. Never empty.
        argv: Vec<String>,
        /// Run through `/bin/sh -c`.
        shell: bool,
    },
    /// A check built into agentd; runs under every exec policy because it starts no program.
    Builtin(Builtin),
    /// Act on containers through the engine's API; needs `containers = "manage"` on the agent.
    Container {
        /// What to do.
        action: crate::workloads::ContainerAction,
        /// Container names or ids, each checked with [`crate::workloads::valid_workload_name`].
        containers: Vec<String>,
        /// Seconds between SIGTERM and SIGKILL for stop and restart; `None` for the engine's
        /// default.
        stop_timeout_s: Option<u32>,
    },
    /// Act on systemd units over D-Bus; needs `services = "manage"` and the unit in the allowlist.
    Service {
        /// What to do.
        action: crate::workloads::ServiceAction,
        /// Unit names with their suffix.
        units: Vec<String>,
    },
    /// Run a compose action on one project folder of `compose_dir`; needs `compose = "on"`.
    Compose {
        /// What to do.
        action: crate::workloads::ComposeAction,
        /// Folder name, checked with [`crate::workloads::valid_project_name`].
        project: String,
    },
}

impl ExecCommand {
    /// The command as a sysadmin would type it, for tables and the audit log.
    pub fn display(&self) -> String {
        match self {
            Self::Argv { argv, shell } => {
                let words = argv.join(" ");
                if *shell {
                    format!("sh -c {words:?}")
                } else {
                    words
                }
            }
            Self::Builtin(b) => format!("@{}", b.as_str()),
            Self::Container {
                action,
                containers,
                stop_timeout_s,
            } => {
                let mut s = format!("container {} {}", action.as_str(), containers.join(" "));
                if let Some(t) = stop_timeout_s {
                    s.push_str(&format!(" --time {t}"));
                }
                s
            }
            Self::Service { action, units } => {
                format!("service {} {}", action.as_str(), units.join(" "))
            }
            Self::Compose { action, project } => {
                format!("compose {} {project}", action.as_str())
            }
        }
    }
}

/// Checks built into agentd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// healthy / degraded / unhealthy with reasons; exit 0, 1 or 2 like a monitoring plugin.
    Health,
}

impl Builtin {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Health => "health",
        }
    }
}

/// Operator to hub, first frame after [`crate::msg::StreamOpen::Exec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// `all`, or comma-separated terms: a name glob (`web-*`), an agent id, or `key=value`; parts of
    /// one term joined with `+` must all match (`env=prod+role=db`).
    pub selector: String,
    /// What to run.
    pub command: ExecCommand,
    /// Per-agent limit in milliseconds; 0 for none. The agent enforces it.
    pub timeout_ms: u64,
    /// At most this many agents run at once; 0 for all at once.
    pub batch: u32,
}

/// Sent after the request by the party that may stop a job: operator to hub, hub to agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecControl {
    /// Stop: the agent terminates the whole process group (SIGTERM, SIGKILL after a grace period).
    Cancel,
}

/// One agent a job targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Agent id.
    pub id: IdentityId,
    /// Display name (the prefix of its output lines).
    pub name: String,
    /// Whether it was connected when the job started; offline ones are reported unreachable at once.
    pub online: bool,
}

/// Hub to operator on the exec stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExecEvent {
    /// The job exists; `targets` agents follow in [`ExecEvent::Targets`] frames.
    Accepted {
        /// Its id.
        job: JobId,
        /// How many targets.
        targets: u32,
    },
    /// Some of the targets, by name; all of them arrive before any [`ExecEvent::Agent`].
    Targets(Vec<Target>),
    /// Something happened on one agent.
    Agent {
        /// Which agent.
        agent: IdentityId,
        /// What.
        event: AgentEvent,
    },
    /// Every target has an outcome; the stream ends after this.
    Done(JobSummary),
    /// The whole request was refused (role, selector, limits); nothing ran.
    Refused(Refusal),
}

/// Which pipe output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Agent to hub on an exec stream, forwarded to the operator inside [`ExecEvent::Agent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// The process started.
    Started {
        /// Its pid (also its process group id).
        pid: u32,
    },
    /// Output of at most [`MAX_CHUNK`] bytes; lines may be split across chunks.
    Output {
        /// Which pipe.
        stream: OutputStream,
        /// The bytes.
        data: Chunk,
    },
    /// The process ended; nothing follows.
    Exited(ExitReport),
    /// The command did not run, or its agent was lost; nothing follows.
    Failed(ExecFailure),
}

/// How a process ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal that killed it, if one did.
    pub signal: Option<i32>,
    /// From start to exit, milliseconds.
    pub duration_ms: u64,
    /// Killed because it ran past its timeout.
    pub timed_out: bool,
    /// Killed because the job was cancelled (Ctrl-C, operator gone, hub link lost).
    pub cancelled: bool,
}

/// Why an agent produced no exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The agent's exec policy refused the command.
    Refused,
    /// The program could not be started (missing, not executable, bad working directory).
    Spawn,
    /// The agent was offline when its turn came.
    Unreachable,
    /// The agent's connection ended while the command ran.
    Lost,
    /// The job was cancelled before this agent's turn came.
    Cancelled,
    /// The agent is running as many commands as it allows.
    Busy,
    /// Something failed on the hub or agent; details in its log.
    Internal,
}

impl FailureKind {
    /// Lowercase word for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Spawn => "spawn_failed",
            Self::Unreachable => "unreachable",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
            Self::Busy => "busy",
            Self::Internal => "internal",
        }
    }
}

/// A failure with words a sysadmin can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailure {
    /// Machine-readable reason.
    pub kind: FailureKind,
    /// Human-readable detail (names the policy for refusals).
    pub message: String,
}

/// Outcome counts of a job. Every target lands in exactly one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    /// Exited with code 0.
    pub succeeded: u32,
    /// Exited non-zero, died of a signal, or could not start.
    pub failed: u32,
    /// Killed at the timeout.
    pub timed_out: u32,
    /// Killed or skipped because the job was cancelled.
    pub cancelled: u32,
    /// Refused by the agent's policy, or busy.
    pub refused: u32,
    /// Offline at its turn, or lost mid-run.
    pub unreachable: u32,
}

impl JobCounts {
    /// Sum of all outcomes.
    pub fn total(&self) -> u32 {
        self.succeeded
            + self.failed
            + self.timed_out
            + self.cancelled
            + self.refused
            + self.unreachable
    }

    /// Counts `outcome` (an unfinished outcome counts nowhere).
    pub fn add(&mut self, outcome: Outcome, code: Option<i32>) {
        match outcome {
            Outcome::Exited if code == Some(0) => self.succeeded += 1,
            Outcome::Exited | Outcome::Failed => self.failed += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Unreachable | Outcome::Lost => self.unreachable += 1,
            Outcome::Pending | Outcome::Running => {}
        }
    }
}

/// End of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub job: JobId,
    /// How many agents it targeted.
    pub targets: u32,
    /// Outcomes.
    pub counts: JobCounts,
    /// From acceptance to the last outcome, milliseconds.
    pub duration_ms: u64,
}

/// Where one agent's execution ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Waiting for its batch slot.
    Pending,
    /// Running now.
    Running,
    /// Exited (any code) or died of a signal it was not sent by us.
    Exited,
    /// Killed at the timeout.
    TimedOut,
    /// Killed or skipped by a cancel.
    Cancelled,
    /// Refused by the agent's policy, or busy.
    Refused,
    /// Could not start, or failed otherwise.
    Failed,
    /// Offline at its turn.
    Unreachable,
    /// Connection lost mid-run.
    Lost,
}

impl Outcome {
    /// Lowercase word for tables, JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Unreachable => "unreachable",
            Self::Lost => "lost",
        }
    }

    /// Parses [`Outcome::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Running,
            Self::Exited,
            Self::TimedOut,
            Self::Cancelled,
            Self::Refused,
            Self::Failed,
            Self::Unreachable,
            Self::Lost,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// The outcome of a final agent event.
    pub fn of_event(event: &AgentEvent) -> Option<Self> {
        match event {
            AgentEvent::Exited(r) if r.timed_out => Some(Self::TimedOut),
            AgentEvent::Exited(r) if r.cancelled => Some(Self::Cancelled),
            AgentEvent::Exited(_) => Some(Self::Exited),
            AgentEvent::Failed(f) => Some(match f.kind {
                FailureKind::Refused | FailureKind::Busy => Self::Refused,
                FailureKind::Unreachable => Self::Unreachable,
                FailureKind::Lost => Self::Lost,
                FailureKind::Cancelled => Self::Cancelled,
                FailureKind::Spawn | FailureKind::Internal => Self::Failed,
            }),
            AgentEvent::Started { .. } | AgentEvent::Output { .. } => None,
        }
    }
}

/// Hub to agent: first frame of every stream the hub opens on an agent's connection (exec and ping
/// here, file transfers in [`crate::files`]): one enum, so the agent reads one opener and dispatches.
pub use crate::msg::HubStreamOpen;

/// What the hub asks one agent to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStart {
    /// The job (for the agent's log and the command's `FLOTILLA_JOB`).
    pub job: JobId,
    /// What to run; the agent checks it against its own policy.
    pub command: ExecCommand,
    /// Kill the process group after this many milliseconds; 0 for never.
    pub timeout_ms: u64,
    /// The hub's clock when sent, ms since the epoch (the health check's clock-skew reference).
    pub hub_time_ms: u64,
    /// Who asked: the operator's name, for the agent's log.
    pub actor: String,
}

/// Agent to hub: the answer to [`HubStreamOpen::Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The agent's clock when answering, ms since the epoch.
    pub agent_time_ms: u64,
}

/// Operator to hub: first frame after [`crate::msg::StreamOpen::Query`]. Answered by
/// [`QueryReply`] frames up to [`QueryReply::End`] (or one [`QueryReply::Error`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// The newest jobs, newest first (operator and admin).
    Jobs {
        /// How many.
        limit: u32,
    },
    /// One job and its per-agent results with output tails (operator and admin).
    Job {
        /// Which.
        job: JobId,
    },
    /// The newest audit entries, oldest first (operator and admin).
    Audit {
        /// How many.
        limit: u32,
    },
    /// Round trip hub to each selected agent and back (viewer and up).
    Ping {
        /// Same grammar as [`ExecRequest::selector`].
        selector: String,
    },
    /// Containers of the selected agents (viewer and up), answered by
    /// [`QueryReply::Containers`] frames.
    Containers {
        /// Same grammar as [`ExecRequest::selector`].
        selector: String,
        /// Stopped containers too (`docker ps --all`).
        all: bool,
    },
    /// systemd units of the selected agents (viewer and up), answered by
    /// [`QueryReply::Services`] frames.
    Services {
        /// Same grammar as [`ExecRequest::selector`].
        selector: String,
        /// Only failed units.
        failed: bool,
    },
    /// One container's per-minute history (viewer and up), answered by one
    /// [`QueryReply::ContainerMinutes`].
    ContainerHistory {
        /// Agent name or id.
        agent: String,
        /// Container name or id.
        container: String,
        /// Minutes back from now.
        minutes: u32,
    },
    /// One agent's host depth as the hub holds it (viewer and up), answered by one
    /// [`QueryReply::Host`].
    Host {
        /// Agent name or id.
        agent: String,
        /// Run the agent's slow collectors (SMART) first and wait for their report (operator and
        /// admin: it starts processes on the agent).
        refresh: bool,
    },
    /// Per-series host history of one agent (viewer and up), answered by one
    /// [`QueryReply::HostSeries`] per series found. Up to six hours back at one-minute
    /// resolution, beyond that ten-minute buckets.
    HostSeries {
        /// Agent name or id.
        agent: String,
        /// Which series; each names a kind and a name (`net:eth0` gives rx and tx).
        series: Vec<crate::history::SeriesSelector>,
        /// How far back, seconds.
        since_s: u64,
    },
    /// One agent's top processes per minute in `[from_ms, to_ms)` (viewer and up), answered by
    /// [`QueryReply::HostTop`] frames, oldest minute first.
    HostTop {
        /// Agent name or id.
        agent: String,
        /// First minute wanted, ms since the epoch.
        from_ms: u64,
        /// End of the span, ms since the epoch (exclusive).
        to_ms: u64,
    },
    /// The newest shell sessions, newest first (operators their own, admins all), answered by
    /// [`QueryReply::Sessions`] frames.
    Sessions {
        /// How many.
        limit: u32,
    },
    /// One session's recording (operators their own, admins any), answered by
    /// [`QueryReply::Recording`] frames: header, events, end.
    Replay {
        /// Which session.
        session: crate::shell::ShellSessionId,
    },
}

/// Hub to operator on a query stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QueryReply {
    /// One job.
    Job(JobInfo),
    /// One agent's result within the last [`QueryReply::Job`].
    Result(AgentResult),
    /// One audit entry.
    Audit(AuditEntry),
    /// One agent's ping, in the order answers arrive.
    Ping(PingResult),
    /// The answer is complete.
    End,
    /// The query was refused; nothing else follows.
    Error(Refusal),
    /// Containers, at most [`crate::workloads::ROWS_PER_FRAME`] per frame.
    Containers(Vec<crate::workloads::ContainerRow>),
    /// Units, at most [`crate::workloads::ROWS_PER_FRAME`] per frame.
    Services(Vec<crate::workloads::UnitRow>),
    /// One container's history, oldest first.
    ContainerMinutes(Vec<crate::workloads::ContainerMinute>),
    /// Reply to [`Query::Host`].
    Host(crate::host::HostView),
    /// One series of a [`Query::HostSeries`].
    HostSeries(crate::history::SeriesPoints),
    /// Minutes of a [`Query::HostTop`], at most [`crate::history::TOP_MINUTES_PER_FRAME`] per
    /// frame, oldest first.
    HostTop(Vec<crate::history::TopMinute>),
    /// Shell sessions, at most [`crate::sessions::SESSIONS_PER_FRAME`] per frame.
    Sessions(Vec<crate::sessions::SessionRow>),
    /// A piece of a recording being replayed.
    Recording(crate::sessions::RecordingFrame),
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Its id.
    pub job: JobId,
    /// Who ran it: identity id.
    pub actor: String,
    /// Who ran it: display name.
    pub actor_name: String,
    /// Selector as typed; past 512 bytes (a console selection of thousands of agents), its first
    /// terms and a count.
    pub selector: String,
    /// What ran.
    pub command: ExecCommand,
    /// Per-agent timeout, ms (0: none).
    pub timeout_ms: u64,
    /// Batch size (0: all at once).
    pub batch: u32,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// End, ms since the epoch; `None` while running.
    pub ended_ms: Option<u64>,
    /// Number of targets.
    pub targets: u32,
    /// Outcomes so far.
    pub counts: JobCounts,
    /// Who cancelled it, if anyone did (`operator`, `disconnect`, `shutdown`).
    pub cancelled_by: Option<String>,
    /// The hub stopped while it ran; results of agents still running then are unknown.
    pub interrupted: bool,
}

/// One agent's result in a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResult {
    /// Agent id.
    pub agent: IdentityId,
    /// Agent name at the time.
    pub name: String,
    /// Where it ended up.
    pub outcome: Outcome,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Killing signal, if any.
    pub signal: Option<i32>,
    /// When it started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// How long it ran, ms.
    pub duration_ms: Option<u64>,
    /// Failure detail, if any.
    pub message: String,
    /// Last [`OUTPUT_TAIL`] bytes of standard output.
    pub stdout_tail: Chunk,
    /// Last [`OUTPUT_TAIL`] bytes of standard error.
    pub stderr_tail: Chunk,
    /// Total bytes of standard output.
    pub stdout_bytes: u64,
    /// Total bytes of standard error.
    pub stderr_bytes: u64,
}

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Who: identity id, `local-admin`, or `token:ID` for enrolments.
    pub actor: String,
    /// What: `exec`, `exec.cancel`, `exec.denied`, `token.create`, `revoke`, `enrol`…
    pub action: String,
    /// On what: `job:42`, an identity or token id.
    pub target: String,
    /// Extra facts, never a secret.
    pub detail: String,
}

/// One agent's answer to a ping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {
    /// Agent id.
    pub agent: IdentityId,
    /// Agent name.
    pub name: String,
    /// Round trip hub → agent → hub over a new stream, microseconds; `None` if it failed.
    pub rtt_us: Option<u64>,
    /// Agent clock minus hub clock, corrected by half the round trip, milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// Why it failed (offline, timed out); empty on success.
    pub error: String,
}

/// postcard's index of [`AgentEvent::Output`] (pinned by the golden test).
const OUTPUT_VARIANT: u8 = 1;
/// postcard's index of [`ExecEvent::Agent`] (pinned by the golden test).
const AGENT_VARIANT: u8 = 2;

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// postcard's varint: seven bits at a time, low first, high bit set on all but the last byte.
fn put_varint(dst: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        dst.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    dst.put_u8(n as u8);
}

fn take_varint(src: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, b) in src.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &src[i + 1..]));
        }
    }
    None
}

fn stream_index(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// Appends one frame holding `AgentEvent::Output { stream, data }` to `dst` — the very bytes
/// [`crate::encode`] produces — copying `data` once instead of three times. For the agent's output
/// path; `data` is at most [`MAX_CHUNK`].
pub fn encode_output(stream: OutputStream, data: &[u8], dst: &mut BytesMut) {
    let body = 2 + varint_len(data.len() as u64) + data.len();
    dst.reserve(crate::frame::HEADER_LEN + body);
    dst.put_u32(body as u32);
    dst.put_u8(OUTPUT_VARIANT);
    dst.put_u8(stream_index(stream));
    put_varint(dst, data.len() as u64);
    dst.put_slice(data);
}

/// Appends one frame holding `ExecEvent::Agent { agent, event }` to `dst`, where `event_body` is
/// the postcard body of an [`AgentEvent`] exactly as the agent sent it: the hub forwards output
/// without decoding and re-encoding it. The result equals what [`crate::encode`] produces.
pub fn encode_forward(agent: &IdentityId, event_body: &[u8], dst: &mut BytesMut) {
    let id = agent.as_str().as_bytes();
    let body = 1 + varint_len(id.len() as u64) + id.len() + event_body.len();
    dst.reserve(crate::frame::HEADER_LEN + body);
    dst.put_u32(body as u32);
    dst.put_u8(AGENT_VARIANT);
    put_varint(dst, id.len() as u64);
    dst.put_slice(id);
    dst.put_slice(event_body);
}

/// The stream and bytes of an [`AgentEvent::Output`] body, borrowed from it; `None` for any other
/// event or a malformed body (decode it with [`crate::decode_body`] to learn which).
pub fn peek_output(body: &[u8]) -> Option<(OutputStream, &[u8])> {
    let (&variant, rest) = body.split_first()?;
    if variant != OUTPUT_VARIANT {
        return None;
    }
    let (&stream, rest) = rest.split_first()?;
    let stream = match stream {
        0 => OutputStream::Stdout,
        1 => OutputStream::Stderr,
        _ => return None,
    };
    let (len, data) = take_varint(rest)?;
    (data.len() as u64 == len).then_some((stream, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::StreamKind;
    use crate::msg::StreamOpen;
    use crate::{ErrorCode, Role};
    use proptest::prelude::*;

    fn id() -> IdentityId {
        IdentityId::from_random(Role::Agent, [0x11; 8])
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug>(
        msg: &T,
        kind: StreamKind,
    ) {
        let mut buf = BytesMut::new();
        crate::encode(msg, &mut buf, kind.max_frame()).expect("encode");
        let back: T = crate::decode(&mut buf, kind.max_frame())
            .expect("decode")
            .expect("complete");
        assert_eq!(&back, msg);
        assert!(buf.is_empty());
    }

    fn argv() -> ExecCommand {
        ExecCommand::Argv {
            argv: vec!["uptime".into()],
            shell: false,
        }
    }

    fn result() -> AgentResult {
        AgentResult {
            agent: id(),
            name: "web-1".into(),
            outcome: Outcome::Exited,
            code: Some(0),
            signal: None,
            started_ms: Some(5),
            duration_ms: Some(7),
            message: String::new(),
            stdout_tail: Chunk(b"up 3 days\n".to_vec()),
            stderr_tail: Chunk::default(),
            stdout_bytes: 10,
            stderr_bytes: 0,
        }
    }

    fn job_info() -> JobInfo {
        JobInfo {
            job: JobId(42),
            actor: "o-1111111111111111".into(),
            actor_name: "admin".into(),
            selector: "web-*".into(),
            command: argv(),
            timeout_ms: 30_000,
            batch: 0,
            started_ms: 1,
            ended_ms: Some(2),
            targets: 1,
            counts: JobCounts {
                succeeded: 1,
                ..JobCounts::default()
            },
            cancelled_by: None,
            interrupted: false,
        }
    }

    /// One value of every exec message, so a new variant without a round trip stands out.
    #[test]
    fn every_exec_message_round_trips() {
        for open in [StreamOpen::Exec, StreamOpen::Query] {
            round_trip(&open, StreamKind::Control);
        }
        round_trip(
            &ExecRequest {
                selector: "env=prod+role=db,web-*".into(),
                command: ExecCommand::Argv {
                    argv: vec!["echo".into(), "hi there".into()],
                    shell: true,
                },
                timeout_ms: 30_000,
                batch: 5,
            },
            StreamKind::Exec,
        );
        round_trip(
            &ExecRequest {
                selector: "all".into(),
                command: ExecCommand::Builtin(Builtin::Health),
                timeout_ms: 0,
                batch: 0,
            },
            StreamKind::Exec,
        );
        round_trip(&ExecControl::Cancel, StreamKind::Exec);
        let events = [
            ExecEvent::Accepted {
                job: JobId(7),
                targets: 2,
            },
            ExecEvent::Targets(vec![Target {
                id: id(),
                name: "web-1".into(),
                online: true,
            }]),
            ExecEvent::Agent {
                agent: id(),
                event: AgentEvent::Started { pid: 1234 },
            },
            ExecEvent::Agent {
                agent: id(),
                event: AgentEvent::Output {
                    stream: OutputStream::Stderr,
                    data: Chunk(vec![0xff; MAX_CHUNK]),
                },
            },
            ExecEvent::Agent {
                agent: id(),
                event: AgentEvent::Exited(ExitReport {
                    code: None,
                    signal: Some(15),
                    duration_ms: 1000,
                    timed_out: true,
                    cancelled: false,
                }),
            },
            ExecEvent::Agent {
                agent: id(),
                event: AgentEvent::Failed(ExecFailure {
                    kind: FailureKind::Refused,
                    message: "exec = \"off\"".into(),
                }),
            },
            ExecEvent::Done(JobSummary {
                job: JobId(7),
                targets: 2,
                counts: JobCounts {
                    succeeded: 1,
                    unreachable: 1,
                    ..JobCounts::default()
                },
                duration_ms: 12,
            }),
            ExecEvent::Refused(Refusal {
                code: ErrorCode::Forbidden,
                message: "viewers cannot exec".into(),
            }),
        ];
        for ev in events {
            round_trip(&ev, StreamKind::Exec);
        }
        round_trip(
            &HubStreamOpen::Exec(ExecStart {
                job: JobId(7),
                command: argv(),
                timeout_ms: 0,
                hub_time_ms: 99,
                actor: "admin".into(),
            }),
            StreamKind::Exec,
        );
        round_trip(&HubStreamOpen::Ping { hub_time_ms: 1 }, StreamKind::Exec);
        round_trip(&Pong { agent_time_ms: 2 }, StreamKind::Exec);
        for q in [
            Query::Jobs { limit: 20 },
            Query::Job { job: JobId(3) },
            Query::Audit { limit: 50 },
            Query::Ping {
                selector: "all".into(),
            },
        ] {
            round_trip(&q, StreamKind::Request);
        }
        for r in [
            QueryReply::Job(job_info()),
            QueryReply::Result(result()),
            QueryReply::Audit(AuditEntry {
                seq: 1,
                at_ms: 2,
                actor: "o-1".into(),
                action: "exec".into(),
                target: "job:1".into(),
                detail: "selector=all".into(),
            }),
            QueryReply::Ping(PingResult {
                agent: id(),
                name: "web-1".into(),
                rtt_us: Some(350),
                clock_offset_ms: Some(-3),
                error: String::new(),
            }),
            QueryReply::End,
            QueryReply::Error(Refusal {
                code: ErrorCode::NotFound,
                message: "no job 9".into(),
            }),
        ] {
            round_trip(&r, StreamKind::Request);
        }
    }

    /// Golden bytes: a change here breaks deployed peers and needs a protocol version bump.
    #[test]
    fn golden_bytes_are_pinned() {
        assert_eq!(enc(&StreamOpen::Exec), [4]);
        assert_eq!(enc(&StreamOpen::Query), [5]);
        assert_eq!(
            enc(&ExecRequest {
                selector: "a".into(),
                command: ExecCommand::Argv {
                    argv: vec!["id".into()],
                    shell: false
                },
                timeout_ms: 1000,
                batch: 2,
            }),
            [1, b'a', 0, 1, 2, b'i', b'd', 0, 0xe8, 0x07, 2]
        );
        assert_eq!(
            enc(&ExecRequest {
                selector: "a".into(),
                command: ExecCommand::Builtin(Builtin::Health),
                timeout_ms: 0,
                batch: 0,
            }),
            [1, b'a', 1, 0, 0, 0]
        );
        assert_eq!(enc(&ExecControl::Cancel), [0]);
        assert_eq!(
            enc(&ExecEvent::Accepted {
                job: JobId(300),
                targets: 2
            }),
            [0, 0xac, 0x02, 2]
        );
        let agent_prefix: Vec<u8> = {
            let mut v = vec![2, 18];
            v.extend_from_slice(id().as_str().as_bytes());
            v
        };
        let mut out = agent_prefix.clone();
        out.extend_from_slice(&[1, 1, 3, b'a', b'b', b'\n']);
        assert_eq!(
            enc(&ExecEvent::Agent {
                agent: id(),
                event: AgentEvent::Output {
                    stream: OutputStream::Stderr,
                    data: Chunk(b"ab\n".to_vec()),
                },
            }),
            out
        );
        let mut exit = agent_prefix;
        exit.extend_from_slice(&[2, 1, 6, 0, 0x64, 0, 1]);
        assert_eq!(
            enc(&ExecEvent::Agent {
                agent: id(),
                event: AgentEvent::Exited(ExitReport {
                    code: Some(3),
                    signal: None,
                    duration_ms: 100,
                    timed_out: false,
                    cancelled: true,
                }),
            }),
            exit
        );
        assert_eq!(
            enc(&AgentEvent::Failed(ExecFailure {
                kind: FailureKind::Lost,
                message: "x".into()
            })),
            [3, 3, 1, b'x']
        );
        assert_eq!(
            enc(&HubStreamOpen::Ping { hub_time_ms: 5 }),
            [1, 5],
            "ping opener"
        );
        assert_eq!(enc(&Pong { agent_time_ms: 1 }), [1]);
        assert_eq!(enc(&Query::Job { job: JobId(9) }), [1, 9]);
        assert_eq!(enc(&QueryReply::End), [4]);
        // Chunk encodes exactly like Vec<u8>: length, then the bytes.
        assert_eq!(
            enc(&Chunk(vec![1, 2, 3])),
            postcard::to_stdvec(&vec![1u8, 2, 3]).expect("encode")
        );
    }

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        postcard::to_stdvec(v).expect("encode")
    }

    #[test]
    fn fast_paths_encode_exactly_like_the_generic_encoder() {
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, MAX_CHUNK] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                let event = AgentEvent::Output {
                    stream,
                    data: Chunk(data.clone()),
                };
                let mut generic = BytesMut::new();
                crate::encode(&event, &mut generic, StreamKind::Exec.max_frame()).expect("encode");
                let mut fast = BytesMut::new();
                encode_output(stream, &data, &mut fast);
                assert_eq!(fast, generic, "output of {len} bytes");

                let body = &generic[crate::frame::HEADER_LEN..];
                assert_eq!(peek_output(body), Some((stream, &data[..])));
                let mut generic = BytesMut::new();
                let wrapped = ExecEvent::Agent { agent: id(), event };
                crate::encode(&wrapped, &mut generic, StreamKind::Exec.max_frame())
                    .expect("encode");
                let mut fast = BytesMut::new();
                encode_forward(&id(), body, &mut fast);
                assert_eq!(fast, generic, "forward of {len} bytes");
            }
        }
        let started = postcard::to_stdvec(&AgentEvent::Started { pid: 1 }).expect("encode");
        assert_eq!(peek_output(&started), None);
        assert_eq!(peek_output(&[1, 0, 5, 1, 2]), None, "short body");
        assert_eq!(peek_output(&[1, 2, 0]), None, "unknown stream");
        assert_eq!(peek_output(&[]), None);
    }

    #[test]
    fn outcomes_count_once_and_parse_back() {
        let mut c = JobCounts::default();
        c.add(Outcome::Exited, Some(0));
        c.add(Outcome::Exited, Some(1));
        c.add(Outcome::Exited, None);
        c.add(Outcome::Lost, None);
        c.add(Outcome::Unreachable, None);
        c.add(Outcome::Pending, None);
        assert_eq!(
            c,
            JobCounts {
                succeeded: 1,
                failed: 2,
                unreachable: 2,
                ..JobCounts::default()
            }
        );
        assert_eq!(c.total(), 5);
        for o in [Outcome::TimedOut, Outcome::Lost, Outcome::Pending] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        let timed_out = AgentEvent::Exited(ExitReport {
            timed_out: true,
            ..ExitReport::default()
        });
        assert_eq!(Outcome::of_event(&timed_out), Some(Outcome::TimedOut));
        assert_eq!(Outcome::of_event(&AgentEvent::Started { pid: 1 }), None);
    }

    #[test]
    fn commands_display_as_typed() {
        assert_eq!(argv().display(), "uptime");
        assert_eq!(
            ExecCommand::Argv {
                argv: vec!["echo hi".into(), "&&".into(), "ls".into()],
                shell: true
            }
            .display(),
            "sh -c \"echo hi && ls\""
        );
        assert_eq!(ExecCommand::Builtin(Builtin::Health).display(), "@health");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = crate::decode_body::<ExecRequest>(&bytes);
            let _ = crate::decode_body::<ExecEvent>(&bytes);
            let _ = crate::decode_body::<AgentEvent>(&bytes);
            let _ = crate::decode_body::<HubStreamOpen>(&bytes);
            let _ = crate::decode_body::<Query>(&bytes);
            let _ = crate::decode_body::<QueryReply>(&bytes);
        }

        #[test]
        fn output_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096), err in any::<bool>()) {
            let stream = if err { OutputStream::Stderr } else { OutputStream::Stdout };
            let mut fast = BytesMut::new();
            encode_output(stream, &data, &mut fast);
            let back: AgentEvent = crate::decode(&mut fast, MAX_CHUNK * 2).expect("decode").expect("whole");
            prop_assert_eq!(&back, &AgentEvent::Output { stream, data: Chunk(data.clone()) });
            round_trip(&AgentEvent::Output { stream, data: Chunk(data) }, StreamKind::Exec);
        }

        #[test]
        fn peeking_random_bodies_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some((stream, data)) = peek_output(&bytes) {
                let back: AgentEvent = crate::decode_body(&bytes).expect("a peeked body decodes");
                prop_assert_eq!(back, AgentEvent::Output { stream, data: Chunk(data.to_vec()) });
            }
        }

        #[test]
        fn requests_round_trip(sel in ".{0,64}", args in proptest::collection::vec(".{0,16}", 1..8),
                               shell in any::<bool>(), t in any::<u64>(), b in any::<u32>()) {
            round_trip(&ExecRequest { selector: sel, command: ExecCommand::Argv { argv: args, shell }, timeout_ms: t, batch: b }, StreamKind::Exec);
        }
    }
}
