//! systemd units, written by us (not a crate) so every line is ours to explain and test.
//!
//! System units run as the dedicated account with the sandbox systemd offers: the whole file system
//! read-only except the data directory (`ProtectSystem=strict` + `ReadWritePaths=`), no home
//! directories, a private `/tmp`, no new privileges, no kernel or cgroup tweaking. The hub, which
//! never runs other programs, is locked down further (system call filter, no W^X memory, no
//! capabilities); the agent is not, because programs it runs for `flotilla exec` inherit its
//! sandbox. User units keep to what a user manager can enforce without user namespaces.

use crate::{Daemon, Scope, ServiceSpec};
use std::path::Path;

/// Restart after a crash after this long: quick enough to matter, slow enough not to spin.
const RESTART_SEC: u32 = 5;
/// At most this many starts within [`START_LIMIT_INTERVAL_MIN`] minutes before systemd stops
/// trying (the unit then shows `failed` with `start-limit-hit` until someone looks).
const START_LIMIT_BURST: u32 = 5;
/// Window of the start limit, minutes.
const START_LIMIT_INTERVAL_MIN: u32 = 10;
/// Stop deadline: the daemons drain in at most 5 s per phase (sessions, endpoint, store), so 30 s
/// is never reached by a healthy daemon and bounds a stuck one.
const TIMEOUT_STOP_SEC: u32 = 30;

/// Why a unit cannot be written for these paths.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// systemd splits path lists on whitespace; such a path would silently become two.
    #[error(
        "path {0:?} contains whitespace or a control character, which a systemd unit cannot hold: choose another directory"
    )]
    BadPath(String),
    /// A relative path means nothing to a service.
    #[error("path {0:?} is not absolute")]
    Relative(String),
}

/// Escapes one word of `ExecStart=`: `%` and `$` would be expanded, quotes and backslashes
/// interpreted, whitespace would split it.
pub fn escape_word(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    let needs_quotes = escaped.is_empty()
        || escaped
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == ';');
    if needs_quotes {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// Checks and escapes a path for a path-list directive.
fn path_value(path: &Path) -> Result<String, UnitError> {
    let text = path.display().to_string();
    if !path.is_absolute() {
        return Err(UnitError::Relative(text));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UnitError::BadPath(text));
    }
    Ok(text.replace('%', "%%"))
}

/// The `StateDirectory=` name when the data directory is the standard one under `/var/lib`:
/// systemd then creates it 0700 and hands it to the service's account at every start.
fn state_directory(spec: &ServiceSpec) -> Option<String> {
    let rel = spec.data_dir.strip_prefix("/var/lib").ok()?;
    let rel = rel.to_str()?;
    (!rel.is_empty()).then(|| rel.to_string())
}

