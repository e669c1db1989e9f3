//! Synthetic containers and units for swarm agents: a fixed inventory per agent whose stats change
//! every interval, sent over the real [`flotilla_wire::msg::MetricsFrame::Workloads`] path so the
//! hub's inventory, counts, history and queries can be loaded without a container engine. The
//! swarm's override file can force a container's or unit's state ([`super::overrides`]): the
//! change goes to the hub as an upsert in the next delta, as a real engine's would.

use super::overrides::{self, ForcedContainer, ForcedUnit};
use crate::link::WorkloadFeed;
use flotilla_wire::workloads::{
    Access, ContainerInfo, ContainerState, ContainerStats, Health, PortMap, SourceState, UnitInfo,
    UnitStats, WORKLOADS_PER_FRAME, WorkloadDelta, WorkloadPolicy,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every fifth container is stopped, so `ps` and `ps --all` differ.
const STOPPED_EVERY: usize = 5;
/// Every tenth container fails its health check: the fleet view's trouble count.
const UNHEALTHY_EVERY: usize = 10;
/// Every seventh unit has failed.
const FAILED_UNIT_EVERY: usize = 7;

/// A 64-hex-digit id that looks random, as an engine's do, and whose every 16-digit part differs
/// between the containers of all swarm agents (the hub keys history by the first 16): each part is
/// an odd multiple, a bijection of the 64-bit word, of a word unique to the agent and container.
fn container_id(seed: u64, i: usize) -> String {
    let k = (seed << 32) | i as u64;
    let mix = |x: u64| x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(k),
        mix(!k),
        mix(k.rotate_left(17)),
        mix(k ^ 0x5555_5555_5555_5555)
    )
}

/// A swarm agent's containers (`app-00`, `app-01`…) and units (`svc-00.service`…).
pub(super) struct SyntheticWorkloads {
    rng: fastrand::Rng,
    containers: Vec<ContainerInfo>,
    units: Vec<UnitInfo>,
    /// The inventory as drawn: what a container or unit goes back to when no longer forced.
    base: (Vec<ContainerInfo>, Vec<UnitInfo>),
    /// The override file and this agent's name in it.
    forced: Option<(PathBuf, String)>,
}

