//! Per-series host history and per-minute top processes, as the operator API returns them
//! (`flotilla metrics NAME --series …`, `flotilla top NAME`; docs/host.md).
//!
//! The hub keeps one series per agent, [`Metric`] and name (a mount, an interface, a block device,
//! a sensor, a GPU, a custom metric), at one-minute and ten-minute resolution.

use crate::host::TopProcess;
use serde::{Deserialize, Serialize};

/// Longest series name the hub keeps (mount points, interface and sensor labels, custom names):
/// real ones are far shorter, and a longer one would only cost disk on every minute.
pub const MAX_SERIES_NAME: usize = 128;
/// [`TopMinute`]s per [`crate::exec::QueryReply::HostTop`] frame: a minute of ten processes with
/// command lines is under 3 KiB, so 120 stay well below the frame limit.
pub const TOP_MINUTES_PER_FRAME: usize = 120;

/// What a series measures. The number is what the hub's database stores: variants are appended,
/// never reordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Bytes used on a mounted file system (`disk:` + mount point).
    DiskUsed,
    /// Percent used of a mounted file system (`disk:`).
    DiskPct,
    /// Bytes received per second on an interface (`net:` + interface).
    NetRx,
    /// Bytes sent per second on an interface (`net:`).
    NetTx,
    /// Bytes read per second from a block device (`io:` + device).
    IoRead,
    /// Bytes written per second to a block device (`io:`).
    IoWrite,
    /// Read operations per second on a block device (`io:`).
    IoReadOps,
    /// Write operations per second on a block device (`io:`).
    IoWriteOps,
    /// Percent of the time a block device was busy (`io:`).
    IoBusy,
    /// Degrees Celsius of a sensor (`temp:` + label).
    Temp,
    /// GPU utilisation, percent (`gpu:` + index; `gpu:amd0` for the first AMD GPU).
    GpuUtil,
    /// GPU memory used, bytes (`gpu:`).
    GpuMem,
    /// A custom metric's value (`custom:` + name; a labelled one is stored as
    /// `name{key="value",…}`, and `custom:name` names it with every label set).
    Custom,
    /// Receive errors and drops per second on an interface (`net:`).
    NetRxErrors,
    /// Transmit errors and drops per second on an interface (`net:`).
    NetTxErrors,
}

/// The group a [`Metric`] belongs to: what `--series kind:name` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// A mounted file system.
    Disk,
    /// A network interface.
    Net,
    /// A block device.
    Io,
    /// A temperature sensor.
    Temp,
    /// A GPU.
    Gpu,
    /// A custom metric.
    Custom,
}

impl Metric {
    /// Every metric, in database order.
    pub const ALL: [Self; 15] = [
        Self::DiskUsed,
        Self::DiskPct,
        Self::NetRx,
        Self::NetTx,
        Self::IoRead,
        Self::IoWrite,
        Self::IoReadOps,
        Self::IoWriteOps,
        Self::IoBusy,
        Self::Temp,
        Self::GpuUtil,
        Self::GpuMem,
        Self::Custom,
        Self::NetRxErrors,
        Self::NetTxErrors,
    ];

    /// The number the hub's database stores.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The metric a stored number stands for.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Its group.
    pub fn kind(self) -> SeriesKind {
        match self {
            Self::DiskUsed | Self::DiskPct => SeriesKind::Disk,
            Self::NetRx | Self::NetTx | Self::NetRxErrors | Self::NetTxErrors => SeriesKind::Net,
            Self::IoRead | Self::IoWrite | Self::IoReadOps | Self::IoWriteOps | Self::IoBusy => {
                SeriesKind::Io
            }
            Self::Temp => SeriesKind::Temp,
            Self::GpuUtil | Self::GpuMem => SeriesKind::Gpu,
            Self::Custom => SeriesKind::Custom,
        }
    }

    /// Short column name for tables: `used`, `rx/s`, `busy%`.
    pub fn field(self) -> &'static str {
        match self {
            Self::DiskUsed => "used",
            Self::DiskPct => "used%",
            Self::NetRx => "rx/s",
            Self::NetTx => "tx/s",
            Self::NetRxErrors => "rx err/s",
            Self::NetTxErrors => "tx err/s",
            Self::IoRead => "read/s",
            Self::IoWrite => "write/s",
            Self::IoReadOps => "r iops",
            Self::IoWriteOps => "w iops",
            Self::IoBusy => "busy%",
            Self::Temp => "°C",
            Self::GpuUtil => "util%",
            Self::GpuMem => "mem",
            Self::Custom => "value",
        }
    }

    /// Whether values are bytes (or bytes per second): shown as `1.2 MiB`.
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Self::DiskUsed
                | Self::NetRx
                | Self::NetTx
                | Self::IoRead
                | Self::IoWrite
                | Self::GpuMem
        )
    }
}

impl SeriesKind {
    /// The word before the colon in `--series`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Net => "net",
            Self::Io => "io",
            Self::Temp => "temp",
            Self::Gpu => "gpu",
            Self::Custom => "custom",
        }
    }

    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::Disk,
        Self::Net,
        Self::Io,
        Self::Temp,
        Self::Gpu,
        Self::Custom,
    ];
}

