//! The `agentd` command line.

use crate::{AgentConfig, AgentPaths};
use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_wire::text::parse_label;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
    /// Configuration file. Default: `agent.toml` in --data-dir if given, else /etc/flotilla/agent.toml
    /// for root and the user's config dir for others.
    #[arg(long, global = true, env = "FLOTILLA_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
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
        /// The join token from `hubd token create` (default: `token` in agent.toml or
        /// FLOTILLA_AGENT_TOKEN).
        #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
        /// Synthetic containers each agent reports, with stats changing every interval.
        #[arg(long, default_value_t = 0)]
        containers: usize,
        /// Synthetic systemd units each agent reports.
        #[arg(long, default_value_t = 0)]
        units: usize,
        /// JSON file of values forced on the agents' samples, re-read at every sample.
        #[arg(long)]
        overrides: Option<PathBuf>,
    },
    /// Enrol if needed and install agentd as a service (systemd, launchd, Windows).
    Install(crate::service::InstallArgs),
    /// Stop and remove the service (--purge: also keys, data and configuration).
    Uninstall(crate::service::UninstallArgs),
    /// Whether the service is installed, running and connected (exit 0 connected, 1 running but
    /// not connected, 3 not running, 4 not installed).
    Status(crate::service::StatusArgs),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
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
        /// Run under the Windows Service Control Manager (the service `agentd install` registers
        /// passes it; refused anywhere else). Logs go to agentd.log in the data directory.
        #[arg(long)]
        service: bool,
    },
    /// Print the shell completion script (bash: `agentd completions bash > /etc/bash_completion.d/agentd`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: deploy::shelldocs::Shell,
    },
    /// Write the manual pages (agentd.1 and one per subcommand) into DIR.
    Man {
        /// Folder to write them into (created if missing), e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
}

/// `agentd completions` and `agentd man`: need no configuration, data directory or runtime.
fn shell_docs(command: &Command) -> Option<ExitCode> {
    use clap::CommandFactory;
    use deploy::shelldocs::{Request, run};
    match command {
        Command::Completions { shell } => Some(run(Cli::command(), Request::Completions(*shell))),
        Command::Man { dir } => Some(run(Cli::command(), Request::Man(dir))),
        _ => None,
    }
}

/// `agentd config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate and print the effective configuration (file < FLOTILLA_AGENT_* < flags), secrets
    /// hidden; exit 2 naming the bad key if invalid.
    Check {
        /// Metrics interval override, as `run` takes it.
        #[arg(long)]
        metrics_interval_ms: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point of the `agentd` binary.
pub fn main() -> ExitCode {
    deploy::allocator::tune(deploy::Daemon::Agent);
    let cli = Cli::parse();
    if let Some(code) = shell_docs(&cli.command) {
        return code;
    }
    let service = matches!(cli.command, Command::Run { service: true, .. });
    // Off Windows `--service` is refused below: no log file for that.
    let log_file = if service && cfg!(windows) {
        deploy::command::service_log(
            deploy::Daemon::Agent,
            cli.data_dir.clone(),
            cli.config.clone(),
        )
    } else {
        None
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let to_file = log_file.is_some();
    let writer = match log_file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder
            .with_ansi(!to_file && std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    flotilla_certs::install_crypto_provider();
    // Under a file-size limit (`ulimit -f`) a write past it raises SIGXFSZ, whose default action
    // kills the process; ignored, the write fails with EFBIG and the transfer reports no space.
    // SAFETY: setting a signal disposition to SIG_IGN before any other thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN)
    };
    // Nothing agentd inherited (a descriptor its parent leaked, say) reaches the commands it runs,
    // and a command running under agentd's own account cannot read agentd's environment or memory
    // through /proc (see docs/exec.md).
    #[cfg(unix)]
    {
        crate::exec::account::cloexec_from_3();
        crate::exec::account::protect_process();
    }
    if service {
        let body = Box::new(move |stop| serve_as_service(cli, stop));
        return match deploy::scm::run(deploy::Daemon::Agent, body) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                // Stderr only: without the SCM this is a console; with it, `scm` logged the failure.
                eprintln!("agentd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let rt = match runtime(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli, CancellationToken::new()));
    rt.shutdown_timeout(BLOCKING_GRACE);
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentd: {err:#}");
            ExitCode::from(failure_code(&err))
        }
    }
}

/// How long an agent that has stopped waits for its blocking threads (a disk write, a folder walk)
/// before exiting without them. Dropping a runtime waits for them without end, so one thread stuck
/// in a system call (a hung network mount) would otherwise make SIGTERM hang; a chunk being written
/// finishes well within this, and a partial file cut short is checked by hash on the next attempt.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The runtime for `command`. A single agent runs on one thread: it holds one connection and a bulk
/// lane, quinn drives each connection on one task anyway, and everything that blocks (disk, process
/// stats, folder walks) already runs on blocking threads. Without worker threads handing tasks to
/// one another a 1 GiB relay measured 12 % faster (four interleaved rounds) and exec output no
/// slower, in 1–2 MiB less memory (docs/benchmarks.md). `swarm`, thousands of agents in one process
/// for benchmarks, keeps a worker per core.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if matches!(command, Command::Swarm { .. }) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

/// 2 for a configuration error, 1 for any other failure.
fn failure_code(err: &anyhow::Error) -> u8 {
    let config = err
        .downcast_ref::<crate::AgentError>()
        .is_some_and(|e| matches!(e, crate::AgentError::Config(_)));
    if config { 2 } else { 1 }
}

/// `agentd run --service`, on the Service Control Manager's thread: `stop` is cancelled by its
/// Stop. Returns the exit code the service reports.
fn serve_as_service(cli: Cli, stop: CancellationToken) -> u8 {
    let rt = match runtime(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start runtime");
            return 1;
        }
    };
    let result = rt.block_on(run(cli, stop));
    rt.shutdown_timeout(BLOCKING_GRACE);
    match result {
        Ok(code) => u8::from(code != ExitCode::SUCCESS),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "agent failed");
            failure_code(&err)
        }
    }
}

