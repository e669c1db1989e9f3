//! Host depth in `flotilla agent`: the hub's latest detail and disk health report for one agent
//! (collectors and why some are absent, per-device I/O, interface errors, GPUs, SMART, custom
//! series, top processes), fetched with [`Query::Host`].

use crate::client::{Client, ClientError};
use crate::format::bytes;
use crate::util::Escaped;
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::host::{CollectorStatus, HostView};
use std::fmt::Write as _;

/// The hub's host view of `agent`; with `refresh`, after the agent ran SMART anew.
pub async fn host_view(
    client: &Client,
    agent: String,
    refresh: bool,
) -> Result<Option<HostView>, ClientError> {
    let mut view = None;
    crate::exec::stream_query(client, &Query::Host { agent, refresh }, |r| {
        if let QueryReply::Host(v) = r {
            view = Some(v);
        }
        Ok(())
    })
    .await?;
    Ok(view)
}

fn opt<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}{unit}"))
}

fn collector_line(out: &mut String, c: &CollectorStatus) {
    let _ = writeln!(
        out,
        "collector:  {:<16} {}{}",
        Escaped(&c.name),
        c.state.as_str(),
        c.state
            .reason()
            .map(|r| format!(" ({})", Escaped(r)))
            .unwrap_or_default()
    );
}

/// The view as `key: value` lines following the agent's own.
pub fn host_lines(v: &HostView) -> String {
    let mut out = String::new();
    if let Some(d) = &v.detail {
        for c in &d.collectors {
            collector_line(&mut out, c);
        }
        for io in &d.block_io {
            let _ = writeln!(
                out,
                "disk io:    {:<10} read {}/s ({:.0} iops) write {}/s ({:.0} iops) busy {:.0}%",
                Escaped(&io.device),
                bytes(io.read_bps),
                io.read_iops,
                bytes(io.write_bps),
                io.write_iops,
                io.busy_pct
            );
        }
        for n in &d.net_errors {
            let t = &n.total;
            let _ = writeln!(
                out,
                "net errors: {:<10} rx {} errors {} dropped, tx {} errors {} dropped",
                Escaped(&n.iface),
                t.rx_errors,
                t.rx_dropped,
                t.tx_errors,
                t.tx_dropped
            );
        }
        for g in &d.gpus {
            let _ = writeln!(
                out,
                "gpu:        {} {} {:<24} util {} mem {} / {} temp {} power {} / {}",
                g.vendor.as_str(),
                g.index,
                Escaped(&g.name),
                opt(g.util_pct, "%"),
                g.mem_used.map_or_else(|| "-".into(), bytes),
                g.mem_total.map_or_else(|| "-".into(), bytes),
                opt(g.temp_c, "°C"),
                opt(g.power_w, " W"),
                opt(g.power_limit_w, " W"),
            );
            for p in &g.processes {
                let _ = writeln!(
                    out,
                    "gpu proc:   {:>7} {:<20} {}",
                    p.pid,
                    Escaped(&p.name),
                    p.mem_used.map_or_else(|| "-".into(), bytes)
                );
            }
        }
        for c in &d.custom {
            let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let _ = writeln!(
                out,
                "custom:     {}{} {}",
                Escaped(&c.name),
                if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", Escaped(&labels.join(",")))
                },
                c.value
            );
        }
        for (what, list) in [("proc cpu:", &d.top_cpu), ("proc mem:", &d.top_mem)] {
            for p in list {
                let _ = writeln!(
                    out,
                    "{what}  {:>7} {:<10} {:>5.1}% {:>9} {}",
                    p.pid,
                    Escaped(&p.user),
                    p.cpu_pct,
                    bytes(p.mem),
                    Escaped(&p.cmd)
                );
            }
        }
    }
    if let Some(r) = &v.report {
        for c in &r.collectors {
            collector_line(&mut out, c);
        }
        for d in &r.disks {
            let reason = match &d.health {
                flotilla_wire::host::SmartHealth::NoSmart(r) => format!(": {}", Escaped(r)),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "smart:      {} {} {}{reason} temp {} hours {} realloc {} pending {} uncorr {} nvme used {} media err {}",
                Escaped(&d.device),
                Escaped(&d.model),
                d.health.as_str(),
                opt(d.temp_c, "°C"),
                opt(d.power_on_hours, ""),
                opt(d.reallocated, ""),
                opt(d.pending, ""),
                opt(d.uncorrectable, ""),
                opt(d.nvme_pct_used, "%"),
                opt(d.media_errors, ""),
            );
        }
    }
    out
}
