//! The agent's exec policy: what may run here, decided here. The hub sends a command; this module
//! turns it into a program path and arguments, or a refusal that names the policy.

use crate::config::{AgentConfig, ExecMode};
use crate::workloads::WorkloadSettings;
use flotilla_wire::exec::{Builtin, ExecCommand};
use flotilla_wire::workloads::{
    Access, ComposeAction, ContainerAction, ServiceAction, valid_workload_name,
};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Search path of commands: a clean environment still needs to find `uptime` under `exec = "any"`.
const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a command may not run here. Every message says it was the policy and which setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `exec = "off"`.
    #[error(
        "refused by this agent's exec policy (exec = \"off\"): enable it with exec = \"allowlist\" or \"any\" in agent.toml, or agentd run --exec"
    )]
    Off,
    /// `--shell` under `exec = "allowlist"`.
    #[error(
        "refused by this agent's exec policy (exec = \"allowlist\"): shell commands need exec = \"any\""
    )]
    Shell,
    /// A program that is neither allowlisted nor a script.
    #[error(
        "refused by this agent's exec policy (exec = \"allowlist\"): {program} is not in the allowlist or the scripts directory"
    )]
    NotAllowed {
        /// The program as asked.
        program: String,
    },
    /// A relative program path with `.` or `..` in it.
    #[error(
        "refused by this agent's exec policy (exec = \"allowlist\"): {program} is not a plain path inside the scripts directory ('.' and '..' are refused)"
    )]
    Traversal {
        /// The program as asked.
        program: String,
    },
    /// A script that is a symlink (or under a symlinked directory) leading out of the scripts dir.
    #[error(
        "refused by this agent's exec policy (exec = \"allowlist\"): script {program} resolves to {target}, outside the scripts directory"
    )]
    Escapes {
        /// The program as asked.
        program: String,
        /// Where it leads.
        target: String,
    },
    /// A unit action where `services` is not `manage`.
    #[error(
        "refused by this agent's services policy (services = \"{}\"): unit actions need services = \"manage\" in agent.toml",
        access.as_str()
    )]
    ServicesNotManaged {
        /// The agent's setting.
        access: Access,
    },
    /// A unit outside a non-empty `services_allow`.
    #[error(
        "refused by this agent's services policy (services_allow = {allow:?}): {unit} matches none of the globs"
    )]
    UnitNotAllowed {
        /// The unit as asked.
        unit: String,
        /// The globs.
        allow: Vec<String>,
    },
    /// A unit name that is empty, too long, a path, an option or has control characters.
    #[error("invalid unit name {unit:?}: give a unit name such as nginx.service")]
    BadUnitName {
        /// The name as asked.
        unit: String,
    },
    /// A unit action without units.
    #[error("no unit given: name at least one unit")]
    NoUnits,
    /// A container action under `containers = "off"` or `"read"`.
    #[error(
        "refused by this agent's container policy (containers = \"{mode}\"): container actions need containers = \"manage\" in agent.toml"
    )]
    ContainersNotManaged {
        /// The configured word.
        mode: &'static str,
    },
    /// A container reference the engine would not take as a name or id.
    #[error(
        "refused by this agent's container policy: {name:?} is not a container name or id (letters, digits, '_', '.', '-')"
    )]
    BadContainer {
        /// The reference as asked.
        name: String,
    },
    /// A compose action under `compose = "off"`.
    #[error(
        "refused by this agent's compose policy (compose = \"off\"): enable it with compose = \"on\" and compose_dir in agent.toml"
    )]
    ComposeOff,
    /// A project that is not a plain folder name, or not a folder of `compose_dir`.
    #[error("refused by this agent's compose policy (compose_dir): {reason}")]
    BadProject {
        /// Why, naming the project.
        reason: String,
    },
}

