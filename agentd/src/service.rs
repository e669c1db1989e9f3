//! `agentd install`, `uninstall` and `status`: the agent as a service (systemd, launchd, Windows),
//! enrolling first when the machine is not enrolled yet.

use crate::AgentPaths;
use crate::settings::{self, Flags};
use crate::status::{self as status_file, AgentStatus};
use clap::Args;
use deploy::command::{self, InstallOptions, Target};
use deploy::install::{self, InstallError, Prepared, Report};
use deploy::{Daemon, Layout, SecretString, ServiceSpec};
use flotilla_certs::{IDENTITY_STEM, Identity};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use deploy::command::StatusArgs;

/// `agentd install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Where and how: the options every daemon's install takes.
    #[command(flatten)]
    pub service: InstallOptions,
    /// Join token, if this machine is not enrolled yet. Prefer the variable or --token-file: a
    /// command line is visible to every local user while it runs.
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the join token from FILE (`-` for stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Name in the fleet when enrolling (default: host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Label key=value when enrolling (repeatable).
    #[arg(long = "label", value_parser = flotilla_wire::text::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Do not enrol now: the service enrols at its first start with the token, which is written
    /// into a new configuration file (for images, or machines that cannot reach the hub yet).
    #[arg(long)]
    pub enrol_at_start: bool,
}

/// `agentd uninstall`.
#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Where it was installed.
    #[command(flatten)]
    pub target: Target,
    /// Also delete the identity (keys), data and configuration: the hub will need a new token.
    #[arg(long)]
    pub purge: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn read_token_file(path: &Path) -> std::io::Result<String> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path)?
    };
    Ok(text.trim().to_string())
}

/// Runs `agentd install`.
pub async fn install(
    args: InstallArgs,
    data_dir: Option<&Path>,
    config: Option<&Path>,
    env: Vec<(String, String)>,
) -> ExitCode {
    let json = args.service.json;
    let result = install_inner(args, data_dir, config, env).await;
    command::finish(Daemon::Agent, "installed", json, result)
}

type Failure = (anyhow::Error, u8);

fn failure(e: InstallError) -> Failure {
    let code = e.exit_code();
    (e.into(), code)
}

async fn install_inner(
    args: InstallArgs,
    data_dir: Option<&Path>,
    config: Option<&Path>,
    env: Vec<(String, String)>,
) -> Result<Report, Failure> {
    let (layout, prepared) = args
        .service
        .prepare(Daemon::Agent, data_dir, config)
        .map_err(failure)?;
    let Prepared {
        mut report,
        program,
        user,
        data_on_disk,
    } = prepared;

    // The token: --token-file, --token (or FLOTILLA_TOKEN), else the configuration's.
    let given = match &args.token_file {
        Some(path) => Some(read_token_file(path).map_err(|e| {
            (
                anyhow::anyhow!("read token file {}: {e}", path.display()),
                2,
            )
        })?),
        // An empty FLOTILLA_TOKEN is no token.
        None => args.token.clone().filter(|t| !t.is_empty()),
    };
    let config_on_disk = layout.on_disk(&layout.config_file);
    let configured = settings::resolve(&config_on_disk, false, env, &Flags::default())
        .map_err(|i| (anyhow::Error::from(crate::AgentError::from(i)), 2))?
        .config
        .token;
    let token = given
        .clone()
        .or_else(|| configured.as_ref().map(|t| t.expose().to_string()));
    let mut config_text = settings::template();
    if Identity::exists(&data_on_disk, IDENTITY_STEM) {
        if token.is_some() {
            report.notes.push(format!(
                "{} is already enrolled; the token was not used",
                data_on_disk.display()
            ));
        }
    } else if args.enrol_at_start {
        let Some(token) = token else {
            return Err((
                anyhow::anyhow!(
                    "--enrol-at-start needs a token: --token, FLOTILLA_TOKEN, --token-file, or token in {}",
                    config_on_disk.display()
                ),
                2,
            ));
        };
        flotilla_certs::JoinToken::parse(&token).map_err(|e| (anyhow::Error::new(e), 2))?;
        if given.is_some() {
            if config_on_disk.exists() && configured.is_none() {
                return Err((
                    anyhow::anyhow!(
                        "{} exists without a token: add `token = \"…\"` to it for --enrol-at-start",
                        config_on_disk.display()
                    ),
                    2,
                ));
            }
            config_text = settings::template_with_token(&token);
        }
        if args.name.is_some() || !args.labels.is_empty() {
            report.notes.push(
                "--name and --label are not used by --enrol-at-start: the agent enrols under its host name with the token's labels".into(),
            );
        }
        report.notes.push(format!(
            "not enrolled yet: the service enrols at its first start with the token in {} (remove it from there once enrolled)",
            layout.config_file.display()
        ));
    } else {
        let Some(token) = token else {
            return Err((
                anyhow::anyhow!(
                    "{} is not enrolled: pass --token (or FLOTILLA_TOKEN, or --token-file), or --enrol-at-start with a token in the configuration",
                    data_on_disk.display()
                ),
                2,
            ));
        };
        let paths = AgentPaths {
            data_dir: data_on_disk.clone(),
        };
        let token = SecretString::new(token);
        let done = crate::enroll(
            &paths,
            token.expose(),
            args.name.clone(),
            args.labels.clone(),
        )
        .await
        .map_err(|e| (anyhow::Error::new(e).context("enrolment failed"), 1))?;
        tracing::info!(id = %done.enrolled.identity, name = %done.enrolled.name, "enrolled");
        report.notes.push(format!(
            "enrolled as {} ({}) with {}",
            done.enrolled.name,
            done.enrolled.identity,
            done.hubs.join(", ")
        ));
        report.written.push(data_on_disk.clone());
    }
    install::write_config(
        &layout,
        &layout.config_file,
        &config_text,
        user.as_deref(),
        &mut report,
    )
    .map_err(failure)?;
    install::hand_over_data_dir(&layout, &layout.data_dir, user.as_deref()).map_err(failure)?;
    let spec = ServiceSpec::for_layout(&layout, program, user, false);
    install::register(&layout, &spec, !args.service.no_start, &mut report).map_err(failure)?;
    let docs =
        deploy::shelldocs::ShellDocs::of(&<crate::cli::Cli as clap::CommandFactory>::command())
            .map_err(|e| (anyhow::anyhow!("render manual pages: {e}"), 1))?;
    install::install_shell_docs(&layout, &docs, &mut report).map_err(failure)?;
    Ok(report)
}

