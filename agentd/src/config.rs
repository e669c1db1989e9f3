//! Agent configuration: `agent.toml` in the data directory (optional), flags override.

use crate::AgentError;
pub use flotilla_wire::workloads::Access;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the optional config file in the data directory.
pub const CONFIG_FILE: &str = "agent.toml";

/// The agent's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Metrics interval in milliseconds when nobody watches; 0 means "as the hub says".
    pub metrics_interval_ms: u32,
    /// What the hub may run here. The agent has the last word: the hub cannot raise it.
    pub exec: ExecMode,
    /// With `exec = "allowlist"`: exact absolute paths of programs that may run (a bare name also
    /// matches the one entry with that file name).
    pub allowlist: Vec<PathBuf>,
    /// With `exec = "allowlist"`: a directory whose scripts may run by name (or a relative path
    /// without `..`); symlinks leading out of it are refused.
    pub scripts_dir: Option<PathBuf>,
    /// Working directory of commands; `/` when unset.
    pub workdir: Option<PathBuf>,
    /// After SIGTERM on cancel or timeout, milliseconds before SIGKILL.
    pub kill_grace_ms: u32,
    /// Account commands run as instead of agentd's own (Unix; agentd must run as root to switch).
    pub run_as: Option<String>,
    /// The folder shared with the fleet; a relative path is taken from the data directory.
    /// Default: `shared` in the data directory.
    pub shared_dir: Option<PathBuf>,
    /// Refuse every transfer into the shared folder (it can still be listed and read).
    pub read_only: bool,
    /// Join token to enrol with while the data directory holds no identity (`agentd install`,
    /// `enroll` and `run` use it); unused once enrolled. Prints as `***`.
    pub token: Option<deploy::SecretString>,
    /// Containers: `off` reports nothing, `read` reports inventory, stats and logs, `manage` also
    /// lets the hub start, stop, restart, kill and remove them. Default `read`: seeing what runs
    /// is why an agent is installed; acting on it is opted into.
    pub containers: Access,
    /// The container engine's API socket; when unset the usual places are probed
    /// ([`crate::workloads::DEFAULT_ENGINE_SOCKETS`], then Podman's rootless socket under
    /// `$XDG_RUNTIME_DIR` for a non-root agent).
    pub containers_socket: Option<PathBuf>,
    /// Compose projects: `on` lets the hub run compose actions on the folders of `compose_dir`.
    pub compose: ComposeMode,
    /// The folder holding one folder per compose project.
    pub compose_dir: Option<PathBuf>,
    /// systemd units: `off`, `read` (inventory, stats, journal) or `manage` (actions too).
    pub services: Access,
    /// Unit globs `services = "manage"` is limited to (`nginx*.service`); empty means every unit.
    pub services_allow: Vec<String>,
    /// Interactive shells (`flotilla shell`): `off` (the default: a shell is everything exec
    /// allows and more, opted into per agent) or `on`.
    pub shell: ShellMode,
    /// Account whose login shell a session runs. Unset: agentd's own account, unless that is
    /// root (root shells only when `shell_user = "root"` says so).
    pub shell_user: Option<String>,
    /// A session with neither input nor output for this long is ended (`90s`, `30m`; `0`: never).
    pub shell_idle_timeout: String,
    /// A session is ended after this long whatever happens (`12h`; `0`: never).
    pub shell_max_session: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            metrics_interval_ms: 0,
            exec: ExecMode::Off,
            allowlist: Vec::new(),
            scripts_dir: None,
            workdir: None,
            kill_grace_ms: DEFAULT_KILL_GRACE_MS,
            run_as: None,
            shared_dir: None,
            read_only: false,
            token: None,
            containers: Access::Read,
            containers_socket: None,
            compose: ComposeMode::Off,
            compose_dir: None,
            services: Access::Read,
            services_allow: Vec::new(),
            shell: ShellMode::Off,
            shell_user: None,
            shell_idle_timeout: DEFAULT_SHELL_IDLE_TIMEOUT.into(),
            shell_max_session: DEFAULT_SHELL_MAX_SESSION.into(),
        }
    }
}

