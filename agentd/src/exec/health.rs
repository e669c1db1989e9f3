//! The `health` built-in: healthy, degraded or unhealthy, with a reason per check — the link to the
//! hub, clock skew against the hub, disks nearly full, memory, load, and exec slots in use. Exit code
//! 0, 1 or 2, as monitoring plugins do, so `flotilla exec all --builtin health` sorts a fleet.

use std::fmt::Write as _;
use std::time::Duration;

/// Disk use that starts to matter: logs and package upgrades fail soon after.
const DISK_DEGRADED_PCT: f64 = 90.0;
/// Disk use at which writes are about to fail.
const DISK_UNHEALTHY_PCT: f64 = 97.0;
/// Clock skew that confuses logs and `make`.
const SKEW_DEGRADED_MS: i64 = 2_000;
/// Clock skew that breaks TLS validity checks and token expiry.
const SKEW_UNHEALTHY_MS: i64 = 60_000;
/// Memory use at which the page cache is squeezed out.
const MEM_DEGRADED_PCT: f64 = 90.0;
/// Memory use at which the OOM killer is near.
const MEM_UNHEALTHY_PCT: f64 = 98.0;
/// Run-queue length per core above which commands crawl.
const LOAD_DEGRADED_PER_CORE: f64 = 2.0;
/// Run-queue length per core at which the machine is effectively stuck.
const LOAD_UNHEALTHY_PER_CORE: f64 = 8.0;
/// Round trip to the hub at which the console feels laggy.
const RTT_DEGRADED: Duration = Duration::from_millis(500);
/// Packet loss on the hub link worth a look.
const LOSS_DEGRADED_PCT: f64 = 5.0;

/// How bad one check is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Healthy,
    /// Works, needs attention.
    Degraded,
    /// Failing or about to.
    Unhealthy,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Self::Healthy => "ok",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Exit code of the report: 0, 1, 2.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// What was checked (`disk /var`).
    pub name: String,
    /// Verdict.
    pub level: Level,
    /// Why, with the figure.
    pub detail: String,
}

/// One mounted file system.
#[derive(Clone, Debug, PartialEq)]
pub struct Disk {
    /// Mount point.
    pub mount: String,
    /// Bytes used.
    pub used: u64,
    /// Bytes total.
    pub total: u64,
}

/// What the checks look at, gathered once.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// QUIC's smoothed round trip to the hub.
    pub rtt: Duration,
    /// Packets lost on the hub link since it connected.
    pub lost_packets: u64,
    /// Packets sent on the hub link since it connected.
    pub sent_packets: u64,
    /// Agent clock minus hub clock, ms (from the exec's send time and half the round trip).
    pub clock_offset_ms: i64,
    /// File systems.
    pub disks: Vec<Disk>,
    /// Memory used and total, bytes.
    pub mem: (u64, u64),
    /// One-minute load average.
    pub load1: f64,
    /// Logical cores.
    pub cores: usize,
    /// Exec slots in use and in all.
    pub slots: (usize, usize),
}

