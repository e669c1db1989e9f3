//! The service manager's side of installing: the commands that register, start, stop and query a
//! service (`systemctl`, `launchctl`, `sc.exe`), and whether they can run here at all.
//!
//! Commands are built as data first, so an installer that cannot run them (no systemd in a
//! container or CI, or `--root DIR`) prints exactly what it would have run.

use crate::{Layout, Os, Scope, ServiceSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One command an installer runs or asks the admin to run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// A failure does not stop the sequence (stopping a service that is not loaded, for example).
    pub may_fail: bool,
}

impl Step {
    pub(crate) fn new(argv: &[&str]) -> Self {
        Self {
            argv: argv.iter().map(|a| (*a).to_string()).collect(),
            may_fail: false,
        }
    }

    pub(crate) fn may_fail(mut self) -> Self {
        self.may_fail = true;
        self
    }

    /// The command as a shell would take it.
    pub fn shell(&self) -> String {
        self.argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// It could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status in words.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// Runs `steps` in order, stopping at the first failure that matters.
pub fn run(steps: &[Step]) -> Result<(), StepError> {
    for step in steps {
        let Some((program, args)) = step.argv.split_first() else {
            continue;
        };
        let output = Command::new(program)
            .args(args)
            .output()
            .map_err(|source| StepError::Spawn {
                command: step.shell(),
                source,
            })?;
        if !output.status.success() && !step.may_fail {
            return Err(StepError::Failed {
                command: step.shell(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Finds `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn systemctl(scope: Scope) -> Vec<&'static str> {
    match scope {
        Scope::System => vec!["systemctl"],
        Scope::User => vec!["systemctl", "--user"],
    }
}

fn with(prefix: &[&str], rest: &[&str]) -> Step {
    let all: Vec<&str> = prefix.iter().chain(rest).copied().collect();
    Step::new(&all)
}

fn launchd_domain(scope: Scope) -> String {
    match scope {
        Scope::System => "system".into(),
        Scope::User => format!("gui/{}", current_uid()),
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

/// Why the service manager cannot be used here, or `None` when it can.
pub fn unavailable(layout: &Layout) -> Option<String> {
    if let Some(root) = &layout.root {
        return Some(format!(
            "--root {}: files only, no service manager is called",
            root.display()
        ));
    }
    match layout.os {
        Os::Linux => {
            if which("systemctl").is_none() {
                return Some("systemctl is not installed".into());
            }
            // What sd_booted() checks: systemd is the running init.
            if !Path::new("/run/systemd/system").is_dir() {
                return Some(
                    "systemd is not running on this machine (no /run/systemd/system)".into(),
                );
            }
            if layout.scope == Scope::User {
                let ok = Command::new("systemctl")
                    .args(["--user", "show-environment"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    return Some("no systemd user manager for this session (is XDG_RUNTIME_DIR set? try `loginctl enable-linger`)".into());
                }
            }
            None
        }
        Os::MacOs => which("launchctl")
            .is_none()
            .then(|| "launchctl is not available".into()),
        Os::Windows => None,
    }
}

/// Commands that create the service account when the installer runs as root on Linux.
pub fn account_steps(layout: &Layout, user: &str) -> Vec<Step> {
    match (&layout.sysusers_file, which("systemd-sysusers")) {
        (Some(file), Some(_)) => vec![Step::new(&[
            "systemd-sysusers",
            &file.display().to_string(),
        ])],
        _ => vec![Step::new(&[
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            "/var/lib/flotilla",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ])],
    }
}

/// Commands that register (and with `start`, start or restart) the service after its file is
/// written.
pub fn install_steps(layout: &Layout, spec: &ServiceSpec, start: bool) -> Vec<Step> {
    let unit = layout.daemon.service_name();
    match layout.os {
        Os::Linux => {
            let sc = systemctl(layout.scope);
            let mut steps = vec![with(&sc, &["daemon-reload"]), with(&sc, &["enable", unit])];
            if start {
                // restart, not start: a re-install (upgrade) must pick up the new binary.
                steps.push(with(&sc, &["restart", unit]));
            }
            steps
        }
        Os::MacOs => {
            let domain = launchd_domain(layout.scope);
            let target = format!("{domain}/{}", layout.daemon.launchd_label());
            let plist = layout.service_file.display().to_string();
            let mut steps = vec![
                Step::new(&["launchctl", "bootout", &target]).may_fail(),
                Step::new(&["launchctl", "enable", &target]),
                Step::new(&["launchctl", "bootstrap", &domain, &plist]),
            ];
            if start {
                steps.push(Step::new(&["launchctl", "kickstart", "-k", &target]));
            }
            steps
        }
        Os::Windows => crate::windows::install_commands(spec, start)
            .into_iter()
            .map(|argv| Step {
                argv,
                may_fail: false,
            })
            .collect(),
    }
}

/// Commands that stop and unregister the service, before its file is removed.
pub fn uninstall_steps(layout: &Layout, spec: &ServiceSpec) -> Vec<Step> {
    let unit = layout.daemon.service_name();
    match layout.os {
        Os::Linux => {
            let sc = systemctl(layout.scope);
            vec![with(&sc, &["disable", "--now", unit]).may_fail()]
        }
        Os::MacOs => {
            let target = format!(
                "{}/{}",
                launchd_domain(layout.scope),
                layout.daemon.launchd_label()
            );
            vec![Step::new(&["launchctl", "bootout", &target]).may_fail()]
        }
        Os::Windows => crate::windows::uninstall_commands(spec)
            .into_iter()
            .map(|argv| Step {
                argv,
                may_fail: true,
            })
            .collect(),
    }
}

/// Commands after the service file is gone: the manager forgets it.
pub fn after_uninstall_steps(layout: &Layout) -> Vec<Step> {
    match layout.os {
        Os::Linux => {
            let sc = systemctl(layout.scope);
            vec![
                with(&sc, &["daemon-reload"]),
                with(&sc, &["reset-failed", layout.daemon.service_name()]).may_fail(),
            ]
        }
        Os::MacOs | Os::Windows => Vec::new(),
    }
}

/// What the service manager says about a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ManagerState {
    /// `active`, `inactive`, `failed`, `activating`… (systemd's words; launchd's mapped to them).
    pub active: Option<String>,
    /// `enabled`, `disabled`… where the manager has the notion.
    pub enabled: Option<String>,
    /// Main process id while running.
    pub main_pid: Option<u32>,
}

impl ManagerState {
    /// Whether the service runs now.
    pub fn running(&self) -> bool {
        matches!(
            self.active.as_deref(),
            Some("active" | "reloading" | "deactivating")
        )
    }
}

/// Parses `systemctl show` output (`Key=Value` lines).
pub fn parse_systemctl_show(text: &str) -> ManagerState {
    let map: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    if map.get("LoadState") == Some(&"not-found") {
        return ManagerState::default();
    }
    ManagerState {
        active: map.get("ActiveState").map(|s| (*s).to_string()),
        enabled: map
            .get("UnitFileState")
            .filter(|s| !s.is_empty())
            .map(|s| (*s).to_string()),
        main_pid: map
            .get("MainPID")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p != 0),
    }
}

/// Parses `launchctl print` output (`state = running`, `pid = 123`).
pub fn parse_launchctl_print(text: &str) -> ManagerState {
    let mut state = ManagerState {
        enabled: Some("enabled".into()),
        ..ManagerState::default()
    };
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(" = ") else {
            continue;
        };
        match k {
            "state" if state.active.is_none() => {
                state.active = Some(if v == "running" { "active" } else { "inactive" }.into());
            }
            "pid" if state.main_pid.is_none() => state.main_pid = v.parse().ok(),
            _ => {}
        }
    }
    state
}

/// Asks the service manager; `None` when it cannot be asked (see [`unavailable`]).
pub fn query(layout: &Layout) -> Option<ManagerState> {
    if unavailable(layout).is_some() {
        return None;
    }
    match layout.os {
        Os::Linux => {
            let mut cmd = Command::new("systemctl");
            if layout.scope == Scope::User {
                cmd.arg("--user");
            }
            let out = cmd
                .args([
                    "show",
                    layout.daemon.service_name(),
                    "-p",
                    "LoadState",
                    "-p",
                    "ActiveState",
                    "-p",
                    "UnitFileState",
                    "-p",
                    "MainPID",
                ])
                .output()
                .ok()?;
            Some(parse_systemctl_show(&String::from_utf8_lossy(&out.stdout)))
        }
        Os::MacOs => {
            let target = format!(
                "{}/{}",
                launchd_domain(layout.scope),
                layout.daemon.launchd_label()
            );
            let out = Command::new("launchctl")
                .args(["print", &target])
                .output()
                .ok()?;
            if !out.status.success() {
                return Some(ManagerState::default());
            }
            Some(parse_launchctl_print(&String::from_utf8_lossy(&out.stdout)))
        }
        Os::Windows => {
            let out = Command::new("sc.exe")
                .args(["query", layout.daemon.windows_name()])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let active = if !out.status.success() {
                None
            } else if text.contains("RUNNING") {
                Some("active".into())
            } else {
                Some("inactive".into())
            };
            Some(ManagerState {
                active,
                ..ManagerState::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Daemon;

    fn spec(layout: &Layout) -> ServiceSpec {
        ServiceSpec {
            daemon: layout.daemon,
            scope: layout.scope,
            program: "/usr/local/bin/hubd".into(),
            args: vec!["run".into()],
            user: None,
            data_dir: layout.data_dir.clone(),
            config_file: layout.config_file.clone(),
            log_file: layout.log_file.clone(),
            low_port: false,
        }
    }

    #[test]
    fn systemd_steps_reload_enable_and_restart() {
        let layout = Layout::system(Daemon::Hub, Os::Linux, "");
        let steps: Vec<String> = install_steps(&layout, &spec(&layout), true)
            .iter()
            .map(Step::shell)
            .collect();
        assert_eq!(
            steps,
            [
                "systemctl daemon-reload",
                "systemctl enable flotilla-hub",
                "systemctl restart flotilla-hub"
            ]
        );
        let down = uninstall_steps(&layout, &spec(&layout));
        assert_eq!(down[0].shell(), "systemctl disable --now flotilla-hub");
        assert!(down[0].may_fail, "uninstalling a stopped service is fine");
    }

    #[test]
    fn launchd_steps_bootstrap_the_plist() {
        let layout = Layout::system(Daemon::Agent, Os::MacOs, "");
        let steps: Vec<String> = install_steps(&layout, &spec(&layout), true)
            .iter()
            .map(Step::shell)
            .collect();
        assert!(steps.contains(
            &"launchctl bootstrap system /Library/LaunchDaemons/dev.flotilla.agent.plist".into()
        ));
        assert_eq!(
            steps.last().map(String::as_str),
            Some("launchctl kickstart -k system/dev.flotilla.agent")
        );
    }

    #[test]
    fn rooted_layouts_never_call_the_manager() {
        let layout = Layout {
            root: Some("/tmp/x".into()),
            ..Layout::system(Daemon::Agent, Os::Linux, "")
        };
        assert!(unavailable(&layout).expect("files only").contains("--root"));
        assert_eq!(query(&layout), None);
    }

    #[test]
    fn manager_output_parses() {
        let s = parse_systemctl_show(
            "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nMainPID=42\n",
        );
        assert!(s.running());
        assert_eq!(s.main_pid, Some(42));
        assert_eq!(s.enabled.as_deref(), Some("enabled"));
        let gone = parse_systemctl_show("LoadState=not-found\nActiveState=inactive\nMainPID=0\n");
        assert_eq!(gone, ManagerState::default());
        let l = parse_launchctl_print(
            "system/dev.flotilla.agent = {\n\tstate = running\n\tpid = 77\n}",
        );
        assert!(l.running());
        assert_eq!(l.main_pid, Some(77));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("/usr/bin/x"), "/usr/bin/x");
    }
}
