//! The command-line half of `install`, `uninstall` and `status` that `hubd` and `agentd` share:
//! where to install (`--system`, `--user`, `--root`), the command line the service runs, failures
//! printed for a person or for `--json`, the whole of `uninstall`, and the lines of `status` both
//! daemons print. Each daemon keeps only its own step (enrolment, `init`) and its own health.

use crate::install::{self, InstallError, Installed, Prepared, Report};
use crate::{Daemon, Layout, Scope, ServiceSpec};
use serde::Serialize;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where: `--system` or `--user`, and `--root`.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// System service (at boot, as the `flotilla` account). The default for root.
    #[arg(long, conflicts_with = "user")]
    pub system: bool,
    /// User service (systemctl --user, or a LaunchAgent). The default for everyone else.
    #[arg(long)]
    pub user: bool,
    /// Write every file under DIR instead of /, and call no service manager (for images and tests).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl Target {
    /// The scope asked for, or the invoker's default (system for root, user for anyone else).
    pub fn scope(&self) -> Scope {
        if self.system {
            Scope::System
        } else if self.user || !crate::is_root() {
            Scope::User
        } else {
            Scope::System
        }
    }

    /// `daemon`'s layout, with `--data-dir`/`--config` (given globally) replacing its paths.
    pub fn layout(
        &self,
        daemon: Daemon,
        data_dir: Option<&Path>,
        config: Option<&Path>,
    ) -> Result<Layout, InstallError> {
        let mut layout = Layout::for_scope(daemon, self.scope(), self.root.clone())?;
        if let Some(d) = data_dir {
            layout.data_dir = d.to_path_buf();
        }
        if let Some(c) = config {
            layout.config_file = c.to_path_buf();
        }
        Ok(layout)
    }
}

/// The options of `install` both daemons take; each adds its own (a token, listen addresses).
#[derive(clap::Args, Debug)]
pub struct InstallOptions {
    /// Where to install.
    #[command(flatten)]
    pub target: Target,
    /// Account the system service runs as (default `flotilla` on Linux; `root` for none).
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Binary the service runs (default: this one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Register the service but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl InstallOptions {
    /// `daemon`'s layout (see [`Target::layout`]) and the steps every install starts with
    /// ([`install::prepare`]).
    pub fn prepare(
        &self,
        daemon: Daemon,
        data_dir: Option<&Path>,
        config: Option<&Path>,
    ) -> Result<(Layout, Prepared), InstallError> {
        let layout = self.target.layout(daemon, data_dir, config)?;
        let prepared = install::prepare(&layout, self.binary.clone(), self.run_as.clone())?;
        Ok((layout, prepared))
    }
}

/// `hubd status` and `agentd status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Where it was installed.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl ServiceSpec {
    /// The service for `layout`: `program --config FILE --data-dir DIR run`, as `user` (system
    /// scope; `None` for root or LocalSystem), with `CAP_NET_BIND_SERVICE` when `low_port`.
    pub fn for_layout(
        layout: &Layout,
        program: PathBuf,
        user: Option<String>,
        low_port: bool,
    ) -> Self {
        Self {
            daemon: layout.daemon,
            scope: layout.scope,
            program,
            args: vec![
                "--config".into(),
                layout.config_file.display().to_string(),
                "--data-dir".into(),
                layout.data_dir.display().to_string(),
                "run".into(),
            ],
            user,
            data_dir: layout.data_dir.clone(),
            config_file: layout.config_file.clone(),
            log_file: layout.log_file.clone(),
            low_port,
        }
    }
}

/// Prints `err` (its whole chain) on stderr as `daemon: …`, and with `json` also on stdout as
/// `{"error":{"message":…}}` so a script reading stdout sees why; returns exit status `code`.
pub fn fail(daemon: Daemon, err: &dyn Display, code: u8, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({ "error": { "message": format!("{err:#}") } })
        );
    }
    eprintln!("{}: {err:#}", daemon.binary());
    ExitCode::from(code)
}

/// [`fail`] for an install error, with its own exit status.
pub fn fail_install(daemon: Daemon, err: &InstallError, json: bool) -> ExitCode {
    fail(daemon, err, err.exit_code(), json)
}

