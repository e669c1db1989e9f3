//! The steps `agentd install` and `hubd install` share, around each daemon's own step (enrolment or
//! `init`): privilege and binary checks, the service account, the configuration file, the service
//! file, the service manager, whose commands are printed instead of run where it cannot be used, and
//! the shell completions and manual pages.

use crate::files::{self, FileError};
use crate::layout::SERVICE_USER;
use crate::manager::{self, ManagerState, Step, StepError};
use crate::shelldocs::{self, ShellDocs};
use crate::{Layout, LayoutError, Os, Scope, ServiceSpec};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why installing or uninstalling failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A system-wide install by someone other than root.
    #[error(
        "installing a system service needs root: run with sudo, or use --user, or --root DIR to write the files elsewhere"
    )]
    NeedsRoot,
    /// No layout for this scope.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The unit cannot hold these paths.
    #[error(transparent)]
    Unit(#[from] crate::systemd::UnitError),
    /// The service could not run this binary.
    #[error("{0}")]
    Program(String),
    /// Refusing to delete something that does not look like ours.
    #[error("refusing to purge {}: it holds no Flotilla {what} files (remove it by hand if you mean it)", path.display())]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// `agent` or `hub`.
        what: &'static str,
    },
    /// A file could not be written or removed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The data directory could not be created or set to 0700.
    #[error(transparent)]
    DataDir(flotilla_certs::CertError),
    /// A service manager command failed.
    #[error(transparent)]
    Step(#[from] StepError),
}

impl InstallError {
    /// Exit status: 2 for what the invocation must change, 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NeedsRoot
            | Self::Layout(_)
            | Self::Unit(_)
            | Self::Program(_)
            | Self::NotOurs { .. } => 2,
            Self::File(_) | Self::DataDir(_) | Self::Step(_) => 1,
        }
    }
}

/// What install or uninstall did, for humans and `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `flotilla-agent` or `flotilla-hub`.
    pub service: String,
    /// `system` or `user`.
    pub scope: String,
    /// Files written (as on disk, under `--root` if given).
    pub written: Vec<PathBuf>,
    /// Files left as they were (an existing configuration is the admin's).
    pub kept: Vec<PathBuf>,
    /// Files and directories removed.
    pub removed: Vec<PathBuf>,
    /// Commands run.
    pub ran: Vec<String>,
    /// Commands the admin must run, and why they were not run here.
    pub pending: Vec<String>,
    /// Why `pending` is not empty.
    pub pending_reason: Option<String>,
    /// Anything else worth saying.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `layout`.
    pub fn new(layout: &Layout) -> Self {
        Self {
            service: layout.daemon.service_name().into(),
            scope: layout.scope.as_str().into(),
            ..Self::default()
        }
    }

    /// Prints to stdout: JSON, or lines for a person (pending commands prominently).
    pub fn print(&self, json: bool, verb: &str) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
            );
            return;
        }
        println!("{verb} {} ({})", self.service, self.scope);
        for p in &self.written {
            println!("  wrote   {}", p.display());
        }
        for p in &self.kept {
            println!("  kept    {}", p.display());
        }
        for p in &self.removed {
            println!("  removed {}", p.display());
        }
        for c in &self.ran {
            println!("  ran     {c}");
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        if !self.pending.is_empty() {
            println!();
            println!(
                "NOT DONE: {}.",
                self.pending_reason.as_deref().unwrap_or("not run")
            );
            println!("Run these commands (as root for a system service) to finish:");
            for c in &self.pending {
                println!("  {c}");
            }
        }
    }

    fn run_or_defer(&mut self, layout: &Layout, steps: Vec<Step>) -> Result<(), InstallError> {
        if steps.is_empty() {
            return Ok(());
        }
        match manager::unavailable(layout) {
            Some(reason) => {
                self.pending_reason.get_or_insert(reason);
                self.pending.extend(steps.iter().map(Step::shell));
            }
            None => {
                manager::run(&steps)?;
                self.ran.extend(steps.iter().map(Step::shell));
            }
        }
        Ok(())
    }
}

/// What the steps before a daemon's own install step settled.
#[derive(Debug)]
pub struct Prepared {
    /// What was done so far.
    pub report: Report,
    /// The binary the service will run ([`program`]).
    pub program: PathBuf,
    /// The account it runs as ([`service_user`]).
    pub user: Option<String>,
    /// The data directory as created on disk ([`create_data_dir`]).
    pub data_on_disk: PathBuf,
}

