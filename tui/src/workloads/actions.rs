//! `flotilla container ACTION SELECTOR/CONTAINER…` and `flotilla compose SELECTOR ACTION PROJECT`:
//! jobs like `flotilla exec`, with its rendering, exit codes and Ctrl-C.

use crate::exec::parse_timeout;
use flotilla_wire::exec::{ExecCommand, ExecRequest};
use flotilla_wire::workloads::{ComposeAction, ContainerAction};
use std::time::Duration;

/// A container action as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainerVerb {
    /// Start.
    Start,
    /// Stop: SIGTERM, then SIGKILL after --time.
    Stop,
    /// Stop, then start.
    Restart,
    /// SIGKILL.
    Kill,
    /// Remove a stopped container.
    Rm,
}

impl From<ContainerVerb> for ContainerAction {
    fn from(v: ContainerVerb) -> Self {
        match v {
            ContainerVerb::Start => Self::Start,
            ContainerVerb::Stop => Self::Stop,
            ContainerVerb::Restart => Self::Restart,
            ContainerVerb::Kill => Self::Kill,
            ContainerVerb::Rm => Self::Remove,
        }
    }
}

/// A compose action as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ComposeVerb {
    /// `up -d`.
    Up,
    /// `down`.
    Down,
    /// `pull`.
    Pull,
    /// `restart`.
    Restart,
    /// `ps`.
    Ps,
    /// `logs` (no follow).
    Logs,
}

impl From<ComposeVerb> for ComposeAction {
    fn from(v: ComposeVerb) -> Self {
        match v {
            ComposeVerb::Up => Self::Up,
            ComposeVerb::Down => Self::Down,
            ComposeVerb::Pull => Self::Pull,
            ComposeVerb::Restart => Self::Restart,
            ComposeVerb::Ps => Self::Ps,
            ComposeVerb::Logs => Self::Logs,
        }
    }
}

/// `flotilla container`.
#[derive(clap::Args, Debug)]
pub struct ContainerArgs {
    /// What to do.
    pub action: ContainerVerb,
    /// SELECTOR/CONTAINER (agents as for exec, then a container name or id); several may follow.
    #[arg(required = true, value_name = "SELECTOR/CONTAINER")]
    pub targets: Vec<String>,
    /// For stop and restart: seconds between SIGTERM and SIGKILL (the engine's default: 10).
    #[arg(long)]
    pub time: Option<u32>,
    /// Give up on an agent after this long (500ms, 30s, 5m).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Print NDJSON events, as exec does.
    #[arg(long)]
    pub json: bool,
}

impl ContainerArgs {
    /// One request per selector, in the order first named; containers of one selector together.
    pub fn requests(&self) -> Result<Vec<ExecRequest>, String> {
        let mut by_selector: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.targets {
            let Some((selector, container)) = t.split_once('/') else {
                return Err(format!("{t:?}: give SELECTOR/CONTAINER, e.g. web-1/nginx"));
            };
            if selector.is_empty() || container.is_empty() {
                return Err(format!(
                    "{t:?}: both the selector and the container are needed"
                ));
            }
            if !flotilla_wire::workloads::valid_workload_name(container) {
                return Err(format!("{container:?} is not a container name or id"));
            }
            match by_selector.iter_mut().find(|(s, _)| s == selector) {
                Some((_, list)) => list.push(container.to_string()),
                None => by_selector.push((selector.to_string(), vec![container.to_string()])),
            }
        }
        Ok(by_selector
            .into_iter()
            .map(|(selector, containers)| ExecRequest {
                selector,
                command: ExecCommand::Container {
                    action: self.action.into(),
                    containers,
                    stop_timeout_s: self.time,
                },
                timeout_ms: self.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
                batch: 0,
            })
            .collect())
    }
}

/// `flotilla compose`.
#[derive(clap::Args, Debug)]
pub struct ComposeArgs {
    /// Agents (same grammar as exec).
    pub selector: String,
    /// What to do.
    pub action: ComposeVerb,
    /// Project: a folder of each agent's compose_dir.
    pub project: String,
    /// Give up on an agent after this long (500ms, 30s, 5m).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Print NDJSON events, as exec does.
    #[arg(long)]
    pub json: bool,
}

impl ComposeArgs {
    /// The request this command line makes.
    pub fn request(&self) -> Result<ExecRequest, String> {
        if !flotilla_wire::workloads::valid_project_name(&self.project) {
            return Err(format!(
                "{:?} is not a project name: one folder name, 1-64 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'",
                self.project
            ));
        }
        Ok(ExecRequest {
            selector: self.selector.clone(),
            command: ExecCommand::Compose {
                action: self.action.into(),
                project: self.project.clone(),
            },
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
            batch: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(targets: &[&str]) -> ContainerArgs {
        ContainerArgs {
            action: ContainerVerb::Stop,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            time: Some(3),
            timeout: None,
            json: false,
        }
    }

    #[test]
    fn container_targets_group_by_selector() {
        let reqs = container(&["web-*/nginx", "db/pg", "web-*/app"])
            .requests()
            .expect("requests");
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].selector, "web-*");
        assert_eq!(
            reqs[0].command,
            ExecCommand::Container {
                action: ContainerAction::Stop,
                containers: vec!["nginx".into(), "app".into()],
                stop_timeout_s: Some(3),
            }
        );
        assert_eq!(reqs[1].selector, "db");
    }

    #[test]
    fn bad_targets_and_projects_are_named() {
        assert!(
            container(&["nginx"])
                .requests()
                .expect_err("no slash")
                .contains("SELECTOR/CONTAINER")
        );
        assert!(
            container(&["web/"])
                .requests()
                .expect_err("empty")
                .contains("both")
        );
        let compose = ComposeArgs {
            selector: "all".into(),
            action: ComposeVerb::Up,
            project: "../etc".into(),
            timeout: None,
            json: false,
        };
        assert!(
            compose
                .request()
                .expect_err("traversal")
                .contains("not a project name")
        );
    }
}
