//! `flotilla service ACTION SELECTOR/UNIT…`: a unit action as a job on the selected agents, its
//! output and summary rendered as `flotilla exec` renders a command's. Units naming the same
//! selector go in one job; different selectors run as jobs one after the other.

use crate::client::{Client, ClientError};
use flotilla_wire::exec::{ExecCommand, ExecRequest};
use flotilla_wire::workloads::{ServiceAction, valid_workload_name};
use std::time::Duration;

// Options of `flotilla service`. A plain comment on purpose: clap would take a doc comment as the
// subcommand's about, overriding the `Service` variant's.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    /// start, stop, restart, reload, enable or disable.
    #[arg(value_parser = parse_action)]
    pub action: ServiceAction,
    /// Agents and unit, as SELECTOR/UNIT (web-*/nginx.service); the selector grammar is exec's.
    #[arg(required = true, value_name = "SELECTOR/UNIT")]
    pub targets: Vec<String>,
    /// Give up waiting for systemd on an agent after this long (500ms, 30s, 5m).
    #[arg(long, value_parser = crate::exec::parse_timeout)]
    pub timeout: Option<Duration>,
    /// Print NDJSON events, as `flotilla exec --json` does.
    #[arg(long)]
    pub json: bool,
}

/// A systemd job waits this long on each agent unless `--timeout` says otherwise: systemd's own
/// default start timeout is 90 s, and a stop may take as long again.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

fn parse_action(s: &str) -> Result<ServiceAction, String> {
    ServiceAction::ALL
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| {
            let words: Vec<&str> = ServiceAction::ALL.iter().map(|a| a.as_str()).collect();
            format!("unknown action {s:?}: use one of {}", words.join(", "))
        })
}

impl ServiceArgs {
    /// One request per selector, in the order the selectors first appear.
    pub fn requests(&self) -> Result<Vec<ExecRequest>, String> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for target in &self.targets {
            let Some((selector, unit)) = target.rsplit_once('/') else {
                return Err(format!(
                    "{target:?} names no agents: give SELECTOR/UNIT, e.g. web-*/nginx.service or all/{target}"
                ));
            };
            if selector.is_empty() {
                return Err(format!("{target:?}: the selector before '/' is empty"));
            }
            if !valid_workload_name(unit) {
                return Err(format!(
                    "{target:?}: invalid unit name {unit:?}: give a unit name such as nginx.service"
                ));
            }
            match groups.iter_mut().find(|(s, _)| s == selector) {
                Some((_, units)) => units.push(unit.to_string()),
                None => groups.push((selector.to_string(), vec![unit.to_string()])),
            }
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        Ok(groups
            .into_iter()
            .map(|(selector, units)| ExecRequest {
                selector,
                command: ExecCommand::Service {
                    action: self.action,
                    units,
                },
                timeout_ms: timeout.as_millis() as u64,
                batch: 0,
            })
            .collect())
    }
}

/// Runs each request as a job on the real terminal; the exit status is the worst of them (0 when
/// every unit on every agent succeeded, 1 when any failed or was refused).
pub async fn service_command(
    client: &Client,
    requests: &[ExecRequest],
    json: bool,
) -> Result<u8, ClientError> {
    let mut status = 0;
    for req in requests {
        status = status.max(crate::exec::exec_command(client, req, json).await?);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServiceArgs,
    }

    fn parse(words: &[&str]) -> Result<ServiceArgs, clap::Error> {
        let mut argv = vec!["service"];
        argv.extend_from_slice(words);
        Wrap::try_parse_from(argv).map(|w| w.args)
    }

    #[test]
    fn units_are_grouped_by_selector() {
        let args = parse(&[
            "restart",
            "web-*/nginx.service",
            "db-1/pg.service",
            "web-*/app.service",
        ])
        .expect("parse");
        let reqs = args.requests().expect("requests");
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].selector, "web-*");
        assert_eq!(
            reqs[0].command,
            ExecCommand::Service {
                action: ServiceAction::Restart,
                units: vec!["nginx.service".into(), "app.service".into()],
            }
        );
        assert_eq!(reqs[1].selector, "db-1");
        assert_eq!(reqs[0].timeout_ms, DEFAULT_TIMEOUT.as_millis() as u64);
    }

    #[test]
    fn bad_targets_and_actions_are_refused_with_the_reason() {
        let e = parse(&["start", "nginx.service"])
            .expect("parse")
            .requests()
            .expect_err("no selector");
        assert!(e.contains("give SELECTOR/UNIT"), "{e}");
        let e = parse(&["start", "/nginx.service"])
            .expect("parse")
            .requests()
            .expect_err("empty selector");
        assert!(e.contains("selector before '/' is empty"), "{e}");
        let e = parse(&["start", "all/-f"])
            .expect("parse")
            .requests()
            .expect_err("option as unit");
        assert!(e.contains("invalid unit name"), "{e}");
        let e = parse(&["bounce", "all/x.service"]).expect_err("unknown action");
        assert!(
            e.to_string()
                .contains("use one of start, stop, restart, reload, enable, disable")
        );
    }
}
