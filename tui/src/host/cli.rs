//! `flotilla metrics NAME --series 'disk:/,net:eth0' --since 6h [--json]` and
//! `flotilla top NAME --at 03:10 | --since 1h [--json]`: an agent's per-series history and the
//! processes that used its CPU and memory, minute by minute. Times are UTC.

use super::when;
use crate::client::{Client, ClientError};
use crate::exec::stream_query;
use crate::format;
use crate::util::{Escaped, now_ms, utc_minute};
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::history::{SeriesPoints, SeriesSelector, TopMinute};
use flotilla_wire::host::TopProcess;
use serde_json::json;
use std::collections::BTreeMap;

/// A parsed `--series` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesSpec(pub Vec<SeriesSelector>);

/// clap's parser for `--series`: the usage error names the bad entry.
pub fn parse_series(s: &str) -> Result<SeriesSpec, String> {
    let list = flotilla_wire::history::parse_series_spec(s).map_err(|e| e.to_string())?;
    if list.is_empty() {
        return Err(
            "name at least one series: disk:/, net:eth0, io:vda, temp:LABEL, gpu:0, custom:NAME"
                .into(),
        );
    }
    Ok(SeriesSpec(list))
}

/// clap's parser for `--at`: the minute it names, ms since the epoch.
pub fn parse_at_now(s: &str) -> Result<u64, String> {
    when::parse_at(s, now_ms())
}

