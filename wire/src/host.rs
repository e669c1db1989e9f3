//! Host depth: what an agent reports beyond [`crate::msg::MetricsSample`] — per block device I/O,
//! per interface errors and drops, GPUs, disk health (SMART), custom series, the top processes with
//! their command lines and users, and which collectors run.
//!
//! Two frames carry it on the agent's metrics stream: [`HostDetail`]
//! ([`crate::msg::MetricsFrame::HostDetail`]) right after every sample, and [`HostReport`]
//! ([`crate::msg::MetricsFrame::HostReport`]) for slow collectors (SMART runs hourly and on demand),
//! sent when a run finishes and at the start of every metrics stream. During an outage the agent
//! folds details into [`HostMinute`]s ([`crate::msg::MetricsFrame::BackfillHost`]).
//! Operators read the latest of both with [`crate::exec::Query::Host`].

use crate::IdentityId;
use serde::{Deserialize, Serialize};

/// Processes in each top list: "which process did it?" rarely needs more, and history keeps them
/// per minute.
pub const TOP_PROCESSES: usize = 5;
/// Longest command line kept for a top process, in bytes (cut at a character boundary, `…` added):
/// enough to tell two `python3` apart, short enough that ten rows per sample stay small.
pub const MAX_PROCESS_CMD: usize = 120;
/// Most custom series an agent may be configured to send (`custom.max_series` in agent.toml is
/// capped here): 1,000 series of ~40 bytes keep a detail frame near 40 KB, far under the 1 MiB
/// metrics frame limit.
pub const MAX_CUSTOM_SERIES: usize = 1000;

/// Everything the fast collectors saw at one sample: sent right after the sample of the same
/// `at_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostDetail {
    /// Time of the sample it goes with, ms since the epoch.
    pub at_ms: u64,
    /// Per block device (whole disks and partitions the kernel lists in `/proc/diskstats`, less
    /// loop, ram and zram devices), sorted by name.
    pub block_io: Vec<BlockIo>,
    /// Per network interface, sorted by name.
    pub net_errors: Vec<NetErrors>,
    /// GPUs, NVIDIA first, then AMD, each by index.
    pub gpus: Vec<Gpu>,
    /// Custom series, in configuration order, at most the agent's cap.
    pub custom: Vec<CustomValue>,
    /// Top processes by CPU, highest first.
    pub top_cpu: Vec<TopProcess>,
    /// Top processes by resident memory, highest first.
    pub top_mem: Vec<TopProcess>,
    /// Every collector, running or not, and why not.
    pub collectors: Vec<CollectorStatus>,
}

/// I/O of one block device over the last interval, from `/proc/diskstats` deltas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockIo {
    /// Kernel name: `sda`, `vda1`, `nvme0n1`.
    pub device: String,
    /// Bytes read per second.
    pub read_bps: u64,
    /// Bytes written per second.
    pub write_bps: u64,
    /// Reads completed per second.
    pub read_iops: f32,
    /// Writes completed per second.
    pub write_iops: f32,
    /// Time the device had I/O in flight, percent of the interval (0-100).
    pub busy_pct: f32,
}

/// Error and drop counters of one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetErrors {
    /// Interface name.
    pub iface: String,
    /// Counters since the interface came up, as `/proc/net/dev` shows them.
    pub total: ErrorCounts,
    /// Increase since the previous sample (0 after a counter reset).
    pub new: ErrorCounts,
}

/// Receive and transmit errors and drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// Who made a GPU, and so which collector read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// Read through NVML.
    #[default]
    Nvidia,
    /// Read through the amdgpu driver's sysfs files.
    Amd,
}

impl GpuVendor {
    /// Lowercase word for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nvidia => "nvidia",
            Self::Amd => "amd",
        }
    }
}

/// One GPU. A field the driver does not expose is `None`, never 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Index among the GPUs of its vendor (NVML index; the `cardN` number for AMD).
    pub index: u32,
    /// Who made it.
    pub vendor: GpuVendor,
    /// Product name (`NVIDIA H100 80GB HBM3`; the PCI id for AMD when sysfs has no name).
    pub name: String,
    /// Busy, percent of the last interval the driver measured.
    pub util_pct: Option<f32>,
    /// Memory used, bytes.
    pub mem_used: Option<u64>,
    /// Memory total, bytes.
    pub mem_total: Option<u64>,
    /// Core temperature, °C.
    pub temp_c: Option<f32>,
    /// Power draw, watts.
    pub power_w: Option<f32>,
    /// Power limit, watts.
    pub power_limit_w: Option<f32>,
    /// Graphics clock, MHz.
    pub clock_graphics_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub clock_mem_mhz: Option<u32>,
    /// Processes using it (NVIDIA only).
    pub processes: Vec<GpuProcess>,
}