/// Whether `dir` holds an agent's files (so `--purge` may delete it).
fn looks_like_agent_dir(dir: &Path) -> bool {
    Identity::exists(dir, IDENTITY_STEM)
        || dir.join(status_file::STATUS_FILE).exists()
        || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Runs `agentd uninstall`.
pub fn uninstall(args: UninstallArgs, data_dir: Option<&Path>, config: Option<&Path>) -> ExitCode {
    command::uninstall(
        Daemon::Agent,
        &args.target,
        args.purge,
        args.json,
        data_dir,
        config,
        looks_like_agent_dir,
    )
}

/// What `agentd status` reports.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// `flotilla-agent`.
    pub service: String,
    /// `system` or `user`.
    pub scope: String,
    /// Service file and manager view.
    #[serde(flatten)]
    pub installed: install::Installed,
    /// The data directory (on disk).
    pub data_dir: PathBuf,
    /// An identity is there.
    pub enrolled: bool,
    /// The agent process runs.
    pub running: bool,
    /// Its process id.
    pub pid: Option<u32>,
    /// Its link to the hub is up.
    pub connected: bool,
    /// The status file, as last written.
    pub link: Option<AgentStatus>,
}

/// Works out the status of the agent in `layout`.
pub fn status_of(layout: &Layout) -> ServiceStatus {
    let installed = install::installed(layout);
    let data_dir = layout.on_disk(&layout.data_dir);
    let link = status_file::read(&data_dir).ok().flatten();
    let manager_running = installed.manager.as_ref().map(|m| m.running());
    let file_alive = link
        .as_ref()
        .is_some_and(|l| l.state != "stopped" && deploy::pid_alive(l.pid));
    let (running, pid) = match (&installed.manager, manager_running) {
        (Some(m), Some(true)) => (true, m.main_pid),
        // Not under the manager (or no manager): a hand-started agent still counts.
        _ if file_alive => (true, link.as_ref().map(|l| l.pid)),
        _ => (false, None),
    };
    let connected = running
        && link
            .as_ref()
            .is_some_and(|l| l.connected() && pid.is_none_or(|p| p == l.pid));
    ServiceStatus {
        service: layout.daemon.service_name().into(),
        scope: layout.scope.as_str().into(),
        installed,
        enrolled: Identity::exists(&data_dir, IDENTITY_STEM),
        data_dir,
        running,
        pid,
        connected,
        link,
    }
}

fn ago(ms: u64) -> String {
    let s = flotilla_certs::clock::now_ms().saturating_sub(ms) / 1000;
    match s {
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// Runs `agentd status`.
pub fn status(args: StatusArgs, data_dir: Option<&Path>, config: Option<&Path>) -> ExitCode {
    let layout = match args.target.layout(Daemon::Agent, data_dir, config) {
        Ok(l) => l,
        Err(e) => return command::fail_install(Daemon::Agent, &e, args.json),
    };
    let s = status_of(&layout);
    let code = install::status_code(s.installed.installed, s.running, s.connected);
    if args.json {
        command::print_json(&s);
        return ExitCode::from(code);
    }
    let yes = command::yes;
    command::print_installed(&s.service, &s.scope, &s.installed);
    match s.pid {
        Some(pid) if s.running => println!("  running:   yes, pid {pid}"),
        _ => println!("  running:   {}", yes(s.running)),
    }
    match &s.link {
        Some(l) if s.connected => println!(
            "  connected: yes, to {} as {} since {}",
            l.hubs.join(", "),
            l.name.as_deref().unwrap_or("?"),
            ago(l.since_ms)
        ),
        Some(l) if s.running => println!(
            "  connected: no, since {}: {}",
            ago(l.since_ms),
            l.reason.as_deref().unwrap_or("unknown")
        ),
        _ => println!("  connected: no"),
    }
    println!(
        "  data:      {} ({})",
        s.data_dir.display(),
        if s.enrolled {
            "enrolled"
        } else {
            "not enrolled"
        }
    );
    command::print_manager_note(&s.installed);
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Where the installer puts the binary on Windows.
    const PROGRAM: &str = r"C:\Program Files\Flotilla\agentd.exe";

    /// What `install` registers with `sc.exe` must parse, in the binary, as `run` under the SCM
    /// with the layout's paths.
    #[test]
    fn the_windows_service_command_line_runs_under_the_scm() {
        let layout = Layout::system(Daemon::Agent, deploy::Os::Windows, r"C:\ProgramData");
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
