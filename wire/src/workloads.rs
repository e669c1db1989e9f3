//! Workloads on an agent's machine: containers (Docker Engine API), compose projects and systemd
//! units (D-Bus).
//!
//! Inventory and stats travel on the agent's metrics stream as [`WorkloadDelta`]s
//! ([`crate::msg::MetricsFrame::Workloads`]): only what changed, except stats of running
//! containers and active units, which change every interval. Logs have their own stream
//! ([`crate::msg::StreamOpen::Logs`] operator to hub, [`crate::msg::HubStreamOpen::Logs`] hub to
//! agent) so a container that logs gigabytes is held back by QUIC flow control instead of
//! buffered. Actions (start, stop, compose up…) are jobs: [`crate::exec::ExecCommand`] variants,
//! with exec's output, cancel, timeout and audit.

use crate::exec::OutputStream;
use crate::{Chunk, IdentityId};
use serde::{Deserialize, Serialize};

/// Longest container reference (name or id) or unit name accepted in a request.
pub const MAX_WORKLOAD_NAME: usize = 255;
/// Most containers or units one [`WorkloadDelta`] carries; more go in further frames, so a frame
/// stays under [`crate::limits::MAX_METRICS_FRAME`].
pub const WORKLOADS_PER_FRAME: usize = 1000;
/// Rows per [`crate::exec::QueryReply::Containers`] or [`crate::exec::QueryReply::Services`] frame.
pub const ROWS_PER_FRAME: usize = 2000;
/// Most lines a log request may ask to see from before it was made.
pub const MAX_LOG_TAIL: u32 = 100_000;

/// How much of a kind of workload the agent's policy lets the hub see and do. Set in agent.toml;
/// the agent has the last word, the hub and console only use it to hide what would be refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing is reported, logs and actions are refused.
    Off,
    /// Inventory, stats and logs; actions are refused.
    #[default]
    Read,
    /// Everything, actions included.
    Manage,
}

impl Access {
    /// Lowercase word, as written in agent.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Read => "read",
            Self::Manage => "manage",
        }
    }
}

/// The agent's workload policy as it reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadPolicy {
    /// `containers` in agent.toml.
    pub containers: Access,
    /// `compose` in agent.toml: compose actions may run.
    pub compose: bool,
    /// `services` in agent.toml.
    pub services: Access,
    /// Unit globs `manage` is limited to; empty means every unit.
    pub services_allow: Vec<String>,
}

/// Whether a workload source (the container engine, systemd) answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceState {
    /// Nothing to talk to (no socket, no system bus) or the policy is `off`: not an error.
    Absent,
    /// Connected.
    Up {
        /// `docker`, `podman`, `systemd`.
        name: String,
        /// The engine's or manager's version.
        version: String,
    },
    /// It was there and stopped answering; the agent keeps trying.
    Down {
        /// Why, in words.
        error: String,
    },
}

/// A container's lifecycle state, as the Docker Engine API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Could not be stopped or removed cleanly.
    Dead,
    /// A state this version does not know.
    Unknown,
}

impl ContainerState {
    /// Lowercase word, as the engine writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
        }
    }
}

/// A container's health check result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check.
    #[default]
    None,
    /// Checks have not passed yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// The last checks failed.
    Unhealthy,
}

impl Health {
    /// Lowercase word, as the engine writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// A published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    /// Host address bound (`0.0.0.0`, `::`, empty when not published).
    pub host_ip: String,
    /// Host port, 0 when not published.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// What the inventory knows of one container. Sent again only when one of these fields changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Full id (64 hex digits).
    pub id: String,
    /// Name, without the leading `/`.
    pub name: String,
    /// Image as the container was created from it.
    pub image: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Health check result.
    pub health: Health,
    /// Restarts by the engine's restart policy.
    pub restart_count: u32,
    /// When it last started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// Published and exposed ports.
    pub ports: Vec<PortMap>,
    /// `com.docker.compose.project` label.
    pub compose_project: Option<String>,
    /// `com.docker.compose.service` label.
    pub compose_service: Option<String>,
}