/// `flotilla top`: which minute or span.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["at", "since"])))]
pub struct TopArgs {
    /// Agent name or id.
    pub name: String,
    /// One minute: HH:MM (UTC; today, or yesterday if that is still to come) or RFC 3339
    /// (2026-12-07T03:10:00Z, 2026-12-07T04:10:00+01:00).
    #[arg(long, value_parser = parse_at_now)]
    pub at: Option<u64>,
    /// Every minute from this long ago until now: 30m, 1h, 2d.
    #[arg(long, value_parser = crate::util::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The series of `agent` that `spec` names, since `since_s` seconds ago.
pub async fn series(
    client: &Client,
    agent: &str,
    spec: &SeriesSpec,
    since_s: u64,
) -> Result<Vec<SeriesPoints>, ClientError> {
    let q = Query::HostSeries {
        agent: agent.to_owned(),
        series: spec.0.clone(),
        since_s,
    };
    let mut out = Vec::new();
    stream_query(client, &q, |r| {
        if let QueryReply::HostSeries(s) = r {
            out.push(s);
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// The top-process minutes of `agent` in `[from_ms, to_ms)`.
pub async fn top(
    client: &Client,
    agent: &str,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<TopMinute>, ClientError> {
    let q = Query::HostTop {
        agent: agent.to_owned(),
        from_ms,
        to_ms,
    };
    let mut out = Vec::new();
    stream_query(client, &q, |r| {
        if let QueryReply::HostTop(page) = r {
            out.extend(page);
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

fn value(bytes: bool, v: f64) -> String {
    if bytes {
        format::bytes(v.max(0.0) as u64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The series as tables: one per `kind:name`, a row per bucket, an average and a maximum column
/// per metric.
pub fn series_text(agent: &str, list: &[SeriesPoints]) -> String {
    let mut groups: BTreeMap<(&str, &str), Vec<&SeriesPoints>> = BTreeMap::new();
    for s in list {
        groups
            .entry((s.metric.kind().as_str(), s.name.as_str()))
            .or_default()
            .push(s);
    }
    let mut out = String::new();
    for ((kind, name), members) in groups {
        let res = members.first().map_or(60, |s| s.resolution_s);
        out.push_str(&format!(
            "{} {kind}:{}, buckets of {res} s, times UTC\n{:<16}",
            Escaped(agent),
            Escaped(name),
            "TIME"
        ));
        for s in &members {
            out.push_str(&format!(
                " {:>10} {:>10}",
                s.metric.field(),
                format!("{} max", s.metric.field())
            ));
        }
        out.push('\n');
        let mut rows: BTreeMap<u64, Vec<Option<(f64, f64)>>> = BTreeMap::new();
        for (i, s) in members.iter().enumerate() {
            for p in &s.points {
                rows.entry(p.start_ms)
                    .or_insert_with(|| vec![None; members.len()])[i] = Some((p.avg, p.max));
            }
        }
        for (start, cells) in rows {
            out.push_str(&format!("{:<16}", utc_minute(start as i64)));
            for (s, cell) in members.iter().zip(cells) {
                let bytes = s.metric.is_bytes();
                let (a, m) = cell.map_or(("-".into(), "-".into()), |(a, m)| {
                    (value(bytes, a), value(bytes, m))
                });
                out.push_str(&format!(" {a:>10} {m:>10}"));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The series as JSON: the agent, and per series its kind, name, metric, resolution and points.
pub fn series_json(agent: &str, list: &[SeriesPoints]) -> serde_json::Value {
    let series: Vec<_> = list
        .iter()
        .map(|s| {
            json!({
                "kind": s.metric.kind().as_str(),
                "name": s.name,
                "metric": s.metric,
                "resolution_s": s.resolution_s,
                "points": s.points,
            })
        })
        .collect();
    json!({ "agent": agent, "series": series })
}

/// The selectors that matched no series: said on stderr, so a typo is not mistaken for silence.
pub fn unmatched(spec: &SeriesSpec, list: &[SeriesPoints]) -> Vec<String> {
    spec.0
        .iter()
        .filter(|sel| {
            !list.iter().any(|s| {
                s.metric.kind() == sel.kind
                    && (s.name == sel.name
                        || s.name
                            .strip_prefix(sel.name.as_str())
                            .is_some_and(|r| r.starts_with('{')))
            })
        })
        .map(|sel| format!("{}:{}", sel.kind.as_str(), sel.name))
        .collect()
}

fn process_line(p: &TopProcess) -> String {
    format!(
        "  {:>6.1}% {:>9} {:>8} {:<12} {:<16} {}\n",
        p.cpu_pct,
        format::bytes(p.mem),
        p.pid,
        Escaped(if p.user.is_empty() { "-" } else { &p.user }),
        Escaped(&p.name),
        Escaped(&p.cmd)
    )
}

/// Top processes, one block per minute.
pub fn top_text(agent: &str, minutes: &[TopMinute]) -> String {
    let mut out = format!(
        "{} top processes, {} minutes, times UTC\n",
        Escaped(agent),
        minutes.len()
    );
    let header = format!(
        "  {:>7} {:>9} {:>8} {:<12} {:<16} {}\n",
        "CPU", "MEM", "PID", "USER", "NAME", "COMMAND"
    );
    for m in minutes {
        out.push_str(&format!(
            "\n{}  ({} samples)\n by CPU\n{header}",
            utc_minute(m.start_ms as i64),
            m.samples
        ));
        for p in &m.by_cpu {
            out.push_str(&process_line(p));
        }
        out.push_str(&format!(" by memory\n{header}"));
        for p in &m.by_mem {
            out.push_str(&process_line(p));
        }
    }
    out
}

/// Runs `flotilla metrics NAME --series …`.
pub async fn metrics_series_command(
    client: &Client,
    agent: &str,
    spec: &SeriesSpec,
    since_s: u64,
    json: bool,
) -> Result<u8, ClientError> {
    let list = series(client, agent, spec, since_s).await?;
    for missing in unmatched(spec, &list) {
        eprintln!("no history for {missing} on {}", Escaped(agent));
    }
    let printed = if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&series_json(agent, &list)).unwrap_or_default()
        )
    } else {
        crate::util::out!("{}", series_text(agent, &list))
    };
    printed.map_err(ClientError::Output)?;
    Ok(0)
}

/// Runs `flotilla top`.
pub async fn top_command(client: &Client, args: &TopArgs) -> Result<u8, ClientError> {
    let now = now_ms();
    let (from, to) = match (args.at, args.since) {
        (Some(at), _) => when::minute_span(at),
        // Up to the end of the minute in progress, which the hub includes.
        (None, Some(since)) => (
            now.saturating_sub(since.as_millis() as u64),
            when::minute_span(now).1,
        ),
        // clap requires one of them; the last ten minutes otherwise.
        (None, None) => (now.saturating_sub(600_000), when::minute_span(now).1),
    };
    let minutes = top(client, &args.name, from, to).await?;
    let printed = if args.json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "agent": args.name, "minutes": minutes }))
                .unwrap_or_default()
        )
    } else if minutes.is_empty() {
        crate::util::outln!(
            "no top processes of {} from {} to {} (UTC)",
            Escaped(&args.name),
            utc_minute(from as i64),
            utc_minute(to as i64)
        )
    } else {
        crate::util::out!("{}", top_text(&args.name, &minutes))
    };
    printed.map_err(ClientError::Output)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::history::{Metric, SeriesPoint};

    #[test]
    fn series_tables_group_by_kind_and_name() {
        let p = |start_ms: u64, avg: f64| SeriesPoint {
            start_ms,
            samples: 12,
            avg,
            max: avg * 2.0,
        };
        let list = vec![
            SeriesPoints {
                metric: Metric::NetRx,
                name: "eth0".into(),
                resolution_s: 60,
                points: vec![p(0, 1024.0), p(60_000, 2048.0)],
            },
            SeriesPoints {
                metric: Metric::NetTx,
                name: "eth0".into(),
                resolution_s: 60,
                points: vec![p(60_000, 10.0)],
            },
            SeriesPoints {
                metric: Metric::DiskPct,
                name: "/".into(),
                resolution_s: 60,
                points: vec![p(0, 41.25)],
            },
        ];
        let text = series_text("web-1", &list);
        insta::assert_snapshot!(text, @r"
        web-1 disk:/, buckets of 60 s, times UTC
        TIME                  used%  used% max
        1970-01-01 00:00      41.25      82.50

        web-1 net:eth0, buckets of 60 s, times UTC
        TIME                   rx/s   rx/s max       tx/s   tx/s max
        1970-01-01 00:00       1.0K       2.0K          -          -
        1970-01-01 00:01       2.0K       4.0K        10B        20B
        ");
        let spec = parse_series("net:eth0,io:vda,custom:req").expect("spec");
        assert_eq!(unmatched(&spec, &list), ["io:vda", "custom:req"]);
        let j = series_json("web-1", &list);
        assert_eq!(j["series"][0]["metric"], "net_rx");
        assert_eq!(j["series"][0]["kind"], "net");
        assert!(parse_series(" , ").is_err());
    }
}
