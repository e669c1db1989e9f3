//! `flotilla watch`: fleet events, or shared-folder changes and transfers, printed as they happen.

use crate::client::{Client, ClientError};
use crate::files::{self, FilesError};
use crate::format;
use crate::util::{Escaped, now_ms};
use flotilla_wire::msg::FleetEvent;

/// Prints events until the hub closes the subscription or Ctrl-C.
pub async fn watch(client: &Client, metrics: bool, json: bool) -> Result<(), ClientError> {
    let mut events = client.subscribe().await?;
    let mut names = std::collections::HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = events.next() => match ev? {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        if let FleetEvent::Snapshot(list) | FleetEvent::SnapshotMore(list) = &ev {
            names.extend(list.iter().map(|a| (a.id.clone(), a.name.clone())));
        }
        if let FleetEvent::Online(a) = &ev {
            names.insert(a.id.clone(), a.name.clone());
        }
        if matches!(ev, FleetEvent::Metrics { .. }) && !metrics {
            continue;
        }
        if json {
            crate::util::outln!("{}", format::event_json(&ev)).map_err(ClientError::Output)?;
            continue;
        }
        let name = |id: &flotilla_wire::IdentityId| {
            names.get(id).cloned().unwrap_or_else(|| id.to_string())
        };
        match &ev {
            FleetEvent::Snapshot(list) => {
                crate::util::out!("{}", format::agents_table(list, now_ms()))
                    .map_err(ClientError::Output)?
            }
            FleetEvent::SnapshotMore(list) => {
                let table = format::agents_table(list, now_ms());
                crate::util::out!(
                    "{}",
                    table
                        .split_once('\n')
                        .map(|(_, rows)| rows)
                        .unwrap_or_default()
                )
                .map_err(ClientError::Output)?;
            }
            FleetEvent::Online(a) => crate::util::outln!(
                "online   {:<20} {} {}",
                Escaped(&a.name),
                Escaped(&a.addr),
                Escaped(&a.version)
            )
            .map_err(ClientError::Output)?,
            FleetEvent::Offline { id, reason, .. } => {
                crate::util::outln!("offline  {:<20} {}", Escaped(&name(id)), Escaped(reason))
                    .map_err(ClientError::Output)?
            }
            FleetEvent::Revoked { id } => {
                crate::util::outln!("revoked  {:<20}", Escaped(&name(id)))
                    .map_err(ClientError::Output)?
            }
            FleetEvent::Metrics { id, sample } => crate::util::outln!(
                "metrics  {:<20} cpu {:.0}% mem {}",
                Escaped(&name(id)),
                sample.cpu_pct,
                format::bytes(sample.mem_used)
            )
            .map_err(ClientError::Output)?,
            FleetEvent::Lagged { missed } => {
                crate::util::outln!("(missed {missed} events: output fell behind)")
                    .map_err(ClientError::Output)?
            }
            FleetEvent::Workloads { id, counts } => crate::util::outln!(
                "workload {:<20} containers {}/{} running, {} troubled; units {} failed",
                Escaped(&name(id)),
                counts.containers_running,
                counts.containers_total,
                counts.containers_troubled,
                counts.units_failed
            )
            .map_err(ClientError::Output)?,
            FleetEvent::Alert(a) => crate::util::outln!("{}", crate::alerts::text::event_line(a))
                .map_err(ClientError::Output)?,
            FleetEvent::Host { id, summary } => crate::util::outln!(
                "host     {:<20} {} GPUs, mean {} max {}; {} disks failed SMART",
                Escaped(&name(id)),
                summary.gpus,
                pct_or_dash(summary.gpu_util_mean_pct),
                pct_or_dash(summary.gpu_util_max_pct),
                summary.smart_failed
            )
            .map_err(ClientError::Output)?,
        }
    }
}

/// Prints file events until the hub closes the watch or Ctrl-C.
pub async fn watch_files(
    client: &Client,
    agent: Option<String>,
    json: bool,
) -> Result<(), FilesError> {
    let (_send, mut recv) = files::watch_stream(client, agent).await?;
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = files::next_event(&mut recv) => match ev? {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        if json {
            crate::util::outln!("{}", serde_json::to_string(&ev).unwrap_or_default())
                .map_err(ClientError::Output)?;
        } else {
            crate::util::outln!("{}", files::event_line(&ev)).map_err(ClientError::Output)?;
        }
    }
}

/// `50%`, or `-` when no GPU reported utilisation.
fn pct_or_dash(pct: Option<u8>) -> String {
    pct.map_or_else(|| "-".into(), |p| format!("{p}%"))
}