fn pct(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

fn level(value: f64, degraded: f64, unhealthy: f64) -> Level {
    if value >= unhealthy {
        Level::Unhealthy
    } else if value >= degraded {
        Level::Degraded
    } else {
        Level::Healthy
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Runs every check. Pure: the tests feed it made-up facts.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    let mut checks = Vec::new();
    let loss = pct(f.lost_packets, f.sent_packets);
    let link_level = if f.rtt >= RTT_DEGRADED || loss >= LOSS_DEGRADED_PCT {
        Level::Degraded
    } else {
        Level::Healthy
    };
    checks.push(Check {
        name: "connection".into(),
        level: link_level,
        detail: format!(
            "rtt {:.1} ms, {loss:.1}% of packets lost",
            f.rtt.as_secs_f64() * 1000.0
        ),
    });
    let skew = f.clock_offset_ms.abs();
    checks.push(Check {
        name: "clock".into(),
        level: level(
            skew as f64,
            SKEW_DEGRADED_MS as f64,
            SKEW_UNHEALTHY_MS as f64,
        ),
        detail: format!("{:+} ms from the hub", f.clock_offset_ms),
    });
    let mut fullest: Option<(f64, &Disk)> = None;
    for d in f.disks.iter().filter(|d| d.total > 0) {
        let p = pct(d.used, d.total);
        let l = level(p, DISK_DEGRADED_PCT, DISK_UNHEALTHY_PCT);
        if l != Level::Healthy {
            checks.push(Check {
                name: format!("disk {}", d.mount),
                level: l,
                detail: format!("{p:.0}% used, {} free", gib(d.total - d.used.min(d.total))),
            });
        }
        if fullest.is_none_or(|(fp, _)| p > fp) {
            fullest = Some((p, d));
        }
    }
    if !checks.iter().any(|c| c.name.starts_with("disk ")) {
        checks.push(Check {
            name: "disks".into(),
            level: Level::Healthy,
            detail: match fullest {
                Some((p, d)) => format!("fullest is {} at {p:.0}%", d.mount),
                None => "no file systems reported".into(),
            },
        });
    }
    let mem = pct(f.mem.0, f.mem.1);
    checks.push(Check {
        name: "memory".into(),
        level: level(mem, MEM_DEGRADED_PCT, MEM_UNHEALTHY_PCT),
        detail: format!("{mem:.0}% used of {}", gib(f.mem.1)),
    });
    let per_core = f.load1 / f.cores.max(1) as f64;
    checks.push(Check {
        name: "load".into(),
        level: level(per_core, LOAD_DEGRADED_PER_CORE, LOAD_UNHEALTHY_PER_CORE),
        detail: format!("{:.2} on {} cores", f.load1, f.cores),
    });
    let (used, total) = f.slots;
    checks.push(Check {
        name: "exec slots".into(),
        level: if total > 0 && used * 5 >= total * 4 {
            Level::Degraded
        } else {
            Level::Healthy
        },
        detail: format!("{used} of {total} in use"),
    });
    checks
}

/// The report as text and the worst level.
pub fn report(checks: &[Check]) -> (String, Level) {
    let worst = checks
        .iter()
        .map(|c| c.level)
        .max()
        .unwrap_or(Level::Healthy);
    let overall = match worst {
        Level::Healthy => "healthy",
        Level::Degraded => "degraded",
        Level::Unhealthy => "unhealthy",
    };
    let mut out = format!("{overall}\n");
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let _ = writeln!(
            out,
            "  {:<width$}  {:<9}  {}",
            c.name,
            c.level.word(),
            c.detail
        );
    }
    (out, worst)
}

/// Gathers the facts: link figures from the connection, the rest from the OS (blocking, so on the
/// blocking pool).
pub async fn gather(
    conn: Option<&quinn::Connection>,
    hub_time_ms: u64,
    slots: (usize, usize),
) -> Facts {
    let (rtt, lost_packets, sent_packets) = conn
        .map(|c| {
            let stats = c.stats();
            (c.rtt(), stats.path.lost_packets, stats.path.sent_packets)
        })
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let clock_offset_ms = now - hub_time_ms as i64 - (rtt.as_millis() as i64) / 2;
    let os = tokio::task::spawn_blocking(|| {
        let mut disks: Vec<Disk> = sysinfo::Disks::new_with_refreshed_list()
            .map(|d| {
                d.iter()
                    .map(|d| Disk {
                        mount: d.mount_point().display().to_string(),
                        used: d.total_space().saturating_sub(d.available_space()),
                        total: d.total_space(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        disks.dedup_by(|a, b| a.mount == b.mount);
        let mut sys = sysinfo::System::new().ok();
        let mem = sys
            .as_mut()
            .map(|s| {
                s.refresh_memory();
                (s.used_memory(), s.total_memory())
            })
            .unwrap_or_default();
        let load1 = sysinfo::System::load_average()
            .map(|l| l.one)
            .unwrap_or(0.0);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (disks, mem, load1, cores)
    })
    .await
    .unwrap_or_default();
    Facts {
        rtt,
        lost_packets,
        sent_packets,
        clock_offset_ms,
        disks: os.0,
        mem: os.1,
        load1: os.2,
        cores: os.3,
        slots,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine() -> Facts {
        Facts {
            rtt: Duration::from_micros(400),
            lost_packets: 0,
            sent_packets: 100,
            clock_offset_ms: 3,
            disks: vec![
                Disk {
                    mount: "/".into(),
                    used: 50,
                    total: 100,
                },
                Disk {
                    mount: "/var".into(),
                    used: 60,
                    total: 100,
                },
            ],
            mem: (4 << 30, 16 << 30),
            load1: 0.5,
            cores: 2,
            slots: (1, 32),
        }
    }

    #[test]
    fn a_fine_machine_is_healthy() {
        let (text, worst) = report(&evaluate(&fine()));
        assert_eq!(worst, Level::Healthy);
        assert_eq!(worst.code(), 0);
        assert!(text.starts_with("healthy\n"), "{text}");
        assert!(text.contains("fullest is /var at 60%"), "{text}");
        assert!(text.contains("+3 ms from the hub"), "{text}");
    }

    #[test]
    fn each_problem_names_its_reason() {
        let mut f = fine();
        f.disks[1].used = 93;
        let checks = evaluate(&f);
        let disk = checks
            .iter()
            .find(|c| c.name == "disk /var")
            .expect("disk check");
        assert_eq!(disk.level, Level::Degraded);
        assert_eq!(disk.detail, "93% used, 0.0 GiB free");
        assert_eq!(report(&checks).1, Level::Degraded);

        let mut f = fine();
        f.clock_offset_ms = -90_000;
        let (text, worst) = report(&evaluate(&f));
        assert_eq!(worst, Level::Unhealthy);
        assert_eq!(worst.code(), 2);
        assert!(text.starts_with("unhealthy\n"));
        assert!(
            text.contains("clock       unhealthy  -90000 ms from the hub"),
            "{text}"
        );

        let mut f = fine();
        f.rtt = Duration::from_secs(1);
        assert_eq!(report(&evaluate(&f)).1, Level::Degraded);
        let mut f = fine();
        f.mem = (99, 100);
        assert_eq!(report(&evaluate(&f)).1, Level::Unhealthy);
        let mut f = fine();
        f.load1 = 5.0;
        assert_eq!(report(&evaluate(&f)).1, Level::Degraded);
        let mut f = fine();
        f.slots = (30, 32);
        assert_eq!(report(&evaluate(&f)).1, Level::Degraded);
    }
}
