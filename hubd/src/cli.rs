//! The `hubd` command line: init, run, and admin commands that reach a running hub through its
//! local socket (or the database when it is stopped). Every admin command has `--json`.

use crate::{HubConfig, HubError, HubPaths};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flotilla_wire::Role;
use flotilla_wire::msg::{AgentInfo, OpRequest, OpResponse, TokenInfo, TokenSpec};
use flotilla_wire::text::{parse_duration_s, parse_label};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Flotilla hub daemon.
#[derive(Parser, Debug)]
#[command(
    name = "hubd",
    version,
    about = "Flotilla hub: fleet registry, enrolment and operator API over QUIC"
)]
pub struct Cli {
    /// Data directory (CA, keys, database). Default: the user's data dir, or FLOTILLA_DATA_DIR.
    #[arg(long, global = true, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file. Default: `hub.toml` in --data-dir if given, else /etc/flotilla/hub.toml
    /// for root and the user's config dir for others.
    #[arg(long, global = true, env = "FLOTILLA_HUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// hubd subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the fleet CA, hub certificate, admin identity and database.
    Init {
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// DNS name or IP agents use to reach the hub (repeatable); tokens carry these.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve until SIGTERM or SIGINT (both drain); SIGHUP reloads the configuration.
    Run {
        /// Override the configured listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve Prometheus metrics on this TCP address (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Run under the Windows Service Control Manager (the service `hubd install` registers
        /// passes it; refused anywhere else). Logs go to hubd.log in the data directory.
        #[arg(long)]
        service: bool,
    },
    /// Initialise if needed and install hubd as a service (systemd, launchd, Windows).
    Install(crate::service::InstallArgs),
    /// Stop and remove the service (--purge: also the CA, keys, database and configuration).
    Uninstall(crate::service::UninstallArgs),
    /// Whether the service is installed and serving (exit 0 serving, 1 running but not
    /// answering, 3 not running, 4 not installed).
    Status(crate::service::StatusArgs),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a consistent copy of the database to FILE (while serving, or stopped).
    Backup {
        /// Where to write it (mode 0600).
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the database of the stopped hub with a backup (the old one is kept as hub.db.bak).
    Restore {
        /// A file made by `hubd backup`.
        file: PathBuf,
        /// Restore even if the backup does not hold this hub's admin identity.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke an agent or operator by id or name; its live connection closes at once.
    Revoke {
        /// Identity id or name.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List enrolled agents.
    Agents {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List enrolled operators.
    Operators {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Alert receivers: send a test alert, list the outbox (the hub must be running).
    #[command(subcommand)]
    Notify(crate::notify::cli::NotifyCommand),
    /// Print the shell completion script (bash: `hubd completions bash > /etc/bash_completion.d/hubd`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: deploy::shelldocs::Shell,
    },
    /// Write the manual pages (hubd.1 and one per subcommand) into DIR.
    Man {
        /// Folder to write them into (created if missing), e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
}

/// `hubd completions` and `hubd man`: need no configuration, data directory or runtime.
fn shell_docs(command: &Command) -> Option<ExitCode> {
    use clap::CommandFactory;
    use deploy::shelldocs::{Request, run};
    match command {
        Command::Completions { shell } => Some(run(Cli::command(), Request::Completions(*shell))),
        Command::Man { dir } => Some(run(Cli::command(), Request::Man(dir))),
        _ => None,
    }
}

/// `hubd config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate and print the effective configuration (file < FLOTILLA_HUB_* < flags) with the
    /// origin of each key; exit 2 naming the bad key if invalid.
    Check {
        /// As `run --listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// As `run --metrics-listen`.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `hubd token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a join token and print it (the only time the secret is shown).
    Create(TokenCreate),
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a token by id.
    Delete {
        /// Token id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `hubd token create`.
#[derive(Args, Debug)]
pub struct TokenCreate {
    /// Role of identities enrolled with it: agent, viewer, operator or admin.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Time to live: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration_s)]
    pub ttl: u64,
    /// Number of enrolments allowed.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// Label given to enrolled identities, key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}: use agent, viewer, operator or admin"))
}

/// Entry point of the `hubd` binary.
pub fn main() -> ExitCode {
    deploy::allocator::tune(deploy::Daemon::Hub);
    let cli = Cli::parse();
    if let Some(code) = shell_docs(&cli.command) {
        return code;
    }
    let service = matches!(cli.command, Command::Run { service: true, .. });
    // Off Windows `--service` is refused below: no log file for that.
    let log_file = if service && cfg!(windows) {
        deploy::command::service_log(
            deploy::Daemon::Hub,
            cli.data_dir.clone(),
            cli.config.clone(),
        )
    } else {
        None
    };
    let log = init_tracing(&cli.log_format, log_file);
    flotilla_certs::install_crypto_provider();
    if service {
        let body = Box::new(move |stop| serve_as_service(cli, log, stop));
        return match deploy::scm::run(deploy::Daemon::Hub, body) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                // Stderr only: without the SCM this is a console; with it, `scm` logged the failure.
                eprintln!("hubd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, log, CancellationToken::new())) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hubd: {err:#}");
            ExitCode::from(failure_code(&err))
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// 2 for a configuration error, 1 for any other failure.
fn failure_code(err: &anyhow::Error) -> u8 {
    let config_error = err
        .downcast_ref::<HubError>()
        .is_some_and(|e| matches!(e, HubError::Config(_)));
    if config_error { 2 } else { 1 }
}

/// `hubd run --service`, on the Service Control Manager's thread: `stop` is cancelled by its Stop.
/// Returns the exit code the service reports.
fn serve_as_service(cli: Cli, log: crate::reload::LogControl, stop: CancellationToken) -> u8 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start runtime");
            return 1;
        }
    };
    match rt.block_on(run(cli, log, stop)) {
        Ok(code) => u8::from(code != ExitCode::SUCCESS),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "hub failed");
            failure_code(&err)
        }
    }
}

/// Where the service logs: `hubd.log` in its data directory (a service has no console, and the
/// Windows event log is not written to yet). `None` if that cannot be opened: logs are then lost.
fn init_tracing(format: &str, file: Option<std::fs::File>) -> crate::reload::LogControl {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::prelude::*;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| "info".into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let to_file = file.is_some();
    let writer = match file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry.with(fmt.json()).init();
    } else {
        let ansi = !to_file && std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(fmt.with_ansi(ansi)).init();
    }
    crate::reload::LogControl::new(handle, env_set)
}

async fn run(
    cli: Cli,
    log: crate::reload::LogControl,
    stop: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (data_flag, config_flag) = (cli.data_dir.as_deref(), cli.config.as_deref());
    match cli.command {
        Command::Install(args) => {
            return Ok(crate::service::install(args, data_flag, config_flag, env).await);
        }
        Command::Uninstall(args) => {
            return Ok(crate::service::uninstall(args, data_flag, config_flag));
        }
        Command::Status(args) => {
            return Ok(crate::service::status(args, data_flag, config_flag).await);
        }
        _ => {}
    }
    let resolved = deploy::layout::resolve(
        deploy::Daemon::Hub,
        cli.data_dir.clone(),
        cli.config.clone(),
        deploy::is_root(),
    )
    .map_err(|e| HubError::Config(e.to_string()))?;
    let paths = HubPaths {
        data_dir: resolved.data_dir,
    };
    let source = |flags: crate::settings::Flags| crate::settings::Source {
        file: resolved.config_file.clone(),
        env: env.clone(),
        flags,
    };
    match cli.command {
        Command::Install(_)
        | Command::Uninstall(_)
        | Command::Status(_)
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(ExitCode::SUCCESS),
        Command::Config(ConfigCommand::Check {
            listen,
            metrics_listen,
            json,
        }) => {
            let flags = crate::settings::Flags {
                listen,
                metrics_listen,
            };
            Ok(crate::settings::check(&source(flags), json))
        }
        Command::Backup { file, force, json } => {
            Ok(crate::backup::command(&paths, &file, force, json).await)
        }
        Command::Notify(cmd) => crate::notify::cli::run(&paths, cmd).await,
        Command::Restore { file, force, json } => {
            Ok(crate::backup::restore_command(&paths, &file, force, json))
        }
        Command::Init {
            listen,
            names,
            json,
        } => {
            let config = HubConfig {
                listen,
                advertise: names,
                ..HubConfig::default()
            };
            let report = crate::init(&paths, &config)
                .await
                .with_context(|| format!("init {}", paths.data_dir.display()))?;
            crate::settings::settle_config_file(&paths.data_dir, &resolved.config_file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("Initialised hub in {}", report.data_dir);
                println!("CA fingerprint: {}", report.ca_fingerprint);
                println!(
                    "Admin identity: {} (use: flotilla --login-dir {})",
                    report.admin_id, report.admin_dir
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            listen,
            metrics_listen,
            service: _,
        } => {
            let flags = crate::settings::Flags {
                listen,
                metrics_listen,
            };
            crate::reload::serve(paths, source(flags), log, stop).await
        }
        Command::Token(TokenCommand::Create(t)) => {
            let spec = TokenSpec {
                role: t.role,
                ttl_s: t.ttl,
                uses: t.uses,
                labels: t.labels,
            };
            admin(
                &paths,
                &source(Default::default()),
                OpRequest::TokenCreate(spec),
                t.json,
            )
            .await
        }
        Command::Token(TokenCommand::List { json }) => {
            admin(
                &paths,
                &source(Default::default()),
                OpRequest::TokenList,
                json,
            )
            .await
        }
        Command::Token(TokenCommand::Delete { id, json }) => {
            admin(
                &paths,
                &source(Default::default()),
                OpRequest::TokenDelete { id },
                json,
            )
            .await
        }
        Command::Revoke { id, json } => {
            admin(
                &paths,
                &source(Default::default()),
                OpRequest::Revoke { query: id },
                json,
            )
            .await
        }
        Command::Agents { json } => {
            admin(
                &paths,
                &source(Default::default()),
                OpRequest::ListAgents,
                json,
            )
            .await
        }
        Command::Operators { json } => {
            admin(
                &paths,
                &source(Default::default()),
                OpRequest::ListOperators,
                json,
            )
            .await
        }
    }
}

async fn admin(
    paths: &HubPaths,
    source: &crate::settings::Source,
    req: OpRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = || source.resolve().map(|e| e.config).map_err(HubError::from);
    let resp = crate::offline_request_with(paths, config, req).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&json_of(&resp)?)?);
    } else {
        print_human(&resp);
    }
    Ok(match resp {
        OpResponse::Error(r) => {
            if !json {
                eprintln!("hubd: {}", r.message);
            }
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    })
}

/// The JSON scripts get: the payload itself, or `{"error": {"code", "message"}}`.
pub fn json_of(resp: &OpResponse) -> serde_json::Result<serde_json::Value> {
    match resp {
        OpResponse::Agents(list) | OpResponse::AgentsMore(list) => serde_json::to_value(list),
        OpResponse::Agent(a) | OpResponse::Revoked(a) => serde_json::to_value(a),
        OpResponse::TokenCreated(t) => serde_json::to_value(t),
        OpResponse::Tokens(list) => serde_json::to_value(list),
        OpResponse::Done => Ok(serde_json::json!({ "ok": true })),
        OpResponse::Error(r) => {
            Ok(serde_json::json!({ "error": { "code": r.code, "message": r.message } }))
        }
        OpResponse::Series(s) => serde_json::to_value(s),
        OpResponse::AlertRules(list) => serde_json::to_value(list),
        OpResponse::AlertRule(r) => serde_json::to_value(r),
        OpResponse::AlertRuleDetail(d) => serde_json::to_value(d),
        OpResponse::AlertTest(list) | OpResponse::Alerts(list) | OpResponse::AlertsMore(list) => {
            serde_json::to_value(list)
        }
        OpResponse::Alert(a) => serde_json::to_value(a),
        OpResponse::Silence(s) => serde_json::to_value(s),
        OpResponse::Silences(list) => serde_json::to_value(list),
    }
}

fn print_human(resp: &OpResponse) {
    match resp {
        OpResponse::Agents(list) | OpResponse::AgentsMore(list) => {
            println!(
                "{:<20} {:<19} {:<8} {:<8} LABELS",
                "NAME", "ID", "ROLE", "STATUS"
            );
            for a in list {
                println!(
                    "{:<20} {:<19} {:<8} {:<8} {}",
                    a.name,
                    a.id,
                    a.role,
                    a.status.as_str(),
                    labels(a)
                );
            }
        }
        OpResponse::Agent(a) | OpResponse::Revoked(a) => {
            println!("{} {} {} {}", a.name, a.id, a.role, a.status.as_str());
        }
        OpResponse::TokenCreated(t) => println!("{}", t.token),
        OpResponse::Tokens(list) => {
            println!(
                "{:<17} {:<9} {:>5} {:<20}",
                "ID", "ROLE", "USES", "EXPIRES (unix s)"
            );
            for t in list {
                print_token(t);
            }
        }
        OpResponse::Done => println!("done"),
        OpResponse::Series(s) => println!(
            "{} points at {} s for {}",
            s.points.len(),
            s.resolution_s,
            s.name
        ),
        OpResponse::Error(_) => {}
        // Alert replies are the console's to lay out (`flotilla alerts`); here, their JSON.
        other => {
            if let Ok(v) = json_of(other) {
                println!("{v:#}");
            }
        }
    }
}

fn print_token(t: &TokenInfo) {
    println!(
        "{:<17} {:<9} {:>5} {:<20}",
        t.id,
        t.role,
        t.uses_left,
        t.expires_ms / 1000
    );
}

fn labels(a: &AgentInfo) -> String {
    a.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
