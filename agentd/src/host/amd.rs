//! AMD GPUs through the amdgpu driver's sysfs files: `/sys/class/drm/cardN/device/` with
//! `gpu_busy_percent`, `mem_info_vram_used`/`_total` and a hwmon folder for temperature and power.

use flotilla_wire::host::{CollectorState, Gpu, GpuVendor};
use std::path::{Path, PathBuf};

/// PCI vendor id of AMD (ATI).
const AMD_VENDOR: &str = "0x1002";

/// The AMD cards found under a DRM class folder.
#[derive(Debug)]
pub struct AmdGpus {
    cards: Vec<(u32, PathBuf)>,
    state: CollectorState,
}

impl AmdGpus {
    /// Finds amdgpu cards under `drm` (`/sys/class/drm` on a real machine).
    pub fn find(drm: &Path) -> Self {
        let entries = match std::fs::read_dir(drm) {
            Ok(e) => e,
            Err(e) => {
                return Self {
                    cards: Vec::new(),
                    state: CollectorState::Absent(format!("no {}: {e}", drm.display())),
                };
            }
        };
        let mut cards: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                // card0, not card0-DP-1 (a connector).
                let index: u32 = name.strip_prefix("card")?.parse().ok()?;
                let device = e.path().join("device");
                let vendor = std::fs::read_to_string(device.join("vendor")).ok()?;
                (vendor.trim() == AMD_VENDOR && device.join("gpu_busy_percent").exists())
                    .then_some((index, device))
            })
            .collect();
        cards.sort();
        let state = if cards.is_empty() {
            CollectorState::Absent(format!("no amdgpu card under {}", drm.display()))
        } else {
            CollectorState::Running
        };
        Self { cards, state }
    }

    /// Running, or absent and why.
    pub fn state(&self) -> CollectorState {
        self.state.clone()
    }

    /// One reading of every card; a file the driver lacks gives `None`.
    pub fn read(&self) -> Vec<Gpu> {
        self.cards
            .iter()
            .map(|(index, dev)| {
                let num = |p: &Path| -> Option<u64> {
                    std::fs::read_to_string(p).ok()?.trim().parse().ok()
                };
                let hwmon = std::fs::read_dir(dev.join("hwmon"))
                    .ok()
                    .and_then(|mut d| d.find_map(Result::ok))
                    .map(|e| e.path());
                let from_hwmon = |file: &str| hwmon.as_ref().and_then(|h| num(&h.join(file)));
                let name = std::fs::read_to_string(dev.join("product_name"))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| {
                        let id = std::fs::read_to_string(dev.join("device")).unwrap_or_default();
                        format!("AMD GPU {}", id.trim())
                    });
                Gpu {
                    index: *index,
                    vendor: GpuVendor::Amd,
                    name,
                    util_pct: num(&dev.join("gpu_busy_percent")).map(|v| v as f32),
                    mem_used: num(&dev.join("mem_info_vram_used")),
                    mem_total: num(&dev.join("mem_info_vram_total")),
                    // hwmon: millidegrees and microwatts.
                    temp_c: from_hwmon("temp1_input").map(|m| m as f32 / 1000.0),
                    power_w: from_hwmon("power1_average")
                        .or_else(|| from_hwmon("power1_input"))
                        .map(|uw| uw as f32 / 1e6),
                    power_limit_w: from_hwmon("power1_cap").map(|uw| uw as f32 / 1e6),
                    clock_graphics_mhz: from_hwmon("freq1_input").map(|hz| (hz / 1_000_000) as u32),
                    clock_mem_mhz: from_hwmon("freq2_input").map(|hz| (hz / 1_000_000) as u32),
                    processes: Vec::new(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_without_amd_cards_says_so() {
        let gpus = AmdGpus::find(Path::new("/sys/class/drm"));
        if gpus.cards.is_empty() {
            let state = gpus.state();
            assert!(
                state.reason().is_some_and(|r| r.contains("/sys/class/drm")),
                "{state:?}"
            );
            assert!(gpus.read().is_empty());
        }
    }

    /// The amdgpu layout (files as the driver writes them), in a temp folder: this machine has no
    /// AMD GPU.
    #[test]
    fn a_card_in_the_amdgpu_layout_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let dev = dir.path().join("card1/device");
        let hwmon = dev.join("hwmon/hwmon3");
        std::fs::create_dir_all(&hwmon).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("card1-DP-1")).expect("mkdir");
        let w = |p: PathBuf, s: &str| std::fs::write(p, s).expect("write");
        w(dev.join("vendor"), "0x1002\n");
        w(dev.join("device"), "0x744c\n");
        w(dev.join("gpu_busy_percent"), "37\n");
        w(dev.join("mem_info_vram_used"), "1073741824\n");
        w(dev.join("mem_info_vram_total"), "25753026560\n");
        w(hwmon.join("temp1_input"), "51000\n");
        w(hwmon.join("power1_average"), "45000000\n");
        w(hwmon.join("power1_cap"), "327000000\n");
        let gpus = AmdGpus::find(dir.path());
        assert_eq!(gpus.state(), CollectorState::Running);
        let list = gpus.read();
        assert_eq!(list.len(), 1, "connectors are not cards");
        let g = &list[0];
        assert_eq!((g.index, g.vendor), (1, GpuVendor::Amd));
        assert_eq!(g.name, "AMD GPU 0x744c");
        assert_eq!(g.util_pct, Some(37.0));
        assert_eq!(g.mem_used, Some(1 << 30));
        assert_eq!(g.temp_c, Some(51.0));
        assert_eq!(g.power_w, Some(45.0));
        assert_eq!(g.power_limit_w, Some(327.0));
        assert_eq!(g.clock_graphics_mhz, None, "absent file, no value");
    }
}
