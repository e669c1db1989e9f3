//! `hubd install`, `uninstall` and `status`: the hub as a service (systemd, launchd, Windows),
//! initialised first (CA, hub certificate, admin identity, database) when its data directory is
//! new.

use crate::maint::{self, HubStatus, MaintRequest, MaintResponse};
use crate::settings::{Flags, Source};
use crate::{HubConfig, HubPaths};
use clap::Args;
use deploy::command::{self, InstallOptions, Target};
use deploy::install::{self, InstallError, Prepared, Report};
use deploy::{Daemon, Layout, ServiceSpec};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use deploy::command::StatusArgs;

/// `hubd install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Where and how: the options every daemon's install takes.
    #[command(flatten)]
    pub service: InstallOptions,
    /// UDP address to serve QUIC on (new hubs only: an existing configuration is kept).
    #[arg(long, default_value = "0.0.0.0:4433")]
    pub listen: SocketAddr,
    /// DNS name or IP agents use to reach the hub (repeatable; new hubs only).
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Prometheus endpoint address, e.g. 127.0.0.1:9464 (new hubs only).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// `hubd uninstall`.
#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Where it was installed.
    #[command(flatten)]
    pub target: Target,
    /// Also delete the CA, keys, database and configuration: the fleet must be enrolled anew.
    #[arg(long)]
    pub purge: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

type Failure = (String, u8);

fn failure(e: InstallError) -> Failure {
    let code = e.exit_code();
    (e.to_string(), code)
}

fn hub_failure(e: crate::HubError) -> Failure {
    let code = if matches!(e, crate::HubError::Config(_)) {
        2
    } else {
        1
    };
    (e.to_string(), code)
}

/// Runs `hubd install`.
pub async fn install(
    args: InstallArgs,
    data_dir: Option<&Path>,
    config: Option<&Path>,
    env: Vec<(String, String)>,
) -> ExitCode {
    let json = args.service.json;
    let result = install_inner(args, data_dir, config, env).await;
    command::finish(Daemon::Hub, "installed", json, result)
}

async fn install_inner(
    args: InstallArgs,
    data_dir: Option<&Path>,
    config: Option<&Path>,
    env: Vec<(String, String)>,
) -> Result<Report, Failure> {
    let (layout, prepared) = args
        .service
        .prepare(Daemon::Hub, data_dir, config)
        .map_err(failure)?;
    let Prepared {
        mut report,
        program,
        user,
        data_on_disk,
    } = prepared;
    let config_on_disk = layout.on_disk(&layout.config_file);
    let paths = HubPaths {
        data_dir: data_on_disk.clone(),
    };
    let config_exists = config_on_disk.exists();
    let hub_config = if config_exists {
        if !args.names.is_empty() || args.metrics_listen.is_some() {
            report.notes.push(format!(
                "{} exists and is kept: --listen, --name and --metrics-listen were not applied (edit the file)",
                config_on_disk.display()
            ));
        }
        Source {
            file: config_on_disk.clone(),
            env,
            flags: Flags::default(),
        }
        .resolve()
        .map_err(|i| hub_failure(i.into()))?
        .config
    } else {
        HubConfig {
            listen: args.listen,
            advertise: args.names.clone(),
            metrics_listen: args.metrics_listen,
            ..HubConfig::default()
        }
    };
    if paths.hub_cert().exists() {
        report.notes.push(format!(
            "{} already holds a hub; kept as it is",
            data_on_disk.display()
        ));
    } else {
        let done = crate::init(&paths, &hub_config)
            .await
            .map_err(hub_failure)?;
        report.written.push(data_on_disk.clone());
        report.notes.push(format!(
            "new hub: CA {}; admin identity in {} (flotilla --login-dir {})",
            done.ca_fingerprint, done.admin_dir, done.admin_dir
        ));
    }
    // `init` writes hub.toml into the data directory; the layout keeps it in the config dir.
    let in_data = data_on_disk.join(crate::config::CONFIG_FILE);
    if in_data != config_on_disk {
        let text = match std::fs::read_to_string(&in_data) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err((format!("read {}: {e}", in_data.display()), 1)),
        };
        if let Some(text) = text {
            install::write_config(
                &layout,
                &layout.config_file,
                &text,
                user.as_deref(),
                &mut report,
            )
            .map_err(failure)?;
            deploy::files::remove_file(&in_data).map_err(|e| (e.to_string(), 1))?;
        }
    }
    install::hand_over_data_dir(&layout, &layout.data_dir, user.as_deref()).map_err(failure)?;
    let low_port = hub_config.listen.port() < 1024
        || hub_config.metrics_listen.is_some_and(|m| m.port() < 1024);
    install::raise_recv_buffer_limit(&layout, crate::endpoint::RECV_BUFFER, &mut report)
        .map_err(failure)?;
    let spec = ServiceSpec::for_layout(&layout, program, user, low_port);
    install::register(&layout, &spec, !args.service.no_start, &mut report).map_err(failure)?;
    let docs =
        deploy::shelldocs::ShellDocs::of(&<crate::cli::Cli as clap::CommandFactory>::command())
            .map_err(|e| (format!("render manual pages: {e}"), 1))?;
    install::install_shell_docs(&layout, &docs, &mut report).map_err(failure)?;
    Ok(report)
}