/// The steps every install starts with, in order: privileges, the binary, the service account
/// and the data directory.
pub fn prepare(
    layout: &Layout,
    binary: Option<PathBuf>,
    run_as: Option<String>,
) -> Result<Prepared, InstallError> {
    check_privileges(layout)?;
    let mut report = Report::new(layout);
    let program = program(binary, layout, &mut report)?;
    let user = service_user(layout, run_as, &mut report);
    ensure_account(layout, user.as_deref(), &mut report)?;
    let data_on_disk = create_data_dir(layout, &layout.data_dir)?;
    Ok(Prepared {
        report,
        program,
        user,
        data_on_disk,
    })
}

/// Refuses a real system install by a non-root user.
pub fn check_privileges(layout: &Layout) -> Result<(), InstallError> {
    if layout.scope == Scope::System && layout.root.is_none() && !crate::is_root() {
        return Err(InstallError::NeedsRoot);
    }
    Ok(())
}

/// Directories a system service cannot see (`ProtectHome=yes`, `PrivateTmp=yes`).
const HIDDEN_FROM_SYSTEM_SERVICES: &[&str] = &["/home", "/root", "/run/user", "/tmp", "/var/tmp"];

/// The binary the service will run: `binary`, else this very executable. A system service cannot
/// run one from a home directory or /tmp (the sandbox hides them): refused, or with `--root`
/// (files for another machine) only noted.
pub fn program(
    binary: Option<PathBuf>,
    layout: &Layout,
    report: &mut Report,
) -> Result<PathBuf, InstallError> {
    let path = match binary {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| InstallError::Program(format!("cannot find this executable: {e}")))?,
    };
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    if !path.is_absolute() {
        return Err(InstallError::Program(format!(
            "binary {} is not an absolute path",
            path.display()
        )));
    }
    if layout.scope == Scope::System
        && layout.os == Os::Linux
        && let Some(dir) = HIDDEN_FROM_SYSTEM_SERVICES
            .iter()
            .find(|d| path.starts_with(d))
    {
        let msg = format!(
            "{} is under {dir}, which the service's sandbox hides: install the binary first (install -m 0755 {} /usr/local/bin/) and run that copy, or pass --binary",
            path.display(),
            path.display()
        );
        if layout.root.is_none() {
            return Err(InstallError::Program(msg));
        }
        report.notes.push(msg);
    }
    Ok(path)
}

/// The account the service runs as: [`SERVICE_USER`] for Linux system services unless `run_as`
/// says otherwise (`root` for none); user services run as their user.
pub fn service_user(
    layout: &Layout,
    run_as: Option<String>,
    report: &mut Report,
) -> Option<String> {
    match (layout.scope, layout.os) {
        (Scope::User, _) => {
            if run_as.is_some() {
                report
                    .notes
                    .push("--run-as ignored: a user service runs as its user".into());
            }
            None
        }
        (Scope::System, Os::Linux) => match run_as.as_deref() {
            Some("root") => None,
            Some(u) => Some(u.to_string()),
            None => Some(SERVICE_USER.into()),
        },
        (Scope::System, _) => run_as.filter(|u| u != "root"),
    }
}

/// Creates the data directory (0700) where the service will find it.
pub fn create_data_dir(layout: &Layout, data_dir: &Path) -> Result<PathBuf, InstallError> {
    let on_disk = layout.on_disk(data_dir);
    flotilla_certs::create_private_dir(&on_disk).map_err(InstallError::DataDir)?;
    Ok(on_disk)
}

/// Makes sure the service account exists: the sysusers entry is written, and where we are root on
/// the real system, the account created now (the data directory must belong to it before start).
pub fn ensure_account(
    layout: &Layout,
    user: Option<&str>,
    report: &mut Report,
) -> Result<(), InstallError> {
    let Some(user) = user else { return Ok(()) };
    if layout.os != Os::Linux || layout.scope != Scope::System {
        return Ok(());
    }
    if user == SERVICE_USER
        && let Some(file) = &layout.sysusers_file
    {
        let on_disk = layout.on_disk(file);
        files::write_atomic(&on_disk, files::sysusers_entry().as_bytes(), 0o644)?;
        report.written.push(on_disk);
    }
    if layout.root.is_none() && files::lookup_user(user).is_some() {
        return Ok(());
    }
    let steps = if user == SERVICE_USER {
        manager::account_steps(layout, user)
    } else {
        report.notes.push(format!(
            "account {user} must exist before the service starts (it is not created for you)"
        ));
        Vec::new()
    };
    if layout.root.is_some() {
        report
            .pending_reason
            .get_or_insert_with(|| "--root: files only".into());
        report.pending.extend(steps.iter().map(Step::shell));
    } else {
        manager::run(&steps)?;
        report.ran.extend(steps.iter().map(Step::shell));
    }
    Ok(())
}

