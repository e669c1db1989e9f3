//! Live workloads of every agent: the containers and units its last inventory named, their latest
//! stats, the minute of stats in progress per container, and the counts the fleet view shows.
//!
//! [`AgentWorkloads`] is a state machine driven by [`AgentWorkloads::handle_delta`]: full replaces,
//! upserts, removals and stats in, finished [`ContainerMinute`]s and whether the counts changed out.
//! [`Workloads`] holds one per agent behind a lock; `history` stores the minutes.
//!
//! An agent that goes offline keeps its last inventory (its rows lose their stats, and the agent's
//! row says it is offline); the next connection's full delta replaces it. Revocation forgets it.

pub mod history;

use deploy::sync::lock;
use flotilla_wire::IdentityId;
use flotilla_wire::aggregate::{MINUTE_MS, bucket_start};
use flotilla_wire::workloads::{
    ContainerInfo, ContainerMinute, ContainerRow, ContainerState, ContainerStats, SourceState,
    UnitInfo, UnitRow, UnitStats, WorkloadCounts, WorkloadDelta, WorkloadPolicy,
};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most containers the hub keeps per agent. A host with more is unusual (a busy Kubernetes node
/// runs a few hundred); the cap bounds what one agent, faulty or hostile, can make the hub hold.
pub const MAX_CONTAINERS_PER_AGENT: usize = 10_000;
/// Most units the hub keeps per agent: a full systemd host lists a few hundred to a few thousand.
pub const MAX_UNITS_PER_AGENT: usize = 10_000;
/// Largest container or unit record the hub keeps, counting its text: real ones are a few hundred
/// bytes. Together with the caps this bounds an agent's inventory at about 40 MiB, and it keeps
/// every query row far below the frame limit.
pub const MAX_ENTRY_BYTES: usize = 4096;

/// Hex digits of a container id the history keeps. A full id is 64; stored in the key and in both
/// indexes it made a minute row 400 bytes instead of 225 (measured with SQLite, 120,000 rows).
/// 16 digits (64 bits) tell one agent's containers apart as surely, and are more than the 12 that
/// `docker ps` shows.
pub const HISTORY_ID_HEX: usize = 16;

/// The part of a container id (or of a longer id prefix) the history keys minutes by.
pub fn history_id(id: &str) -> &str {
    id.get(..HISTORY_ID_HEX).unwrap_or(id)
}

/// A finished minute of one container, ready for the store.
#[derive(Clone, Debug, PartialEq)]
pub struct MinuteRow {
    /// Agent.
    pub agent: IdentityId,
    /// Container id, its first [`HISTORY_ID_HEX`] digits.
    pub container: String,
    /// Container name at the time.
    pub name: String,
    /// Samples folded into it, so a minute split across a reconnect merges as a weighted mean.
    pub samples: u32,
    /// The minute.
    pub minute: ContainerMinute,
}

/// Stats of a running container without its id (the map key holds it).
#[derive(Clone, Debug, Default, PartialEq)]
struct Stats {
    cpu_pct: f32,
    mem_used: u64,
    mem_limit: u64,
    net_rx_bps: u64,
    net_tx_bps: u64,
    blk_read_bps: u64,
    blk_write_bps: u64,
    pids: u32,
}

impl Stats {
    fn of(s: &ContainerStats) -> Self {
        Self {
            cpu_pct: s.cpu_pct,
            mem_used: s.mem_used,
            mem_limit: s.mem_limit,
            net_rx_bps: s.net_rx_bps,
            net_tx_bps: s.net_tx_bps,
            blk_read_bps: s.blk_read_bps,
            blk_write_bps: s.blk_write_bps,
            pids: s.pids,
        }
    }

    fn to_wire(&self, id: &str) -> ContainerStats {
        ContainerStats {
            id: id.to_owned(),
            cpu_pct: self.cpu_pct,
            mem_used: self.mem_used,
            mem_limit: self.mem_limit,
            net_rx_bps: self.net_rx_bps,
            net_tx_bps: self.net_tx_bps,
            blk_read_bps: self.blk_read_bps,
            blk_write_bps: self.blk_write_bps,
            pids: self.pids,
        }
    }
}

/// Running sums of one container's minute.
#[derive(Clone, Debug, Default, PartialEq)]
struct MinuteSums {
    start_ms: u64,
    samples: u32,
    cpu_sum: f64,
    cpu_max: f32,
    mem_sum: u128,
    rx_sum: u128,
    tx_sum: u128,
    read_sum: u128,
    write_sum: u128,
}

impl MinuteSums {
    fn add(&mut self, s: &Stats) {
        self.samples += 1;
        self.cpu_sum += f64::from(s.cpu_pct);
        self.cpu_max = self.cpu_max.max(s.cpu_pct);
        self.mem_sum += u128::from(s.mem_used);
        self.rx_sum += u128::from(s.net_rx_bps);
        self.tx_sum += u128::from(s.net_tx_bps);
        self.read_sum += u128::from(s.blk_read_bps);
        self.write_sum += u128::from(s.blk_write_bps);
    }

    fn finish(&self) -> ContainerMinute {
        let n = u128::from(self.samples.max(1));
        let mean = |sum: u128| u64::try_from(sum / n).unwrap_or(u64::MAX);
        ContainerMinute {
            start_ms: self.start_ms,
            cpu_avg: (self.cpu_sum / f64::from(self.samples.max(1))) as f32,
            cpu_max: self.cpu_max,
            mem_avg: mean(self.mem_sum),
            net_rx_avg: mean(self.rx_sum),
            net_tx_avg: mean(self.tx_sum),
            blk_read_avg: mean(self.read_sum),
            blk_write_avg: mean(self.write_sum),
        }
    }
}

#[derive(Clone, Debug)]
struct ContainerEntry {
    info: ContainerInfo,
    stats: Option<Stats>,
    minute: Option<MinuteSums>,
}

#[derive(Clone, Debug)]
struct UnitEntry {
    info: UnitInfo,
    stats: Option<UnitStats>,
}

/// Upper bound of a container record's size: its text plus fixed fields.
fn container_bytes(c: &ContainerInfo) -> usize {
    let ports: usize = c
        .ports
        .iter()
        .map(|p| p.host_ip.len() + p.protocol.len() + 16)
        .sum();
    c.id.len()
        + c.name.len()
        + c.image.len()
        + ports
        + c.compose_project.as_ref().map_or(0, String::len)
        + c.compose_service.as_ref().map_or(0, String::len)
        + 64
}

fn unit_bytes(u: &UnitInfo) -> usize {
    u.name.len()
        + u.description.len()
        + u.load_state.len()
        + u.active_state.len()
        + u.sub_state.len()
        + u.unit_file_state.len()
        + 64
}

/// Upper bound of a `ps` row's encoded size, for paging replies under the frame limit.
pub fn container_row_bytes(row: &ContainerRow) -> usize {
    container_bytes(&row.info)
        + row.agent_name.len()
        + row.stats.as_ref().map_or(0, |s| s.id.len() + 64)
        + 48
}

/// Upper bound of a `services` row's encoded size.
pub fn unit_row_bytes(row: &UnitRow) -> usize {
    unit_bytes(&row.info)
        + row.agent_name.len()
        + row.stats.as_ref().map_or(0, |s| s.name.len() + 24)
        + 48
}

/// What applying a delta did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// The counts differ from before.
    pub counts_changed: bool,
    /// Minutes that closed.
    pub minutes: Vec<MinuteRow>,
    /// Containers and units left out: over the cap, too large, or stats of an unknown container.
    pub refused: usize,
}

