//! Where an installed daemon keeps its files, system-wide or per user, and how `--root DIR` puts
//! all of them under another directory (as a package build's `DESTDIR` does).
//!
//! System layout on Linux and macOS: configuration in `/etc/flotilla/{agent,hub}.toml`, data in
//! `/var/lib/flotilla/{agent,hub}`, logs to journald (Linux) or `/var/log/flotilla` (macOS). User
//! layout: the `directories` paths (`~/.config/flotilla`, `~/.local/share/flotilla/…` on Linux).

use std::path::{Component, Path, PathBuf};

/// Unprivileged account that system services run as on Linux: one for both daemons, so a hub and
/// an agent on the same machine share nothing but the account's lack of rights.
pub const SERVICE_USER: &str = "flotilla";

/// System-wide configuration directory on Unix.
const SYSTEM_CONFIG_DIR: &str = "/etc/flotilla";
/// Parent of the system data directories on Unix.
const SYSTEM_DATA_DIR: &str = "/var/lib/flotilla";

/// Which Flotilla daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// `agentd`.
    Agent,
    /// `hubd`.
    Hub,
}

impl Daemon {
    /// `agent` or `hub`: the data directory's and config file's name.
    pub fn short(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Hub => "hub",
        }
    }

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Agent => "agentd",
            Self::Hub => "hubd",
        }
    }

    /// systemd unit name without `.service`.
    pub fn service_name(self) -> &'static str {
        match self {
            Self::Agent => "flotilla-agent",
            Self::Hub => "flotilla-hub",
        }
    }

    /// launchd label (reverse DNS, like every launchd job).
    pub fn launchd_label(self) -> &'static str {
        match self {
            Self::Agent => "dev.flotilla.agent",
            Self::Hub => "dev.flotilla.hub",
        }
    }

    /// Windows service name (no spaces: it is typed in `sc.exe` commands).
    pub fn windows_name(self) -> &'static str {
        match self {
            Self::Agent => "FlotillaAgent",
            Self::Hub => "FlotillaHub",
        }
    }

    /// Human name for descriptions.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Agent => "Flotilla agent",
            Self::Hub => "Flotilla hub",
        }
    }

    /// `agent.toml` or `hub.toml`.
    pub fn config_file_name(self) -> &'static str {
        match self {
            Self::Agent => "agent.toml",
            Self::Hub => "hub.toml",
        }
    }

    /// Prefix of the environment variables that override configuration keys: one per daemon, so a
    /// typo under it can be refused without tripping on the other daemon's variables.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Self::Agent => "FLOTILLA_AGENT_",
            Self::Hub => "FLOTILLA_HUB_",
        }
    }
}

/// System-wide or for the invoking user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Starts at boot, runs as a dedicated account.
    System,
    /// Starts when the user's service manager does (login, or boot with lingering).
    User,
}

impl Scope {
    /// `system` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
        }
    }
}

/// Operating system family, for which service manager and paths apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    /// systemd.
    Linux,
    /// launchd.
    MacOs,
    /// The service control manager.
    Windows,
}

impl Os {
    /// The platform this binary was built for (other Unixes use the Linux layout).
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Self::MacOs
        } else if cfg!(windows) {
            Self::Windows
        } else {
            Self::Linux
        }
    }
}

/// Why no layout could be worked out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// User scope needs a home directory and none was found.
    #[error("no home directory for the user layout: pass --data-dir, or install with --system")]
    NoHome,
    /// Windows services are system-wide.
    #[error("--user services are not supported on Windows: install with --system")]
    UserScopeUnsupported,
}

/// Every path an installed daemon uses, as the running service sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Which daemon.
    pub daemon: Daemon,
    /// System or user.
    pub scope: Scope,
    /// Which service manager and path conventions.
    pub os: Os,
    /// With `--root DIR`: everything is written under DIR and no service manager is called.
    pub root: Option<PathBuf>,
    /// Directory of the configuration file.
    pub config_dir: PathBuf,
    /// `agent.toml` or `hub.toml`.
    pub config_file: PathBuf,
    /// Keys, certificates, database, status file (0700).
    pub data_dir: PathBuf,
    /// The unit file, plist, or (Windows) a record of the `sc.exe` registration.
    pub service_file: PathBuf,
    /// Where stderr goes when the service manager keeps no journal (launchd).
    pub log_file: Option<PathBuf>,
    /// systemd-sysusers entry creating [`SERVICE_USER`] (Linux system scope).
    pub sysusers_file: Option<PathBuf>,
}