/// Writes the configuration file from `template` unless one exists (then it is the admin's and
/// kept). Mode 0640, group of the service account: it may hold a join token.
pub fn write_config(
    layout: &Layout,
    config_file: &Path,
    template: &str,
    user: Option<&str>,
    report: &mut Report,
) -> Result<(), InstallError> {
    let on_disk = layout.on_disk(config_file);
    if on_disk.exists() {
        report.kept.push(on_disk);
        return Ok(());
    }
    files::write_atomic(&on_disk, template.as_bytes(), 0o640)?;
    if layout.root.is_none()
        && let Some((_, gid)) = user.and_then(files::lookup_user)
    {
        files::chown_tree(&on_disk, 0, gid)?;
    }
    report.written.push(on_disk);
    Ok(())
}

/// The sysctl drop-in that lets a system hub take the UDP receive buffer it asks for.
pub const RECV_BUFFER_SYSCTL: &str = "/etc/sysctl.d/60-flotilla-hub.conf";

/// Raises `net.core.rmem_max` to `wanted` bytes for a Linux system hub, whose service runs without
/// the capability to exceed it: a reconnect burst of thousands of agents overflows a smaller buffer
/// and stalls their handshakes. Writes a sysctl drop-in (so it survives reboots) and applies it, or
/// leaves both alone when the running limit is already as high.
pub fn raise_recv_buffer_limit(
    layout: &Layout,
    wanted: usize,
    report: &mut Report,
) -> Result<(), InstallError> {
    if layout.daemon != crate::Daemon::Hub
        || layout.os != Os::Linux
        || layout.scope != Scope::System
    {
        return Ok(());
    }
    let current = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    let file = Path::new(RECV_BUFFER_SYSCTL);
    let on_disk = layout.on_disk(file);
    if current.is_some_and(|c| c >= wanted) && !on_disk.exists() {
        return Ok(());
    }
    let text = format!(
        "# Written by `hubd install`: the hub asks for a {} MiB UDP receive buffer so a reconnect\n\
         # burst of thousands of agents does not lose handshake packets. Remove to undo.\n\
         net.core.rmem_max = {wanted}\n",
        wanted / (1024 * 1024)
    );
    if std::fs::read_to_string(&on_disk).is_ok_and(|t| t == text) {
        report.kept.push(on_disk);
    } else {
        files::write_atomic(&on_disk, text.as_bytes(), 0o644)?;
        report.written.push(on_disk);
    }
    // Applying may fail where /proc/sys is read-only (containers) or procps is missing: the hub
    // still runs, with the smaller buffer and a warning, and the file applies at the next boot.
    if layout.root.is_none() && manager::which("sysctl").is_none() {
        report.notes.push(format!(
            "{RECV_BUFFER_SYSCTL} applies at the next boot: there is no sysctl command to apply it now"
        ));
        return Ok(());
    }
    let apply = Step::new(&["sysctl", "-q", "-p", RECV_BUFFER_SYSCTL]).may_fail();
    report.run_or_defer(layout, vec![apply])
}

/// Writes the binary's shell completions and manual pages where bash, zsh, fish and man look, for a
/// Linux system install only (a user install leaves the system's folders alone), and only into
/// folders that exist: a machine without fish has no use for a fish file, and creating the folder
/// would not make one. Folders left out are named in the report's notes.
pub fn install_shell_docs(
    layout: &Layout,
    docs: &ShellDocs,
    report: &mut Report,
) -> Result<(), InstallError> {
    if layout.os != Os::Linux || layout.scope != Scope::System {
        return Ok(());
    }
    let mut missing = Vec::new();
    for (shell, dir) in shelldocs::SYSTEM_COMPLETIONS {
        let Some((_, text)) = docs.completions.iter().find(|(s, _)| *s == shell) else {
            continue;
        };
        let dir_on_disk = layout.on_disk(Path::new(dir));
        if !dir_on_disk.is_dir() {
            missing.push(dir);
            continue;
        }
        let file = dir_on_disk.join(shelldocs::completion_file_name(shell, &docs.bin));
        files::write_atomic(&file, text, 0o644)?;
        report.written.push(file);
    }
    let man_dir = layout.on_disk(Path::new(shelldocs::SYSTEM_MAN_DIR));
    if man_dir.is_dir() {
        for (name, text) in &docs.man_pages {
            let file = man_dir.join(name);
            files::write_atomic(&file, text, 0o644)?;
            report.written.push(file);
        }
    } else {
        missing.push(shelldocs::SYSTEM_MAN_DIR);
    }
    if !missing.is_empty() {
        report.notes.push(format!(
            "no {} here: {} completions or manual pages not installed there (`{} completions SHELL`, `{} man DIR` print them)",
            missing.join(", "),
            docs.bin,
            docs.bin,
            docs.bin
        ));
    }
    Ok(())
}

