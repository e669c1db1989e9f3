//! The `agentd` command line.

use crate::{AgentConfig, AgentPaths};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Flotilla agent daemon.
#[derive(Parser, Debug)]
#[command(
    name = "agentd",
    version,
    about = "Flotilla agent: enrols with a join token and reports to the hub"
)]
pub struct Cli {
    /// Data directory (identity, config). Default: the user's data dir, or FLOTILLA_AGENT_DIR.
    #[arg(long, global = true, env = "FLOTILLA_AGENT_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// agentd subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Enrol this machine with a join token (makes the key here; only a CSR is sent).
    Enroll {
        /// The join token from `hubd token create`.
        #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
        token: String,
        /// Name in the fleet (default: host name).
        #[arg(long)]
        name: Option<String>,
        /// Label key=value (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load generator: run COUNT agents in this process, each with its own key, certificate and
    /// QUIC connection, sending synthetic metrics over the real protocol.
    Swarm {
        /// Join token with enough uses for the agents not yet enrolled.
        #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Number of agents.
        #[arg(long)]
        count: usize,
        /// Name prefix.
        #[arg(long, default_value = "swarm")]
        prefix: String,
        /// Metrics interval, milliseconds (0: as the hub says).
        #[arg(long, default_value_t = 0)]
        metrics_interval_ms: u32,
        /// Exec policy of every agent: off, allowlist or any.
        #[arg(long, default_value = "off", value_parser = ["off", "allowlist", "any"])]
        exec: String,
    },
    /// Connect to the hub and serve until SIGTERM or SIGINT.
    Run {
        /// Metrics interval override, milliseconds (minimum 1000).
        #[arg(long)]
        metrics_interval_ms: Option<u32>,
        /// Exec policy override: off, allowlist or any (agent.toml's `exec`; default off).
        #[arg(long, value_parser = ["off", "allowlist", "any"])]
        exec: Option<String>,
        /// Folder shared with the fleet (default: `shared` in the data directory).
        #[arg(long, env = "FLOTILLA_SHARED_DIR")]
        shared_dir: Option<PathBuf>,
        /// Refuse transfers into the shared folder.
        #[arg(long)]
        read_only: bool,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} must be key=value"))
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("dev", "flotilla", "flotilla")
        .map(|d| d.data_dir().join("agent"))
        .context("no home directory for the agent's data: pass --data-dir")
}

/// Entry point of the `agentd` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    flotilla_certs::install_crypto_provider();
    // Under a file-size limit (`ulimit -f`) a write past it raises SIGXFSZ, whose default action
    // kills the process; ignored, the write fails with EFBIG and the transfer reports no space.
    // SAFETY: setting a signal disposition to SIG_IGN before any other thread starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agentd: {err:#}");
            let config = err
                .downcast_ref::<crate::AgentError>()
                .is_some_and(|e| matches!(e, crate::AgentError::Config(_)));
            if config {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = match cli.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let paths = AgentPaths { data_dir };
    match cli.command {
        Command::Enroll {
            token,
            name,
            labels,
            json,
        } => {
            let done = crate::enroll(&paths, &token, name, labels)
                .await
                .context("enrolment failed")?;
            let e = &done.enrolled;
            if json {
                let out = serde_json::json!({
                    "id": e.identity, "name": e.name, "role": e.role, "labels": e.labels,
                    "hubs": done.hubs, "data_dir": paths.data_dir,
                });
                println!("{out}");
            } else {
                println!(
                    "Enrolled as {} ({}) with {}; identity in {}",
                    e.name,
                    e.identity,
                    done.hubs.join(", "),
                    paths.data_dir.display()
                );
            }
            Ok(())
        }
        Command::Swarm {
            token,
            count,
            prefix,
            metrics_interval_ms,
            exec,
        } => {
            let opts = crate::swarm::SwarmOptions {
                token,
                count,
                dir: paths.data_dir.join("swarm"),
                prefix,
                metrics_interval_ms,
                exec: crate::ExecMode::parse(&exec).unwrap_or_default(),
            };
            let cancel = CancellationToken::new();
            let task = tokio::spawn(crate::swarm::run(opts, cancel.clone()));
            tokio::select! {
                r = task => r.context("swarm task")??,
                _ = wait_for_signal() => {}
            }
            cancel.cancel();
            Ok(())
        }
        Command::Run {
            metrics_interval_ms,
            exec,
            shared_dir,
            read_only,
        } => {
            let mut config = AgentConfig::load(&paths.data_dir)?;
            if let Some(ms) = metrics_interval_ms {
                config.metrics_interval_ms = ms;
            }
            if let Some(mode) = exec.as_deref().and_then(crate::ExecMode::parse) {
                config.exec = mode;
            }
            if let Some(dir) = shared_dir {
                config.shared_dir = Some(dir);
            }
            config.read_only |= read_only;
            let cancel = CancellationToken::new();
            let agent = crate::start(&paths, config, cancel.clone())?;
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            cancel.cancel();
            agent.wait().await;
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
