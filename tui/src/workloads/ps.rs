//! `flotilla ps [SELECTOR] [--all] [--json]`: containers across the fleet, one row per container
//! with the host it runs on.

use super::{Printer, stream_query};
use crate::client::{Client, ClientError};
use crate::format;
use crate::util::{Escaped, now_ms};
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::workloads::{ContainerRow, Health, PortMap};

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<16} {:<24} {:<24} {:<10} {:<9} {:>6} {:>8} {:>7}  PORTS\n",
        "AGENT", "NAME", "IMAGE", "STATE", "HEALTH", "CPU", "MEM", "UPTIME"
    )
}

/// `0.0.0.0:8080->80/tcp`, or `80/tcp` when not published.
fn port(p: &PortMap) -> String {
    if p.host_port == 0 {
        format!("{}/{}", p.container_port, p.protocol)
    } else {
        format!(
            "{}:{}->{}/{}",
            p.host_ip, p.host_port, p.container_port, p.protocol
        )
    }
}

/// One table line; text from the agent is escaped.
pub fn line(r: &ContainerRow, now_ms: u64) -> String {
    let (cpu, mem) = match &r.stats {
        Some(s) => (format!("{:.1}%", s.cpu_pct), format::bytes(s.mem_used)),
        None => ("-".into(), "-".into()),
    };
    let uptime = match r.info.started_ms {
        Some(t) if r.info.state == flotilla_wire::workloads::ContainerState::Running => {
            format::uptime(now_ms.saturating_sub(t) / 1000)
        }
        _ => "-".into(),
    };
    let health = match r.info.health {
        Health::None => "-",
        h => h.as_str(),
    };
    let ports: Vec<String> = r.info.ports.iter().map(port).collect();
    format!(
        "{:<16} {:<24} {:<24} {:<10} {:<9} {:>6} {:>8} {:>7}  {}",
        Escaped(&r.agent_name),
        Escaped(&r.info.name),
        Escaped(&r.info.image),
        r.info.state.as_str(),
        health,
        cpu,
        mem,
        uptime,
        Escaped(&ports.join(","))
    )
}

/// Runs `flotilla ps`: prints rows as they arrive; exit 0 with or without rows.
pub async fn ps_command(
    client: &Client,
    selector: Option<&str>,
    all: bool,
    json: bool,
) -> Result<u8, ClientError> {
    let q = Query::Containers {
        selector: selector.unwrap_or("all").to_string(),
        all,
    };
    let mut printer = Printer::new(json);
    let (now, header) = (now_ms(), header());
    stream_query(client, &q, |reply| match reply {
        QueryReply::Containers(rows) => printer.page(&header, &rows, |r| line(r, now)),
        _ => Ok(()),
    })
    .await?;
    printer.finish(&header)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;
    use flotilla_wire::workloads::{ContainerInfo, ContainerState, ContainerStats};

    #[test]
    fn a_row_shows_host_state_use_and_ports_with_agent_text_escaped() {
        let row = ContainerRow {
            agent: flotilla_wire::IdentityId::from_random(Role::Agent, [1; 8]),
            agent_name: "web-1".into(),
            info: ContainerInfo {
                id: "a".repeat(64),
                name: "evil\u{1b}[2J".into(),
                image: "nginx:1".into(),
                state: ContainerState::Running,
                health: Health::Unhealthy,
                restart_count: 0,
                started_ms: Some(0),
                ports: vec![
                    PortMap {
                        host_ip: "0.0.0.0".into(),
                        host_port: 8080,
                        container_port: 80,
                        protocol: "tcp".into(),
                    },
                    PortMap {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: 443,
                        protocol: "tcp".into(),
                    },
                ],
                compose_project: None,
                compose_service: None,
            },
            stats: Some(ContainerStats {
                cpu_pct: 12.34,
                mem_used: 3 << 20,
                ..ContainerStats::default()
            }),
        };
        let text = line(&row, 7_200_000);
        assert!(text.starts_with("web-1            evil\\x1b[2J"), "{text}");
        for part in [
            "nginx:1",
            "running",
            "unhealthy",
            "12.3%",
            "3.0M",
            "2h0m",
            "0.0.0.0:8080->80/tcp,443/tcp",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(!text.contains('\u{1b}'));
    }
}