/// Default `shell_idle_timeout`: a forgotten terminal on a production machine should not stay
/// open all night, and half an hour outlasts any pause for thought.
pub const DEFAULT_SHELL_IDLE_TIMEOUT: &str = "30m";
/// Default `shell_max_session`: a working day; longer work belongs in tmux on the machine.
pub const DEFAULT_SHELL_MAX_SESSION: &str = "12h";

/// Whether the hub may open interactive shells here (`shell` in agent.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellMode {
    /// Refused, naming the policy.
    #[default]
    Off,
    /// Allowed for operators and admins.
    On,
}

/// Default SIGTERM-to-SIGKILL grace: long enough for a service to flush and exit, short enough that
/// Ctrl-C feels immediate when a command ignores SIGTERM.
pub const DEFAULT_KILL_GRACE_MS: u32 = 5000;

/// Exec policy of an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// Nothing runs except built-in checks (the default on an installed agent).
    #[default]
    Off,
    /// Only `allowlist` programs and `scripts_dir` scripts run; no shell.
    Allowlist,
    /// Anything runs, shell included, as agentd's user.
    Any,
}

impl ExecMode {
    /// The word used in agent.toml and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Allowlist => "allowlist",
            Self::Any => "any",
        }
    }

    /// Parses [`ExecMode::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Off, Self::Allowlist, Self::Any]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Whether compose actions may run (`compose` in agent.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeMode {
    /// Refused (the default: compose runs programs with the engine's full power).
    #[default]
    Off,
    /// Runs on the project folders of `compose_dir`.
    On,
}

impl AgentConfig {
    /// This configuration with another metrics interval (milliseconds; 0: as the hub says).
    pub fn with_metrics_interval(mut self, ms: u32) -> Self {
        self.metrics_interval_ms = ms;
        self
    }

    /// Reads `agent.toml` from `data_dir`, or the defaults when there is none.
    pub fn load(data_dir: &Path) -> Result<Self, AgentError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(AgentError::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                });
            }
        };
        let cfg: Self = toml::from_str(&text)
            .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values.
    pub fn validate(&self) -> Result<(), AgentError> {
        if self.metrics_interval_ms != 0 && self.metrics_interval_ms < 1000 {
            return Err(AgentError::Config(format!(
                "metrics_interval_ms = {} is below the 1000 ms minimum",
                self.metrics_interval_ms
            )));
        }
        let bad = |m: String| Err(AgentError::Config(m));
        for entry in &self.allowlist {
            if !entry.is_absolute() {
                return bad(format!(
                    "allowlist entry {} must be an absolute path",
                    entry.display()
                ));
            }
            if entry
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return bad(format!(
                    "allowlist entry {} must not contain '..'",
                    entry.display()
                ));
            }
        }
        for glob in &self.services_allow {
            if glob.contains('/') || glob.chars().any(char::is_control) {
                return bad(format!(
                    "services_allow entry {glob:?} must be a unit name glob such as \"nginx*.service\""
                ));
            }
        }
        for (key, dir) in [
            ("scripts_dir", &self.scripts_dir),
            ("workdir", &self.workdir),
        ] {
            if let Some(dir) = dir
                && !dir.is_absolute()
            {
                return bad(format!(
                    "{key} = {} must be an absolute path",
                    dir.display()
                ));
            }
        }
        if self.exec == ExecMode::Allowlist
            && self.allowlist.is_empty()
            && self.scripts_dir.is_none()
        {
            return bad(
                "exec = \"allowlist\" with an empty allowlist and no scripts_dir would refuse everything: add entries, or set exec = \"off\"".into(),
            );
        }
        if self.run_as.as_ref().is_some_and(|u| u.is_empty()) {
            return bad(
                "run_as is empty: name an account, or leave it out to run commands as agentd's own"
                    .into(),
            );
        }
        if !(100..=600_000).contains(&self.kill_grace_ms) {
            return bad(format!(
                "kill_grace_ms = {} must be between 100 and 600000",
                self.kill_grace_ms
            ));
        }
        if self
            .shared_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(AgentError::Config(
                "shared_dir is empty: give a folder, or leave it out for `shared` in the data directory"
                    .into(),
            ));
        }
        for (key, path) in [
            ("containers_socket", &self.containers_socket),
            ("compose_dir", &self.compose_dir),
        ] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return bad(format!(
                    "{key} = {} must be an absolute path",
                    path.display()
                ));
            }
        }
        if self.compose == ComposeMode::On && self.compose_dir.is_none() {
            return bad(
                "compose = \"on\" needs compose_dir, the folder holding one folder per project"
                    .into(),
            );
        }
        if self.compose == ComposeMode::On && self.containers == Access::Off {
            return bad(
                "compose = \"on\" with containers = \"off\": compose acts on containers; set containers = \"read\" or \"manage\", or compose = \"off\"".into(),
            );
        }
        if self.shell_user.as_ref().is_some_and(|u| u.is_empty()) {
            return bad(
                "shell_user is empty: name an account, or leave it out for agentd's own".into(),
            );
        }
        for (key, text) in [
            ("shell_idle_timeout", &self.shell_idle_timeout),
            ("shell_max_session", &self.shell_max_session),
        ] {
            match flotilla_wire::text::parse_duration(text) {
                Ok(d) if d.is_zero() || d.as_millis() >= 1000 => {}
                Ok(_) => {
                    return bad(format!(
                        "{key} = {text:?} is under the 1 s minimum (use 0 for no limit)"
                    ));
                }
                Err(e) => return bad(format!("{key}: {e}")),
            }
        }
        if let Some(i) = self.services_allow.iter().position(String::is_empty) {
            return bad(format!(
                "services_allow entry {i} is empty: give a unit name or glob"
            ));
        }
        Ok(())
    }

    /// The shared folder for an agent whose data directory is `data_dir`.
    pub fn shared_dir(&self, data_dir: &Path) -> PathBuf {
        match &self.shared_dir {
            Some(d) => data_dir.join(d),
            None => data_dir.join(DEFAULT_SHARED_DIR),
        }
    }
}

