//! From one inventory to the next: what the hub has not heard yet. Pure, so its rules are tested
//! without an engine: everything in the first delta of a connection and after a source comes back
//! (`full`), then only what changed, plus the stats of every running container and active unit.

use flotilla_wire::workloads::{
    ContainerInfo, ContainerStats, SourceState, UnitInfo, UnitStats, WORKLOADS_PER_FRAME,
    WorkloadDelta, WorkloadPolicy,
};
use std::collections::HashMap;

/// Everything the agent knows of its workloads at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Inventory {
    /// When it was taken, ms since the epoch.
    pub at_ms: u64,
    /// The container engine.
    pub engine: SourceState,
    /// Containers; `None` when the engine did not answer (what the hub holds stays).
    pub containers: Option<Vec<ContainerInfo>>,
    /// Stats of running containers.
    pub container_stats: Vec<ContainerStats>,
    /// systemd.
    pub systemd: SourceState,
    /// Units; `None` when systemd did not answer.
    pub units: Option<Vec<UnitInfo>>,
    /// Stats of active units.
    pub unit_stats: Vec<UnitStats>,
}

impl Default for Inventory {
    /// Both sources absent, nothing known.
    fn default() -> Self {
        Self {
            at_ms: 0,
            engine: SourceState::Absent,
            containers: None,
            container_stats: Vec::new(),
            systemd: SourceState::Absent,
            units: None,
            unit_stats: Vec::new(),
        }
    }
}

/// What one connection's hub has been told. A new connection starts a new differ.
#[derive(Debug)]
pub struct Differ {
    policy: WorkloadPolicy,
    started: bool,
    engine: Option<SourceState>,
    systemd: Option<SourceState>,
    containers: HashMap<String, ContainerInfo>,
    units: HashMap<String, UnitInfo>,
}

fn is_up(s: &SourceState) -> bool {
    matches!(s, SourceState::Up { .. })
}

impl Differ {
    /// A differ for a new connection; its first delta is full and carries `policy`.
    pub fn new(policy: WorkloadPolicy) -> Self {
        Self {
            policy,
            started: false,
            engine: None,
            systemd: None,
            containers: HashMap::new(),
            units: HashMap::new(),
        }
    }

    /// The frames that bring the hub from what it was told to `inv`; empty when nothing changed
    /// and nothing runs.
    pub fn next(&mut self, inv: &Inventory) -> Vec<WorkloadDelta> {
        // A machine without an engine or systemd (or with both off) still sends its first delta:
        // full, both sources absent, nothing listed. That explicit "none" makes a hub that held an
        // inventory from an earlier connection (the engine since removed, or the policy now off)
        // drop it; after it, nothing is sent until a source appears.
        let came_back = |prev: &Option<SourceState>, now: &SourceState| {
            is_up(now) && prev.as_ref().is_some_and(|p| !is_up(p))
        };
        let full = !self.started
            || came_back(&self.engine, &inv.engine)
            || came_back(&self.systemd, &inv.systemd);
        let mut d = WorkloadDelta {
            at_ms: inv.at_ms,
            full,
            ..WorkloadDelta::default()
        };
        if full {
            d.policy = Some(self.policy.clone());
            d.engine = Some(inv.engine.clone());
            d.systemd = Some(inv.systemd.clone());
            self.containers.clear();
            self.units.clear();
        } else {
            if self.engine.as_ref() != Some(&inv.engine) {
                d.engine = Some(inv.engine.clone());
            }
            if self.systemd.as_ref() != Some(&inv.systemd) {
                d.systemd = Some(inv.systemd.clone());
            }
        }
        self.started = true;
        self.engine = Some(inv.engine.clone());
        self.systemd = Some(inv.systemd.clone());
        if let Some(list) = &inv.containers {
            let (upserts, removed) = diff(&mut self.containers, list, |c| &c.id);
            d.containers = upserts;
            d.containers_removed = removed;
            d.container_stats = inv.container_stats.clone();
        }
        if let Some(list) = &inv.units {
            let (upserts, removed) = diff(&mut self.units, list, |u| &u.name);
            d.units = upserts;
            d.units_removed = removed;
            d.unit_stats = inv.unit_stats.clone();
        }
        let quiet = !full
            && d.engine.is_none()
            && d.systemd.is_none()
            && d.containers.is_empty()
            && d.containers_removed.is_empty()
            && d.container_stats.is_empty()
            && d.units.is_empty()
            && d.units_removed.is_empty()
            && d.unit_stats.is_empty();
        if quiet { Vec::new() } else { split(d) }
    }
}

