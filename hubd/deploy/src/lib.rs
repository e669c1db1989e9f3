//! Deployment support shared by `hubd` and `agentd`: where an installed daemon keeps its files
//! ([`Layout`]), the service definitions we write ourselves ([`systemd`], [`launchd`], [`windows`]),
//! the service manager calls that register them ([`manager`]), layered configuration
//! (file < `FLOTILLA_*` environment < flags, [`layered`]), secrets that never print ([`SecretString`]),
//! readiness notification to systemd ([`notify`]), stop requests ([`stop`]) and the Windows
//! Service Control Manager's protocol ([`scm`]), the allocator settings both daemons start with
//! ([`allocator`]), and shell completions and manual pages ([`shelldocs`]).
//!
//! Everything that produces text is a pure function tested on every platform; only running
//! `systemctl`, `launchctl` or `sc.exe` depends on the machine, and that is decided at run time.

pub mod allocator;
pub mod command;
pub mod files;
pub mod install;
pub mod launchd;
pub mod layered;
pub mod layout;
pub mod manager;
pub mod notify;
pub mod scm;
mod secret;
pub mod shelldocs;
pub mod stop;
pub mod sync;
pub mod systemd;
pub mod windows;

pub use layered::{LayerError, Layered, Origin};
pub use layout::{Daemon, Layout, LayoutError, Os, Scope};
pub use secret::SecretString;

/// What a service definition needs, whatever the service manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Which daemon.
    pub daemon: Daemon,
    /// System-wide or per-user.
    pub scope: Scope,
    /// Absolute path of the binary the service runs.
    pub program: std::path::PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Account the service runs as (system scope only; `None` means root / LocalSystem).
    pub user: Option<String>,
    /// The data directory: the only place the service may write.
    pub data_dir: std::path::PathBuf,
    /// The configuration file (read only for the service).
    pub config_file: std::path::PathBuf,
    /// Where launchd sends stderr (systemd and Windows log elsewhere).
    pub log_file: Option<std::path::PathBuf>,
    /// The daemon binds a UDP or TCP port below 1024 and needs `CAP_NET_BIND_SERVICE`.
    pub low_port: bool,
}

impl ServiceSpec {
    /// The command line the service runs, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Whether this process runs as root (effective uid 0).
#[cfg(unix)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process runs as root: on Windows, services are installed from an elevated prompt
/// and `sc.exe` says so itself when it is not.
#[cfg(not(unix))]
pub fn is_root() -> bool {
    true
}

/// Whether a process with this id exists: unknown off Unix, so assumed.
#[cfg(not(unix))]
pub fn pid_alive(pid: u32) -> bool {
    pid != 0
}

/// Whether a process with this id exists (on this machine, now). A pid we may not signal still
/// counts as alive.
#[cfg(unix)]
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