/// A process using a GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Process id.
    pub pid: u32,
    /// Process name, when the agent could read it.
    pub name: String,
    /// GPU memory it uses, bytes, when the driver says.
    pub mem_used: Option<u64>,
}

/// One custom series value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomValue {
    /// Metric name as the endpoint or script gave it.
    pub name: String,
    /// Prometheus labels, sorted by key (empty for scripts).
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// One process in a top list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopProcess {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub name: String,
    /// Command line, arguments joined by spaces, at most [`MAX_PROCESS_CMD`] bytes.
    pub cmd: String,
    /// User name, or the numeric uid when it has none.
    pub user: String,
    /// CPU use, percent of one core.
    pub cpu_pct: f32,
    /// Resident memory, bytes.
    pub mem: u64,
}

/// Whether a collector runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorState {
    /// It runs and its values are in the frames.
    Running,
    /// The machine lacks what it reads (no NVIDIA driver, no AMD GPU, no smartctl), or it is not
    /// configured: not an error.
    Absent(String),
    /// It runs, but some of what it should report is left out (the custom series cap was hit).
    Degraded(String),
    /// Its last run failed; it will try again.
    Failed(String),
}

impl CollectorState {
    /// Lowercase word for tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Absent(_) => "absent",
            Self::Degraded(_) => "degraded",
            Self::Failed(_) => "failed",
        }
    }

    /// The reason, for every state but `Running`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Running => None,
            Self::Absent(r) | Self::Degraded(r) | Self::Failed(r) => Some(r),
        }
    }
}

/// One collector and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStatus {
    /// `diskstats`, `netdev`, `nvidia`, `amd`, `smart`, `processes`, `custom`, or
    /// `custom:<source>` for one endpoint or script.
    pub name: String,
    /// Running, absent, degraded or failed.
    pub state: CollectorState,
}

/// Result of a slow collector run (SMART), sent when it finishes and at the start of every metrics
/// stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// When the run finished, ms since the epoch.
    pub at_ms: u64,
    /// One entry per disk `smartctl --scan` found, or one explaining why there is none.
    pub disks: Vec<DiskHealth>,
    /// The slow collectors' states.
    pub collectors: Vec<CollectorStatus>,
}

/// What SMART says of a disk's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmartHealth {
    /// The drive's overall self-assessment passed.
    Passed,
    /// The drive's overall self-assessment failed: replace it.
    Failed,
    /// SMART answered without an overall assessment.
    #[default]
    Unknown,
    /// The device has no SMART (a virtual disk, a USB bridge that hides it): the reason.
    NoSmart(String),
}

impl SmartHealth {
    /// Lowercase word for tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::NoSmart(_) => "no smart",
        }
    }
}

/// Health of one disk. Attributes the drive does not report are `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskHealth {
    /// Device path: `/dev/sda`, `/dev/nvme0`.
    pub device: String,
    /// Model name, empty when unknown.
    pub model: String,
    /// Overall health.
    pub health: SmartHealth,
    /// Temperature, °C.
    pub temp_c: Option<f32>,
    /// Power-on hours.
    pub power_on_hours: Option<u64>,
    /// Reallocated sectors (ATA attribute 5).
    pub reallocated: Option<u64>,
    /// Sectors pending reallocation (ATA 197).
    pub pending: Option<u64>,
    /// Uncorrectable sectors (ATA 198).
    pub uncorrectable: Option<u64>,
    /// NVMe: percentage of rated endurance used (may exceed 100).
    pub nvme_pct_used: Option<u32>,
    /// NVMe: media and data integrity errors.
    pub media_errors: Option<u64>,
}

/// One minute of host detail, folded during an outage for back-fill: rates and GPU figures are
/// means over the minute's samples, counters the last totals with the minute's sum of increases,
/// custom series the last value, top lists those of the sample with the busiest process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMinute {
    /// Start of the minute, ms since the epoch.
    pub start_ms: u64,
    /// Samples folded in.
    pub samples: u32,
    /// The folded values; `at_ms` is the last sample's.
    pub detail: HostDetail,
}

/// What the hub holds of an agent's host depth: the answer to [`crate::exec::Query::Host`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// Whose.
    pub id: IdentityId,
    /// Its name.
    pub name: String,
    /// The latest detail since the hub started, if any.
    pub detail: Option<HostDetail>,
    /// The latest slow report since the hub started, if any.
    pub report: Option<HostReport>,
}

