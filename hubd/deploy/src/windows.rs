//! Windows services, registered with `sc.exe`: automatic (delayed) start, restart on failure with a
//! growing delay, the data directory closed to everyone but SYSTEM and Administrators.
//!
//! The registration is a list of `sc.exe`/`icacls` command lines; `install` runs them on Windows and
//! writes them to a `.cmd` file beside the configuration, so what was done can be read and repeated.

use crate::ServiceSpec;

/// Failure actions: restart after 5 s, then 30 s, then every 60 s; the count resets after a day
/// without failure.
const FAILURE_ACTIONS: &str = "restart/5000/restart/30000/restart/60000";
/// Seconds without failure after which the failure count resets.
const FAILURE_RESET_S: u32 = 86_400;

/// Quotes one argument the way Windows programs split their command line (the MSVC rules):
/// backslashes are literal except before a quote, where they must be doubled.
pub fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.chars().any(|c| c == ' ' || c == '\t' || c == '"') {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// Splits a command line the way the service process's C runtime will (the MSVC rules that
/// [`quote_arg`] writes for): the inverse of [`bin_path`], so tests can check that what `install`
/// registers is what the daemon parses.
pub fn split_command_line(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        if chars.peek().is_none() {
            return args;
        }
        let (mut arg, mut quoted) = (String::new(), false);
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let mut n = 1;
                    while chars.next_if_eq(&'\\').is_some() {
                        n += 1;
                    }
                    if chars.peek() == Some(&'"') {
                        arg.push_str(&"\\".repeat(n / 2));
                        if n % 2 == 1 {
                            arg.push('"');
                            chars.next();
                        }
                    } else {
                        arg.push_str(&"\\".repeat(n));
                    }
                }
                '"' => quoted = !quoted,
                ' ' | '\t' if !quoted => break,
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
}

/// The service's command line (`binPath=`), program and arguments quoted, with
/// [`crate::scm::SERVICE_FLAG`] last: started by the SCM, the daemon must speak its protocol.
pub fn bin_path(spec: &ServiceSpec) -> String {
    std::iter::once(spec.program.display().to_string())
        .chain(spec.args.iter().cloned())
        .chain(std::iter::once(crate::scm::SERVICE_FLAG.to_string()))
        .map(|a| quote_arg(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

/// Commands that register and start the service.
pub fn install_commands(spec: &ServiceSpec, start: bool) -> Vec<Vec<String>> {
    let name = spec.daemon.windows_name();
    let data_dir = spec.data_dir.display().to_string();
    let mut create = argv(&["sc.exe", "create", name, "binPath="]);
    create.push(bin_path(spec));
    create.extend(argv(&["start=", "delayed-auto", "DisplayName="]));
    create.push(spec.daemon.display_name().to_string());
    if let Some(user) = &spec.user {
        create.push("obj=".into());
        create.push(user.clone());
    }
    let mut cmds = vec![
        create,
        argv(&[
            "sc.exe",
            "description",
            name,
            match spec.daemon {
                crate::Daemon::Agent => "Flotilla agent: reports this machine to the fleet hub",
                crate::Daemon::Hub => "Flotilla hub: fleet registry and operator API",
            },
        ]),
        argv(&[
            "sc.exe",
            "failure",
            name,
            "reset=",
            &FAILURE_RESET_S.to_string(),
            "actions=",
            FAILURE_ACTIONS,
        ]),
        // Failure actions also for an exit with an error code, not only for a crash.
        argv(&["sc.exe", "failureflag", name, "1"]),
        argv(&[
            "icacls.exe",
            &data_dir,
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-18:(OI)(CI)F",
            "/grant:r",
            "*S-1-5-32-544:(OI)(CI)F",
        ]),
    ];
    if start {
        cmds.push(argv(&["sc.exe", "start", name]));
    }
    cmds
}

/// Commands that stop and remove the service.
pub fn uninstall_commands(spec: &ServiceSpec) -> Vec<Vec<String>> {
    let name = spec.daemon.windows_name();
    vec![
        argv(&["sc.exe", "stop", name]),
        argv(&["sc.exe", "delete", name]),
    ]
}

/// The commands as a `.cmd` script.
pub fn script(commands: &[Vec<String>]) -> String {
    let mut out = String::from(
        "@echo off\r\nrem Written by Flotilla's installer: how this service was registered.\r\n",
    );
    for cmd in commands {
        let line = cmd
            .iter()
            .map(|a| quote_arg(a))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Daemon, Scope};
    use std::path::PathBuf;

    #[test]
    fn arguments_are_quoted_by_msvc_rules() {
        assert_eq!(quote_arg("run"), "run");
        assert_eq!(quote_arg(r"C:\Program Files\x"), r#""C:\Program Files\x""#);
        assert_eq!(quote_arg(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote_arg(r"C:\dir with space\"), r#""C:\dir with space\\""#);
        assert_eq!(quote_arg(""), "\"\"");
    }

    #[test]
    fn command_lines_split_back_into_their_arguments() {
        let args = [
            r"C:\Program Files\Flotilla\agentd.exe",
            "run",
            r#"a"b"#,
            r"C:\dir with space\",
            "",
            r"back\\slash",
        ];
        let line = args
            .iter()
            .map(|a| quote_arg(a))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(split_command_line(&line), args);
        assert_eq!(split_command_line("  a \t b  "), ["a", "b"]);
    }

    #[test]
    fn service_is_created_with_restart_and_private_data() {
        let spec = ServiceSpec {
            daemon: Daemon::Agent,
            scope: Scope::System,
            program: PathBuf::from(r"C:\Program Files\Flotilla\agentd.exe"),
            args: vec![
                "--config".into(),
                r"C:\ProgramData\Flotilla\agent.toml".into(),
                "run".into(),
            ],
            user: None,
            data_dir: PathBuf::from(r"C:\ProgramData\Flotilla\agent"),
            config_file: PathBuf::from(r"C:\ProgramData\Flotilla\agent.toml"),
            log_file: None,
            low_port: false,
        };
        let cmds = install_commands(&spec, true);
        assert_eq!(
            cmds[0][..4],
            ["sc.exe", "create", "FlotillaAgent", "binPath="]
        );
        assert_eq!(
            cmds[0][4],
            r#""C:\Program Files\Flotilla\agentd.exe" --config C:\ProgramData\Flotilla\agent.toml run --service"#
        );
        assert!(
            cmds.iter()
                .any(|c| c.contains(&FAILURE_ACTIONS.to_string()))
        );
        assert!(
            cmds.iter()
                .any(|c| c[0] == "icacls.exe" && c[1] == r"C:\ProgramData\Flotilla\agent")
        );
        assert_eq!(cmds.last().expect("start")[1], "start");
        let text = script(&cmds);
        assert!(
            text.contains(r#"binPath= "\"C:\Program Files\Flotilla\agentd.exe\" --config"#),
            "{text}"
        );
        assert!(text.ends_with("\r\n"));
        assert_eq!(
            uninstall_commands(&spec)[1],
            ["sc.exe", "delete", "FlotillaAgent"]
        );
    }
}
