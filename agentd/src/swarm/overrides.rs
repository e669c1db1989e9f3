//! Forced values for swarm agents: a JSON file re-read at every sample, so a test or a
//! demonstration can push one agent's CPU over a line and pull it back while the agent keeps
//! reporting over the real protocol.
//!
//! ```json
//! { "*": { "cpu_pct": 10 },
//!   "sw-00001": { "cpu_pct": 97, "disk_pct": { "/": 95 }, "temps": { "cpu": 90 },
//!                 "clock_offset_ms": 5000,
//!                 "containers": { "app-00": "exited" }, "units": { "svc-01.service": "failed" } } }
//! ```
//!
//! `containers` and `units` force the state of synthetic workloads (`agentd swarm --containers`,
//! `--units`) by name; a name no longer listed goes back to its own state, so a test can stop a
//! container and start it again.
//!
//! `*` applies to every agent, then the agent's own entry; a missing or unreadable file forces
//! nothing (the random values stand).

use crate::sampler::{SampleSource, SyntheticSource};
use flotilla_wire::msg::{DiskUsage, MetricsSample, Temperature};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Largest override file read: a few agents' values, not a data set.
const MAX_FILE: u64 = 1 << 20;

/// Values forced on one agent's samples; each absent field keeps the random value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forced {
    /// Total CPU percent.
    pub cpu_pct: Option<f32>,
    /// Memory used, percent of total.
    pub mem_pct: Option<f64>,
    /// Swap used, percent of total.
    pub swap_pct: Option<f64>,
    /// 1-minute load average.
    pub load1: Option<f32>,
    /// Disk use per mount, percent (mounts not listed are added).
    pub disk_pct: Option<BTreeMap<String, f64>>,
    /// Temperatures per sensor, degrees Celsius (replace the list).
    pub temps: Option<BTreeMap<String, f32>>,
    /// Received bytes per second on eth0.
    pub net_rx_bps: Option<u64>,
    /// Sent bytes per second on eth0.
    pub net_tx_bps: Option<u64>,
    /// Added to the sample's time: a clock running ahead (or behind, negative).
    pub clock_offset_ms: Option<i64>,
    /// States forced on synthetic containers, by name.
    pub containers: Option<BTreeMap<String, ForcedContainer>>,
    /// States forced on synthetic units, by name.
    pub units: Option<BTreeMap<String, ForcedUnit>>,
}

/// A state forced on a synthetic container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForcedContainer {
    /// Running and healthy.
    Running,
    /// Running, failing its health check.
    Unhealthy,
    /// Being restarted by its restart policy (each time forced, one more restart is counted).
    Restarting,
    /// Stopped.
    Exited,
    /// Dead.
    Dead,
    /// Paused.
    Paused,
}

/// A state forced on a synthetic unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForcedUnit {
    /// Active and running.
    Active,
    /// Failed.
    Failed,
    /// Stopped cleanly.
    Inactive,
}

/// The forced values for agent `name` in `file`: `*`'s entry, then the agent's own; nothing if
/// the file is missing, too large or does not parse.
pub(super) fn read(file: &std::path::Path, name: &str) -> Vec<Forced> {
    let readable = std::fs::metadata(file).is_ok_and(|m| m.len() <= MAX_FILE);
    let Some(all) = readable
        .then(|| std::fs::read(file).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice::<HashMap<String, Forced>>(&b).ok())
    else {
        return Vec::new();
    };
    ["*", name]
        .iter()
        .filter_map(|k| all.get(*k).cloned())
        .collect()
}

impl Forced {
    fn apply(&self, s: &mut MetricsSample) {
        let part = |pct: f64, total: u64| ((pct.clamp(0.0, 100.0) / 100.0) * total as f64) as u64;
        if let Some(v) = self.cpu_pct {
            s.cpu_pct = v;
        }
        if let Some(v) = self.mem_pct {
            s.mem_used = part(v, s.mem_total);
        }
        if let Some(v) = self.swap_pct {
            s.swap_used = part(v, s.swap_total);
        }
        if let Some(v) = self.load1 {
            s.load[0] = v;
        }
        if let Some(disks) = &self.disk_pct {
            for (mount, pct) in disks {
                match s.disks.iter_mut().find(|d| &d.mount == mount) {
                    Some(d) => d.used = part(*pct, d.total),
                    None => s.disks.push(DiskUsage {
                        mount: mount.clone(),
                        used: part(*pct, 100 << 30),
                        total: 100 << 30,
                    }),
                }
            }
        }
        if let Some(temps) = &self.temps {
            s.temps = temps
                .iter()
                .map(|(label, celsius)| Temperature {
                    label: label.clone(),
                    celsius: *celsius,
                })
                .collect();
        }
        for n in &mut s.nets {
            if let Some(v) = self.net_rx_bps {
                n.rx_bps = v;
            }
            if let Some(v) = self.net_tx_bps {
                n.tx_bps = v;
            }
        }
        if let Some(off) = self.clock_offset_ms {
            s.at_ms = s.at_ms.saturating_add_signed(off);
        }
    }
}

/// The synthetic source with the override file applied.
pub struct OverriddenSource {
    inner: SyntheticSource,
    file: PathBuf,
    name: String,
}

impl OverriddenSource {
    /// Agent `name`'s source, forced by `file`.
    pub fn new(inner: SyntheticSource, file: PathBuf, name: String) -> Self {
        Self { inner, file, name }
    }

    fn forced(&self) -> Vec<Forced> {
        read(&self.file, &self.name)
    }
}

impl SampleSource for OverriddenSource {
    fn sample(&mut self) -> MetricsSample {
        let mut s = self.inner.sample();
        for f in self.forced() {
            f.apply(&mut s);
        }
        s
    }
    fn blocking(&self) -> bool {
        // A small file read per sample; the swarm's runtime has threads to spare for it.
        false
    }
}