/// Removes what [`install_shell_docs`] wrote for `bin`: its completion files, and its manual pages
/// (`bin.1` and `bin-*.1`).
fn remove_shell_docs(layout: &Layout, bin: &str, report: &mut Report) -> Result<(), InstallError> {
    if layout.os != Os::Linux || layout.scope != Scope::System {
        return Ok(());
    }
    for (shell, dir) in shelldocs::SYSTEM_COMPLETIONS {
        let file = layout
            .on_disk(Path::new(dir))
            .join(shelldocs::completion_file_name(shell, bin));
        if files::remove_file(&file)? {
            report.removed.push(file);
        }
    }
    let man_dir = layout.on_disk(Path::new(shelldocs::SYSTEM_MAN_DIR));
    let Ok(entries) = std::fs::read_dir(&man_dir) else {
        return Ok(());
    };
    let prefix = format!("{bin}-");
    let mut pages: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n == format!("{bin}.1") || (n.starts_with(&prefix) && n.ends_with(".1"))
            })
        })
        .map(|e| e.path())
        .collect();
    pages.sort();
    for page in pages {
        if files::remove_file(&page)? {
            report.removed.push(page);
        }
    }
    Ok(())
}

/// Gives the data directory to the service account (after enrolment or init wrote keys as root).
pub fn hand_over_data_dir(
    layout: &Layout,
    data_dir: &Path,
    user: Option<&str>,
) -> Result<(), InstallError> {
    if layout.root.is_some() || !crate::is_root() {
        return Ok(());
    }
    if let Some((uid, gid)) = user.and_then(files::lookup_user) {
        files::chown_tree(&layout.on_disk(data_dir), uid, gid)?;
    }
    Ok(())
}

/// The service file's text for this platform.
pub fn service_text(
    layout: &Layout,
    spec: &ServiceSpec,
    start: bool,
) -> Result<String, InstallError> {
    Ok(match layout.os {
        Os::Linux => crate::systemd::unit(spec)?,
        Os::MacOs => crate::launchd::plist(spec),
        Os::Windows => crate::windows::script(&crate::windows::install_commands(spec, start)),
    })
}

/// Writes the service file and registers it with the service manager (or says how to).
pub fn register(
    layout: &Layout,
    spec: &ServiceSpec,
    start: bool,
    report: &mut Report,
) -> Result<(), InstallError> {
    let text = service_text(layout, spec, start)?;
    let on_disk = layout.on_disk(&layout.service_file);
    files::write_atomic(&on_disk, text.as_bytes(), 0o644)?;
    report.written.push(on_disk);
    if let Some(log) = &layout.log_file
        && let Some(dir) = log.parent()
    {
        std::fs::create_dir_all(layout.on_disk(dir)).map_err(|e| FileError {
            op: "create",
            path: layout.on_disk(dir),
            source: e,
        })?;
    }
    report.run_or_defer(layout, manager::install_steps(layout, spec, start))
}

