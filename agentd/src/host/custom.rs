//! Custom series: Prometheus text endpoints on this machine (only the allowed metric names) and
//! scripts whose `name value` lines become series, under a cap per agent.

use super::config::{
    HostConfig, PrometheusSource, ScriptSource, parse_local_url, valid_metric_name,
};
use super::{CAPTURE_LIMIT, capture};
use flotilla_wire::host::{CollectorState, CollectorStatus, CustomValue};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Largest scrape read: a node exporter's full page is about 100 KB; a page past 4 MiB is a
/// misconfigured endpoint, not something to hold in memory every 15 s.
const MAX_SCRAPE: usize = 4 << 20;

/// What the last run of the custom sources produced, read by each sample.
#[derive(Clone, Debug, Default)]
pub struct CustomLatest {
    /// Values, in configuration order, at most the cap.
    pub values: Vec<CustomValue>,
    /// `custom` and one `custom:<name>` per source.
    pub statuses: Vec<CollectorStatus>,
}

/// Shared between the custom task (writer) and the sampler (reader).
pub type SharedCustom = Arc<Mutex<CustomLatest>>;

/// The state shown when no source is configured.
pub fn unconfigured() -> CustomLatest {
    CustomLatest {
        values: Vec::new(),
        statuses: vec![CollectorStatus {
            name: "custom".into(),
            state: CollectorState::Absent(
                "no sources in agent.toml ([[host.prometheus]], [[host.scripts]])".into(),
            ),
        }],
    }
}

