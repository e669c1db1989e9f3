//! Text and JSON renderings shared by the scriptable subcommands.

use crate::util::Escaped;
use flotilla_wire::msg::{AgentInfo, FleetEvent, Status};
use serde_json::{Value, json};

/// `3s ago`, `5m ago`, `2h ago`, `4d ago`; `never` for zero.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// How long a host has been up: `7m`, `5h12m`, `3d4h`. The console and `flotilla agent` both
/// print it this way.
pub fn uptime(secs: u64) -> String {
    match secs {
        0..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{}h", secs / 86400, (secs % 86400) / 3600),
    }
}

/// Bytes as `512B`, `1.5K`, `20.0M`, `3.2G`, `1.1T`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// `k=v,k2=v2`, control characters escaped (labels come from the agent).
pub fn labels(a: &AgentInfo) -> String {
    a.labels
        .iter()
        .map(|(k, v)| format!("{}={}", Escaped(k), Escaped(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// CPU percent of the latest sample, if any.
pub fn cpu(a: &AgentInfo) -> Option<f32> {
    a.latest.as_ref().map(|s| s.cpu_pct)
}

/// Memory use fraction (0-100) of the latest sample, if any.
pub fn mem_pct(a: &AgentInfo) -> Option<f32> {
    a.latest
        .as_ref()
        .filter(|s| s.mem_total > 0)
        .map(|s| (s.mem_used as f64 * 100.0 / s.mem_total as f64) as f32)
}

/// Fullest disk's use percent.
pub fn disk_pct(a: &AgentInfo) -> Option<f32> {
    a.latest.as_ref().and_then(|s| {
        s.disks
            .iter()
            .filter(|d| d.total > 0)
            .map(|d| (d.used as f64 * 100.0 / d.total as f64) as f32)
            .reduce(f32::max)
    })
}

/// Total network rate, bytes per second (received + sent).
pub fn net_bps(a: &AgentInfo) -> Option<u64> {
    a.latest
        .as_ref()
        .map(|s| s.nets.iter().map(|n| n.rx_bps + n.tx_bps).sum())
}

/// Sort keys of `flotilla agents --sort`.
pub const SORT_KEYS: [&str; 6] = ["name", "status", "cpu", "mem", "disk", "last-seen"];

/// Sorts agents: offline and revoked always after online ones, then by `key` (largest first for
/// metrics, newest first for last-seen), then by name. Keys are computed once per agent, not per
/// comparison: the console re-sorts 20,000 agents every frame when sorted by a metric.
pub fn sort_agents<T: std::borrow::Borrow<AgentInfo>>(list: &mut [T], key: &str) {
    let rank = |s: Status| match s {
        Status::Online => 0u8,
        Status::Offline => 1,
        Status::Revoked => 2,
    };
    let metric = |a: &AgentInfo| -> f64 {
        let f = |o: Option<f32>| f64::from(o.unwrap_or(-1.0));
        match key {
            "cpu" => -f(cpu(a)),
            "mem" => -f(mem_pct(a)),
            "disk" => -f(disk_pct(a)),
            "last-seen" => -(a.last_seen_ms as f64),
            "net" => -net_bps(a).map_or(-1.0, |v| v as f64),
            "uptime" => -a.latest.as_ref().map_or(-1.0, |s| s.uptime_s as f64),
            _ => 0.0,
        }
    };
    let mut keyed: Vec<(u8, f64, usize)> = list
        .iter()
        .enumerate()
        .map(|(i, a)| (rank(a.borrow().status), metric(a.borrow()), i))
        .collect();
    keyed.sort_unstable_by(|x, y| {
        x.0.cmp(&y.0)
            .then(x.1.total_cmp(&y.1))
            .then_with(|| list[x.2].borrow().name.cmp(&list[y.2].borrow().name))
    });
    // Apply the permutation.
    let order: Vec<usize> = keyed.into_iter().map(|k| k.2).collect();
    let mut placed = vec![false; list.len()];
    for start in 0..list.len() {
        if placed[start] {
            continue;
        }
        // Follow the cycle starting at `start`: position `cur` receives the element at order[cur].
        let mut cur = start;
        loop {
            placed[cur] = true;
            let next = order[cur];
            if next == start {
                break;
            }
            list.swap(cur, next);
            cur = next;
        }
    }
}

/// The agents table.
pub fn agents_table(list: &[AgentInfo], now_ms: u64) -> String {
    let pct = |o: Option<f32>| o.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "{:<20} {:<8} {:>5} {:>5} {:>5} {:>8}  {:<10} {:<8} LABELS\n",
        "NAME", "STATUS", "CPU", "MEM", "DISK", "NET/s", "LAST SEEN", "VERSION"
    );
    for a in list {
        out.push_str(&format!(
            "{:<20} {:<8} {:>5} {:>5} {:>5} {:>8}  {:<10} {:<8} {}\n",
            Escaped(&a.name),
            a.status.as_str(),
            pct(cpu(a)),
            pct(mem_pct(a)),
            pct(disk_pct(a)),
            net_bps(a).map(bytes).unwrap_or_else(|| "-".into()),
            if a.status == Status::Online {
                "now".into()
            } else {
                ago(a.last_seen_ms, now_ms)
            },
            Escaped(&a.version),
            labels(a)
        ));
    }
    out
}

/// Detail of one agent.
pub fn agent_detail(a: &AgentInfo, now_ms: u64) -> String {
    let mut out = format!(
        "name:       {}\nid:         {}\nrole:       {}\nstatus:     {}\nlabels:     {}\nhostname:   {}\nos:         {}\nversion:    {}\naddress:    {}\nfirst seen: {}\nlast seen:  {}\n",
        Escaped(&a.name),
        a.id,
        a.role,
        a.status.as_str(),
        labels(a),
        Escaped(&a.hostname),
        Escaped(&a.os),
        Escaped(&a.version),
        Escaped(&a.addr),
        ago(a.first_seen_ms, now_ms),
        if a.status == Status::Online {
            "now".into()
        } else {
            ago(a.last_seen_ms, now_ms)
        },
    );
    if let Some(s) = &a.latest {
        out.push_str(&format!(
            "cpu:        {:.1}% ({} cores)\nload:       {:.2} {:.2} {:.2}\nmemory:     {} / {}\nswap:       {} / {}\nuptime:     {}\nprocesses:  {}\n",
            s.cpu_pct,
            s.per_core_pct.len(),
            s.load[0],
            s.load[1],
            s.load[2],
            bytes(s.mem_used),
            bytes(s.mem_total),
            bytes(s.swap_used),
            bytes(s.swap_total),
            uptime(s.uptime_s),
            s.procs
        ));
        for d in &s.disks {
            out.push_str(&format!(
                "disk:       {} {} / {}\n",
                Escaped(&d.mount),
                bytes(d.used),
                bytes(d.total)
            ));
        }
        for p in &s.top_cpu {
            out.push_str(&format!(
                "top cpu:    {:>7} {:<20} {:>5.1}% {}\n",
                p.pid,
                Escaped(&p.name),
                p.cpu_pct,
                bytes(p.rss)
            ));
        }
    }
    out
}

/// `HH:MM` UTC of a timestamp, with the date when not today.
pub fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m) = ((secs / 3600) % 24, (secs / 60) % 60);
    format!("{h:02}:{m:02}")
}

/// A metrics history as a table, one bucket per line.
pub fn series_table(s: &flotilla_wire::msg::MetricsSeries) -> String {
    let mut out = format!(
        "{} ({}), {} buckets of {} s, times UTC\n{:<6} {:>5} {:>5} {:>8} {:>8} {:>6} {:>5} {:>8} {:>8}\n",
        Escaped(&s.name),
        s.id,
        s.points.len(),
        s.resolution_s,
        "TIME",
        "CPU",
        "MAX",
        "MEM",
        "MAX",
        "LOAD",
        "DISK",
        "RX/s",
        "TX/s"
    );
    for p in &s.points {
        out.push_str(&format!(
            "{:<6} {:>4.0}% {:>4.0}% {:>8} {:>8} {:>6.2} {:>4.0}% {:>8} {:>8}\n",
            clock(p.start_ms),
            p.cpu_avg,
            p.cpu_max,
            bytes(p.mem_avg),
            bytes(p.mem_max),
            p.load1_avg,
            p.disk_pct_max,
            bytes(p.net_rx_avg),
            bytes(p.net_tx_avg)
        ));
    }
    out
}

/// An event as one NDJSON object with an `event` field.
pub fn event_json(ev: &FleetEvent) -> Value {
    match ev {
        FleetEvent::Snapshot(list) => json!({ "event": "snapshot", "agents": list }),
        FleetEvent::SnapshotMore(list) => json!({ "event": "snapshot_more", "agents": list }),
        FleetEvent::Online(a) => json!({ "event": "online", "agent": a }),
        FleetEvent::Offline { id, at_ms, reason } => {
            json!({ "event": "offline", "id": id, "at_ms": at_ms, "reason": reason })
        }
        FleetEvent::Revoked { id } => json!({ "event": "revoked", "id": id }),
        FleetEvent::Metrics { id, sample } => {
            json!({ "event": "metrics", "id": id, "sample": sample })
        }
        FleetEvent::Lagged { missed } => json!({ "event": "lagged", "missed": missed }),
        FleetEvent::Workloads { id, counts } => {
            json!({ "event": "workloads", "id": id, "counts": counts })
        }
        FleetEvent::Alert(a) => {
            json!({ "event": "alert", "alert": crate::alerts::text::alert_json(a) })
        }
        FleetEvent::Host { id, summary } => {
            json!({ "event": "host", "id": id, "summary": summary })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_puts_offline_last_then_key_then_name() {
        use flotilla_wire::msg::MetricsSample;
        use flotilla_wire::{IdentityId, Role};
        let a = |i: u8, name: &str, status: Status, cpu: f32| AgentInfo {
            id: IdentityId::from_random(Role::Agent, [i; 8]),
            name: name.into(),
            role: Role::Agent,
            labels: vec![],
            status,
            first_seen_ms: 0,
            last_seen_ms: u64::from(i),
            version: String::new(),
            os: String::new(),
            hostname: String::new(),
            addr: String::new(),
            latest: Some(MetricsSample {
                cpu_pct: cpu,
                ..Default::default()
            }),
        };
        let base = vec![
            a(1, "e", Status::Offline, 99.0),
            a(2, "b", Status::Online, 10.0),
            a(3, "a", Status::Online, 10.0),
            a(4, "d", Status::Revoked, 50.0),
            a(5, "c", Status::Online, 80.0),
        ];
        let names = |l: &[AgentInfo]| l.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
        let mut l = base.clone();
        sort_agents(&mut l, "cpu");
        assert_eq!(names(&l), ["c", "a", "b", "e", "d"]);
        let mut l = base.clone();
        sort_agents(&mut l, "name");
        assert_eq!(names(&l), ["a", "b", "c", "e", "d"]);
        let mut l = base;
        sort_agents(&mut l, "last-seen");
        assert_eq!(names(&l), ["c", "a", "b", "e", "d"]);
    }

    /// `flotilla agent` gives the uptime as the console does: 991 s is 16 minutes, not `0h`.
    #[test]
    fn agent_detail_gives_the_uptime_as_the_console_does() {
        use flotilla_wire::msg::MetricsSample;
        use flotilla_wire::{IdentityId, Role};
        let agent = |uptime_s: u64| AgentInfo {
            id: IdentityId::from_random(Role::Agent, [1; 8]),
            name: "web-1".into(),
            role: Role::Agent,
            labels: vec![],
            status: Status::Online,
            first_seen_ms: 0,
            last_seen_ms: 0,
            version: String::new(),
            os: String::new(),
            hostname: String::new(),
            addr: String::new(),
            latest: Some(MetricsSample {
                uptime_s,
                ..Default::default()
            }),
        };
        for (secs, shown) in [(991, "16m"), (18_720, "5h12m"), (273_600, "3d4h")] {
            let detail = agent_detail(&agent(secs), 0);
            assert!(
                detail.contains(&format!("\nuptime:     {shown}\n")),
                "{secs} s: {detail}"
            );
        }
    }

    /// What the agent chose (host name, OS, version, labels, disks, processes) is shown escaped.
    #[test]
    fn agent_text_is_escaped() {
        use flotilla_wire::msg::{DiskUsage, MetricsSample, ProcessInfo};
        use flotilla_wire::{IdentityId, Role};
        let a = AgentInfo {
            id: IdentityId::from_random(Role::Agent, [1; 8]),
            name: "web\x1b-1".into(),
            role: Role::Agent,
            labels: vec![("k\u{202e}".into(), "v\x07".into())],
            status: Status::Online,
            first_seen_ms: 0,
            last_seen_ms: 0,
            version: "1\u{85}".into(),
            os: "os\u{2066}".into(),
            hostname: "h\x1b]0;t\x07".into(),
            addr: String::new(),
            latest: Some(MetricsSample {
                disks: vec![DiskUsage {
                    mount: "/m\x7f".into(),
                    used: 1,
                    total: 2,
                }],
                top_cpu: vec![ProcessInfo {
                    pid: 1,
                    name: "p\x1b[8m".into(),
                    cpu_pct: 1.0,
                    rss: 1,
                }],
                ..Default::default()
            }),
        };
        let table = agents_table(std::slice::from_ref(&a), 0);
        assert!(table.contains("web\\x1b-1 "), "{table}");
        assert!(table.contains("1\\u{85}"), "{table}");
        assert!(table.contains("k\\u{202e}=v\\x07\n"), "{table}");
        let detail = agent_detail(&a, 0);
        for shown in ["h\\x1b]0;t\\x07", "os\\u{2066}", "/m\\x7f", "p\\x1b[8m"] {
            assert!(detail.contains(shown), "{shown} in {detail}");
        }
        for text in [table, detail] {
            assert!(
                !text
                    .chars()
                    .any(|c| crate::util::must_escape(c) && c != '\n'),
                "{text:?}"
            );
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(ago(0, 5), "never");
        assert_eq!(ago(1_000, 4_000), "3s ago");
        assert_eq!(ago(1, 7_200_001), "2h ago");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0G");
        assert_eq!(uptime(59), "0m");
        assert_eq!(uptime(991), "16m");
        assert_eq!(uptime(3600), "1h0m");
        assert_eq!(uptime(86_400 + 7200 + 59), "1d2h");
    }
}