impl SyntheticWorkloads {
    /// `containers` containers and `units` units, their ids and stats drawn from `seed`.
    pub(super) fn new(seed: u64, containers: usize, units: usize) -> Self {
        let started_ms = flotilla_certs::clock::now_ms().saturating_sub(3_600_000);
        let containers: Vec<ContainerInfo> = (0..containers)
            .map(|i| {
                let stopped = i % STOPPED_EVERY == STOPPED_EVERY - 1;
                ContainerInfo {
                    id: container_id(seed, i),
                    name: format!("app-{i:02}"),
                    image: format!("localhost/app:{}", i % 3 + 1),
                    state: if stopped {
                        ContainerState::Exited
                    } else {
                        ContainerState::Running
                    },
                    health: if i % UNHEALTHY_EVERY == 1 {
                        Health::Unhealthy
                    } else {
                        Health::Healthy
                    },
                    restart_count: 0,
                    started_ms: (!stopped).then_some(started_ms),
                    ports: vec![PortMap {
                        host_ip: "0.0.0.0".into(),
                        host_port: 8000 + i as u16,
                        container_port: 80,
                        protocol: "tcp".into(),
                    }],
                    compose_project: None,
                    compose_service: None,
                }
            })
            .collect();
        let units: Vec<UnitInfo> = (0..units)
            .map(|i| {
                let failed = i % FAILED_UNIT_EVERY == FAILED_UNIT_EVERY - 1;
                UnitInfo {
                    name: format!("svc-{i:02}.service"),
                    description: format!("Synthetic service {i}"),
                    load_state: "loaded".into(),
                    active_state: if failed { "failed" } else { "active" }.into(),
                    sub_state: if failed { "failed" } else { "running" }.into(),
                    since_ms: Some(started_ms),
                    main_pid: (!failed).then_some(1000 + i as u32),
                    restarts: u32::from(failed),
                    unit_file_state: "enabled".into(),
                }
            })
            .collect();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            base: (containers.clone(), units.clone()),
            containers,
            units,
            forced: None,
        }
    }

    /// States forced by `file`'s entries for agent `name` apply from the next delta on.
    pub(super) fn forced_by(mut self, file: PathBuf, name: String) -> Self {
        self.forced = Some((file, name));
        self
    }

    /// Applies the forced states (or the drawn ones where none is forced); returns what changed.
    fn apply_forced(&mut self, at_ms: u64) -> (Vec<ContainerInfo>, Vec<UnitInfo>) {
        let Some((file, name)) = &self.forced else {
            return (Vec::new(), Vec::new());
        };
        let mut want_c: BTreeMap<String, ForcedContainer> = BTreeMap::new();
        let mut want_u: BTreeMap<String, ForcedUnit> = BTreeMap::new();
        for f in overrides::read(file, name) {
            want_c.extend(f.containers.unwrap_or_default());
            want_u.extend(f.units.unwrap_or_default());
        }
        let mut changed_c = Vec::new();
        for (c, base) in self.containers.iter_mut().zip(&self.base.0) {
            let mut next = base.clone();
            next.restart_count = c.restart_count;
            match want_c.get(&c.name) {
                None => {}
                Some(ForcedContainer::Running) => {
                    next.state = ContainerState::Running;
                    next.health = Health::Healthy;
                }
                Some(ForcedContainer::Unhealthy) => {
                    next.state = ContainerState::Running;
                    next.health = Health::Unhealthy;
                }
                Some(ForcedContainer::Restarting) => next.state = ContainerState::Restarting,
                Some(ForcedContainer::Exited) => next.state = ContainerState::Exited,
                Some(ForcedContainer::Dead) => next.state = ContainerState::Dead,
                Some(ForcedContainer::Paused) => next.state = ContainerState::Paused,
            }
            if next.state == ContainerState::Restarting && c.state != ContainerState::Restarting {
                next.restart_count += 1;
            }
            if next.state != ContainerState::Running {
                next.started_ms = None;
            } else if c.state != ContainerState::Running {
                next.started_ms = Some(at_ms);
            } else {
                next.started_ms = c.started_ms;
            }
            if next != *c {
                *c = next.clone();
                changed_c.push(next);
            }
        }
        let mut changed_u = Vec::new();
        for (u, base) in self.units.iter_mut().zip(&self.base.1) {
            let mut next = base.clone();
            next.restarts = u.restarts;
            next.since_ms = u.since_ms;
            let (active, sub) = match want_u.get(&u.name) {
                None => (base.active_state.clone(), base.sub_state.clone()),
                Some(ForcedUnit::Active) => ("active".into(), "running".into()),
                Some(ForcedUnit::Failed) => ("failed".into(), "failed".into()),
                Some(ForcedUnit::Inactive) => ("inactive".into(), "dead".into()),
            };
            next.main_pid = (active == "active").then_some(base.main_pid.unwrap_or(1000));
            if active == "failed" && u.active_state != "failed" {
                next.restarts += 1;
            }
            if active != u.active_state {
                next.since_ms = Some(at_ms);
            }
            next.active_state = active;
            next.sub_state = sub;
            if next != *u {
                *u = next.clone();
                changed_u.push(next);
            }
        }
        (changed_c, changed_u)
    }

    fn stats(&mut self, at_ms: u64) -> WorkloadDelta {
        let r = &mut self.rng;
        WorkloadDelta {
            at_ms,
            container_stats: self
                .containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .map(|c| ContainerStats {
                    id: c.id.clone(),
                    cpu_pct: r.f32() * 100.0,
                    mem_used: r.u64(16 << 20..512 << 20),
                    mem_limit: 8 << 30,
                    net_rx_bps: r.u64(0..1 << 20),
                    net_tx_bps: r.u64(0..1 << 20),
                    blk_read_bps: r.u64(0..1 << 20),
                    blk_write_bps: r.u64(0..1 << 20),
                    pids: r.u32(1..50),
                })
                .collect(),
            unit_stats: self
                .units
                .iter()
                .filter(|u| u.active_state == "active")
                .map(|u| UnitStats {
                    name: u.name.clone(),
                    cpu_pct: Some(r.f32() * 10.0),
                    memory_bytes: Some(r.u64(1 << 20..64 << 20)),
                })
                .collect(),
            ..WorkloadDelta::default()
        }
    }
}