/// The few host-depth figures the fleet view shows per agent, pushed to consoles as
/// [`crate::msg::FleetEvent::Host`] when they change. Utilisation is rounded to whole percent so a
/// GPU's jitter does not push an event every sample.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    /// GPUs in the latest detail.
    pub gpus: u32,
    /// Mean utilisation of the GPUs that report one, whole percent; `None` when none does.
    pub gpu_util_mean_pct: Option<u8>,
    /// Highest utilisation among them, whole percent.
    pub gpu_util_max_pct: Option<u8>,
    /// Disks whose SMART self-assessment failed in the latest report.
    pub smart_failed: u32,
}

impl HostSummary {
    /// Summarises the latest detail and report (either may be missing).
    pub fn of(detail: Option<&HostDetail>, report: Option<&HostReport>) -> Self {
        let utils: Vec<f32> = detail
            .map(|d| d.gpus.iter().filter_map(|g| g.util_pct).collect())
            .unwrap_or_default();
        let whole = |v: f32| v.clamp(0.0, 100.0).round() as u8;
        let mean =
            (!utils.is_empty()).then(|| whole(utils.iter().sum::<f32>() / utils.len() as f32));
        let max = utils.iter().copied().reduce(f32::max).map(whole);
        Self {
            gpus: detail.map_or(0, |d| u32::try_from(d.gpus.len()).unwrap_or(u32::MAX)),
            gpu_util_mean_pct: mean,
            gpu_util_max_pct: max,
            smart_failed: report.map_or(0, |r| {
                let n = r
                    .disks
                    .iter()
                    .filter(|d| d.health == SmartHealth::Failed)
                    .count();
                u32::try_from(n).unwrap_or(u32::MAX)
            }),
        }
    }

    /// Whether there is nothing to show (no GPU, no failed disk).
    pub fn is_empty(&self) -> bool {
        self.gpus == 0 && self.smart_failed == 0
    }
}

/// Cuts `cmd` to at most [`MAX_PROCESS_CMD`] bytes at a character boundary, marking a cut with `…`.
pub fn shorten_cmd(cmd: &str) -> String {
    if cmd.len() <= MAX_PROCESS_CMD {
        return cmd.to_string();
    }
    let mut end = MAX_PROCESS_CMD - '…'.len_utf8();
    while !cmd.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &cmd[..end])
}

