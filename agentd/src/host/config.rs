//! The `[host]` table of agent.toml: which host collectors run and the custom series sources.

use crate::AgentError;
use flotilla_wire::host::MAX_CUSTOM_SERIES;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default custom series cap: a dozen exporters' worth of chosen metrics, while a detail frame
/// stays a few kilobytes.
pub const DEFAULT_MAX_SERIES: usize = 200;
/// Default SMART period: health moves over days, and `smartctl` wakes sleeping disks.
pub const DEFAULT_SMART_INTERVAL_S: u64 = 3600;
/// Shortest SMART period accepted: more often would keep disks from spinning down.
pub const MIN_SMART_INTERVAL_S: u64 = 60;
/// Default period of custom sources: scraping an exporter or running a script every 5 s sample
/// would cost more than the agent itself; 15 s is Prometheus's usual scrape interval.
pub const DEFAULT_CUSTOM_INTERVAL_S: u64 = 15;
/// Default time a custom source gets per run before it counts as failed.
pub const DEFAULT_SOURCE_TIMEOUT_S: u64 = 5;

/// `[host]` in agent.toml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Read GPUs: NVIDIA through NVML (loaded at run time), AMD through sysfs.
    pub gpus: bool,
    /// Run `smartctl` for disk health.
    pub smart: bool,
    /// Seconds between SMART runs (the hub can ask for one at any time).
    pub smart_interval_s: u64,
    /// The `smartctl` program; a bare name is looked up in `PATH`.
    pub smartctl: PathBuf,
    /// Most custom series sent; past it series are left out, with a warning and the collector
    /// marked degraded.
    pub max_custom_series: usize,
    /// Seconds between runs of the custom sources.
    pub custom_interval_s: u64,
    /// Prometheus text endpoints on this machine.
    pub prometheus: Vec<PrometheusSource>,
    /// Programs whose `name value` output lines become series.
    pub scripts: Vec<ScriptSource>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            gpus: true,
            smart: true,
            smart_interval_s: DEFAULT_SMART_INTERVAL_S,
            smartctl: PathBuf::from("smartctl"),
            max_custom_series: DEFAULT_MAX_SERIES,
            custom_interval_s: DEFAULT_CUSTOM_INTERVAL_S,
            prometheus: Vec::new(),
            scripts: Vec::new(),
        }
    }
}

/// `[[host.prometheus]]`: one endpoint and the metric names taken from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSource {
    /// Short name, shown in the collector status as `custom:<name>`.
    pub name: String,
    /// `http://127.0.0.1:PORT/path` (loopback only: the agent is no scraper of other machines).
    pub url: String,
    /// Metric names kept (exact); every other line is ignored.
    pub allow: Vec<String>,
    /// Seconds the scrape may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

/// `[[host.scripts]]`: one program and its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptSource {
    /// Short name, shown in the collector status as `custom:<name>`.
    pub name: String,
    /// Absolute path of the program, then its arguments; run without a shell.
    pub command: Vec<String>,
    /// Seconds the program may run before it is killed.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_SOURCE_TIMEOUT_S
}

/// Whether `name` is a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Splits `http://host:port/path` into the address to dial and the path, refusing anything but
/// plain HTTP to a loopback host.
pub fn parse_local_url(url: &str) -> Result<(std::net::SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("url {url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: std::net::SocketAddr = authority.parse().map_err(|_| {
        format!(
            "url {url:?} needs a loopback address and a port, e.g. http://127.0.0.1:9100/metrics"
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "url {url:?} is not on this machine: only loopback endpoints are scraped"
        ));
    }
    Ok((addr, path))
}