/// The unit file text for `spec`.
pub fn unit(spec: &ServiceSpec) -> Result<String, UnitError> {
    let data_dir = path_value(&spec.data_dir)?;
    path_value(&spec.config_file)?;
    let program = path_value(&spec.program)?;
    let exec_start = std::iter::once(program)
        .chain(spec.args.iter().map(|a| escape_word(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let system = spec.scope == Scope::System;
    let hub = spec.daemon == Daemon::Hub;
    let binary = spec.daemon.binary();
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "# {}: written by `{binary} install`, which rewrites it; put local changes in a drop-in",
        spec.daemon.display_name()
    ));
    line(&format!(
        "# (`systemctl{} edit {}`). See docs/deploy.md.",
        if system { "" } else { " --user" },
        spec.daemon.service_name()
    ));
    line("[Unit]");
    line(&format!("Description={}", spec.daemon.display_name()));
    line("Wants=network-online.target");
    line("After=network-online.target");
    line(&format!(
        "StartLimitIntervalSec={START_LIMIT_INTERVAL_MIN}min"
    ));
    line(&format!("StartLimitBurst={START_LIMIT_BURST}"));
    line("");
    line("[Service]");
    // The daemon says READY=1 once it serves (hub: listening; agent: link started), so
    // `systemctl start` returns when the service is really up.
    line("Type=notify");
    line("NotifyAccess=main");
    line(&format!("ExecStart={exec_start}"));
    if hub {
        line("ExecReload=/bin/kill -HUP $MAINPID");
    }
    line("Restart=on-failure");
    line(&format!("RestartSec={RESTART_SEC}s"));
    line(&format!("TimeoutStopSec={TIMEOUT_STOP_SEC}s"));
    // SIGTERM to the daemon only: it cancels what it runs itself; what is left at the deadline is
    // killed.
    line("KillMode=mixed");
    line("UMask=0077");
    line("NoNewPrivileges=yes");
    if system {
        if let Some(user) = &spec.user {
            line(&format!("User={user}"));
            line(&format!("Group={user}"));
        }
        if let Some(state) = state_directory(spec) {
            line(&format!("StateDirectory={state}"));
            line("StateDirectoryMode=0700");
        }
        line("ProtectSystem=strict");
        line(&format!("ReadWritePaths={data_dir}"));
        line("ProtectHome=yes");
        line("PrivateTmp=yes");
        line("ProtectKernelTunables=yes");
        line("ProtectKernelModules=yes");
        line("ProtectKernelLogs=yes");
        line("ProtectControlGroups=yes");
        line("ProtectClock=yes");
        line("ProtectHostname=yes");
        line("RestrictSUIDSGID=yes");
        line("RestrictRealtime=yes");
        line("RestrictNamespaces=yes");
        line("LockPersonality=yes");
        line("SystemCallArchitectures=native");
        // Netlink: interface statistics for the metrics (getifaddrs).
        line("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK");
        if spec.low_port {
            line("CapabilityBoundingSet=CAP_NET_BIND_SERVICE");
            line("AmbientCapabilities=CAP_NET_BIND_SERVICE");
        } else if spec.user.is_some() {
            line("CapabilityBoundingSet=");
        }
        if hub {
            line("PrivateDevices=yes");
            line("MemoryDenyWriteExecute=yes");
            line("SystemCallFilter=@system-service");
            line("SystemCallFilter=~@privileged @resources");
            line("SystemCallErrorNumber=EPERM");
        }
    } else {
        line("# ProtectSystem= and the other sandboxing directives need the system manager;");
        line("# install with --system for them.");
    }
    line("");
    line("[Install]");
    line(if system {
        "WantedBy=multi-user.target"
    } else {
        "WantedBy=default.target"
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(daemon: Daemon, scope: Scope) -> ServiceSpec {
        ServiceSpec {
            daemon,
            scope,
            program: PathBuf::from("/usr/local/bin/agentd"),
            args: vec![
                "--config".into(),
                "/etc/flotilla/agent.toml".into(),
                "--data-dir".into(),
                "/var/lib/flotilla/agent".into(),
                "run".into(),
            ],
            user: Some("flotilla".into()),
            data_dir: PathBuf::from("/var/lib/flotilla/agent"),
            config_file: PathBuf::from("/etc/flotilla/agent.toml"),
            log_file: None,
            low_port: false,
        }
    }

    fn keys(unit: &str) -> Vec<(String, String)> {
        unit.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("key=value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn has(unit: &str, key: &str, value: &str) -> bool {
        keys(unit).iter().any(|(k, v)| k == key && v == value)
    }

    #[test]
    fn system_agent_unit_is_sandboxed_but_may_run_programs() {
        let text = unit(&spec(Daemon::Agent, Scope::System)).expect("unit");
        for (k, v) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ReadWritePaths", "/var/lib/flotilla/agent"),
            ("StateDirectory", "flotilla/agent"),
            ("PrivateTmp", "yes"),
            ("ProtectHome", "yes"),
            ("Restart", "on-failure"),
            ("RestartSec", "5s"),
            ("StartLimitBurst", "5"),
            ("User", "flotilla"),
            ("Type", "notify"),
            ("WantedBy", "multi-user.target"),
            ("CapabilityBoundingSet", ""),
            (
                "ExecStart",
                "/usr/local/bin/agentd --config /etc/flotilla/agent.toml --data-dir /var/lib/flotilla/agent run",
            ),
        ] {
            assert!(has(&text, k, v), "{k}={v} missing in\n{text}");
        }
        assert!(
            !text.contains("MemoryDenyWriteExecute"),
            "JITs run by exec would break"
        );
        assert!(
            !text.contains("ExecReload"),
            "the agent has nothing to reload"
        );
        let sections: Vec<_> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(sections, ["[Unit]", "[Service]", "[Install]"]);
    }

    #[test]
    fn hub_unit_reloads_and_is_locked_down_further() {
        let mut s = spec(Daemon::Hub, Scope::System);
        s.data_dir = PathBuf::from("/srv/flotilla hub");
        assert!(matches!(unit(&s), Err(UnitError::BadPath(_))));
        s.data_dir = PathBuf::from("/srv/hub");
        s.low_port = true;
        let text = unit(&s).expect("unit");
        assert!(has(&text, "ExecReload", "/bin/kill -HUP $MAINPID"));
        assert!(has(&text, "SystemCallFilter", "@system-service"));
        assert!(has(&text, "MemoryDenyWriteExecute", "yes"));
        assert!(has(&text, "AmbientCapabilities", "CAP_NET_BIND_SERVICE"));
        assert!(has(&text, "ReadWritePaths", "/srv/hub"));
        assert!(!text.contains("StateDirectory"), "only for /var/lib paths");
    }

    #[test]
    fn user_units_skip_what_a_user_manager_cannot_enforce() {
        let mut s = spec(Daemon::Agent, Scope::User);
        s.user = None;
        let text = unit(&s).expect("unit");
        assert!(has(&text, "WantedBy", "default.target"));
        assert!(has(&text, "NoNewPrivileges", "yes"));
        assert!(
            !keys(&text)
                .iter()
                .any(|(k, _)| k == "ProtectSystem" || k == "User")
        );
    }

    #[test]
    fn exec_words_are_escaped() {
        assert_eq!(escape_word("plain"), "plain");
        assert_eq!(escape_word("a b"), "\"a b\"");
        assert_eq!(escape_word("50%"), "50%%");
        assert_eq!(escape_word("$HOME"), "$$HOME");
        assert_eq!(escape_word("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(escape_word(""), "\"\"");
    }
}