/// Stops and unregisters the service and removes its file; with `purge`, also the data directory
/// (only if `ours` recognises it) and the configuration file.
pub fn unregister(
    layout: &Layout,
    spec: &ServiceSpec,
    purge: bool,
    ours: impl Fn(&Path) -> bool,
    report: &mut Report,
) -> Result<(), InstallError> {
    let data_dir = layout.on_disk(&spec.data_dir);
    if purge && data_dir.exists() && !ours(&data_dir) {
        return Err(InstallError::NotOurs {
            path: data_dir,
            what: layout.daemon.short(),
        });
    }
    report.run_or_defer(layout, manager::uninstall_steps(layout, spec))?;
    let service_file = layout.on_disk(&layout.service_file);
    if files::remove_file(&service_file)? {
        report.removed.push(service_file);
    }
    if layout.daemon == crate::Daemon::Hub {
        // The kernel keeps the raised limit until the next boot; the file only stops reapplying it.
        let sysctl = layout.on_disk(Path::new(RECV_BUFFER_SYSCTL));
        if files::remove_file(&sysctl)? {
            report.removed.push(sysctl);
        }
    }
    report.run_or_defer(layout, manager::after_uninstall_steps(layout))?;
    remove_shell_docs(layout, layout.daemon.binary(), report)?;
    if purge {
        if files::remove_dir_all(&data_dir)? {
            report.removed.push(data_dir);
        }
        let config = layout.on_disk(&spec.config_file);
        if files::remove_file(&config)? {
            report.removed.push(config);
        }
        if let Some(log) = &layout.log_file {
            let log = layout.on_disk(log);
            if files::remove_file(&log)? {
                report.removed.push(log);
            }
        }
        if layout.os == Os::Linux && layout.scope == Scope::System {
            report.notes.push(format!(
                "the {SERVICE_USER} account is kept (the other daemon may use it): userdel {SERVICE_USER} to remove it"
            ));
        }
    } else {
        report.notes.push(format!(
            "keys, data and configuration kept in {} and {} (uninstall --purge removes them)",
            data_dir.display(),
            layout.on_disk(&spec.config_file).display()
        ));
    }
    Ok(())
}

/// What the manager and the file system say about an installed service.
#[derive(Clone, Debug, Serialize)]
pub struct Installed {
    /// The service file exists.
    pub installed: bool,
    /// Where it is (on disk).
    pub service_file: PathBuf,
    /// The manager's view, when it can be asked.
    pub manager: Option<ManagerState>,
    /// Why the manager was not asked.
    pub manager_note: Option<String>,
}

/// Looks at the service file and asks the manager.
pub fn installed(layout: &Layout) -> Installed {
    let service_file = layout.on_disk(&layout.service_file);
    Installed {
        installed: service_file.exists(),
        service_file,
        manager: manager::query(layout),
        manager_note: manager::unavailable(layout),
    }
}

