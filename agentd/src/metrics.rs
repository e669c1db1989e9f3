//! Metrics collection with one long-lived sysinfo state: CPU, load, memory, disks, network and disk
//! rates from counter deltas, temperatures, and the top processes by CPU and memory.

use flotilla_certs::clock::now_ms;
use flotilla_wire::msg::{DiskUsage, MetricsSample, NetRate, ProcessInfo, Temperature};
use std::collections::HashMap;
use std::time::Instant;
use sysinfo::{Components, Disks, Networks, System};

/// How many processes each top list carries: "which process did it?" rarely needs more.
const TOP_N: usize = 5;

/// Bytes per second between two readings of a monotonic counter taken `secs` apart. A counter that
/// went backwards was reset (reboot, interface re-created, 32-bit wrap): the interval is unknown, so
/// the rate is reported as 0 rather than as a huge spike.
pub fn counter_rate(prev: u64, cur: u64, secs: f64) -> u64 {
    if secs <= 0.0 || cur < prev {
        return 0;
    }
    ((cur - prev) as f64 / secs).round() as u64
}

/// Long-lived collector: sysinfo needs the previous reading for CPU use and rates.
pub struct Collector {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    procs: ProcSource,
    last: Option<Instant>,
    net_totals: HashMap<String, (u64, u64)>,
    disk_totals: (u64, u64),
}

impl Collector {
    /// Builds the collector and takes the first reading (CPU use needs two).
    pub fn new() -> Self {
        let system = System::new().unwrap_or_else(|_| {
            System::new_all().unwrap_or_else(|_| panic!("sysinfo unavailable"))
        });
        let mut c = Self {
            system,
            disks: Disks::new_with_refreshed_list()
                .unwrap_or_else(|_| Disks::new().unwrap_or_else(|_| panic!("sysinfo disks"))),
            networks: Networks::new_with_refreshed_list()
                .unwrap_or_else(|_| Networks::new().unwrap_or_else(|_| panic!("sysinfo networks"))),
            components: Components::new_with_refreshed_list().unwrap_or_else(|_| {
                Components::new().unwrap_or_else(|_| panic!("sysinfo components"))
            }),
            procs: ProcSource::default(),
            last: None,
            net_totals: HashMap::new(),
            disk_totals: (0, 0),
        };
        let _ = c.sample();
        c
    }

    /// Takes one sample. Blocking (reads /proc): call from `spawn_blocking` or a dedicated thread.
    pub fn sample(&mut self) -> MetricsSample {
        let now = Instant::now();
        let secs = self
            .last
            .map(|l| now.duration_since(l).as_secs_f64())
            .unwrap_or(0.0);
        self.last = Some(now);
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);

        let load = System::load_average()
            .map(|l| [l.one as f32, l.five as f32, l.fifteen as f32])
            .unwrap_or_default();
        let mut disks = Vec::new();
        let (mut read_total, mut write_total) = (0u64, 0u64);
        for d in self.disks.iter() {
            let usage = d.usage();
            read_total = read_total.wrapping_add(usage.total_read_bytes);
            write_total = write_total.wrapping_add(usage.total_written_bytes);
            disks.push(DiskUsage {
                mount: d.mount_point().display().to_string(),
                used: d.total_space().saturating_sub(d.available_space()),
                total: d.total_space(),
            });
        }
        let (prev_read, prev_write) =
            std::mem::replace(&mut self.disk_totals, (read_total, write_total));
        let mut nets = Vec::new();
        for (name, data) in self.networks.iter() {
            let cur = (data.total_received(), data.total_transmitted());
            let name = name.to_string_lossy().into_owned();
            let prev = self.net_totals.insert(name.clone(), cur).unwrap_or(cur);
            nets.push(NetRate {
                iface: name,
                rx_bps: counter_rate(prev.0, cur.0, secs),
                tx_bps: counter_rate(prev.1, cur.1, secs),
            });
        }
        nets.sort_by(|a, b| a.iface.cmp(&b.iface));
        let temps = self
            .components
            .iter()
            .filter_map(|c| {
                c.temperature().map(|t| Temperature {
                    label: c.label().to_string(),
                    celsius: t,
                })
            })
            .collect();
        let procs = self.procs.sample();
        MetricsSample {
            at_ms: now_ms(),
            cpu_pct: self.system.global_cpu_usage(),
            per_core_pct: self.system.cpus().iter().map(|c| c.usage()).collect(),
            load,
            mem_used: self.system.used_memory(),
            mem_total: self.system.total_memory(),
            swap_used: self.system.used_swap(),
            swap_total: self.system.total_swap(),
            disks,
            disk_read_bps: if secs > 0.0 {
                counter_rate(prev_read, read_total, secs)
            } else {
                0
            },
            disk_write_bps: if secs > 0.0 {
                counter_rate(prev_write, write_total, secs)
            } else {
                0
            },
            nets,
            uptime_s: System::uptime().unwrap_or(0),
            procs: procs.len() as u32,
            temps,
            top_cpu: top_by(&procs, |p| p.cpu_pct as f64),
            top_mem: top_by(&procs, |p| p.rss as f64),
        }
    }
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the process table comes from: on Linux `/proc/PID/stat` alone (see `host::proctable`);
/// elsewhere sysinfo's table.
#[cfg(target_os = "linux")]
type ProcSource = crate::host::proctable::ProcTable;
#[cfg(not(target_os = "linux"))]
type ProcSource = SysinfoProcs;