impl HostMinute {
    /// Folds `details` (one minute's, oldest first) into one minute starting at `start_ms`; `None`
    /// when there are none.
    pub fn fold(start_ms: u64, details: &[HostDetail]) -> Option<Self> {
        let last = details.last()?;
        let n = details.len() as f64;
        let mut out = last.clone();
        for io in &mut out.block_io {
            let same: Vec<&BlockIo> = details
                .iter()
                .flat_map(|d| d.block_io.iter().filter(|b| b.device == io.device))
                .collect();
            let k = same.len().max(1) as f64;
            io.read_bps = (same.iter().map(|b| b.read_bps as f64).sum::<f64>() / k) as u64;
            io.write_bps = (same.iter().map(|b| b.write_bps as f64).sum::<f64>() / k) as u64;
            io.read_iops = (same.iter().map(|b| f64::from(b.read_iops)).sum::<f64>() / k) as f32;
            io.write_iops = (same.iter().map(|b| f64::from(b.write_iops)).sum::<f64>() / k) as f32;
            io.busy_pct = (same.iter().map(|b| f64::from(b.busy_pct)).sum::<f64>() / k) as f32;
        }
        for net in &mut out.net_errors {
            let mut new = ErrorCounts::default();
            for e in details
                .iter()
                .flat_map(|d| d.net_errors.iter().filter(|e| e.iface == net.iface))
            {
                new.rx_errors += e.new.rx_errors;
                new.rx_dropped += e.new.rx_dropped;
                new.tx_errors += e.new.tx_errors;
                new.tx_dropped += e.new.tx_dropped;
            }
            net.new = new;
        }
        for gpu in &mut out.gpus {
            let same: Vec<&Gpu> = details
                .iter()
                .flat_map(|d| {
                    d.gpus
                        .iter()
                        .filter(|g| g.vendor == gpu.vendor && g.index == gpu.index)
                })
                .collect();
            let mean = |f: &dyn Fn(&Gpu) -> Option<f64>| {
                let v: Vec<f64> = same.iter().filter_map(|g| f(g)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            gpu.util_pct = mean(&|g| g.util_pct.map(f64::from)).map(|v| v as f32);
            gpu.mem_used = mean(&|g| g.mem_used.map(|m| m as f64)).map(|v| v as u64);
            gpu.power_w = mean(&|g| g.power_w.map(f64::from)).map(|v| v as f32);
            gpu.temp_c = mean(&|g| g.temp_c.map(f64::from)).map(|v| v as f32);
        }
        let busiest = details
            .iter()
            .max_by(|a, b| {
                let top = |d: &HostDetail| d.top_cpu.first().map_or(0.0, |p| p.cpu_pct);
                top(a).total_cmp(&top(b))
            })
            .unwrap_or(last);
        out.top_cpu = busiest.top_cpu.clone();
        out.top_mem = busiest.top_mem.clone();
        Some(Self {
            start_ms,
            samples: n as u32,
            detail: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Query, QueryReply};
    use crate::limits::StreamKind;
    use crate::msg::{HubStreamOpen, MetricsFrame};
    use crate::{IdentityId, Role};

    #[test]
    fn summary_counts_gpus_and_failed_disks() {
        let mut d = detail();
        let mut g2 = d.gpus[0].clone();
        d.gpus[0].util_pct = Some(20.4);
        g2.util_pct = Some(79.6);
        d.gpus.push(g2.clone());
        g2.util_pct = None;
        d.gpus.push(g2);
        let mut r = HostReport::default();
        for health in [
            SmartHealth::Failed,
            SmartHealth::Passed,
            SmartHealth::Failed,
        ] {
            r.disks.push(DiskHealth {
                health,
                ..DiskHealth::default()
            });
        }
        let s = HostSummary::of(Some(&d), Some(&r));
        assert_eq!(
            s,
            HostSummary {
                gpus: 3,
                gpu_util_mean_pct: Some(50),
                gpu_util_max_pct: Some(80),
                smart_failed: 2,
            }
        );
        assert!(HostSummary::of(None, None).is_empty());
        let ev = crate::msg::FleetEvent::Host {
            id: IdentityId::from_random(Role::Agent, [7; 8]),
            summary: s,
        };
        let mut buf = bytes::BytesMut::new();
        crate::encode(&ev, &mut buf, StreamKind::Events.max_frame()).expect("encode");
        let back: crate::msg::FleetEvent = crate::decode(&mut buf, StreamKind::Events.max_frame())
            .expect("decode")
            .expect("complete");
        assert_eq!(back, ev);
    }

    fn detail() -> HostDetail {
        HostDetail {
            at_ms: 1_700_000_000_000,
            block_io: vec![BlockIo {
                device: "vda".into(),
                read_bps: 4096,
                write_bps: 8192,
                read_iops: 1.0,
                write_iops: 2.0,
                busy_pct: 3.5,
            }],
            net_errors: vec![NetErrors {
                iface: "eth0".into(),
                total: ErrorCounts {
                    rx_errors: 1,
                    rx_dropped: 2,
                    tx_errors: 3,
                    tx_dropped: 4,
                },
                new: ErrorCounts::default(),
            }],
            gpus: vec![Gpu {
                index: 0,
                vendor: GpuVendor::Nvidia,
                name: "NVIDIA H100".into(),
                util_pct: Some(50.0),
                mem_used: Some(1 << 30),
                mem_total: Some(80 << 30),
                temp_c: Some(40.0),
                power_w: Some(100.0),
                power_limit_w: Some(700.0),
                clock_graphics_mhz: Some(1980),
                clock_mem_mhz: Some(2619),
                processes: vec![GpuProcess {
                    pid: 42,
                    name: "python3".into(),
                    mem_used: Some(1 << 29),
                }],
            }],
            custom: vec![CustomValue {
                name: "nginx_requests_total".into(),
                labels: vec![("code".into(), "200".into())],
                value: 12.0,
            }],
            top_cpu: vec![TopProcess {
                pid: 7,
                name: "burn".into(),
                cmd: "burn --hard".into(),
                user: "root".into(),
                cpu_pct: 99.0,
                mem: 4096,
            }],
            top_mem: vec![],
            collectors: vec![
                CollectorStatus {
                    name: "nvidia".into(),
                    state: CollectorState::Running,
                },
                CollectorStatus {
                    name: "amd".into(),
                    state: CollectorState::Absent("no amdgpu card".into()),
                },
            ],
        }
    }

    fn report() -> HostReport {
        HostReport {
            at_ms: 5,
            disks: vec![
                DiskHealth {
                    device: "/dev/nvme0".into(),
                    model: "Samsung".into(),
                    health: SmartHealth::Passed,
                    temp_c: Some(35.0),
                    power_on_hours: Some(1000),
                    nvme_pct_used: Some(3),
                    media_errors: Some(0),
                    ..Default::default()
                },
                DiskHealth {
                    device: "/dev/vda".into(),
                    health: SmartHealth::NoSmart("virtual disk".into()),
                    ..Default::default()
                },
            ],
            collectors: vec![CollectorStatus {
                name: "smart".into(),
                state: CollectorState::Failed("smartctl timed out".into()),
            }],
        }
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        msg: &T,
        kind: StreamKind,
    ) {
        let mut buf = bytes::BytesMut::new();
        crate::encode(msg, &mut buf, kind.max_frame()).expect("encode");
        let back: T = crate::decode(&mut buf, kind.max_frame())
            .expect("decode")
            .expect("complete");
        assert_eq!(&back, msg);
        assert!(buf.is_empty());
    }

    #[test]
    fn host_messages_round_trip() {
        round_trip(&MetricsFrame::HostDetail(detail()), StreamKind::Metrics);
        round_trip(&MetricsFrame::HostReport(report()), StreamKind::Metrics);
        let minute = HostMinute::fold(0, &[detail(), detail()]).expect("minute");
        round_trip(
            &MetricsFrame::BackfillHost(vec![minute]),
            StreamKind::Metrics,
        );
        round_trip(&HubStreamOpen::HostReport, StreamKind::Exec);
        round_trip(
            &Query::Host {
                agent: "web-1".into(),
                refresh: true,
            },
            StreamKind::Request,
        );
        let view = HostView {
            id: IdentityId::from_random(Role::Agent, [3; 8]),
            name: "web-1".into(),
            detail: Some(detail()),
            report: Some(report()),
        };
        round_trip(&QueryReply::Host(view), StreamKind::Request);
    }

    /// Golden bytes: appended variants keep their indexes; a change here breaks deployed peers.
    #[test]
    fn golden_bytes_are_pinned() {
        let frame = postcard::to_stdvec(&MetricsFrame::HostDetail(HostDetail {
            at_ms: 1,
            ..Default::default()
        }))
        .expect("encode");
        assert_eq!(frame, [4, 1, 0, 0, 0, 0, 0, 0, 0]);
        let frame =
            postcard::to_stdvec(&MetricsFrame::HostReport(HostReport::default())).expect("encode");
        assert_eq!(frame, [5, 0, 0, 0]);
        assert_eq!(
            postcard::to_stdvec(&MetricsFrame::BackfillHost(vec![])).expect("encode"),
            [6, 0]
        );
        assert_eq!(
            postcard::to_stdvec(&HubStreamOpen::HostReport).expect("encode"),
            [6]
        );
        assert_eq!(
            postcard::to_stdvec(&SmartHealth::NoSmart("v".into())).expect("encode"),
            [3, 1, b'v']
        );
        assert_eq!(
            postcard::to_stdvec(&CollectorState::Degraded("c".into())).expect("encode"),
            [2, 1, b'c']
        );
    }

    #[test]
    fn long_command_lines_are_cut_at_a_character_boundary() {
        assert_eq!(shorten_cmd("ls -l"), "ls -l");
        let long = "é".repeat(100);
        let short = shorten_cmd(&long);
        assert!(short.len() <= MAX_PROCESS_CMD, "{} bytes", short.len());
        assert!(short.ends_with('…'));
        assert!(short.starts_with("éé"));
    }

    #[test]
    fn a_minute_means_rates_and_sums_new_errors() {
        let mut a = detail();
        let mut b = detail();
        a.block_io[0].read_bps = 1000;
        b.block_io[0].read_bps = 3000;
        a.net_errors[0].new.rx_dropped = 2;
        b.net_errors[0].new.rx_dropped = 5;
        a.gpus[0].util_pct = Some(20.0);
        b.gpus[0].util_pct = Some(40.0);
        a.top_cpu[0].cpu_pct = 80.0;
        b.top_cpu[0].cpu_pct = 10.0;
        a.top_cpu[0].name = "busy".into();
        let m = HostMinute::fold(60_000, &[a, b]).expect("minute");
        assert_eq!(m.samples, 2);
        assert_eq!(m.detail.block_io[0].read_bps, 2000);
        assert_eq!(m.detail.net_errors[0].new.rx_dropped, 7);
        assert_eq!(m.detail.gpus[0].util_pct, Some(30.0));
        assert_eq!(
            m.detail.top_cpu[0].name, "busy",
            "the busiest sample's list"
        );
        assert!(HostMinute::fold(0, &[]).is_none());
    }
}