/// Default shared folder, inside the data directory: every agent shares something out of the box,
/// and nothing outside its own directory unless configured.
pub const DEFAULT_SHARED_DIR: &str = "shared";

/// Where an agent keeps its identity and state.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    /// Data directory (identity, config).
    pub data_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn exec_is_off_unless_configured() {
        let cfg = parse("").expect("empty");
        assert_eq!(cfg.exec, ExecMode::Off);
        assert_eq!(cfg.kill_grace_ms, DEFAULT_KILL_GRACE_MS);
        let cfg = parse(
            "exec = \"allowlist\"\nallowlist = [\"/usr/bin/uptime\"]\nscripts_dir = \"/opt/flotilla/scripts\"\nworkdir = \"/tmp\"\n",
        )
        .expect("allowlist");
        assert_eq!(cfg.exec, ExecMode::Allowlist);
        assert_eq!(cfg.allowlist, [PathBuf::from("/usr/bin/uptime")]);
        assert_eq!(parse("exec = \"any\"").expect("any").exec, ExecMode::Any);
    }

    #[test]
    fn example_configs_in_docs_parse() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/exec.md"))
                .expect("docs/exec.md");
        let mut found = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let cfg = parse(text).unwrap_or_else(|e| panic!("docs/exec.md example: {e}"));
            assert_eq!(cfg.exec, ExecMode::Allowlist);
            found += 1;
        }
        assert!(found > 0, "no agent.toml example found in docs/exec.md");
    }

    #[test]
    fn workload_examples_in_docs_parse() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workloads.md"),
        )
        .expect("docs/workloads.md");
        let mut found = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            parse(text).unwrap_or_else(|e| panic!("docs/workloads.md example: {e}"));
            found += 1;
        }
        assert!(
            found > 0,
            "no agent.toml example found in docs/workloads.md"
        );
    }

    #[test]
    fn shell_examples_in_docs_parse_and_shell_settings_are_checked() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/shell.md"))
                .expect("docs/shell.md");
        let mut found = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let cfg = parse(text).unwrap_or_else(|e| panic!("docs/shell.md example: {e}"));
            assert_eq!(cfg.shell, ShellMode::On);
            found += 1;
        }
        assert!(found > 0, "no agent.toml example found in docs/shell.md");
        assert_eq!(
            AgentConfig::default().shell,
            ShellMode::Off,
            "shells are opted into"
        );
        let err = |t: &str| parse(t).expect_err(t);
        assert_eq!(
            err("shell_idle_timeout = \"500ms\""),
            "config: shell_idle_timeout = \"500ms\" is under the 1 s minimum (use 0 for no limit)"
        );
        assert_eq!(
            err("shell_max_session = \"12x\""),
            "config: shell_max_session: duration \"12x\": unknown unit \"x\" (use ms, s, m, h or d)"
        );
        assert_eq!(
            err("shell_user = \"\""),
            "config: shell_user is empty: name an account, or leave it out for agentd's own"
        );
        assert!(err("shell = \"yes\"").contains("unknown variant `yes`"));
        let cfg = parse("shell = \"on\"\nshell_idle_timeout = \"0\"").expect("no limit");
        assert_eq!(cfg.shell_idle_timeout, "0");
    }

    #[test]
    fn bad_workload_settings_are_named() {
        let err = |t: &str| parse(t).expect_err(t);
        assert_eq!(
            err("compose = \"on\""),
            "config: compose = \"on\" needs compose_dir, the folder holding one folder per project"
        );
        assert_eq!(
            err("containers_socket = \"docker.sock\""),
            "config: containers_socket = docker.sock must be an absolute path"
        );
        assert!(err("containers = \"write\"").contains("unknown variant `write`"));
        assert!(
            err("containers = \"off\"\ncompose = \"on\"\ncompose_dir = \"/srv/c\"")
                .contains("compose acts on containers")
        );
        let cfg = parse("").expect("defaults");
        assert_eq!(cfg.containers, Access::Read);
        assert_eq!(cfg.compose, ComposeMode::Off);
    }

    #[test]
    fn bad_exec_settings_are_named() {
        let err = |t: &str| parse(t).expect_err(t);
        assert!(err("exec = \"all\"").contains("unknown variant `all`"));
        assert!(err("exec_mode = \"any\"").contains("unknown field `exec_mode`"));
        assert_eq!(
            err("exec = \"allowlist\"\nallowlist = [\"uptime\"]"),
            "config: allowlist entry uptime must be an absolute path"
        );
        assert_eq!(
            err("exec = \"allowlist\"\nallowlist = [\"/usr/bin/../bin/sh\"]"),
            "config: allowlist entry /usr/bin/../bin/sh must not contain '..'"
        );
        assert!(err("exec = \"allowlist\"").contains("would refuse everything"));
        assert_eq!(
            err("workdir = \"tmp\""),
            "config: workdir = tmp must be an absolute path"
        );
        assert!(err("kill_grace_ms = 5").contains("between 100 and 600000"));
    }

    #[test]
    fn shared_dir_defaults_inside_the_data_dir_and_unknown_fields_fail() {
        let cfg: AgentConfig = toml::from_str("read_only = true\n").expect("parse");
        assert!(cfg.read_only);
        assert_eq!(
            cfg.shared_dir(Path::new("/var/lib/agent")),
            Path::new("/var/lib/agent/shared")
        );
        let cfg: AgentConfig = toml::from_str("shared_dir = \"/srv/share\"\n").expect("parse");
        assert_eq!(
            cfg.shared_dir(Path::new("/var/lib/agent")),
            Path::new("/srv/share")
        );
        let err = toml::from_str::<AgentConfig>("shared_folder = \"x\"\n").expect_err("unknown");
        assert!(err.to_string().contains("shared_folder"), "{err}");
        let empty = AgentConfig {
            shared_dir: Some(PathBuf::new()),
            ..AgentConfig::default()
        };
        assert!(
            empty
                .validate()
                .expect_err("empty")
                .to_string()
                .contains("shared_dir is empty")
        );
    }
}
