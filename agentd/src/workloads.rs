//! Workloads on this machine: containers through the Docker Engine API (Docker or Podman),
//! compose projects, and systemd units.
//!
//! - [`WorkloadSettings`]: the policy keys of agent.toml, resolved once at start.
//! - `containers`: the engine connection, inventory with stats, actions.
//! - `libpod`: Podman's own API, for every running container's stats in one request.
//! - `delta`: the pure differ turning inventories into [`WorkloadDelta`]s for the metrics stream.
//! - `logs`: the logs stream the hub opens, under QUIC flow control.
//! - `compose`: which compose tool runs a project and how.
//! - `services`: systemd units over D-Bus, inventory with cgroup stats.
//! - `unit_actions`: start, stop, restart, reload, enable and disable as exec jobs.
//! - `journal`: a unit's journal, tailed and followed on a logs stream.
//!
//! A poller ([`run`]) takes an [`Inventory`] every metrics interval and publishes the latest; each
//! connection's metrics sender diffs it against what that connection's hub was told.

pub mod actions;
pub mod compose;
pub mod containers;
pub mod delta;
#[cfg(unix)]
pub mod journal;
#[cfg(unix)]
pub mod libpod;
pub mod logs;
#[cfg(unix)]
pub mod services;
#[cfg(unix)]
pub mod unit_actions;

#[cfg(unix)]
use services::UnitSource;

pub use containers::{ContainerSource, Engine, EngineError, StatsApi};
pub use delta::{Differ, Inventory};

use crate::config::{AgentConfig, ComposeMode};
use flotilla_certs::clock::now_ms;
use flotilla_wire::workloads::{Access, SourceState, WorkloadDelta, WorkloadPolicy};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Engine sockets probed in this order when `containers_socket` is unset: Docker's, then rootful
/// Podman's (`podman.socket`). A non-root agent also probes `$XDG_RUNTIME_DIR/podman/podman.sock`.
pub const DEFAULT_ENGINE_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/podman/podman.sock"];

/// The workload keys of agent.toml, resolved once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadSettings {
    /// `containers`.
    pub containers: Access,
    /// Engine sockets to try, in order (the configured one alone, or the probe list).
    pub engine_sockets: Vec<PathBuf>,
    /// `compose = "on"`.
    pub compose: bool,
    /// `compose_dir`.
    pub compose_dir: Option<PathBuf>,
    /// `services`.
    pub services: Access,
    /// `services_allow`.
    pub services_allow: Vec<String>,
    /// Podman's configuration variables agentd started with, handed to compose tools so that
    /// `podman-compose` drives the same Podman as agentd's engine.
    pub compose_env: Vec<(String, String)>,
}

/// Environment variables that choose which Podman the `podman` command drives.
const PODMAN_ENV: [&str; 3] = [
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "XDG_RUNTIME_DIR",
];

impl Default for WorkloadSettings {
    /// Everything off: for agents that must not touch the machine's workloads (the swarm).
    fn default() -> Self {
        Self {
            containers: Access::Off,
            engine_sockets: Vec::new(),
            compose: false,
            compose_dir: None,
            services: Access::Off,
            services_allow: Vec::new(),
            compose_env: Vec::new(),
        }
    }
}

impl WorkloadSettings {
    /// From the config; the rootless Podman socket is probed for a non-root agent only, under the
    /// `XDG_RUNTIME_DIR` agentd started with.
    pub fn from_config(cfg: &AgentConfig) -> Self {
        #[cfg(unix)]
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        #[cfg(not(unix))]
        let root = false;
        let runtime_dir = (!root)
            .then(|| std::env::var_os("XDG_RUNTIME_DIR"))
            .flatten()
            .map(PathBuf::from);
        Self {
            containers: cfg.containers,
            engine_sockets: containers::engine_sockets(
                cfg.containers_socket.as_deref(),
                runtime_dir.as_deref(),
            ),
            compose: cfg.compose == ComposeMode::On,
            compose_dir: cfg.compose_dir.clone(),
            services: cfg.services,
            services_allow: cfg.services_allow.clone(),
            compose_env: PODMAN_ENV
                .iter()
                .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
                .collect(),
        }
    }

    /// Whether any workload is reported (containers or services not `off`).
    pub fn reports_anything(&self) -> bool {
        self.containers != Access::Off || self.services != Access::Off
    }

    /// The policy as the hub is told it.
    pub fn policy(&self) -> WorkloadPolicy {
        WorkloadPolicy {
            containers: self.containers,
            compose: self.compose,
            services: self.services,
            services_allow: self.services_allow.clone(),
        }
    }
}

/// What logs, actions and the poller share: the settings and the engine connection.
pub struct Workloads {
    /// The policy keys.
    pub settings: WorkloadSettings,
    /// The container engine.
    pub engine: Arc<Engine>,
}

impl Workloads {
    /// Workloads under `settings`; nothing is dialled until first used.
    pub fn new(settings: WorkloadSettings) -> Self {
        let engine = Arc::new(Engine::new(settings.engine_sockets.clone()));
        Self { settings, engine }
    }
}

/// The latest inventory, as the poller publishes it (`None` before the first).
pub type InventoryWatch = watch::Receiver<Option<Arc<Inventory>>>;

/// Without systemd (Windows): units are always absent.
#[cfg(not(unix))]
struct UnitSource;

