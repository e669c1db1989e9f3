//! Disk health through `smartctl --json` (smartmontools): which disks `smartctl --scan` finds (or,
//! when it finds none, the whole disks in `/sys/block`), then `smartctl -a --json` on each.

use super::{CAPTURE_LIMIT, Captured, capture};
use flotilla_wire::host::{CollectorState, CollectorStatus, DiskHealth, SmartHealth};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

/// Time `smartctl` gets per call: a disk spinning up can take ten seconds or more, and a hung USB
/// bridge must not hold the next run back.
pub const SMARTCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Disks examined per run, whatever the machine has: a storage server's 90 bays are still
/// answered, an enclosure listing thousands of paths is not walked.
const MAX_DISKS: usize = 128;

/// Whole-disk name prefixes in `/sys/block` that are never physical disks.
const NOT_DISKS: [&str; 6] = ["loop", "ram", "zram", "dm-", "md", "sr"];

/// One run: a health entry per disk and the collector's state.
pub async fn examine(smartctl: &Path, sys_block: &Path) -> (Vec<DiskHealth>, CollectorStatus) {
    let status = |state| CollectorStatus {
        name: "smart".into(),
        state,
    };
    let scan = match run(smartctl, &["--scan", "--json"]).await {
        Ok(out) => out,
        Err(RunError::Missing) => {
            return (
                Vec::new(),
                status(CollectorState::Absent(format!(
                    "{} not found (install smartmontools)",
                    smartctl.display()
                ))),
            );
        }
        Err(RunError::Other(e)) => {
            return (Vec::new(), status(CollectorState::Failed(e)));
        }
    };
    let mut devices: Vec<(String, Option<String>)> = serde_json::from_slice::<Value>(&scan.stdout)
        .ok()
        .and_then(|v| v.get("devices").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|d| {
            let name = d.get("name")?.as_str()?.to_string();
            let kind = d.get("type").and_then(Value::as_str).map(str::to_string);
            Some((name, kind))
        })
        .collect();
    if devices.is_empty() {
        // smartctl's scan only lists devices it recognises: a virtio disk is not among them, and
        // silence would hide it. Ask about each whole disk so the answer says why there is no SMART.
        devices = whole_disks(sys_block)
            .into_iter()
            .map(|d| (format!("/dev/{d}"), None))
            .collect();
    }
    devices.truncate(MAX_DISKS);
    if devices.is_empty() {
        return (
            Vec::new(),
            status(CollectorState::Absent(format!(
                "no disks: smartctl --scan found none and {} lists none",
                sys_block.display()
            ))),
        );
    }
    let mut disks = Vec::with_capacity(devices.len());
    for (device, kind) in devices {
        let mut args = vec!["-a", "--json"];
        if let Some(kind) = kind.as_deref() {
            args.extend(["-d", kind]);
        }
        args.push(&device);
        let health = match run(smartctl, &args).await {
            Ok(out) => match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) => parse_device(&device, &v),
                Err(e) => DiskHealth {
                    device: device.clone(),
                    health: SmartHealth::NoSmart(format!("unreadable smartctl output: {e}")),
                    ..Default::default()
                },
            },
            Err(RunError::Missing) => unreachable_missing(&device),
            Err(RunError::Other(e)) => DiskHealth {
                device: device.clone(),
                health: SmartHealth::NoSmart(e),
                ..Default::default()
            },
        };
        disks.push(health);
    }
    (disks, status(CollectorState::Running))
}

/// smartctl answered the scan, so it exists; if it vanished since, say so on that disk.
fn unreachable_missing(device: &str) -> DiskHealth {
    DiskHealth {
        device: device.to_string(),
        health: SmartHealth::NoSmart("smartctl disappeared during the run".into()),
        ..Default::default()
    }
}

/// Whole disks in `/sys/block`, sorted, less loop, RAM, device-mapper, md and optical devices.
fn whole_disks(sys_block: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !NOT_DISKS.iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

enum RunError {
    Missing,
    Other(String),
}

async fn run(smartctl: &Path, args: &[&str]) -> Result<Captured, RunError> {
    let mut cmd = Command::new(smartctl);
    cmd.args(args);
    capture(cmd, SMARTCTL_TIMEOUT, CAPTURE_LIMIT)
        .await
        .map_err(|e| match e {
            super::CaptureError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
                RunError::Missing
            }
            other => RunError::Other(format!("smartctl {}: {other}", args.join(" "))),
        })
}

