//! `s` (agent view) and `!` (fleet and containers views): a shell on the selected agent or in the
//! selected container. The app only names the target; the terminal loop suspends the console,
//! runs the shell on the real terminal and hands the result back with [`App::shell_ended`].

use super::{App, View, WorkKind};

/// Where the console's shell runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellTarget {
    /// Agent name.
    pub agent: String,
    /// Container name, for a shell in one.
    pub container: Option<String>,
}

impl ShellTarget {
    /// As `flotilla shell` writes it: `AGENT` or `AGENT/CONTAINER`.
    pub fn label(&self) -> String {
        match &self.container {
            Some(c) => format!("{}/{c}", self.agent),
            None => self.agent.clone(),
        }
    }
}

impl App {
    /// Asks the terminal loop for a shell on what is selected.
    pub(crate) fn open_shell(&mut self) {
        let target = match &self.view {
            View::Agent(id) => Some(ShellTarget {
                agent: self.name_of(id),
                container: None,
            }),
            View::Fleet => self.selected_agent().map(|a| ShellTarget {
                agent: a.name.clone(),
                container: None,
            }),
            View::Workloads {
                kind: WorkKind::Containers,
                ..
            } => self.containers.selected_row().map(|r| ShellTarget {
                agent: r.agent_name.clone(),
                container: Some(r.info.name.clone()),
            }),
            _ => None,
        };
        match target {
            Some(t) => self.shell = Some(t),
            None => self.notice = Some("nothing selected to open a shell on".into()),
        }
    }

    /// The shell the terminal loop should run now, if one was asked for.
    pub fn take_shell(&mut self) -> Option<ShellTarget> {
        self.shell.take()
    }

    /// Shows how the shell on `target` ended, once the console is back.
    pub fn shell_ended(&mut self, target: &ShellTarget, how: &str) {
        self.notice = Some(format!("shell on {}: {how}", target.label()));
    }
}