/// Where the service logs: `agentd.log` in its data directory (a service has no console, and the
/// Windows event log is not written to yet). `None` if that cannot be opened: logs are then lost.
async fn run(cli: Cli, service: CancellationToken) -> anyhow::Result<ExitCode> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (data_flag, config_flag) = (cli.data_dir.as_deref(), cli.config.as_deref());
    match cli.command {
        Command::Install(args) => {
            return Ok(crate::service::install(args, data_flag, config_flag, env).await);
        }
        Command::Uninstall(args) => {
            return Ok(crate::service::uninstall(args, data_flag, config_flag));
        }
        Command::Status(args) => return Ok(crate::service::status(args, data_flag, config_flag)),
        _ => {}
    }
    let resolved = deploy::layout::resolve(
        deploy::Daemon::Agent,
        cli.data_dir.clone(),
        cli.config.clone(),
        deploy::is_root(),
    )
    .map_err(|e| crate::AgentError::Config(e.to_string()))?;
    let explicit_config = cli.config.is_some();
    let paths = AgentPaths {
        data_dir: resolved.data_dir,
    };
    match cli.command {
        Command::Install(_)
        | Command::Uninstall(_)
        | Command::Status(_)
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(ExitCode::SUCCESS),
        Command::Config(ConfigCommand::Check {
            metrics_interval_ms,
            json,
        }) => {
            let flags = crate::settings::Flags {
                metrics_interval_ms,
                token: None,
            };
            Ok(crate::settings::check(
                &resolved.config_file,
                explicit_config,
                env,
                &flags,
                json,
            ))
        }
        Command::Enroll {
            token,
            name,
            labels,
            json,
        } => {
            let token = match token.filter(|t| !t.is_empty()) {
                Some(t) => deploy::SecretString::new(t),
                None => crate::settings::resolve(
                    &resolved.config_file,
                    explicit_config,
                    env,
                    &crate::settings::Flags::default(),
                )
                .map_err(crate::AgentError::from)?
                .config
                .token
                .ok_or_else(|| {
                    crate::AgentError::Config(
                        "no join token: pass --token, or set FLOTILLA_TOKEN or token in agent.toml"
                            .into(),
                    )
                })?,
            };
            let done = crate::enroll(&paths, token.expose(), name, labels)
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Swarm {
            token,
            count,
            prefix,
            metrics_interval_ms,
            exec,
            containers,
            units,
            overrides,
        } => {
            let opts = crate::swarm::SwarmOptions {
                token,
                count,
                dir: paths.data_dir.join("swarm"),
                prefix,
                metrics_interval_ms,
                exec: crate::ExecMode::parse(&exec).unwrap_or_default(),
                containers,
                units,
                overrides,
            };
            let cancel = CancellationToken::new();
            let task = tokio::spawn(crate::swarm::run(opts, cancel.clone()));
            tokio::select! {
                r = task => r.context("swarm task")??,
                () = deploy::stop::requested(service) => {}
            }
            cancel.cancel();
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            metrics_interval_ms,
            exec,
            shared_dir,
            read_only,
            service: _,
        } => {
            let flags = crate::settings::Flags {
                metrics_interval_ms,
                token: None,
            };
            let effective =
                crate::settings::resolve(&resolved.config_file, explicit_config, env, &flags)
                    .map_err(crate::AgentError::from)?;
            for warning in &effective.warnings {
                tracing::warn!("{warning}");
            }
            let mut config: AgentConfig = effective.config;
            if let Some(mode) = exec.as_deref().and_then(crate::ExecMode::parse) {
                config.exec = mode;
            }
            if let Some(dir) = shared_dir {
                config.shared_dir = Some(dir);
            }
            config.read_only |= read_only;
            if !flotilla_certs::Identity::exists(&paths.data_dir, flotilla_certs::IDENTITY_STEM)
                && let Some(token) = &config.token
            {
                // First start of a machine provisioned with a token in its configuration.
                let done = crate::enroll(&paths, token.expose(), None, Vec::new())
                    .await
                    .context("enrolment with the configured token failed")?;
                tracing::info!(id = %done.enrolled.identity, name = %done.enrolled.name, "enrolled");
            }
            let notifier = deploy::notify::Notifier::new(std::env::var_os("NOTIFY_SOCKET"));
            let stop = deploy::stop::requested(service);
            let cancel = CancellationToken::new();
            let agent = crate::start(&paths, config, cancel.clone())?;
            let _ = notifier.ready("link started");
            stop.await;
            tracing::info!("stop requested, shutting down");
            let _ = notifier.stopping();
            cancel.cancel();
            agent.wait().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