/// One device's health from `smartctl -a --json` output.
pub fn parse_device(device: &str, v: &Value) -> DiskHealth {
    let u = |path: &[&str]| -> Option<u64> {
        let mut cur = v;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_u64()
    };
    let model = ["model_name", "scsi_model_name", "model_family"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    let errors: Vec<String> = v
        .pointer("/smartctl/messages")
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .filter(|m| m.get("severity").and_then(Value::as_str) == Some("error"))
                .filter_map(|m| m.get("string").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let health = match v.pointer("/smart_status/passed").and_then(Value::as_bool) {
        Some(true) => SmartHealth::Passed,
        Some(false) => SmartHealth::Failed,
        None if v
            .pointer("/smart_support/available")
            .and_then(Value::as_bool)
            == Some(false) =>
        {
            SmartHealth::NoSmart("the device does not support SMART".into())
        }
        None if !errors.is_empty() => SmartHealth::NoSmart(errors.join("; ")),
        None => SmartHealth::Unknown,
    };
    let attribute = |id: u64| -> Option<u64> {
        v.pointer("/ata_smart_attributes/table")?
            .as_array()?
            .iter()
            .find(|a| a.get("id").and_then(Value::as_u64) == Some(id))?
            .pointer("/raw/value")?
            .as_u64()
    };
    DiskHealth {
        device: device.to_string(),
        model,
        health,
        temp_c: v
            .pointer("/temperature/current")
            .and_then(Value::as_f64)
            .map(|t| t as f32),
        power_on_hours: u(&["power_on_time", "hours"]),
        reallocated: attribute(5),
        pending: attribute(197),
        uncorrectable: attribute(198),
        nvme_pct_used: u(&["nvme_smart_health_information_log", "percentage_used"])
            .map(|p| p.min(u64::from(u32::MAX)) as u32),
        media_errors: u(&["nvme_smart_health_information_log", "media_errors"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's disks through the real smartctl: a virtual disk says why it has no SMART.
    #[tokio::test]
    async fn real_smartctl_explains_a_disk_without_smart() {
        let (disks, status) = examine(Path::new("smartctl"), Path::new("/sys/block")).await;
        match &status.state {
            CollectorState::Absent(reason) => {
                assert!(
                    reason.contains("smartmontools") || reason.contains("no disks"),
                    "{reason}"
                );
                return;
            }
            state => assert_eq!(state, &CollectorState::Running),
        }
        assert!(!disks.is_empty(), "a disk or a reason per disk");
        for d in &disks {
            eprintln!("{d:?}");
            assert!(d.device.starts_with("/dev/"), "{d:?}");
            if let SmartHealth::NoSmart(reason) = &d.health {
                assert!(!reason.is_empty());
            }
        }
        // A virtio disk (this VM's) has no SMART, and the reason is smartctl's own words.
        if let Some(vd) = disks.iter().find(|d| d.device.starts_with("/dev/vd")) {
            let SmartHealth::NoSmart(reason) = &vd.health else {
                panic!("a virtio disk reported SMART: {vd:?}");
            };
            assert!(reason.contains(&vd.device), "{reason}");
        }
    }

    #[tokio::test]
    async fn missing_smartctl_is_absent_with_the_package_to_install() {
        let (disks, status) =
            examine(Path::new("/nonexistent/smartctl"), Path::new("/sys/block")).await;
        assert!(disks.is_empty());
        assert_eq!(
            status.state,
            CollectorState::Absent(
                "/nonexistent/smartctl not found (install smartmontools)".into()
            )
        );
    }

    #[test]
    fn ata_and_nvme_outputs_parse() {
        let ata = serde_json::json!({
            "model_name": "WDC WD40EFRX",
            "smart_status": {"passed": false},
            "temperature": {"current": 41},
            "power_on_time": {"hours": 31000},
            "ata_smart_attributes": {"table": [
                {"id": 5, "raw": {"value": 8}},
                {"id": 197, "raw": {"value": 2}},
                {"id": 198, "raw": {"value": 1}}
            ]}
        });
        let d = parse_device("/dev/sda", &ata);
        assert_eq!(d.health, SmartHealth::Failed);
        assert_eq!(d.model, "WDC WD40EFRX");
        assert_eq!(
            (d.reallocated, d.pending, d.uncorrectable),
            (Some(8), Some(2), Some(1))
        );
        assert_eq!(d.power_on_hours, Some(31000));
        assert_eq!(d.temp_c, Some(41.0));
        let nvme = serde_json::json!({
            "model_name": "Samsung SSD 980",
            "smart_status": {"passed": true},
            "nvme_smart_health_information_log": {"percentage_used": 3, "media_errors": 0}
        });
        let d = parse_device("/dev/nvme0", &nvme);
        assert_eq!(d.health, SmartHealth::Passed);
        assert_eq!((d.nvme_pct_used, d.media_errors), (Some(3), Some(0)));
        assert_eq!(d.reallocated, None, "not an ATA disk");
        let unsupported = serde_json::json!({"smart_support": {"available": false}});
        assert!(matches!(
            parse_device("/dev/sdb", &unsupported).health,
            SmartHealth::NoSmart(_)
        ));
    }
}