/// What the policy decided to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runnable {
    /// A program with its arguments.
    Program {
        /// Path or bare name (looked up in the clean `PATH`, under `exec = "any"` only).
        program: PathBuf,
        /// Arguments after the program.
        args: Vec<String>,
    },
    /// A built-in check.
    Builtin(Builtin),
    /// A systemd unit action over D-Bus.
    Service {
        /// What to do.
        action: ServiceAction,
        /// Unit names, checked against the services policy.
        units: Vec<String>,
    },
    /// Container actions through the engine's API.
    Container {
        /// What to do.
        action: ContainerAction,
        /// Names or ids, checked.
        containers: Vec<String>,
        /// Stop timeout in seconds.
        stop_timeout_s: Option<u32>,
    },
    /// A compose action in a project folder.
    Compose {
        /// What to do.
        action: ComposeAction,
        /// Project name (the folder's).
        project: String,
        /// The project folder, resolved inside `compose_dir`.
        dir: PathBuf,
    },
}

/// Decides whether a unit action may run here (`services`, `services_allow`): only under
/// `manage`, every name valid, and every unit matching one of `allow` when it is non-empty. All or
/// nothing: one refused unit refuses the job, so a job never half-runs.
pub fn check_service(
    access: Access,
    allow: &[String],
    action: ServiceAction,
    units: &[String],
) -> Result<Runnable, PolicyError> {
    if access != Access::Manage {
        return Err(PolicyError::ServicesNotManaged { access });
    }
    if units.is_empty() {
        return Err(PolicyError::NoUnits);
    }
    for unit in units {
        if !valid_workload_name(unit) {
            return Err(PolicyError::BadUnitName { unit: unit.clone() });
        }
        if !allow.is_empty() && !allow.iter().any(|g| glob_match(g, unit)) {
            return Err(PolicyError::UnitNotAllowed {
                unit: unit.clone(),
                allow: allow.to_vec(),
            });
        }
    }
    Ok(Runnable::Service {
        action,
        units: units.to_vec(),
    })
}

/// Shell-style glob over a whole name: `*` any run of characters, `?` one character, anything else
/// itself. Iterative with one backtrack point, so a hostile pattern costs O(pattern × name).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The policy and the process settings resolved once at start.
#[derive(Clone, Debug)]
pub struct ExecPolicy {
    /// Mode.
    pub mode: ExecMode,
    /// Allowlisted absolute paths.
    pub allowlist: Vec<PathBuf>,
    /// Scripts directory.
    pub scripts_dir: Option<PathBuf>,
    /// Working directory of commands.
    pub workdir: PathBuf,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// The whole environment of a command (plus `FLOTILLA_JOB`).
    pub env: Vec<(String, String)>,
    /// The account commands run as, when not agentd's own (`run_as`).
    #[cfg(unix)]
    pub run_as: Option<super::account::RunAs>,
    /// Containers, compose and services keys.
    pub workloads: WorkloadSettings,
    /// Interactive shells: `shell`, `shell_user` and the session limits.
    pub shell: crate::shell::ShellPolicy,
}