impl ContainerInfo {
    /// Unhealthy, restarting or dead: what the fleet view counts as trouble.
    pub fn troubled(&self) -> bool {
        self.health == Health::Unhealthy
            || matches!(
                self.state,
                ContainerState::Restarting | ContainerState::Dead
            )
    }
}

/// One interval of a running container's resource use. Rates are computed on the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Full container id.
    pub id: String,
    /// CPU, percent of one core (200 = two cores busy).
    pub cpu_pct: f32,
    /// Memory used, bytes (page cache excluded, as `docker stats` shows it).
    pub mem_used: u64,
    /// Memory limit, bytes (the host's memory when unlimited).
    pub mem_limit: u64,
    /// Received, bytes per second, all interfaces.
    pub net_rx_bps: u64,
    /// Sent, bytes per second.
    pub net_tx_bps: u64,
    /// Block device reads, bytes per second.
    pub blk_read_bps: u64,
    /// Block device writes, bytes per second.
    pub blk_write_bps: u64,
    /// Processes and threads.
    pub pids: u32,
}

/// What the inventory knows of one systemd unit. Sent again only when one of these fields changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// Unit name with its suffix (`nginx.service`).
    pub name: String,
    /// `Description=`.
    pub description: String,
    /// `loaded`, `not-found`, `masked`…
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`…
    pub active_state: String,
    /// `running`, `exited`, `dead`, `auto-restart`…
    pub sub_state: String,
    /// When the active state last changed, ms since the epoch.
    pub since_ms: Option<u64>,
    /// Main process, if running.
    pub main_pid: Option<u32>,
    /// Automatic restarts (`NRestarts`).
    pub restarts: u32,
    /// `UnitFileState`: `enabled`, `disabled`, `static`…
    pub unit_file_state: String,
}

impl UnitInfo {
    /// The unit failed.
    pub fn failed(&self) -> bool {
        self.active_state == "failed"
    }
}

/// One interval of an active unit's resource use, from its cgroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitStats {
    /// Unit name.
    pub name: String,
    /// CPU, percent of one core over the interval; `None` without CPU accounting.
    pub cpu_pct: Option<f32>,
    /// Memory of the cgroup, bytes; `None` without memory accounting.
    pub memory_bytes: Option<u64>,
}

/// Agent to hub on the metrics stream: what changed in the workloads since the last delta.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadDelta {
    /// Sampled at, ms since the epoch.
    pub at_ms: u64,
    /// Replace everything the hub holds for this agent with the upserts that follow (first delta
    /// after connecting, or after a source came back); later frames of the same inventory carry
    /// `full = false`.
    pub full: bool,
    /// The policy, in every full delta; `None` when unchanged.
    pub policy: Option<WorkloadPolicy>,
    /// The container engine, when its state changed.
    pub engine: Option<SourceState>,
    /// systemd, when its state changed.
    pub systemd: Option<SourceState>,
    /// Containers new or changed.
    pub containers: Vec<ContainerInfo>,
    /// Containers gone, by id.
    pub containers_removed: Vec<String>,
    /// Stats of every running container this interval.
    pub container_stats: Vec<ContainerStats>,
    /// Units new or changed.
    pub units: Vec<UnitInfo>,
    /// Units gone, by name.
    pub units_removed: Vec<String>,
    /// Stats of every active unit this interval.
    pub unit_stats: Vec<UnitStats>,
}

/// What the fleet view shows of one agent's workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadCounts {
    /// Containers running.
    pub containers_running: u32,
    /// Containers known, stopped ones included.
    pub containers_total: u32,
    /// Containers unhealthy, restarting or dead ([`ContainerInfo::troubled`]).
    pub containers_troubled: u32,
    /// Units known.
    pub units_total: u32,
    /// Units failed.
    pub units_failed: u32,
    /// The agent's policy, so a console hides what it would refuse.
    pub policy: WorkloadPolicy,
}

/// One row of `flotilla ps`: a container and the agent it runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRow {
    /// Agent id.
    pub agent: IdentityId,
    /// Agent name.
    pub agent_name: String,
    /// The container.
    pub info: ContainerInfo,
    /// Its latest stats, if running.
    pub stats: Option<ContainerStats>,
}

/// One row of `flotilla services`: a unit and the agent it runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitRow {
    /// Agent id.
    pub agent: IdentityId,
    /// Agent name.
    pub agent_name: String,
    /// The unit.
    pub info: UnitInfo,
    /// Its latest stats, if active.
    pub stats: Option<UnitStats>,
}

/// One minute of one container's resource use, as the hub keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerMinute {
    /// Start of the minute, ms since the epoch.
    pub start_ms: u64,
    /// Mean CPU percent.
    pub cpu_avg: f32,
    /// Peak CPU percent.
    pub cpu_max: f32,
    /// Mean memory used, bytes.
    pub mem_avg: u64,
    /// Mean received bytes per second.
    pub net_rx_avg: u64,
    /// Mean sent bytes per second.
    pub net_tx_avg: u64,
    /// Mean block reads, bytes per second.
    pub blk_read_avg: u64,
    /// Mean block writes, bytes per second.
    pub blk_write_avg: u64,
}

/// Where log lines come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// A container's stdout and stderr, by name or id (a unique id prefix is enough).
    Container(String),
    /// A systemd unit's journal.
    Unit(String),
}

/// Operator to hub: first frame after [`crate::msg::StreamOpen::Logs`]. Answered by [`LogFrame`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Agent name or id: exactly one agent.
    pub agent: String,
    /// What to read.
    pub source: LogSource,
    /// Lines from before the request; at most [`MAX_LOG_TAIL`].
    pub tail: u32,
    /// Keep streaming new lines until either side closes.
    pub follow: bool,
}

/// Hub to agent: what [`crate::msg::HubStreamOpen::Logs`] asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsOpen {
    /// What to read.
    pub source: LogSource,
    /// Lines from before the request.
    pub tail: u32,
    /// Keep streaming.
    pub follow: bool,
    /// Who asked: the operator's name, for the agent's log.
    pub actor: String,
}

/// Agent to hub and hub to operator on a logs stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LogFrame {
    /// The source was found; lines follow.
    Started {
        /// The container's full id or the unit's name.
        resolved: String,
    },
    /// Output. Container logs come as the engine writes them (whole lines where it can); journal
    /// entries one per frame, message only.
    Data {
        /// Standard output or error; journal entries are stdout, priority ≤ 3 stderr.
        stream: OutputStream,
        /// When the engine or journal stamped it, ms since the epoch.
        at_ms: Option<u64>,
        /// The bytes.
        data: Chunk,
    },
    /// No more (not following, or the container or unit went away).
    End,
    /// Refused or failed; nothing else follows.
    Error(crate::msg::Refusal),
}

/// A container action: each runs as a job on the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerAction {
    /// Start.
    Start,
    /// Stop: SIGTERM, then SIGKILL after the timeout.
    Stop,
    /// Stop then start.
    Restart,
    /// SIGKILL.
    Kill,
    /// Remove (a running container must be stopped first).
    Remove,
}

impl ContainerAction {
    /// Every action, in the order help lists them.
    pub const ALL: [Self; 5] = [
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Kill,
        Self::Remove,
    ];

    /// The verb as typed (`rm` for remove).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Kill => "kill",
            Self::Remove => "rm",
        }
    }

    /// Loses state or interrupts service: the console asks for confirmation.
    pub fn destructive(self) -> bool {
        !matches!(self, Self::Start)
    }
}

/// A systemd unit action: each runs as a job on the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceAction {
    /// `StartUnit`.
    Start,
    /// `StopUnit`.
    Stop,
    /// `RestartUnit`.
    Restart,
    /// `ReloadUnit`.
    Reload,
    /// `EnableUnitFiles`, then a daemon reload.
    Enable,
    /// `DisableUnitFiles`, then a daemon reload.
    Disable,
}

impl ServiceAction {
    /// Every action, in the order help lists them.
    pub const ALL: [Self; 6] = [
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Reload,
        Self::Enable,
        Self::Disable,
    ];

    /// The verb as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Reload => "reload",
            Self::Enable => "enable",
            Self::Disable => "disable",
        }
    }

    /// Interrupts service: the console asks for confirmation.
    pub fn destructive(self) -> bool {
        matches!(self, Self::Stop | Self::Restart | Self::Disable)
    }
}

/// A compose action on one project folder of the agent's `compose_dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeAction {
    /// `up -d`.
    Up,
    /// `down`.
    Down,
    /// `pull`.
    Pull,
    /// `restart`.
    Restart,
    /// `ps`.
    Ps,
    /// `logs` (no follow: a job ends).
    Logs,
}