#[cfg(not(unix))]
impl UnitSource {
    async fn open(_settings: &WorkloadSettings) -> Self {
        Self
    }

    fn state(&self) -> SourceState {
        SourceState::Absent
    }

    async fn poll(
        &mut self,
    ) -> (
        Vec<flotilla_wire::workloads::UnitInfo>,
        Vec<flotilla_wire::workloads::UnitStats>,
    ) {
        (Vec::new(), Vec::new())
    }
}

/// Takes an inventory now and then every `interval` (milliseconds; the metrics interval, 1 s
/// while watched) and publishes it on `tx`, until cancelled.
pub async fn run(
    workloads: Arc<Workloads>,
    mut interval: watch::Receiver<u32>,
    tx: watch::Sender<Option<Arc<Inventory>>>,
    cancel: CancellationToken,
) {
    let settings = &workloads.settings;
    let mut containers = (settings.containers != Access::Off)
        .then(|| ContainerSource::new(workloads.engine.clone()));
    let mut units = if settings.services != Access::Off {
        Some(UnitSource::open(settings).await)
    } else {
        None
    };
    loop {
        let mut inv = Inventory {
            at_ms: now_ms(),
            containers: Some(Vec::new()),
            units: Some(Vec::new()),
            ..Inventory::default()
        };
        if let Some(source) = containers.as_mut() {
            let polled = tokio::select! {
                _ = cancel.cancelled() => return,
                p = source.poll() => p,
            };
            inv.engine = polled.state;
            match polled.inventory {
                Some((list, stats)) => {
                    inv.containers = Some(list);
                    inv.container_stats = stats;
                }
                None if inv.engine == SourceState::Absent => {}
                None => inv.containers = None,
            }
        }
        if let Some(source) = units.as_mut() {
            let (list, stats) = tokio::select! {
                _ = cancel.cancelled() => return,
                p = source.poll() => p,
            };
            inv.systemd = source.state();
            if matches!(inv.systemd, SourceState::Down { .. }) {
                inv.units = None;
            } else {
                inv.units = Some(list);
                inv.unit_stats = stats;
            }
        }
        tx.send_replace(Some(Arc::new(inv)));
        if containers.is_none() && units.is_none() {
            // Nothing will change: the one inventory tells every connection the policy.
            cancel.cancelled().await;
            return;
        }
        let period = Duration::from_millis(u64::from((*interval.borrow_and_update()).max(1000)));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            changed = interval.changed() => if changed.is_err() { return },
        }
    }
}

/// The metrics stream's workload feed over the inventories the poller publishes: each new
/// stream gets the current inventory in full, then, after each sample, what changed since.
pub struct DeltaFeed {
    rx: InventoryWatch,
    policy: WorkloadPolicy,
    differ: Differ,
}

impl DeltaFeed {
    /// A feed over `rx`, announcing `policy` in every full delta.
    pub fn new(rx: InventoryWatch, policy: WorkloadPolicy) -> Self {
        Self {
            rx,
            differ: Differ::new(policy.clone()),
            policy,
        }
    }

    /// Frames for the latest inventory, if the poller published one since the last call.
    fn changed(&mut self) -> Vec<WorkloadDelta> {
        if !self.rx.has_changed().unwrap_or(false) {
            return Vec::new();
        }
        let inv = self.rx.borrow_and_update().clone();
        inv.map(|inv| self.differ.next(&inv)).unwrap_or_default()
    }
}

impl crate::link::WorkloadFeed for DeltaFeed {
    /// Starts over for a new stream. Before the poller's first inventory there is nothing to
    /// send: the first delta that follows is the full one.
    fn full(&mut self, _at_ms: u64) -> Vec<WorkloadDelta> {
        self.differ = Differ::new(self.policy.clone());
        self.rx.mark_changed();
        self.changed()
    }

    fn delta(&mut self, _at_ms: u64) -> Vec<WorkloadDelta> {
        self.changed()
    }
}

/// Milliseconds since the epoch of an RFC 3339 time as engines write it
/// (`2026-12-07T19:02:15.366248931Z`, or with a `+01:00` offset); `None` for the zero time
/// (`0001-01-01T00:00:00Z`, never started) and anything unparsable.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    if y < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_times_parse_to_epoch_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-12-07T19:02:15.366248931Z"),
            Some(1_796_670_135_366)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-07T20:02:15.5+01:00"),
            Some(1_796_670_135_500)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn settings_follow_the_config() {
        let cfg = AgentConfig {
            containers: Access::Manage,
            containers_socket: Some("/srv/engine.sock".into()),
            compose: ComposeMode::On,
            compose_dir: Some("/srv/compose".into()),
            ..AgentConfig::default()
        };
        let s = WorkloadSettings::from_config(&cfg);
        assert_eq!(s.engine_sockets, [PathBuf::from("/srv/engine.sock")]);
        let p = s.policy();
        assert_eq!(p.containers, Access::Manage);
        assert!(p.compose);
        assert_eq!(p.services, Access::Read);
        let d = WorkloadSettings::from_config(&AgentConfig::default());
        assert_eq!(d.containers, Access::Read, "read by default");
        assert!(!d.compose, "compose off by default");
        assert_eq!(
            d.engine_sockets[0],
            PathBuf::from(DEFAULT_ENGINE_SOCKETS[0])
        );
    }
}