impl Layout {
    /// The system-wide layout of `daemon` on `os`. `program_data` is Windows' `%ProgramData%`.
    pub fn system(daemon: Daemon, os: Os, program_data: &str) -> Self {
        let short = daemon.short();
        match os {
            Os::Linux | Os::MacOs => {
                let config_dir = PathBuf::from(SYSTEM_CONFIG_DIR);
                let (service_file, log_file, sysusers_file) = if os == Os::Linux {
                    (
                        PathBuf::from(format!(
                            "/etc/systemd/system/{}.service",
                            daemon.service_name()
                        )),
                        None,
                        Some(PathBuf::from("/etc/sysusers.d/flotilla.conf")),
                    )
                } else {
                    (
                        PathBuf::from(format!(
                            "/Library/LaunchDaemons/{}.plist",
                            daemon.launchd_label()
                        )),
                        Some(PathBuf::from(format!("/var/log/flotilla/{short}.log"))),
                        None,
                    )
                };
                Self {
                    daemon,
                    scope: Scope::System,
                    os,
                    root: None,
                    config_file: config_dir.join(daemon.config_file_name()),
                    config_dir,
                    data_dir: Path::new(SYSTEM_DATA_DIR).join(short),
                    service_file,
                    log_file,
                    sysusers_file,
                }
            }
            Os::Windows => {
                // Windows paths are built as text: this code also runs (in tests) on Unix, where
                // `Path::join` would put a `/` in them.
                let base = format!(r"{}\Flotilla", program_data.trim_end_matches('\\'));
                Self {
                    daemon,
                    scope: Scope::System,
                    os,
                    root: None,
                    config_dir: PathBuf::from(&base),
                    config_file: PathBuf::from(format!(r"{base}\{}", daemon.config_file_name())),
                    data_dir: PathBuf::from(format!(r"{base}\{short}")),
                    service_file: PathBuf::from(format!(r"{base}\{short}-service.cmd")),
                    log_file: None,
                    sysusers_file: None,
                }
            }
        }
    }

    /// The invoking user's layout on this machine (the `directories` paths).
    pub fn user(daemon: Daemon) -> Result<Self, LayoutError> {
        let os = Os::current();
        if os == Os::Windows {
            return Err(LayoutError::UserScopeUnsupported);
        }
        let project = directories::ProjectDirs::from("dev", "flotilla", "flotilla")
            .ok_or(LayoutError::NoHome)?;
        let base = directories::BaseDirs::new().ok_or(LayoutError::NoHome)?;
        let short = daemon.short();
        let config_dir = project.config_dir().to_path_buf();
        let (service_file, log_file) = if os == Os::MacOs {
            (
                base.home_dir().join(format!(
                    "Library/LaunchAgents/{}.plist",
                    daemon.launchd_label()
                )),
                Some(
                    base.home_dir()
                        .join(format!("Library/Logs/Flotilla/{short}.log")),
                ),
            )
        } else {
            (
                base.config_dir()
                    .join("systemd/user")
                    .join(format!("{}.service", daemon.service_name())),
                None,
            )
        };
        Ok(Self {
            daemon,
            scope: Scope::User,
            os,
            root: None,
            config_file: config_dir.join(daemon.config_file_name()),
            config_dir,
            data_dir: project.data_dir().join(short),
            service_file,
            log_file,
            sysusers_file: None,
        })
    }

    /// The layout for `scope` on this machine, optionally re-rooted under `root`.
    pub fn for_scope(
        daemon: Daemon,
        scope: Scope,
        root: Option<PathBuf>,
    ) -> Result<Self, LayoutError> {
        let mut layout = match scope {
            Scope::System => Self::system(daemon, Os::current(), &program_data()),
            Scope::User => Self::user(daemon)?,
        };
        layout.root = root;
        Ok(layout)
    }

