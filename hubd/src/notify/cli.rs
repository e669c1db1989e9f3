//! `hubd notify test` and `hubd notify list`: the hub's own CLI over its maintenance socket.

use super::{Severity, TransitionState};
use crate::HubPaths;
use crate::maint::{self, MaintRequest, MaintResponse};
use clap::Subcommand;
use std::process::ExitCode;

/// `hubd notify` subcommands.
#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Queue a test alert through the running hub's outbox, as a rule would; prints the receivers
    /// it went to (`hubd notify list` then shows how delivery went).
    Test {
        /// Receiver to send to (repeatable); default: every receiver taking the severity.
        #[arg(long = "receiver")]
        receivers: Vec<String>,
        /// info, warning or critical.
        #[arg(long, default_value = "warning", value_parser = super::parse_severity)]
        severity: Severity,
        /// Send a resolution instead of a firing.
        #[arg(long)]
        resolved: bool,
        /// Rule name shown.
        #[arg(long, default_value = "test")]
        rule: String,
        /// Agent name shown.
        #[arg(long, default_value = "hub")]
        agent: String,
        /// Subject shown (a mount, a container…).
        #[arg(long)]
        subject: Option<String>,
        /// Summary line.
        #[arg(long, default_value = "test alert from hubd notify test")]
        summary: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the newest messages of the alert outbox: queued, sent or given up, with tries and the
    /// last error.
    List {
        /// How many (at most 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `hubd notify` command against the hub serving `paths`.
pub async fn run(paths: &HubPaths, cmd: NotifyCommand) -> anyhow::Result<ExitCode> {
    let (req, json) = match cmd {
        NotifyCommand::Test {
            receivers,
            severity,
            resolved,
            rule,
            agent,
            subject,
            summary,
            json,
        } => (
            MaintRequest::NotifyTest(super::test::NotifyTestSpec {
                receivers,
                severity,
                state: if resolved {
                    TransitionState::Resolved
                } else {
                    TransitionState::Firing
                },
                rule,
                agent,
                subject,
                summary,
            }),
            json,
        ),
        NotifyCommand::List { limit, json } => (MaintRequest::NotifyList { limit }, json),
    };
    let Some(resp) = maint::request(&paths.data_dir, &req).await? else {
        let message = format!(
            "no hub is serving {}: alerts are queued and sent by a running hub (hubd run)",
            paths.data_dir.display()
        );
        if json {
            println!("{}", serde_json::json!({ "error": { "message": message } }));
        }
        eprintln!("hubd: {message}");
        return Ok(ExitCode::FAILURE);
    };
    match resp {
        MaintResponse::Error { message } => {
            if json {
                println!("{}", serde_json::json!({ "error": { "message": message } }));
            }
            eprintln!("hubd: {message}");
            Ok(ExitCode::FAILURE)
        }
        MaintResponse::Notified { receivers } => {
            if json {
                println!("{}", serde_json::json!({ "receivers": receivers }));
            } else {
                println!("queued for {}", receivers.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        MaintResponse::Outbox { messages: rows } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<36} {:<12} {:<8} {:>5} {:>6}  LAST ERROR",
                    "ID", "RECEIVER", "STATE", "TRIES", "ALERTS"
                );
                for r in rows {
                    let state = serde_json::to_value(r.state)?;
                    println!(
                        "{:<36} {:<12} {:<8} {:>5} {:>6}  {}",
                        r.id,
                        r.receiver,
                        state.as_str().unwrap_or(""),
                        r.attempts,
                        r.transitions.len(),
                        r.last_error
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        other => anyhow::bail!("unexpected answer from the hub: {other:?}"),
    }
}