/// Whether `dir` holds a hub's files (so `--purge` may delete it).
fn looks_like_hub_dir(dir: &Path) -> bool {
    let paths = HubPaths {
        data_dir: dir.to_path_buf(),
    };
    paths.db().exists()
        || paths.hub_cert().exists()
        || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Runs `hubd uninstall`.
pub fn uninstall(args: UninstallArgs, data_dir: Option<&Path>, config: Option<&Path>) -> ExitCode {
    command::uninstall(
        Daemon::Hub,
        &args.target,
        args.purge,
        args.json,
        data_dir,
        config,
        looks_like_hub_dir,
    )
}

/// What `hubd status` reports.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// `flotilla-hub`.
    pub service: String,
    /// `system` or `user`.
    pub scope: String,
    /// Service file and manager view.
    #[serde(flatten)]
    pub installed: install::Installed,
    /// The data directory (on disk).
    pub data_dir: PathBuf,
    /// The hub process runs.
    pub running: bool,
    /// It answers on its maintenance socket (serving).
    pub serving: bool,
    /// What it says about itself.
    pub hub: Option<HubStatus>,
}

/// Works out the status of the hub in `layout`.
pub async fn status_of(layout: &Layout) -> ServiceStatus {
    let installed = install::installed(layout);
    let data_dir = layout.on_disk(&layout.data_dir);
    let hub = match maint::request(&data_dir, &MaintRequest::Status).await {
        Ok(Some(MaintResponse::Status(s))) => Some(s),
        _ => None,
    };
    let running = hub.is_some() || installed.manager.as_ref().is_some_and(|m| m.running());
    ServiceStatus {
        service: layout.daemon.service_name().into(),
        scope: layout.scope.as_str().into(),
        installed,
        data_dir,
        running,
        serving: hub.is_some(),
        hub,
    }
}

fn uptime(started_ms: u64) -> String {
    let s = crate::store::now_ms().saturating_sub(started_ms) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Runs `hubd status`.
pub async fn status(args: StatusArgs, data_dir: Option<&Path>, config: Option<&Path>) -> ExitCode {
    let layout = match args.target.layout(Daemon::Hub, data_dir, config) {
        Ok(l) => l,
        Err(e) => return command::fail_install(Daemon::Hub, &e, args.json),
    };
    let s = status_of(&layout).await;
    let code = install::status_code(s.installed.installed, s.running, s.serving);
    if args.json {
        command::print_json(&s);
        return ExitCode::from(code);
    }
    command::print_installed(&s.service, &s.scope, &s.installed);
    match &s.hub {
        Some(h) => {
            let metrics = h
                .metrics_listen
                .map(|m| format!(", metrics on {m}"))
                .unwrap_or_default();
            println!(
                "  running:   yes, pid {}, up {}, listening on {}{metrics}",
                h.pid,
                uptime(h.started_ms),
                h.listen
            );
            println!(
                "  fleet:     {} agents online, {} operators",
                h.agents_online, h.operators_online
            );
        }
        None if s.running => {
            println!("  running:   yes, but not answering on its maintenance socket")
        }
        None => println!("  running:   no"),
    }
    println!("  data:      {}", s.data_dir.display());
    command::print_manager_note(&s.installed);
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Where the installer puts the binary on Windows.
    const PROGRAM: &str = r"C:\Program Files\Flotilla\hubd.exe";

    /// What `install` registers with `sc.exe` must parse, in the binary, as `run` under the SCM
    /// with the layout's paths.
    #[test]
    fn the_windows_service_command_line_runs_under_the_scm() {
        let layout = Layout::system(Daemon::Hub, deploy::Os::Windows, r"C:\ProgramData");
        let spec = ServiceSpec::for_layout(&layout, PathBuf::from(PROGRAM), None, false);
        let line = deploy::windows::bin_path(&spec);
        let argv = deploy::windows::split_command_line(&line);
        assert_eq!(argv[0], PROGRAM);
        let cli = crate::cli::Cli::try_parse_from(&argv).expect("the binary parses it");
        assert!(
            matches!(cli.command, crate::cli::Command::Run { service: true, .. }),
            "{line}"
        );
        assert_eq!(cli.config, Some(layout.config_file));
        assert_eq!(cli.data_dir, Some(layout.data_dir));
    }
}