impl WorkloadFeed for SyntheticWorkloads {
    fn full(&mut self, at_ms: u64) -> Vec<WorkloadDelta> {
        let mut first = WorkloadDelta {
            at_ms,
            full: true,
            policy: Some(WorkloadPolicy {
                containers: Access::Read,
                compose: false,
                services: Access::Read,
                services_allow: Vec::new(),
            }),
            engine: Some(SourceState::Up {
                name: "synthetic".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            systemd: Some(SourceState::Up {
                name: "synthetic".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            ..WorkloadDelta::default()
        };
        let mut out = Vec::new();
        let chunks = self.containers.chunks(WORKLOADS_PER_FRAME).count().max(1);
        let unit_chunks = self.units.chunks(WORKLOADS_PER_FRAME).count().max(1);
        for i in 0..chunks.max(unit_chunks) {
            let mut d = if i == 0 {
                std::mem::take(&mut first)
            } else {
                WorkloadDelta {
                    at_ms,
                    ..WorkloadDelta::default()
                }
            };
            if let Some(c) = self.containers.chunks(WORKLOADS_PER_FRAME).nth(i) {
                d.containers = c.to_vec();
            }
            if let Some(u) = self.units.chunks(WORKLOADS_PER_FRAME).nth(i) {
                d.units = u.to_vec();
            }
            out.push(d);
        }
        out
    }

    fn delta(&mut self, at_ms: u64) -> Vec<WorkloadDelta> {
        if self.containers.is_empty() && self.units.is_empty() {
            return Vec::new();
        }
        let (containers, units) = self.apply_forced(at_ms);
        let mut d = self.stats(at_ms);
        // A handful of forced changes: well within one frame's limit.
        d.containers = containers;
        d.units = units;
        vec![d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_inventory_splits_into_frames_and_stats_cover_what_runs() {
        let mut w = SyntheticWorkloads::new(3, 2_500, 20);
        let full = w.full(1);
        assert_eq!(full.len(), 3);
        assert!(full[0].full && !full[1].full && !full[2].full);
        assert_eq!(
            full.iter().map(|d| d.containers.len()).sum::<usize>(),
            2_500
        );
        assert_eq!(full[0].units.len(), 20);
        let mut ids: Vec<&str> = full
            .iter()
            .flat_map(|d| d.containers.iter().map(|c| c.id.as_str()))
            .collect();
        assert!(ids.iter().all(|id| id.len() == 64));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 2_500, "ids are unique");
        let other = SyntheticWorkloads::new(4, 2_500, 0);
        let mut heads: Vec<&str> = ids.iter().map(|id| &id[..16]).collect();
        heads.extend(other.containers.iter().map(|c| &c.id[..16]));
        heads.sort_unstable();
        heads.dedup();
        assert_eq!(
            heads.len(),
            5_000,
            "so are their first 16 digits, across agents too"
        );
        let d = w.delta(2).pop().expect("stats");
        assert_eq!(d.container_stats.len(), 2_000, "one in five is stopped");
        assert_eq!(
            d.unit_stats.len(),
            18,
            "failed units (one in seven) have no stats"
        );
        assert!(!d.full && d.containers.is_empty());
    }

    #[test]
    fn forced_states_go_out_as_upserts_and_lifting_them_restores_the_drawn_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("overrides.json");
        let mut w = SyntheticWorkloads::new(1, 3, 2).forced_by(file.clone(), "sw-1".into());
        w.full(1);
        assert!(w.delta(2)[0].containers.is_empty(), "nothing forced yet");
        std::fs::write(
            &file,
            r#"{ "sw-1": { "containers": { "app-00": "exited", "app-02": "restarting" },
                           "units": { "svc-00.service": "failed" } },
                 "sw-2": { "containers": { "app-01": "exited" } } }"#,
        )
        .expect("write");
        let d = w.delta(3).pop().expect("delta");
        let states: Vec<(&str, ContainerState, u32)> = d
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.state, c.restart_count))
            .collect();
        assert_eq!(
            states,
            [
                ("app-00", ContainerState::Exited, 0),
                ("app-02", ContainerState::Restarting, 1)
            ]
        );
        assert_eq!(d.units.len(), 1);
        assert_eq!(d.units[0].active_state, "failed");
        assert!(
            w.delta(4)[0].containers.is_empty(),
            "sent once, not every interval"
        );
        std::fs::write(&file, "{}").expect("lift");
        let d = w.delta(5).pop().expect("delta");
        assert!(
            d.containers
                .iter()
                .all(|c| c.state == ContainerState::Running)
        );
        assert_eq!(d.containers.len(), 2);
        assert_eq!(d.units[0].active_state, "active");
        assert_eq!(
            d.containers
                .iter()
                .find(|c| c.name == "app-02")
                .map(|c| c.restart_count),
            Some(1),
            "restarts are counted, not forgotten"
        );
    }
}