/// Prints what `install` or `uninstall` did (`verb`: `installed`, `uninstalled`) and exits 0, or
/// prints the failure and exits with its status.
pub fn finish<E: Display>(
    daemon: Daemon,
    verb: &str,
    json: bool,
    result: Result<Report, (E, u8)>,
) -> ExitCode {
    match result {
        Ok(report) => {
            report.print(json, verb);
            ExitCode::SUCCESS
        }
        Err((err, code)) => fail(daemon, &err, code, json),
    }
}

/// Runs `uninstall` for `daemon`: stops and unregisters the service and removes its file; with
/// `purge` also the data directory (only if `looks_like_ours` says it holds `daemon`'s files)
/// and the configuration.
pub fn uninstall(
    daemon: Daemon,
    target: &Target,
    purge: bool,
    json: bool,
    data_dir: Option<&Path>,
    config: Option<&Path>,
    looks_like_ours: fn(&Path) -> bool,
) -> ExitCode {
    let run = || -> Result<Report, InstallError> {
        let layout = target.layout(daemon, data_dir, config)?;
        install::check_privileges(&layout)?;
        let mut report = Report::new(&layout);
        let spec = ServiceSpec::for_layout(&layout, PathBuf::from(daemon.binary()), None, false);
        install::unregister(&layout, &spec, purge, looks_like_ours, &mut report)?;
        Ok(report)
    };
    finish(
        daemon,
        "uninstalled",
        json,
        run().map_err(|e| {
            let code = e.exit_code();
            (e, code)
        }),
    )
}

/// The log file of `run --service` (the Windows service manager gives a service no console):
/// `<binary>.log` in the data directory the flags resolve to, which is created 0700 if missing.
/// `None` if either fails: the service then runs without a log file rather than not at all.
pub fn service_log(
    daemon: Daemon,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Option<std::fs::File> {
    let resolved = crate::layout::resolve(daemon, data_dir, config, crate::is_root()).ok()?;
    flotilla_certs::create_private_dir(&resolved.data_dir).ok()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    // The log holds peers' addresses and job summaries: the daemon's user only, whatever the umask.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts
        .open(resolved.data_dir.join(format!("{}.log", daemon.binary())))
        .ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .ok()?;
    }
    Some(file)
}

/// `yes` or `no`, as `status` prints a flag.
pub fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints a status as `--json` gives it.
pub fn print_json(status: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(status).unwrap_or_else(|_| "{}".into())
    );
}

/// The first lines of `status` for a person: the service and scope, then whether it is installed,
/// where, and whether the manager has it enabled.
pub fn print_installed(service: &str, scope: &str, installed: &Installed) {
    println!("{service} ({scope})");
    let enabled = installed
        .manager
        .as_ref()
        .and_then(|m| m.enabled.clone())
        .map(|e| format!(", {e}"))
        .unwrap_or_default();
    println!(
        "  installed: {} ({}{enabled})",
        yes(installed.installed),
        installed.service_file.display()
    );
}

/// The last line of `status` for a person: why the service manager was not asked, if it was not.
pub fn print_manager_note(installed: &Installed) {
    if let Some(note) = &installed.manager_note {
        println!("  note:      service manager not asked: {note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_runs_the_layouts_config_and_data_dir() {
        let layout = Layout::system(Daemon::Hub, crate::Os::Linux, "/");
        let spec = ServiceSpec::for_layout(
            &layout,
            PathBuf::from("/usr/bin/hubd"),
            Some("flotilla".into()),
            true,
        );
        assert_eq!(
            spec.command_line(),
            format!(
                "/usr/bin/hubd --config {} --data-dir {} run",
                layout.config_file.display(),
                layout.data_dir.display()
            )
        );
        assert_eq!(
            (spec.daemon, spec.user.as_deref(), spec.low_port),
            (Daemon::Hub, Some("flotilla"), true)
        );
    }

    #[test]
    fn explicit_paths_replace_the_layouts() {
        let target = Target {
            system: false,
            user: true,
            root: Some(PathBuf::from("/tmp/stage")),
        };
        let layout = target
            .layout(
                Daemon::Agent,
                Some(Path::new("/srv/agent")),
                Some(Path::new("/srv/agent.toml")),
            )
            .expect("layout");
        assert_eq!(layout.scope, Scope::User);
        assert_eq!(layout.data_dir, Path::new("/srv/agent"));
        assert_eq!(layout.config_file, Path::new("/srv/agent.toml"));
    }
}