    /// Where `path` (as the service sees it) lies on disk now: under `--root` if one was given.
    pub fn on_disk(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => reroot(root, path),
            None => path.to_path_buf(),
        }
    }
}

/// `path` moved under `root`: `/etc/x` under `/tmp/r` is `/tmp/r/etc/x`.
pub fn reroot(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(part) = c {
            out.push(part);
        }
    }
    out
}

/// `%ProgramData%` (Windows' machine-wide data folder), or its usual value.
fn program_data() -> String {
    std::env::var("ProgramData").unwrap_or_else(|_| r"C:\ProgramData".into())
}

/// Data directory and configuration file a command uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPaths {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The configuration file (it may not exist).
    pub config_file: PathBuf,
}

/// Works out the data directory and configuration file from what the command line gave.
///
/// - `--data-dir` given: the configuration defaults to `DATA_DIR/{agent,hub}.toml`, keeping a
///   hand-made hub or agent in one directory.
/// - neither given: root uses the system layout, anyone else the user layout; a configuration
///   left in the data directory by an older release is still found there.
/// - `--config` always wins for the configuration file.
pub fn resolve(
    daemon: Daemon,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    as_root: bool,
) -> Result<ResolvedPaths, LayoutError> {
    let in_data_dir = |d: &Path| d.join(daemon.config_file_name());
    if let Some(data_dir) = data_dir {
        let config_file = config.unwrap_or_else(|| in_data_dir(&data_dir));
        return Ok(ResolvedPaths {
            data_dir,
            config_file,
        });
    }
    let layout = if as_root {
        Layout::system(daemon, Os::current(), &program_data())
    } else {
        Layout::user(daemon)?
    };
    let config_file = match config {
        Some(c) => c,
        None if !layout.config_file.exists() && in_data_dir(&layout.data_dir).exists() => {
            in_data_dir(&layout.data_dir)
        }
        None => layout.config_file.clone(),
    };
    Ok(ResolvedPaths {
        data_dir: layout.data_dir,
        config_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_layouts_follow_each_platform() {
        let linux = Layout::system(Daemon::Agent, Os::Linux, "");
        assert_eq!(linux.config_file, Path::new("/etc/flotilla/agent.toml"));
        assert_eq!(linux.data_dir, Path::new("/var/lib/flotilla/agent"));
        assert_eq!(
            linux.service_file,
            Path::new("/etc/systemd/system/flotilla-agent.service")
        );
        assert_eq!(linux.log_file, None, "journald keeps the logs");
        let mac = Layout::system(Daemon::Hub, Os::MacOs, "");
        assert_eq!(
            mac.service_file,
            Path::new("/Library/LaunchDaemons/dev.flotilla.hub.plist")
        );
        assert_eq!(
            mac.log_file.as_deref(),
            Some(Path::new("/var/log/flotilla/hub.log"))
        );
        let win = Layout::system(Daemon::Agent, Os::Windows, r"D:\Data\");
        assert_eq!(win.config_file, Path::new(r"D:\Data\Flotilla\agent.toml"));
        assert_eq!(win.data_dir, Path::new(r"D:\Data\Flotilla\agent"));
    }

    #[test]
    fn reroot_puts_absolute_paths_under_the_root() {
        let layout = Layout {
            root: Some(PathBuf::from("/tmp/r")),
            ..Layout::system(Daemon::Hub, Os::Linux, "")
        };
        assert_eq!(
            layout.on_disk(&layout.config_file),
            Path::new("/tmp/r/etc/flotilla/hub.toml")
        );
        assert_eq!(
            reroot(Path::new("/x"), Path::new("/../etc/../passwd")),
            Path::new("/x/etc/passwd"),
            "parent components never climb out of the root"
        );
    }

    #[test]
    fn an_explicit_data_dir_keeps_the_config_beside_it() {
        let r = resolve(Daemon::Hub, Some("/srv/hub".into()), None, true).expect("resolve");
        assert_eq!(r.config_file, Path::new("/srv/hub/hub.toml"));
        let r = resolve(
            Daemon::Hub,
            Some("/srv/hub".into()),
            Some("/etc/h.toml".into()),
            false,
        )
        .expect("resolve");
        assert_eq!(r.config_file, Path::new("/etc/h.toml"));
    }
}