impl ComposeAction {
    /// Every action, in the order help lists them.
    pub const ALL: [Self; 6] = [
        Self::Up,
        Self::Down,
        Self::Pull,
        Self::Restart,
        Self::Ps,
        Self::Logs,
    ];

    /// The verb as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Pull => "pull",
            Self::Restart => "restart",
            Self::Ps => "ps",
            Self::Logs => "logs",
        }
    }
}

/// Whether `name` may name a compose project: a single folder name of `compose_dir`, no path, no
/// `..`, no hidden folder, only `[A-Za-z0-9_.-]`, at most 64 bytes.
pub fn valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `name` may name a container or a unit in a request: printable, no `/`, bounded.
pub fn valid_workload_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_WORKLOAD_NAME
        && !name.starts_with('-')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_single_plain_folders() {
        for ok in ["web", "my_app-2", "a.b"] {
            assert!(valid_project_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            ".hidden",
            "a/b",
            "../etc",
            "-rf",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_project_name(bad), "{bad}");
        }
    }

    #[test]
    fn workload_names_refuse_paths_options_and_controls() {
        for ok in ["nginx", "nginx.service", "3f2a9c", "getty@tty1.service"] {
            assert!(valid_workload_name(ok), "{ok}");
        }
        for bad in ["", "a/b", "-f", "a\nb", "\u{1b}[2J", &"x".repeat(256)] {
            assert!(!valid_workload_name(bad), "{bad}");
        }
    }

    #[test]
    fn trouble_is_unhealthy_restarting_or_dead() {
        let mut c = ContainerInfo {
            id: "a".repeat(64),
            name: "web".into(),
            image: "bb".into(),
            state: ContainerState::Running,
            health: Health::Healthy,
            restart_count: 0,
            started_ms: None,
            ports: Vec::new(),
            compose_project: None,
            compose_service: None,
        };
        assert!(!c.troubled());
        c.health = Health::Unhealthy;
        assert!(c.troubled());
        c.health = Health::None;
        c.state = ContainerState::Restarting;
        assert!(c.troubled());
        c.state = ContainerState::Exited;
        assert!(!c.troubled());
    }

    #[test]
    fn a_delta_round_trips() {
        let d = WorkloadDelta {
            at_ms: 1,
            full: true,
            policy: Some(WorkloadPolicy {
                containers: Access::Manage,
                compose: true,
                services: Access::Read,
                services_allow: vec!["nginx*.service".into()],
            }),
            engine: Some(SourceState::Up {
                name: "podman".into(),
                version: "4.3.1".into(),
            }),
            units_removed: vec!["old.service".into()],
            ..WorkloadDelta::default()
        };
        let bytes = postcard::to_stdvec(&d).expect("encode");
        assert_eq!(
            postcard::from_bytes::<WorkloadDelta>(&bytes).expect("decode"),
            d
        );
    }
}