/// One series asked for: a kind and a name (`disk:/`, `net:eth0`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesSelector {
    /// Which group.
    pub kind: SeriesKind,
    /// Mount, interface, device, sensor label, GPU index or custom name.
    pub name: String,
}

/// A `--series` list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesSpecError {
    /// An entry without `kind:`.
    #[error("series {0:?} needs a kind: disk:/, net:eth0, io:vda, temp:LABEL, gpu:0, custom:NAME")]
    NoKind(String),
    /// An unknown kind.
    #[error("unknown series kind {0:?}: use disk, net, io, temp, gpu or custom")]
    UnknownKind(String),
    /// A name empty or longer than [`MAX_SERIES_NAME`].
    #[error("series name {0:?} must be 1 to {MAX_SERIES_NAME} bytes")]
    BadName(String),
}

/// Parses `disk:/,net:eth0,gpu:0`: comma-separated `kind:name` entries. A name may itself hold
/// colons (`temp:coretemp Package id 0`); only the first one separates.
pub fn parse_series_spec(spec: &str) -> Result<Vec<SeriesSelector>, SeriesSpecError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (kind, name) = entry
                .split_once(':')
                .ok_or_else(|| SeriesSpecError::NoKind(entry.into()))?;
            let kind = SeriesKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind.trim())
                .ok_or_else(|| SeriesSpecError::UnknownKind(kind.into()))?;
            if name.is_empty() || name.len() > MAX_SERIES_NAME {
                return Err(SeriesSpecError::BadName(name.into()));
            }
            Ok(SeriesSelector {
                kind,
                name: name.into(),
            })
        })
        .collect()
}

/// One bucket of one series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Bucket start, ms since the epoch.
    pub start_ms: u64,
    /// Samples folded into it.
    pub samples: u32,
    /// Mean over the bucket.
    pub avg: f64,
    /// Highest sample in the bucket.
    pub max: f64,
}

/// One series' buckets, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoints {
    /// What it measures.
    pub metric: Metric,
    /// Mount, interface, device, sensor, GPU index or custom name.
    pub name: String,
    /// Bucket length, seconds: 60 or 600.
    pub resolution_s: u32,
    /// Buckets, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// The processes that used most CPU and most memory in one minute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopMinute {
    /// Minute start, ms since the epoch.
    pub start_ms: u64,
    /// Samples the minute folded.
    pub samples: u32,
    /// Top [`crate::host::TOP_PROCESSES`] by CPU, highest first: `cpu_pct` is the mean over the
    /// minute's samples (0 in those that missed the process), `mem` the highest seen.
    pub by_cpu: Vec<TopProcess>,
    /// Top [`crate::host::TOP_PROCESSES`] by highest resident memory, highest first.
    pub by_mem: Vec<TopProcess>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_codes_are_their_positions_and_round_trip() {
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(m.code()), i);
            assert_eq!(Metric::from_code(m.code()), Some(m));
            let bytes = postcard::to_stdvec(&m).expect("encode");
            assert_eq!(bytes, vec![m.code()], "postcard index is the code");
        }
        assert_eq!(Metric::from_code(Metric::ALL.len() as u8), None);
    }

    #[test]
    fn series_specs_parse_and_bad_ones_say_why() {
        let s = parse_series_spec(
            "disk:/, net:eth0,gpu:0,custom:nginx_requests,io:vda,temp:Package id 0",
        )
        .expect("parse");
        assert_eq!(s.len(), 6);
        assert_eq!(
            s[0],
            SeriesSelector {
                kind: SeriesKind::Disk,
                name: "/".into()
            }
        );
        assert_eq!(s[5].name, "Package id 0");
        assert_eq!(
            parse_series_spec("temp:acpi:1").expect("colon in name")[0].name,
            "acpi:1"
        );
        assert_eq!(
            parse_series_spec("eth0").expect_err("no kind").to_string(),
            "series \"eth0\" needs a kind: disk:/, net:eth0, io:vda, temp:LABEL, gpu:0, custom:NAME"
        );
        assert_eq!(
            parse_series_spec("cpu:0").expect_err("kind").to_string(),
            "unknown series kind \"cpu\": use disk, net, io, temp, gpu or custom"
        );
        assert!(matches!(
            parse_series_spec("net:"),
            Err(SeriesSpecError::BadName(_))
        ));
    }

    #[test]
    fn top_minutes_round_trip() {
        let m = TopMinute {
            start_ms: 1_700_000_040_000,
            samples: 12,
            by_cpu: vec![TopProcess {
                pid: 42,
                name: "burn".into(),
                cmd: "burn --hard".into(),
                user: "root".into(),
                cpu_pct: 99.5,
                mem: 1 << 20,
            }],
            by_mem: vec![],
        };
        let bytes = postcard::to_stdvec(&m).expect("encode");
        let back: TopMinute = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, m);
    }
}