/// One agent's workloads as its deltas built them.
#[derive(Clone, Debug)]
pub struct AgentWorkloads {
    agent: IdentityId,
    policy: WorkloadPolicy,
    engine: SourceState,
    systemd: SourceState,
    containers: HashMap<String, ContainerEntry>,
    units: HashMap<String, UnitEntry>,
    counts: WorkloadCounts,
    /// Whether the agent is connected: an offline agent's rows keep the inventory, not the stats.
    online: bool,
}

impl AgentWorkloads {
    /// Nothing known yet about `agent`.
    pub fn new(agent: IdentityId) -> Self {
        Self {
            agent,
            policy: WorkloadPolicy::default(),
            engine: SourceState::Absent,
            systemd: SourceState::Absent,
            containers: HashMap::new(),
            units: HashMap::new(),
            counts: WorkloadCounts::default(),
            online: true,
        }
    }

    /// Counts now.
    pub fn counts(&self) -> &WorkloadCounts {
        &self.counts
    }

    /// The container engine's state as last reported.
    pub fn engine(&self) -> &SourceState {
        &self.engine
    }

    /// systemd's state as last reported.
    pub fn systemd(&self) -> &SourceState {
        &self.systemd
    }

    /// Number of containers held.
    pub fn container_count(&self) -> usize {
        self.containers.len()
    }

