//! NVIDIA GPUs through NVML. The library (`libnvidia-ml.so`, shipped with the driver) is loaded at
//! run time: a machine without the driver has no NVIDIA section and says why, and agentd needs no
//! CUDA or driver at build time.

use flotilla_wire::host::{CollectorState, Gpu, GpuProcess, GpuVendor};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use std::collections::BTreeMap;

/// NVML, when it loaded.
pub struct NvidiaGpus {
    nvml: Option<Nvml>,
    state: CollectorState,
}

impl std::fmt::Debug for NvidiaGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvidiaGpus")
            .field("loaded", &self.nvml.is_some())
            .field("state", &self.state)
            .finish()
    }
}

impl NvidiaGpus {
    /// Loads NVML once (it is costly to load, and meant to be kept).
    pub fn load() -> Self {
        match Nvml::init() {
            Ok(nvml) => match nvml.device_count() {
                Ok(0) => Self {
                    nvml: None,
                    state: CollectorState::Absent("the NVIDIA driver reports no GPU".into()),
                },
                Ok(_) => Self {
                    nvml: Some(nvml),
                    state: CollectorState::Running,
                },
                Err(e) => Self {
                    nvml: None,
                    state: CollectorState::Failed(format!("NVML could not count GPUs: {e}")),
                },
            },
            Err(e) => Self {
                nvml: None,
                state: CollectorState::Absent(format!("no NVIDIA driver (NVML: {e})")),
            },
        }
    }

    /// Whether NVML loaded and found GPUs.
    pub fn state(&self) -> CollectorState {
        self.state.clone()
    }

    /// One reading of every GPU; a value the GPU does not report is `None`.
    pub fn read(&mut self) -> Vec<Gpu> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        let mut gpus = Vec::with_capacity(count as usize);
        let mut failed = None;
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(format!("GPU {index}: {e}"));
                    continue;
                }
            };
            let mem = device.memory_info().ok();
            // One process may hold both a compute and a graphics context: list it once.
            let mut procs: BTreeMap<u32, Option<u64>> = BTreeMap::new();
            for p in device
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .chain(device.running_graphics_processes().unwrap_or_default())
            {
                let used = match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                };
                let e = procs.entry(p.pid).or_insert(None);
                *e = match (*e, used) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            gpus.push(Gpu {
                index,
                vendor: GpuVendor::Nvidia,
                name: device
                    .name()
                    .unwrap_or_else(|_| format!("NVIDIA GPU {index}")),
                util_pct: device.utilization_rates().ok().map(|u| u.gpu as f32),
                mem_used: mem.as_ref().map(|m| m.used),
                mem_total: mem.as_ref().map(|m| m.total),
                temp_c: device
                    .temperature(TemperatureSensor::Gpu)
                    .ok()
                    .map(|t| t as f32),
                power_w: device.power_usage().ok().map(|mw| mw as f32 / 1000.0),
                power_limit_w: device
                    .enforced_power_limit()
                    .ok()
                    .map(|mw| mw as f32 / 1000.0),
                clock_graphics_mhz: device.clock_info(Clock::Graphics).ok(),
                clock_mem_mhz: device.clock_info(Clock::Memory).ok(),
                processes: procs
                    .into_iter()
                    .map(|(pid, mem_used)| GpuProcess {
                        pid,
                        name: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .map(|s| s.trim_end().to_string())
                            .unwrap_or_default(),
                        mem_used,
                    })
                    .collect(),
            });
        }
        self.state = match failed {
            Some(e) => CollectorState::Degraded(e),
            None => CollectorState::Running,
        };
        gpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs everywhere: without the driver the collector is absent and says so; with it, every GPU
    /// reports a name and its memory (checked on a real NVIDIA machine).
    #[test]
    fn nvml_is_absent_with_a_reason_or_reports_real_gpus() {
        let mut gpus = NvidiaGpus::load();
        match gpus.state() {
            CollectorState::Absent(reason) => {
                assert!(
                    reason.contains("NVIDIA") || reason.contains("NVML"),
                    "{reason}"
                );
                assert!(gpus.read().is_empty());
            }
            CollectorState::Running => {
                let list = gpus.read();
                assert!(!list.is_empty());
                for g in &list {
                    eprintln!("{g:?}");
                    assert!(!g.name.is_empty());
                    assert!(g.mem_total.is_some_and(|t| t > 0), "{g:?}");
                    assert!(g.mem_used.is_some_and(|u| u <= g.mem_total.unwrap_or(0)));
                    assert!(g.util_pct.is_some_and(|u| (0.0..=100.0).contains(&u)));
                    assert!(g.temp_c.is_some_and(|t| t > 0.0 && t < 120.0), "{g:?}");
                }
            }
            other => panic!("unexpected state {other:?}"),
        }
    }
}