/// Runs every source each `custom_interval_s` until cancelled, publishing into `shared`.
pub async fn run(config: HostConfig, shared: SharedCustom, cancel: CancellationToken) {
    let period = Duration::from_secs(config.custom_interval_s);
    let mut over_cap_warned = false;
    loop {
        let latest = collect(&config, &mut over_cap_warned).await;
        *shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = latest;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// One run of every source. Warns once when the cap starts cutting series (and again after it
/// stopped and starts again), so a log is not flooded every interval.
pub async fn collect(config: &HostConfig, over_cap_warned: &mut bool) -> CustomLatest {
    let mut values = Vec::new();
    let mut statuses = Vec::new();
    for p in &config.prometheus {
        let state = match scrape(p).await {
            Ok(found) => {
                values.extend(found);
                CollectorState::Running
            }
            Err(e) => CollectorState::Failed(e),
        };
        statuses.push(CollectorStatus {
            name: format!("custom:{}", p.name),
            state,
        });
    }
    for s in &config.scripts {
        let state = match script(s).await {
            Ok((found, skipped)) => {
                values.extend(found);
                if skipped > 0 {
                    CollectorState::Degraded(format!(
                        "{skipped} output lines are not `name value` and were skipped"
                    ))
                } else {
                    CollectorState::Running
                }
            }
            Err(e) => CollectorState::Failed(e),
        };
        statuses.push(CollectorStatus {
            name: format!("custom:{}", s.name),
            state,
        });
    }
    let total = values.len();
    let cap = config.max_custom_series;
    let overall = if total > cap {
        values.truncate(cap);
        let reason = format!(
            "{total} series found, {} over the cap of {cap} left out (raise host.max_custom_series or narrow the allow lists)",
            total - cap
        );
        if !*over_cap_warned {
            tracing::warn!(
                found = total,
                cap,
                "custom series over the cap; the rest are left out"
            );
            *over_cap_warned = true;
        }
        CollectorState::Degraded(reason)
    } else {
        *over_cap_warned = false;
        CollectorState::Running
    };
    statuses.insert(
        0,
        CollectorStatus {
            name: "custom".into(),
            state: overall,
        },
    );
    CustomLatest { values, statuses }
}

/// GETs the endpoint over HTTP/1.0 (no chunked encoding to undo) and keeps the allowed metrics.
async fn scrape(source: &PrometheusSource) -> Result<Vec<CustomValue>, String> {
    let (addr, path) = parse_local_url(&source.url)?;
    let timeout = Duration::from_secs(source.timeout_s);
    let body = tokio::time::timeout(timeout, get(addr, &path))
        .await
        .map_err(|_| {
            format!(
                "{} did not answer within {} s",
                source.url, source.timeout_s
            )
        })?
        .map_err(|e| format!("{}: {e}", source.url))?;
    Ok(parse_prometheus(&body, &source.allow))
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain;version=0.0.4\r\nUser-Agent: flotilla-agentd\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_SCRAPE as u64 + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    if raw.len() > MAX_SCRAPE {
        return Err(format!("answer over the {} MiB limit", MAX_SCRAPE >> 20));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("answer is not HTTP (no header end)")?;
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("answered {status:?}"));
    }
    Ok(body.to_string())
}

/// Samples of the Prometheus text format whose metric name is in `allow`, labels sorted by key.
/// Comments, `# HELP`/`# TYPE` lines and lines that do not parse are skipped.
pub fn parse_prometheus(text: &str, allow: &[String]) -> Vec<CustomValue> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
            let name = &line[..name_end];
            if !allow.iter().any(|a| a == name) {
                return None;
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end + 1..])?
            } else {
                (Vec::new(), &line[name_end..])
            };
            let value = parse_value(rest.split_whitespace().next()?)?;
            Some(CustomValue {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// Parses `k="v",k2="v2"}` (after the `{`): the labels sorted by key, and what follows `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            labels.sort();
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

/// Runs the script and reads its `name value` lines; also returns how many lines were skipped.
async fn script(source: &ScriptSource) -> Result<(Vec<CustomValue>, usize), String> {
    let (program, args) = source.command.split_first().ok_or("command is empty")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    let out = capture(cmd, Duration::from_secs(source.timeout_s), CAPTURE_LIMIT)
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        return Err(format!("{program} exited with {}: {first}", out.status));
    }
    Ok(parse_script(&String::from_utf8_lossy(&out.stdout)))
}

/// `name value` lines (blank lines and `#` comments ignored); the count of other lines.
pub fn parse_script(text: &str) -> (Vec<CustomValue>, usize) {
    let mut values = Vec::new();
    let mut skipped = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        match (f.next(), f.next().and_then(parse_value), f.next()) {
            (Some(name), Some(value), None) if valid_metric_name(name) => {
                values.push(CustomValue {
                    name: name.to_string(),
                    labels: Vec::new(),
                    value,
                });
            }
            _ => skipped += 1,
        }
    }
    (values, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_keeps_only_allowed_names() {
        let text = r#"# HELP nginx_http_requests_total Total http requests
# TYPE nginx_http_requests_total counter
nginx_http_requests_total{host="a",code="200"} 1027 1395066363000
nginx_http_requests_total{code="500",host="a"} 3
nginx_up 1
other_metric 5
weird{path="C:\\dir\"x\""} +Inf
"#;
        let allow = vec![
            "nginx_http_requests_total".to_string(),
            "nginx_up".to_string(),
            "weird".to_string(),
        ];
        let v = parse_prometheus(text, &allow);
        assert_eq!(v.len(), 4, "{v:?}");
        assert_eq!(
            v[0].labels,
            vec![
                ("code".to_string(), "200".to_string()),
                ("host".to_string(), "a".to_string())
            ],
            "sorted by key"
        );
        assert_eq!(v[0].value, 1027.0, "timestamp ignored");
        assert_eq!(v[2].name, "nginx_up");
        assert!(v[2].labels.is_empty());
        assert_eq!(v[3].labels[0].1, "C:\\dir\"x\"");
        assert!(v[3].value.is_infinite());
    }

    #[test]
    fn script_lines_are_name_value() {
        let (v, skipped) = parse_script(
            "queue_depth 12\n# comment\n\nlatency_ms 3.5\nnot a metric line\n9bad 1\n",
        );
        assert_eq!(
            v.iter()
                .map(|c| (c.name.as_str(), c.value))
                .collect::<Vec<_>>(),
            [("queue_depth", 12.0), ("latency_ms", 3.5)]
        );
        assert_eq!(skipped, 2);
    }
}