    fn close_minute(&self, id: &str, entry: &mut ContainerEntry) -> Option<MinuteRow> {
        let sums = entry.minute.take()?;
        (sums.samples > 0).then(|| MinuteRow {
            agent: self.agent.clone(),
            container: history_id(id).to_owned(),
            name: entry.info.name.clone(),
            samples: sums.samples,
            minute: sums.finish(),
        })
    }

    /// Applies one delta. Upserts come before removals and stats, so one delta may name a new
    /// container and its first stats; stats of a container the inventory does not hold are dropped.
    pub fn handle_delta(&mut self, delta: WorkloadDelta) -> Applied {
        let mut out = Applied::default();
        if delta.full {
            // Minutes of containers the new inventory still holds are closed too: the store merges
            // them with the rest of the same minute.
            for (id, mut entry) in std::mem::take(&mut self.containers) {
                out.minutes.extend(self.close_minute(&id, &mut entry));
            }
            self.units.clear();
        }
        if let Some(policy) = delta.policy {
            self.policy = policy;
        }
        if let Some(engine) = delta.engine {
            self.engine = engine;
        }
        if let Some(systemd) = delta.systemd {
            self.systemd = systemd;
        }
        for info in delta.containers {
            if container_bytes(&info) > MAX_ENTRY_BYTES {
                out.refused += 1;
                continue;
            }
            let full = self.containers.len() >= MAX_CONTAINERS_PER_AGENT;
            match self.containers.get_mut(&info.id) {
                Some(entry) => {
                    if info.state != ContainerState::Running {
                        entry.stats = None;
                    }
                    entry.info = info;
                }
                None if full => out.refused += 1,
                None => {
                    self.containers.insert(
                        info.id.clone(),
                        ContainerEntry {
                            info,
                            stats: None,
                            minute: None,
                        },
                    );
                }
            }
        }
        for id in delta.containers_removed {
            if let Some(mut entry) = self.containers.remove(&id) {
                out.minutes.extend(self.close_minute(&id, &mut entry));
            }
        }
        let minute = bucket_start(delta.at_ms, MINUTE_MS);
        for s in delta.container_stats {
            let Some(mut entry) = self.containers.remove(&s.id) else {
                out.refused += 1;
                continue;
            };
            let stats = Stats::of(&s);
            if entry.minute.as_ref().is_some_and(|m| m.start_ms != minute) {
                out.minutes.extend(self.close_minute(&s.id, &mut entry));
            }
            entry
                .minute
                .get_or_insert_with(|| MinuteSums {
                    start_ms: minute,
                    ..MinuteSums::default()
                })
                .add(&stats);
            entry.stats = Some(stats);
            self.containers.insert(s.id, entry);
        }
        // A container that stopped sending stats (stopped, or the agent's clock moved on) closes
        // its minute once a later minute begins.
        let stale: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, e)| e.minute.as_ref().is_some_and(|m| m.start_ms < minute))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(mut entry) = self.containers.remove(&id) {
                out.minutes.extend(self.close_minute(&id, &mut entry));
                self.containers.insert(id, entry);
            }
        }
        for info in delta.units {
            if unit_bytes(&info) > MAX_ENTRY_BYTES {
                out.refused += 1;
                continue;
            }
            let full = self.units.len() >= MAX_UNITS_PER_AGENT;
            match self.units.get_mut(&info.name) {
                Some(entry) => entry.info = info,
                None if full => out.refused += 1,
                None => {
                    self.units
                        .insert(info.name.clone(), UnitEntry { info, stats: None });
                }
            }
        }
        for name in delta.units_removed {
            self.units.remove(&name);
        }
        for s in delta.unit_stats {
            match self.units.get_mut(&s.name) {
                Some(entry) => entry.stats = Some(s),
                None => out.refused += 1,
            }
        }
        self.online = true;
        let counts = self.count();
        out.counts_changed = counts != self.counts;
        self.counts = counts;
        out
    }

    fn count(&self) -> WorkloadCounts {
        let mut c = WorkloadCounts {
            policy: self.policy.clone(),
            ..WorkloadCounts::default()
        };
        for e in self.containers.values() {
            c.containers_total += 1;
            c.containers_running += u32::from(e.info.state == ContainerState::Running);
            c.containers_troubled += u32::from(e.info.troubled());
        }
        for e in self.units.values() {
            c.units_total += 1;
            c.units_failed += u32::from(e.info.failed());
        }
        c
    }

    /// The agent went offline: its minutes in progress close and its rows lose their stats.
    pub fn handle_offline(&mut self) -> Vec<MinuteRow> {
        self.online = false;
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        let mut minutes = Vec::new();
        for id in ids {
            if let Some(mut entry) = self.containers.remove(&id) {
                minutes.extend(self.close_minute(&id, &mut entry));
                entry.stats = None;
                self.containers.insert(id, entry);
            }
        }
        for entry in self.units.values_mut() {
            entry.stats = None;
        }
        minutes
    }

    /// Every container as last reported.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerInfo> + Clone {
        self.containers.values().map(|e| &e.info)
    }

    /// Every unit as last reported.
    pub fn units(&self) -> impl Iterator<Item = &UnitInfo> + Clone {
        self.units.values().map(|e| &e.info)
    }

    /// Rows of `ps`: running containers, or every one with `all`.
    pub fn container_rows(&self, name: &str, all: bool, out: &mut Vec<ContainerRow>) {
        let start = out.len();
        out.extend(
            self.containers
                .iter()
                .filter(|(_, e)| all || e.info.state == ContainerState::Running)
                .map(|(id, e)| ContainerRow {
                    agent: self.agent.clone(),
                    agent_name: name.to_owned(),
                    info: e.info.clone(),
                    stats: e.stats.as_ref().map(|s| s.to_wire(id)),
                }),
        );
        out[start..].sort_by(|a, b| a.info.name.cmp(&b.info.name));
    }

    /// Rows of `services`: every unit, or failed ones.
    pub fn unit_rows(&self, name: &str, failed: bool, out: &mut Vec<UnitRow>) {
        let start = out.len();
        out.extend(
            self.units
                .values()
                .filter(|e| !failed || e.info.failed())
                .map(|e| UnitRow {
                    agent: self.agent.clone(),
                    agent_name: name.to_owned(),
                    info: e.info.clone(),
                    stats: e.stats.clone(),
                }),
        );
        out[start..].sort_by(|a, b| a.info.name.cmp(&b.info.name));
    }

    /// The container `reference` names: its exact name, its full id, or a unique id prefix.
    pub fn find_container(&self, reference: &str) -> Result<Option<(String, String)>, String> {
        if let Some(e) = self.containers.get(reference) {
            return Ok(Some((e.info.id.clone(), e.info.name.clone())));
        }
        if let Some(e) = self.containers.values().find(|e| e.info.name == reference) {
            return Ok(Some((e.info.id.clone(), e.info.name.clone())));
        }
        let mut found = self
            .containers
            .values()
            .filter(|e| e.info.id.starts_with(reference));
        match (found.next(), found.next()) {
            (Some(e), None) => Ok(Some((e.info.id.clone(), e.info.name.clone()))),
            (Some(_), Some(_)) => Err(format!(
                "container id prefix {reference:?} matches several containers: give more digits"
            )),
            (None, _) => Ok(None),
        }
    }

    /// The minute in progress of container `id`, not stored yet, with its sample count.
    pub fn minute_in_progress(&self, id: &str) -> Option<ContainerMinute> {
        self.containers
            .get(id)
            .and_then(|e| e.minute.as_ref())
            .filter(|m| m.samples > 0)
            .map(MinuteSums::finish)
    }
}