/// sysinfo's process table, for systems without `/proc`.
#[cfg(not(target_os = "linux"))]
struct SysinfoProcs(System);

#[cfg(not(target_os = "linux"))]
impl Default for SysinfoProcs {
    fn default() -> Self {
        Self(System::new().unwrap_or_else(|_| panic!("sysinfo unavailable")))
    }
}

#[cfg(not(target_os = "linux"))]
impl SysinfoProcs {
    /// Processes only, never their threads: a thread shares its process's memory, so counting it
    /// would list the same RSS once per thread.
    fn sample(&mut self) -> Vec<ProcessInfo> {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate};
        self.0.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .without_tasks(),
        );
        self.0
            .processes()
            .iter()
            .filter(|(_, p)| p.thread_kind().is_none())
            .map(|(pid, p)| ProcessInfo {
                pid: pid.as_u32(),
                name: p.name().to_string_lossy().into_owned(),
                cpu_pct: p.cpu_usage(),
                rss: p.memory(),
            })
            .collect()
    }
}

fn top_by(procs: &[ProcessInfo], key: impl Fn(&ProcessInfo) -> f64) -> Vec<ProcessInfo> {
    let mut sorted: Vec<&ProcessInfo> = procs.iter().collect();
    sorted.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
    sorted.into_iter().take(TOP_N).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_handle_resets_and_zero_intervals() {
        assert_eq!(counter_rate(1000, 3000, 2.0), 1000);
        assert_eq!(
            counter_rate(u64::MAX - 10, 5, 1.0),
            0,
            "wrap or reset reports 0, not a spike"
        );
        assert_eq!(counter_rate(5, 5, 1.0), 0);
        assert_eq!(counter_rate(0, 100, 0.0), 0, "no interval yet");
    }

    #[test]
    fn top_lists_are_sorted_and_bounded() {
        let procs: Vec<ProcessInfo> = (0..20)
            .map(|i| ProcessInfo {
                pid: i,
                name: format!("p{i}"),
                cpu_pct: i as f32,
                rss: 100 - u64::from(i),
            })
            .collect();
        let top = top_by(&procs, |p| p.cpu_pct as f64);
        assert_eq!(
            top.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![19, 18, 17, 16, 15]
        );
        let top = top_by(&procs, |p| p.rss as f64);
        assert_eq!(top[0].pid, 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn threads_are_not_counted_as_processes() {
        let (tx, rx) = std::sync::mpsc::channel();
        let release = std::sync::Arc::new(std::sync::Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tx = tx.clone();
                let release = release.clone();
                std::thread::spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() } as u32;
                    tx.send(tid).ok();
                    release.wait();
                })
            })
            .collect();
        let tids: Vec<u32> = (0..4).filter_map(|_| rx.recv().ok()).collect();
        assert_eq!(tids.len(), 4);
        let mut c = Collector::new();
        let sample = c.sample();
        let listed: Vec<u32> = c.procs.sample().iter().map(|p| p.pid).collect();
        release.wait();
        threads.into_iter().for_each(|t| t.join().expect("thread"));
        assert!(
            listed.contains(&std::process::id()),
            "this process is listed"
        );
        for tid in &tids {
            assert!(!listed.contains(tid), "thread {tid} listed as a process");
            assert!(sample.top_mem.iter().all(|p| p.pid != *tid));
            assert!(sample.top_cpu.iter().all(|p| p.pid != *tid));
        }
    }

    #[test]
    fn real_sample_has_this_machines_facts() {
        let mut c = Collector::new();
        let s = c.sample();
        assert!(s.mem_total > 0);
        assert!(!s.per_core_pct.is_empty());
        assert!(s.procs > 0);
        assert!(s.top_mem.len() <= TOP_N && !s.top_mem.is_empty());
        assert!(s.uptime_s > 0);
    }
}