impl HostConfig {
    /// Checks values serde cannot, with errors naming the key.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: String| Err(AgentError::Config(m));
        if self.smart_interval_s < MIN_SMART_INTERVAL_S {
            return bad(format!(
                "host.smart_interval_s = {} is below the {MIN_SMART_INTERVAL_S} s minimum",
                self.smart_interval_s
            ));
        }
        if self.custom_interval_s == 0 {
            return bad("host.custom_interval_s must be at least 1".into());
        }
        if self.max_custom_series == 0 || self.max_custom_series > MAX_CUSTOM_SERIES {
            return bad(format!(
                "host.max_custom_series = {} must be between 1 and {MAX_CUSTOM_SERIES}",
                self.max_custom_series
            ));
        }
        let mut names = std::collections::HashSet::new();
        let names_ok = |name: &str, names: &mut std::collections::HashSet<String>| {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(AgentError::Config(format!(
                    "custom source name {name:?} must be 1-64 of A-Z a-z 0-9 _ - ."
                )));
            }
            if !names.insert(name.to_string()) {
                return Err(AgentError::Config(format!(
                    "custom source name {name:?} is used twice"
                )));
            }
            Ok(())
        };
        for p in &self.prometheus {
            names_ok(&p.name, &mut names)?;
            parse_local_url(&p.url)
                .map_err(|e| AgentError::Config(format!("host.prometheus {:?}: {e}", p.name)))?;
            if p.allow.is_empty() {
                return bad(format!(
                    "host.prometheus {:?}: allow lists no metric names (list the ones to keep)",
                    p.name
                ));
            }
            if let Some(m) = p.allow.iter().find(|m| !valid_metric_name(m)) {
                return bad(format!(
                    "host.prometheus {:?}: {m:?} is not a metric name",
                    p.name
                ));
            }
            if p.timeout_s == 0 {
                return bad(format!(
                    "host.prometheus {:?}: timeout_s must be at least 1",
                    p.name
                ));
            }
        }
        for s in &self.scripts {
            names_ok(&s.name, &mut names)?;
            match s.command.first() {
                Some(program) if std::path::Path::new(program).is_absolute() => {}
                Some(program) => {
                    return bad(format!(
                        "host.scripts {:?}: program {program:?} must be an absolute path",
                        s.name
                    ));
                }
                None => return bad(format!("host.scripts {:?}: command is empty", s.name)),
            }
            if s.timeout_s == 0 {
                return bad(format!(
                    "host.scripts {:?}: timeout_s must be at least 1",
                    s.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_examples_in_docs_parse() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/host.md"),
        )
        .expect("docs/host.md");
        let mut found = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let cfg: crate::AgentConfig =
                toml::from_str(text).unwrap_or_else(|e| panic!("docs/host.md example: {e}"));
            cfg.validate()
                .unwrap_or_else(|e| panic!("docs/host.md example: {e}"));
            assert!(!cfg.host.prometheus.is_empty() || !cfg.host.scripts.is_empty());
            found += 1;
        }
        assert!(found > 0, "no agent.toml example found in docs/host.md");
    }

    #[test]
    fn only_loopback_http_urls_are_accepted() {
        let (addr, path) = parse_local_url("http://127.0.0.1:9100/metrics").expect("ok");
        assert_eq!(addr.port(), 9100);
        assert_eq!(path, "/metrics");
        assert_eq!(
            parse_local_url("http://localhost:80").expect("ok").1,
            "/",
            "no path means /"
        );
        assert!(parse_local_url("http://[::1]:9100/m").is_ok());
        let e = parse_local_url("http://10.0.0.5:9100/metrics").expect_err("remote");
        assert!(e.contains("only loopback"), "{e}");
        let e = parse_local_url("https://127.0.0.1:9100/").expect_err("tls");
        assert!(e.contains("http://"), "{e}");
        let e = parse_local_url("http://127.0.0.1/metrics").expect_err("no port");
        assert!(e.contains("a port"), "{e}");
    }

    #[test]
    fn bad_sources_are_refused_by_name() {
        let mut c = HostConfig {
            prometheus: vec![PrometheusSource {
                name: "nginx".into(),
                url: "http://127.0.0.1:9113/metrics".into(),
                allow: vec!["nginx_up".into()],
                timeout_s: 5,
            }],
            scripts: vec![ScriptSource {
                name: "queue".into(),
                command: vec!["/bin/echo".into(), "q 1".into()],
                timeout_s: 5,
            }],
            ..HostConfig::default()
        };
        c.validate().expect("valid");
        let err = |c: &HostConfig| c.validate().expect_err("invalid").to_string();
        let mut d = c.clone();
        d.prometheus[0].allow = vec!["bad name".into()];
        assert!(
            err(&d).contains("\"bad name\" is not a metric name"),
            "{}",
            err(&d)
        );
        let mut d = c.clone();
        d.prometheus[0].allow.clear();
        assert!(err(&d).contains("allow lists no metric names"));
        let mut d = c.clone();
        d.scripts[0].command = vec!["echo".into()];
        assert!(err(&d).contains("must be an absolute path"));
        let mut d = c.clone();
        d.scripts[0].name = "nginx".into();
        assert!(err(&d).contains("used twice"));
        c.max_custom_series = MAX_CUSTOM_SERIES + 1;
        assert!(err(&c).contains("host.max_custom_series"));
        c.max_custom_series = 10;
        c.smart_interval_s = 5;
        assert!(err(&c).contains("host.smart_interval_s = 5"));
    }
}