/// Every agent's workloads, shared by metrics streams (writers) and queries (readers).
#[derive(Default)]
pub struct Workloads {
    agents: Mutex<HashMap<IdentityId, AgentWorkloads>>,
}

impl Workloads {
    /// Applies a delta from `agent`; returns what happened and the counts after it.
    pub fn apply(&self, agent: &IdentityId, delta: WorkloadDelta) -> (Applied, WorkloadCounts) {
        let mut agents = lock(&self.agents);
        let state = agents
            .entry(agent.clone())
            .or_insert_with(|| AgentWorkloads::new(agent.clone()));
        let applied = state.handle_delta(delta);
        (applied, state.counts.clone())
    }

    /// `agent` went offline; returns its minutes in progress.
    pub fn offline(&self, agent: &IdentityId) -> Vec<MinuteRow> {
        lock(&self.agents)
            .get_mut(agent)
            .map(AgentWorkloads::handle_offline)
            .unwrap_or_default()
    }

    /// Forgets `agent` (revoked).
    pub fn forget(&self, agent: &IdentityId) {
        lock(&self.agents).remove(agent);
    }

    /// Counts of every agent that reported workloads.
    pub fn all_counts(&self) -> Vec<(IdentityId, WorkloadCounts)> {
        lock(&self.agents)
            .iter()
            .map(|(id, a)| (id.clone(), a.counts.clone()))
            .collect()
    }