impl ExecPolicy {
    /// Builds the policy from the config, resolving `run_as` (refused unless agentd runs as root).
    /// `HOME`, `USER` and `LOGNAME` come from the `run_as` account, or else from agentd's own
    /// environment, here, once, so commands see who they run as and nothing else of agentd's.
    pub fn from_config(cfg: &AgentConfig) -> Result<Self, crate::AgentError> {
        let mut env = vec![
            ("PATH".to_string(), CLEAN_PATH.to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        #[cfg(unix)]
        let run_as = match &cfg.run_as {
            // SAFETY: geteuid has no preconditions and cannot fail.
            Some(name) => Some(super::account::resolve(name, unsafe { libc::geteuid() })?),
            None => None,
        };
        #[cfg(not(unix))]
        if let Some(name) = &cfg.run_as {
            return Err(crate::AgentError::Config(format!(
                "run_as = \"{name}\" is only supported on Unix agents"
            )));
        }
        #[cfg(unix)]
        if let Some(account) = &run_as {
            env.push(("HOME".to_string(), account.home.clone()));
            env.push(("USER".to_string(), account.name.clone()));
            env.push(("LOGNAME".to_string(), account.name.clone()));
        }
        #[cfg(unix)]
        let own = run_as.is_none();
        #[cfg(not(unix))]
        let own = true;
        if own {
            for key in ["HOME", "USER", "LOGNAME"] {
                if let Ok(v) = std::env::var(key) {
                    env.push((key.to_string(), v));
                }
            }
        }
        Ok(Self {
            mode: cfg.exec,
            allowlist: cfg.allowlist.clone(),
            scripts_dir: cfg.scripts_dir.clone(),
            workdir: cfg.workdir.clone().unwrap_or_else(|| PathBuf::from("/")),
            kill_grace: Duration::from_millis(u64::from(cfg.kill_grace_ms)),
            env,
            #[cfg(unix)]
            run_as,
            workloads: WorkloadSettings::from_config(cfg),
            shell: crate::shell::ShellPolicy::from_config(cfg)?,
        })
    }

    /// Decides whether `command` may run and what exactly runs. Touches the file system only to
    /// resolve scripts (blocking, but a few `stat`s).
    pub fn check(&self, command: &ExecCommand) -> Result<Runnable, PolicyError> {
        let (argv, shell) = match command {
            ExecCommand::Builtin(b) => return Ok(Runnable::Builtin(*b)),
            ExecCommand::Argv { argv, shell } => (argv, *shell),
            ExecCommand::Container {
                action,
                containers,
                stop_timeout_s,
            } => return self.check_container(*action, containers, *stop_timeout_s),
            ExecCommand::Compose { action, project } => {
                return self.check_compose(*action, project);
            }
            ExecCommand::Service { action, units } => {
                return check_service(
                    self.workloads.services,
                    &self.workloads.services_allow,
                    *action,
                    units,
                );
            }
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(PolicyError::NotAllowed {
                program: String::new(),
            });
        };
        match self.mode {
            ExecMode::Off => Err(PolicyError::Off),
            ExecMode::Any if shell => Ok(Runnable::Program {
                program: PathBuf::from("/bin/sh"),
                args: vec!["-c".into(), argv.join(" ")],
            }),
            ExecMode::Any => Ok(Runnable::Program {
                program: PathBuf::from(program),
                args: args.to_vec(),
            }),
            ExecMode::Allowlist if shell => Err(PolicyError::Shell),
            ExecMode::Allowlist => Ok(Runnable::Program {
                program: self.allowed_program(program)?,
                args: args.to_vec(),
            }),
        }
    }

    fn check_container(
        &self,
        action: ContainerAction,
        containers: &[String],
        stop_timeout_s: Option<u32>,
    ) -> Result<Runnable, PolicyError> {
        if self.workloads.containers != Access::Manage {
            return Err(PolicyError::ContainersNotManaged {
                mode: self.workloads.containers.as_str(),
            });
        }
        if containers.is_empty() {
            return Err(PolicyError::BadContainer {
                name: String::new(),
            });
        }
        if let Some(bad) = containers
            .iter()
            .find(|c| !crate::workloads::containers::valid_container_ref(c))
        {
            return Err(PolicyError::BadContainer { name: bad.clone() });
        }
        Ok(Runnable::Container {
            action,
            containers: containers.to_vec(),
            stop_timeout_s,
        })
    }

    fn check_compose(&self, action: ComposeAction, project: &str) -> Result<Runnable, PolicyError> {
        let w = &self.workloads;
        let Some(root) = w.compose_dir.as_deref().filter(|_| w.compose) else {
            return Err(PolicyError::ComposeOff);
        };
        if !flotilla_wire::workloads::valid_project_name(project) {
            return Err(PolicyError::BadProject {
                reason: format!(
                    "{project:?} is not a project name: one folder name of compose_dir, 1-64 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"
                ),
            });
        }
        let dir = crate::workloads::compose::project_dir(root, project)
            .map_err(|reason| PolicyError::BadProject { reason })?;
        Ok(Runnable::Compose {
            action,
            project: project.to_string(),
            dir,
        })
    }

    fn allowed_program(&self, program: &str) -> Result<PathBuf, PolicyError> {
        let path = Path::new(program);
        let not_allowed = || PolicyError::NotAllowed {
            program: program.to_string(),
        };
        if path.is_absolute() {
            // Exact string equality: `/usr/bin/../bin/sh` is not `/bin/sh`.
            return self
                .allowlist
                .iter()
                .find(|a| a.as_os_str() == path.as_os_str())
                .cloned()
                .ok_or_else(not_allowed);
        }
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(PolicyError::Traversal {
                program: program.to_string(),
            });
        }
        if let Some(dir) = &self.scripts_dir
            && let Some(script) = script_in(dir, path, program)?
        {
            return Ok(script);
        }
        if !program.contains('/') {
            let mut matches = self
                .allowlist
                .iter()
                .filter(|a| a.file_name().is_some_and(|n| n == path.as_os_str()));
            if let (Some(only), None) = (matches.next(), matches.next()) {
                return Ok(only.clone());
            }
        }
        Err(not_allowed())
    }
}

/// The script `rel` inside `dir`, resolved through symlinks; `Ok(None)` when there is no such file.
fn script_in(dir: &Path, rel: &Path, program: &str) -> Result<Option<PathBuf>, PolicyError> {
    let Ok(root) = dir.canonicalize() else {
        return Ok(None);
    };
    let Ok(resolved) = root.join(rel).canonicalize() else {
        return Ok(None);
    };
    if !resolved.starts_with(&root) {
        return Err(PolicyError::Escapes {
            program: program.to_string(),
            target: resolved.display().to_string(),
        });
    }
    Ok(resolved.is_file().then_some(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(access: Access, allow: &[&str], units: &[&str]) -> Result<Runnable, PolicyError> {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let units: Vec<String> = units.iter().map(|s| s.to_string()).collect();
        check_service(access, &allow, ServiceAction::Restart, &units)
    }

    #[test]
    fn unit_actions_need_manage_and_the_allowlist() {
        for access in [Access::Off, Access::Read] {
            let e = service(access, &[], &["nginx.service"]).expect_err("refused");
            assert_eq!(e, PolicyError::ServicesNotManaged { access });
            assert!(e.to_string().contains(&format!(
                "services policy (services = \"{}\")",
                access.as_str()
            )));
        }
        assert_eq!(
            service(Access::Manage, &[], &["nginx.service", "db.service"]),
            Ok(Runnable::Service {
                action: ServiceAction::Restart,
                units: vec!["nginx.service".into(), "db.service".into()],
            })
        );
        let allow = ["web-*.service", "db?.service"];
        assert!(service(Access::Manage, &allow, &["web-1.service", "db2.service"]).is_ok());
        let e = service(Access::Manage, &allow, &["web-1.service", "sshd.service"])
            .expect_err("sshd is outside the allowlist");
        assert_eq!(
            e,
            PolicyError::UnitNotAllowed {
                unit: "sshd.service".into(),
                allow: allow.iter().map(|s| s.to_string()).collect(),
            }
        );
        assert!(e.to_string().contains("services_allow"));
        assert_eq!(service(Access::Manage, &[], &[]), Err(PolicyError::NoUnits));
        for bad in ["-f", "a/b", "x\ny", ""] {
            assert_eq!(
                service(Access::Manage, &[], &[bad]),
                Err(PolicyError::BadUnitName { unit: bad.into() })
            );
        }
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("*", "anything.service"));
        assert!(glob_match("nginx*", "nginx.service"));
        assert!(glob_match("*.service", "a.service"));
        assert!(!glob_match("*.service", "a.socket"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("nginx", "nginx.service"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxxc"));
        // Quadratic at worst, not exponential.
        assert!(!glob_match(
            &"*a".repeat(50),
            &format!("{}b", "a".repeat(200))
        ));
    }

    fn argv(words: &[&str]) -> ExecCommand {
        ExecCommand::Argv {
            argv: words.iter().map(|s| s.to_string()).collect(),
            shell: false,
        }
    }

    fn policy(mode: ExecMode, scripts: Option<&Path>) -> ExecPolicy {
        ExecPolicy::from_config(&AgentConfig {
            exec: mode,
            allowlist: vec!["/usr/bin/uptime".into(), "/bin/echo".into()],
            scripts_dir: scripts.map(Path::to_path_buf),
            ..AgentConfig::default()
        })
        .expect("policy")
    }

    #[test]
    fn off_refuses_everything_but_builtins() {
        let p = policy(ExecMode::Off, None);
        assert_eq!(p.check(&argv(&["/usr/bin/uptime"])), Err(PolicyError::Off));
        assert!(
            PolicyError::Off
                .to_string()
                .starts_with("refused by this agent's exec policy (exec = \"off\")")
        );
        assert_eq!(
            p.check(&ExecCommand::Builtin(Builtin::Health)),
            Ok(Runnable::Builtin(Builtin::Health))
        );
    }

    #[test]
    fn any_runs_as_asked_and_shell_joins_words() {
        let p = policy(ExecMode::Any, None);
        assert_eq!(
            p.check(&argv(&["ls", "-l"])),
            Ok(Runnable::Program {
                program: "ls".into(),
                args: vec!["-l".into()]
            })
        );
        let shell = ExecCommand::Argv {
            argv: vec!["echo a".into(), "&&".into(), "echo b".into()],
            shell: true,
        };
        assert_eq!(
            p.check(&shell),
            Ok(Runnable::Program {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), "echo a && echo b".into()]
            })
        );
        assert!(p.env.iter().any(|(k, v)| k == "PATH" && v == CLEAN_PATH));
    }

    #[test]
    fn allowlist_matches_exact_paths_and_unique_names() {
        let p = policy(ExecMode::Allowlist, None);
        let ok = |prog: &str, path: &str| {
            assert_eq!(
                p.check(&argv(&[prog, "x"])),
                Ok(Runnable::Program {
                    program: path.into(),
                    args: vec!["x".into()]
                })
            );
        };
        ok("/usr/bin/uptime", "/usr/bin/uptime");
        ok("uptime", "/usr/bin/uptime");
        ok("echo", "/bin/echo");
        let refused = |prog: &str| p.check(&argv(&[prog])).expect_err(prog);
        assert_eq!(
            refused("/bin/sh"),
            PolicyError::NotAllowed {
                program: "/bin/sh".into()
            }
        );
        assert_eq!(
            refused("/usr/bin/../bin/uptime"),
            PolicyError::NotAllowed {
                program: "/usr/bin/../bin/uptime".into()
            }
        );
        assert_eq!(
            refused("../uptime"),
            PolicyError::Traversal {
                program: "../uptime".into()
            }
        );
        assert_eq!(
            refused("./uptime"),
            PolicyError::Traversal {
                program: "./uptime".into()
            }
        );
        assert_eq!(
            p.check(&ExecCommand::Argv {
                argv: vec!["/usr/bin/uptime".into()],
                shell: true
            }),
            Err(PolicyError::Shell)
        );
        assert_eq!(
            refused("sh").to_string(),
            "refused by this agent's exec policy (exec = \"allowlist\"): sh is not in the allowlist or the scripts directory"
        );
    }

    #[test]
    #[cfg(unix)] // Unix symbolic links
    fn scripts_run_by_name_and_never_escape() {
        let tmp = tempfile::tempdir().expect("tmp");
        let scripts = tmp.path().join("scripts");
        std::fs::create_dir_all(scripts.join("sub")).expect("mkdir");
        std::fs::write(scripts.join("deploy.sh"), "#!/bin/sh\n").expect("write");
        std::fs::write(scripts.join("sub/inner.sh"), "#!/bin/sh\n").expect("write");
        std::fs::write(tmp.path().join("secret.sh"), "#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink(tmp.path().join("secret.sh"), scripts.join("evil.sh"))
            .expect("symlink");
        std::os::unix::fs::symlink(tmp.path(), scripts.join("up")).expect("dir symlink");
        std::os::unix::fs::symlink(scripts.join("deploy.sh"), scripts.join("alias.sh"))
            .expect("inner symlink");
        let p = policy(ExecMode::Allowlist, Some(&scripts));
        let root = scripts.canonicalize().expect("canon");
        let runs = |prog: &str| match p.check(&argv(&[prog])) {
            Ok(Runnable::Program { program, .. }) => program,
            other => panic!("{prog}: {other:?}"),
        };
        assert_eq!(runs("deploy.sh"), root.join("deploy.sh"));
        assert_eq!(runs("sub/inner.sh"), root.join("sub/inner.sh"));
        assert_eq!(
            runs("alias.sh"),
            root.join("deploy.sh"),
            "symlink inside is fine"
        );
        let refused = |prog: &str| p.check(&argv(&[prog])).expect_err(prog);
        assert_eq!(
            refused("../secret.sh"),
            PolicyError::Traversal {
                program: "../secret.sh".into()
            }
        );
        assert_eq!(
            refused("sub/../../secret.sh"),
            PolicyError::Traversal {
                program: "sub/../../secret.sh".into()
            }
        );
        assert!(matches!(refused("evil.sh"), PolicyError::Escapes { .. }));
        assert!(matches!(
            refused("up/secret.sh"),
            PolicyError::Escapes { .. }
        ));
        assert_eq!(
            refused("missing.sh"),
            PolicyError::NotAllowed {
                program: "missing.sh".into()
            }
        );
        assert_eq!(
            refused("sub"),
            PolicyError::NotAllowed {
                program: "sub".into()
            },
            "a directory is not a script"
        );
        let abs = root.join("deploy.sh").display().to_string();
        assert_eq!(
            refused(&abs),
            PolicyError::NotAllowed {
                program: abs.clone()
            },
            "scripts run by name, not by absolute path"
        );
    }

    #[test]
    fn container_actions_need_manage_and_engine_names() {
        let with = |containers: Access| {
            ExecPolicy::from_config(&AgentConfig {
                containers,
                ..AgentConfig::default()
            })
            .expect("policy")
        };
        let stop = |names: &[&str]| ExecCommand::Container {
            action: ContainerAction::Stop,
            containers: names.iter().map(|s| s.to_string()).collect(),
            stop_timeout_s: Some(5),
        };
        let read = with(Access::Read).check(&stop(&["web"])).expect_err("read");
        assert_eq!(
            read.to_string(),
            "refused by this agent's container policy (containers = \"read\"): container actions need containers = \"manage\" in agent.toml"
        );
        assert_eq!(
            with(Access::Off).check(&stop(&["web"])),
            Err(PolicyError::ContainersNotManaged { mode: "off" })
        );
        let manage = with(Access::Manage);
        assert_eq!(
            manage.check(&stop(&["web", "db-1"])),
            Ok(Runnable::Container {
                action: ContainerAction::Stop,
                containers: vec!["web".into(), "db-1".into()],
                stop_timeout_s: Some(5),
            })
        );
        assert_eq!(
            manage.check(&stop(&["web", "a?all=1"])),
            Err(PolicyError::BadContainer {
                name: "a?all=1".into()
            })
        );
        assert!(manage.check(&stop(&[])).is_err(), "nothing to act on");
    }

    #[test]
    fn compose_needs_on_and_a_folder_of_compose_dir() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join("web")).expect("mkdir");
        let up = |project: &str| ExecCommand::Compose {
            action: ComposeAction::Up,
            project: project.into(),
        };
        let off = ExecPolicy::from_config(&AgentConfig::default()).expect("policy");
        assert_eq!(off.check(&up("web")), Err(PolicyError::ComposeOff));
        let on = ExecPolicy::from_config(&AgentConfig {
            compose: crate::config::ComposeMode::On,
            compose_dir: Some(tmp.path().to_path_buf()),
            ..AgentConfig::default()
        })
        .expect("policy");
        assert_eq!(
            on.check(&up("web")),
            Ok(Runnable::Compose {
                action: ComposeAction::Up,
                project: "web".into(),
                dir: tmp.path().canonicalize().expect("canon").join("web"),
            })
        );
        for bad in ["..", "../etc", "a/b", ".hidden", "missing"] {
            match on.check(&up(bad)) {
                Err(PolicyError::BadProject { reason }) => {
                    assert!(reason.contains(bad), "{reason}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