/// Exit status of `status`: 0 healthy, 1 running but degraded, 3 not running, 4 not installed
/// and not running (the LSB init-script convention that `systemctl status` follows).
pub fn status_code(installed: bool, running: bool, healthy: bool) -> u8 {
    match (installed, running, healthy) {
        (_, true, true) => 0,
        (_, true, false) => 1,
        (true, false, _) => 3,
        (false, false, _) => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Daemon;

    #[test]
    fn rooted_install_writes_files_and_defers_commands() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout {
            root: Some(dir.path().to_path_buf()),
            ..Layout::system(Daemon::Agent, Os::Linux, "")
        };
        let mut report = Report::new(&layout);
        check_privileges(&layout).expect("a root dir needs no privileges");
        let user = service_user(&layout, None, &mut report);
        assert_eq!(user.as_deref(), Some(SERVICE_USER));
        ensure_account(&layout, user.as_deref(), &mut report).expect("account");
        let data = create_data_dir(&layout, &layout.data_dir).expect("data");
        assert!(data.starts_with(dir.path()));
        write_config(
            &layout,
            &layout.config_file,
            "# hi\n",
            user.as_deref(),
            &mut report,
        )
        .expect("config");
        write_config(
            &layout,
            &layout.config_file,
            "# other\n",
            user.as_deref(),
            &mut report,
        )
        .expect("kept");
        let spec = ServiceSpec {
            daemon: Daemon::Agent,
            scope: Scope::System,
            program: "/usr/local/bin/agentd".into(),
            args: vec!["run".into()],
            user,
            data_dir: layout.data_dir.clone(),
            config_file: layout.config_file.clone(),
            log_file: None,
            low_port: false,
        };
        register(&layout, &spec, true, &mut report).expect("register");
        assert!(
            dir.path()
                .join("etc/systemd/system/flotilla-agent.service")
                .is_file()
        );
        assert!(dir.path().join("etc/sysusers.d/flotilla.conf").is_file());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/flotilla/agent.toml")).expect("cfg"),
            "# hi\n",
            "an existing config is never overwritten"
        );
        assert!(
            report
                .pending
                .contains(&"systemctl enable flotilla-agent".to_string())
        );
        assert!(
            report
                .pending_reason
                .as_deref()
                .unwrap_or("")
                .contains("--root")
        );
        assert!(installed(&layout).installed);

        std::fs::write(data.join("unrelated"), "x").expect("write");
        let err = unregister(&layout, &spec, true, |_| false, &mut Report::new(&layout))
            .expect_err("not ours");
        assert_eq!(err.exit_code(), 2);
        assert!(data.exists(), "nothing removed after a refusal");
        let mut down = Report::new(&layout);
        unregister(&layout, &spec, true, |_| true, &mut down).expect("purge");
        assert!(!data.exists() && !installed(&layout).installed);
        assert!(!dir.path().join("etc/flotilla/agent.toml").exists());
    }

    #[test]
    fn system_hub_install_raises_the_receive_buffer_limit_and_uninstall_drops_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout {
            root: Some(dir.path().to_path_buf()),
            ..Layout::system(Daemon::Hub, Os::Linux, "")
        };
        let mut report = Report::new(&layout);
        // More than any kernel's limit, so the drop-in is always due.
        let wanted = usize::MAX / 2;
        raise_recv_buffer_limit(&layout, wanted, &mut report).expect("sysctl");
        let file = dir.path().join("etc/sysctl.d/60-flotilla-hub.conf");
        let text = std::fs::read_to_string(&file).expect("drop-in written");
        assert!(
            text.contains(&format!("net.core.rmem_max = {wanted}\n")),
            "{text}"
        );
        assert!(report.written.contains(&file));
        assert_eq!(
            report.pending,
            vec!["sysctl -q -p /etc/sysctl.d/60-flotilla-hub.conf".to_string()],
            "applying it is left to the admin under --root"
        );
        let mut again = Report::new(&layout);
        raise_recv_buffer_limit(&layout, wanted, &mut again).expect("sysctl again");
        assert!(again.kept.contains(&file) && again.written.is_empty());

        let agent = Layout {
            root: Some(dir.path().to_path_buf()),
            ..Layout::system(Daemon::Agent, Os::Linux, "")
        };
        let mut none = Report::new(&agent);
        raise_recv_buffer_limit(&agent, wanted, &mut none).expect("agent");
        assert!(
            none.written.is_empty() && none.pending.is_empty(),
            "agents dial out: no drop-in"
        );

        let spec = ServiceSpec {
            daemon: Daemon::Hub,
            scope: Scope::System,
            program: "/usr/local/bin/hubd".into(),
            args: vec!["run".into()],
            user: None,
            data_dir: layout.data_dir.clone(),
            config_file: layout.config_file.clone(),
            log_file: None,
            low_port: false,
        };
        let mut down = Report::new(&layout);
        unregister(&layout, &spec, false, |_| false, &mut down).expect("uninstall");
        assert!(!file.exists() && down.removed.contains(&file));
    }

    #[test]
    fn shell_docs_go_only_into_folders_the_system_has_and_leave_with_uninstall() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout {
            root: Some(dir.path().to_path_buf()),
            ..Layout::system(Daemon::Hub, Os::Linux, "")
        };
        for d in [
            "usr/share/bash-completion/completions",
            "usr/share/man/man1",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let cmd = clap::Command::new("hubd").subcommand(clap::Command::new("run"));
        let docs = ShellDocs::of(&cmd).expect("docs");
        let mut report = Report::new(&layout);
        install_shell_docs(&layout, &docs, &mut report).expect("install");
        let bash = dir
            .path()
            .join("usr/share/bash-completion/completions/hubd");
        let man = dir.path().join("usr/share/man/man1/hubd-run.1");
        assert!(report.written.contains(&bash) && report.written.contains(&man));
        assert!(
            !dir.path().join("usr/share/zsh").exists(),
            "no zsh folder made"
        );
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("/usr/share/zsh/vendor-completions")),
            "{:?}",
            report.notes
        );
        let user = Layout {
            root: Some(dir.path().to_path_buf()),
            scope: Scope::User,
            ..Layout::system(Daemon::Hub, Os::Linux, "")
        };
        let mut nothing = Report::new(&user);
        install_shell_docs(&user, &docs, &mut nothing).expect("user");
        assert!(
            nothing.written.is_empty(),
            "a user install leaves /usr alone"
        );

        let mut down = Report::new(&layout);
        remove_shell_docs(&layout, "hubd", &mut down).expect("remove");
        assert!(!bash.exists() && !man.exists());
        assert!(down.removed.contains(&man));
    }

    #[test]
    fn status_codes_follow_lsb() {
        assert_eq!(status_code(true, true, true), 0);
        assert_eq!(status_code(true, true, false), 1);
        assert_eq!(status_code(true, false, false), 3);
        assert_eq!(status_code(false, false, false), 4);
        assert_eq!(
            status_code(false, true, true),
            0,
            "a hand-started daemon is healthy too"
        );
    }
}