    /// Counts of `agent`, if it reported workloads.
    pub fn counts(&self, agent: &IdentityId) -> Option<WorkloadCounts> {
        lock(&self.agents).get(agent).map(|a| a.counts.clone())
    }

    /// Containers held, all agents together.
    pub fn container_total(&self) -> usize {
        lock(&self.agents)
            .values()
            .map(AgentWorkloads::container_count)
            .sum()
    }

    /// Runs `f` on `agent`'s workloads, if any, under the lock (keep `f` short).
    pub fn with_agent<T>(
        &self,
        agent: &IdentityId,
        f: impl FnOnce(&AgentWorkloads) -> T,
    ) -> Option<T> {
        lock(&self.agents).get(agent).map(f)
    }

    /// Every minute in progress, closed (shutdown).
    pub fn close_all_minutes(&self) -> Vec<MinuteRow> {
        let mut agents = lock(&self.agents);
        let mut out = Vec::new();
        for state in agents.values_mut() {
            let ids: Vec<String> = state.containers.keys().cloned().collect();
            for id in ids {
                if let Some(mut entry) = state.containers.remove(&id) {
                    out.extend(state.close_minute(&id, &mut entry));
                    state.containers.insert(id, entry);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;
    use flotilla_wire::workloads::{Health, PortMap};

    fn agent() -> IdentityId {
        IdentityId::from_random(Role::Agent, [7; 8])
    }

    fn container(n: usize, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: format!("{n:064x}"),
            name: format!("app-{n}"),
            image: "localhost/bb:1".into(),
            state,
            health: Health::None,
            restart_count: 0,
            started_ms: Some(1),
            ports: vec![PortMap {
                host_ip: "0.0.0.0".into(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
            }],
            compose_project: None,
            compose_service: None,
        }
    }

    fn stats(n: usize, cpu: f32) -> ContainerStats {
        ContainerStats {
            id: format!("{n:064x}"),
            cpu_pct: cpu,
            mem_used: 1000,
            ..ContainerStats::default()
        }
    }

    fn unit(name: &str, active: &str) -> UnitInfo {
        UnitInfo {
            name: name.into(),
            description: String::new(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            since_ms: None,
            main_pid: None,
            restarts: 0,
            unit_file_state: "enabled".into(),
        }
    }

    fn full(at_ms: u64, containers: Vec<ContainerInfo>) -> WorkloadDelta {
        WorkloadDelta {
            at_ms,
            full: true,
            containers,
            ..WorkloadDelta::default()
        }
    }

    fn names(w: &AgentWorkloads, all: bool) -> Vec<String> {
        let mut rows = Vec::new();
        w.container_rows("web-1", all, &mut rows);
        rows.into_iter().map(|r| r.info.name).collect()
    }

    #[test]
    fn a_full_delta_replaces_and_later_ones_upsert_and_remove() {
        let mut w = AgentWorkloads::new(agent());
        let a = w.handle_delta(full(
            0,
            vec![
                container(1, ContainerState::Running),
                container(2, ContainerState::Exited),
            ],
        ));
        assert!(a.counts_changed);
        assert_eq!(names(&w, false), ["app-1"]);
        assert_eq!(names(&w, true), ["app-1", "app-2"]);
        assert_eq!(
            (w.counts().containers_running, w.counts().containers_total),
            (1, 2)
        );
        // An upsert changes one, a removal drops another, a new one arrives.
        let mut d = WorkloadDelta {
            at_ms: 1,
            containers: vec![
                container(2, ContainerState::Running),
                container(3, ContainerState::Running),
            ],
            containers_removed: vec![format!("{:064x}", 1)],
            ..WorkloadDelta::default()
        };
        d.containers[1].health = Health::Unhealthy;
        let a = w.handle_delta(d);
        assert!(a.counts_changed);
        assert_eq!(names(&w, true), ["app-2", "app-3"]);
        assert_eq!(w.counts().containers_troubled, 1);
        // A delta that changes nothing counted is not news.
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 2,
            container_stats: vec![stats(2, 5.0)],
            ..WorkloadDelta::default()
        });
        assert!(!a.counts_changed);
        // A new full inventory forgets what it does not name.
        w.handle_delta(full(3, vec![container(9, ContainerState::Running)]));
        assert_eq!(names(&w, true), ["app-9"]);
    }

    #[test]
    fn stats_fold_into_minutes_that_close_when_the_next_begins() {
        let mut w = AgentWorkloads::new(agent());
        w.handle_delta(full(0, vec![container(1, ContainerState::Running)]));
        for (at, cpu) in [(1_000, 10.0), (30_000, 30.0)] {
            let a = w.handle_delta(WorkloadDelta {
                at_ms: at,
                container_stats: vec![stats(1, cpu)],
                ..WorkloadDelta::default()
            });
            assert!(a.minutes.is_empty());
        }
        let id = format!("{:064x}", 1);
        let open = w.minute_in_progress(&id).expect("minute in progress");
        assert_eq!((open.cpu_avg, open.cpu_max), (20.0, 30.0));
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 61_000,
            container_stats: vec![stats(1, 50.0)],
            ..WorkloadDelta::default()
        });
        assert_eq!(a.minutes.len(), 1);
        let m = &a.minutes[0];
        assert_eq!(
            (m.container.as_str(), m.name.as_str()),
            (&id[..HISTORY_ID_HEX], "app-1")
        );
        assert_eq!((m.samples, m.minute.start_ms), (2, 0));
        assert_eq!(
            (m.minute.cpu_avg, m.minute.cpu_max, m.minute.mem_avg),
            (20.0, 30.0, 1000)
        );
        // Stopped: no more stats; its minute closes when a later minute's delta comes.
        let mut stopped = container(1, ContainerState::Exited);
        stopped.started_ms = None;
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 70_000,
            containers: vec![stopped],
            ..WorkloadDelta::default()
        });
        assert!(a.minutes.is_empty());
        let mut rows = Vec::new();
        w.container_rows("web-1", true, &mut rows);
        assert_eq!(rows[0].stats, None, "a stopped container shows no stats");
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 125_000,
            ..WorkloadDelta::default()
        });
        assert_eq!(a.minutes.len(), 1);
        assert_eq!(
            (a.minutes[0].minute.start_ms, a.minutes[0].samples),
            (60_000, 1)
        );
    }

    #[test]
    fn removal_and_going_offline_close_minutes_and_keep_the_inventory() {
        let mut w = AgentWorkloads::new(agent());
        w.handle_delta(WorkloadDelta {
            at_ms: 0,
            full: true,
            containers: vec![
                container(1, ContainerState::Running),
                container(2, ContainerState::Running),
            ],
            container_stats: vec![stats(1, 1.0), stats(2, 2.0)],
            ..WorkloadDelta::default()
        });
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 5_000,
            containers_removed: vec![format!("{:064x}", 2)],
            ..WorkloadDelta::default()
        });
        assert_eq!(a.minutes.len(), 1, "the removed container's minute is kept");
        let minutes = w.handle_offline();
        assert_eq!(minutes.len(), 1);
        let mut rows = Vec::new();
        w.container_rows("web-1", false, &mut rows);
        assert_eq!(rows.len(), 1, "the last inventory stays");
        assert_eq!(rows[0].stats, None, "but its stats are gone");
    }

    #[test]
    fn units_count_failures_and_take_stats() {
        let mut w = AgentWorkloads::new(agent());
        w.handle_delta(WorkloadDelta {
            at_ms: 0,
            full: true,
            units: vec![unit("a.service", "active"), unit("b.service", "failed")],
            unit_stats: vec![UnitStats {
                name: "a.service".into(),
                cpu_pct: Some(1.5),
                memory_bytes: Some(4096),
            }],
            ..WorkloadDelta::default()
        });
        assert_eq!((w.counts().units_total, w.counts().units_failed), (2, 1));
        let mut rows = Vec::new();
        w.unit_rows("web-1", true, &mut rows);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].info.name, "b.service");
        rows.clear();
        w.unit_rows("web-1", false, &mut rows);
        assert_eq!(
            rows[0].stats.as_ref().and_then(|s| s.memory_bytes),
            Some(4096)
        );
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 1,
            units: vec![unit("b.service", "active")],
            units_removed: vec!["a.service".into()],
            ..WorkloadDelta::default()
        });
        assert!(a.counts_changed);
        assert_eq!((w.counts().units_total, w.counts().units_failed), (1, 0));
    }

    #[test]
    fn caps_and_sizes_bound_what_one_agent_makes_the_hub_hold() {
        let mut w = AgentWorkloads::new(agent());
        let many: Vec<ContainerInfo> = (0..MAX_CONTAINERS_PER_AGENT + 5)
            .map(|n| container(n, ContainerState::Running))
            .collect();
        let a = w.handle_delta(full(0, many));
        assert_eq!(a.refused, 5);
        assert_eq!(w.container_count(), MAX_CONTAINERS_PER_AGENT);
        // An existing container may still change; a huge record is refused.
        let mut huge = container(1, ContainerState::Exited);
        huge.image = "x".repeat(MAX_ENTRY_BYTES);
        let a = w.handle_delta(WorkloadDelta {
            at_ms: 1,
            containers: vec![container(2, ContainerState::Exited), huge],
            container_stats: vec![stats(999_999, 1.0)],
            ..WorkloadDelta::default()
        });
        assert_eq!(
            a.refused, 2,
            "the huge record and stats of an unknown container"
        );
        assert_eq!(
            w.counts().containers_running as usize,
            MAX_CONTAINERS_PER_AGENT - 1
        );
    }

    #[test]
    fn containers_are_found_by_name_id_or_unique_prefix() {
        let mut w = AgentWorkloads::new(agent());
        let mut a = container(1, ContainerState::Running);
        a.id = format!("ab{}", "0".repeat(62));
        let mut b = container(2, ContainerState::Running);
        b.id = format!("ac{}", "0".repeat(62));
        w.handle_delta(full(0, vec![a.clone(), b]));
        assert_eq!(
            w.find_container("app-1").expect("ok").map(|f| f.0),
            Some(a.id.clone())
        );
        assert_eq!(
            w.find_container("ab").expect("ok").map(|f| f.1),
            Some("app-1".into())
        );
        assert_eq!(
            w.find_container(&a.id).expect("ok").map(|f| f.1),
            Some("app-1".into())
        );
        assert!(
            w.find_container("a")
                .expect_err("ambiguous")
                .contains("several")
        );
        assert_eq!(w.find_container("nope").expect("ok"), None);
    }
}