/// New or changed items of `list` against `held` (updated to `list`), and keys gone from it.
fn diff<T: Clone + PartialEq>(
    held: &mut HashMap<String, T>,
    list: &[T],
    key: impl Fn(&T) -> &String,
) -> (Vec<T>, Vec<String>) {
    let mut upserts = Vec::new();
    let mut next = HashMap::with_capacity(list.len());
    for item in list {
        if held.get(key(item)) != Some(item) {
            upserts.push(item.clone());
        }
        next.insert(key(item).clone(), item.clone());
    }
    let mut removed: Vec<String> = held
        .keys()
        .filter(|k| !next.contains_key(*k))
        .cloned()
        .collect();
    removed.sort();
    *held = next;
    (upserts, removed)
}

/// Cuts a delta into frames of at most [`WORKLOADS_PER_FRAME`] containers and units (and as many
/// stats and removals of each kind); only the first keeps `full`, the policy and source states.
fn split(mut d: WorkloadDelta) -> Vec<WorkloadDelta> {
    let n = WORKLOADS_PER_FRAME;
    let big = d.containers.len() + d.units.len() > n
        || [
            d.container_stats.len(),
            d.unit_stats.len(),
            d.containers_removed.len(),
            d.units_removed.len(),
        ]
        .iter()
        .any(|&l| l > n);
    if !big {
        return vec![d];
    }
    fn take<T>(v: &mut Vec<T>, k: usize) -> Vec<T> {
        let k = k.min(v.len());
        v.drain(..k).collect()
    }
    let mut frames = Vec::new();
    let mut first = true;
    loop {
        let containers = take(&mut d.containers, n);
        let units = take(&mut d.units, n - containers.len());
        let frame = WorkloadDelta {
            at_ms: d.at_ms,
            full: first && d.full,
            policy: if first { d.policy.take() } else { None },
            engine: if first { d.engine.take() } else { None },
            systemd: if first { d.systemd.take() } else { None },
            containers,
            units,
            containers_removed: take(&mut d.containers_removed, n),
            units_removed: take(&mut d.units_removed, n),
            container_stats: take(&mut d.container_stats, n),
            unit_stats: take(&mut d.unit_stats, n),
        };
        frames.push(frame);
        first = false;
        if d.containers.is_empty()
            && d.units.is_empty()
            && d.containers_removed.is_empty()
            && d.units_removed.is_empty()
            && d.container_stats.is_empty()
            && d.unit_stats.is_empty()
        {
            return frames;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::workloads::{Access, ContainerState, Health};

    fn c(id: &str, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("n-{id}"),
            image: "bb".into(),
            state,
            health: Health::None,
            restart_count: 0,
            started_ms: None,
            ports: Vec::new(),
            compose_project: None,
            compose_service: None,
        }
    }

    fn up() -> SourceState {
        SourceState::Up {
            name: "podman".into(),
            version: "4.3.1".into(),
        }
    }

    fn inv(containers: Option<Vec<ContainerInfo>>) -> Inventory {
        let container_stats = containers
            .iter()
            .flatten()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| ContainerStats {
                id: c.id.clone(),
                ..ContainerStats::default()
            })
            .collect();
        Inventory {
            at_ms: 1,
            engine: if containers.is_some() {
                up()
            } else {
                SourceState::Down {
                    error: "gone".into(),
                }
            },
            containers,
            container_stats,
            ..Inventory::default()
        }
    }

    fn policy() -> WorkloadPolicy {
        WorkloadPolicy {
            containers: Access::Read,
            ..WorkloadPolicy::default()
        }
    }

    #[test]
    fn first_is_full_then_only_changes_and_stats() {
        let mut d = Differ::new(policy());
        let a = c("a", ContainerState::Running);
        let b = c("b", ContainerState::Exited);
        let first = d.next(&inv(Some(vec![a.clone(), b.clone()])));
        assert_eq!(first.len(), 1);
        assert!(first[0].full);
        assert_eq!(first[0].policy, Some(policy()));
        assert_eq!(first[0].engine, Some(up()));
        assert_eq!(first[0].containers, [a.clone(), b.clone()]);
        assert_eq!(first[0].container_stats.len(), 1);

        let same = d.next(&inv(Some(vec![a.clone(), b.clone()])));
        assert_eq!(same.len(), 1, "stats of the running one");
        assert!(!same[0].full && same[0].policy.is_none() && same[0].engine.is_none());
        assert!(same[0].containers.is_empty());
        assert_eq!(same[0].container_stats.len(), 1);

        let mut b2 = b.clone();
        b2.state = ContainerState::Running;
        let changed = d.next(&inv(Some(vec![b2.clone()])));
        assert_eq!(changed[0].containers, [b2.clone()]);
        assert_eq!(changed[0].containers_removed, ["a".to_string()]);
        assert_eq!(changed[0].container_stats.len(), 1);

        let mut b3 = b2.clone();
        b3.state = ContainerState::Exited;
        let stopped = d.next(&inv(Some(vec![b3.clone()])));
        assert_eq!(stopped[0].containers, [b3.clone()]);
        assert!(
            d.next(&inv(Some(vec![b3]))).is_empty(),
            "nothing runs, nothing changed"
        );
    }

    #[test]
    fn a_source_that_comes_back_gets_a_full_delta() {
        let mut d = Differ::new(policy());
        let a = c("a", ContainerState::Exited);
        d.next(&inv(Some(vec![a.clone()])));
        let down = d.next(&inv(None));
        assert_eq!(down.len(), 1);
        assert!(!down[0].full);
        assert!(matches!(down[0].engine, Some(SourceState::Down { .. })));
        assert!(
            down[0].containers_removed.is_empty(),
            "a silent engine keeps what the hub holds"
        );
        assert!(d.next(&inv(None)).is_empty());
        let back = d.next(&inv(Some(vec![a.clone()])));
        assert!(back[0].full);
        assert_eq!(back[0].containers, [a]);
        assert_eq!(back[0].engine, Some(up()));
    }

    #[test]
    fn without_a_source_one_full_delta_says_none_then_nothing_until_one_appears() {
        let mut d = Differ::new(policy());
        let absent = Inventory {
            containers: Some(Vec::new()),
            units: Some(Vec::new()),
            ..Inventory::default()
        };
        let none = d.next(&absent);
        assert_eq!(
            none,
            [WorkloadDelta {
                at_ms: absent.at_ms,
                full: true,
                policy: Some(policy()),
                engine: Some(SourceState::Absent),
                systemd: Some(SourceState::Absent),
                ..WorkloadDelta::default()
            }],
            "the hub drops what it held"
        );
        assert!(d.next(&absent).is_empty(), "then quiet");
        assert!(d.next(&absent).is_empty());
        let a = c("a", ContainerState::Exited);
        let first = d.next(&inv(Some(vec![a.clone()])));
        assert!(first[0].full, "the first delta sent is full");
        assert_eq!(first[0].containers, [a]);
        assert_eq!(first[0].policy, Some(policy()));
        let gone = d.next(&absent);
        assert_eq!(gone[0].engine, Some(SourceState::Absent));
        assert_eq!(gone[0].containers_removed, ["a".to_string()]);
    }

    #[test]
    fn large_inventories_split_into_bounded_frames() {
        let mut d = Differ::new(policy());
        let many: Vec<_> = (0..2500)
            .map(|i| c(&format!("{i:05}"), ContainerState::Running))
            .collect();
        let frames = d.next(&inv(Some(many)));
        assert_eq!(frames.len(), 3);
        assert!(frames[0].full && frames[0].policy.is_some());
        assert!(frames[1..].iter().all(|f| !f.full && f.policy.is_none()));
        assert!(
            frames
                .iter()
                .all(|f| f.containers.len() <= WORKLOADS_PER_FRAME)
        );
        assert_eq!(
            frames.iter().map(|f| f.containers.len()).sum::<usize>(),
            2500
        );
        assert_eq!(
            frames
                .iter()
                .map(|f| f.container_stats.len())
                .sum::<usize>(),
            2500
        );
        for f in &frames {
            let mut buf = bytes::BytesMut::new();
            let frame = flotilla_wire::msg::MetricsFrame::Workloads(f.clone());
            flotilla_wire::encode(&frame, &mut buf, flotilla_wire::limits::MAX_METRICS_FRAME)
                .expect("a frame fits the metrics limit");
        }
    }
}
