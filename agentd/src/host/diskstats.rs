//! Per block device I/O from `/proc/diskstats`: rates from the deltas of the kernel's counters.

use crate::metrics::counter_rate;
use flotilla_wire::host::BlockIo;
use std::collections::HashMap;

/// The kernel counts sectors of 512 bytes in `/proc/diskstats`, whatever the device's own sector size.
const SECTOR_BYTES: u64 = 512;

/// Device name prefixes left out: loop devices, RAM disks and compressed swap in RAM are not disks,
/// and a machine with snaps has dozens of loop devices.
const SKIPPED_PREFIXES: [&str; 4] = ["loop", "ram", "zram", "fd"];

/// Counters of one device, as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Reads completed.
    pub reads: u64,
    /// Sectors read.
    pub sectors_read: u64,
    /// Writes completed.
    pub writes: u64,
    /// Sectors written.
    pub sectors_written: u64,
    /// Milliseconds spent with I/O in flight.
    pub io_ms: u64,
}

/// Parses `/proc/diskstats` text: (device, counters) for each device kept, in file order.
pub fn parse(text: &str) -> Vec<(String, DiskCounters)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // major minor name, then at least the 11 fields every kernel since 2.6 writes.
            if f.len() < 14 {
                return None;
            }
            let name = f[2];
            if SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            let c = DiskCounters {
                reads: n(3)?,
                sectors_read: n(5)?,
                writes: n(7)?,
                sectors_written: n(9)?,
                io_ms: n(12)?,
            };
            // A device that never did any I/O (an empty card reader, an unused partition table
            // slot) would only add rows of zeros.
            (c != DiskCounters::default()).then(|| (name.to_string(), c))
        })
        .collect()
}

/// Previous counters per device, for rates.
#[derive(Debug, Default)]
pub struct DiskIoTracker {
    prev: HashMap<String, DiskCounters>,
}

impl DiskIoTracker {
    /// Rates since the previous call, `secs` ago (0 on the first call: no interval yet).
    pub fn update(&mut self, now: Vec<(String, DiskCounters)>, secs: f64) -> Vec<BlockIo> {
        let mut out = Vec::with_capacity(now.len());
        let mut next = HashMap::with_capacity(now.len());
        for (device, cur) in now {
            let prev = self.prev.get(&device).copied().unwrap_or(cur);
            let per_s = |a: u64, b: u64| {
                if secs > 0.0 && b >= a {
                    (b - a) as f64 / secs
                } else {
                    0.0
                }
            };
            out.push(BlockIo {
                device: device.clone(),
                read_bps: counter_rate(
                    prev.sectors_read * SECTOR_BYTES,
                    cur.sectors_read * SECTOR_BYTES,
                    secs,
                ),
                write_bps: counter_rate(
                    prev.sectors_written * SECTOR_BYTES,
                    cur.sectors_written * SECTOR_BYTES,
                    secs,
                ),
                read_iops: per_s(prev.reads, cur.reads) as f32,
                write_iops: per_s(prev.writes, cur.writes) as f32,
                // io_ms grows by at most 1,000 per second of wall time; clamp clock skew.
                busy_pct: (per_s(prev.io_ms, cur.io_ms) / 10.0).min(100.0) as f32,
            });
            next.insert(device, cur);
        }
        self.prev = next;
        out.sort_by(|a, b| a.device.cmp(&b.device));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "   7       0 loop0 10 0 80 0 0 0 0 0 0 4 0 0 0 0 0 0 0
 254       0 vda 89519 11488 9956194 220250 46559 129649 57789872 364629 4 32472 590802 10875 13 775424 5794 3024 127
 254       1 vda1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 253       0 zram0 5 0 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sdb 1 2 3 4 5 6 7 8 9 10 11
";

    #[test]
    fn parse_keeps_real_disks_with_io() {
        let rows = parse(TEXT);
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["vda", "sdb"],
            "loop, zram and idle partitions left out"
        );
        assert_eq!(
            rows[0].1,
            DiskCounters {
                reads: 89519,
                sectors_read: 9956194,
                writes: 46559,
                sectors_written: 57789872,
                io_ms: 32472,
            }
        );
        assert_eq!(rows[1].1.io_ms, 10, "an old kernel's 11 fields are enough");
    }

    #[test]
    fn rates_come_from_deltas() {
        let mut t = DiskIoTracker::default();
        let at = |sectors: u64, writes: u64, io_ms: u64| {
            vec![(
                "vda".to_string(),
                DiskCounters {
                    writes,
                    sectors_written: sectors,
                    io_ms,
                    ..Default::default()
                },
            )]
        };
        let first = t.update(at(0, 0, 0), 0.0);
        assert_eq!(first[0].write_bps, 0, "no interval yet");
        let io = t.update(at(2048, 10, 500), 2.0);
        assert_eq!(io[0].write_bps, 512 * 1024);
        assert_eq!(io[0].write_iops, 5.0);
        assert_eq!(io[0].busy_pct, 25.0);
        let reset = t.update(at(0, 0, 0), 2.0);
        assert_eq!(reset[0].write_bps, 0, "a counter that went back gives 0");
    }
}
