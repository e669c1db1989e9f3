//! Keys per view. The help overlay and the footer hints are generated from these tables, so what is
//! shown is what is handled; bindings that act on the fleet (run, copy, cancel, container and unit
//! actions) are neither shown nor handled for a viewer, nor where the agent's policy would refuse.

use crate::action::Action;
use crate::app::View;
use crate::app::workloads::{WorkAction, WorkKind};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use flotilla_wire::workloads::{ContainerAction, ServiceAction};

/// What a binding needs of us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Everyone has it.
    Nothing,
    /// Operators and admins.
    Act,
    /// Acting, on an agent whose policy manages containers.
    Containers,
    /// Acting, on an agent whose policy manages units, for a unit in its allowlist.
    Services,
    /// Admins only (joining a live shell session).
    Admin,
}

/// What the keys of the current screen may do (see `App::grants`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// We may run commands, copy and cancel: operators and admins.
    pub act: bool,
    /// We may act on the container under the cursor.
    pub containers: bool,
    /// We may act on the unit under the cursor.
    pub services: bool,
    /// We may watch others' live shell sessions: admins.
    pub admin: bool,
}

impl Grants {
    /// Only the plain acting grant (no container or unit selected).
    pub fn acting(act: bool) -> Self {
        Self {
            act,
            ..Self::default()
        }
    }

    fn allows(self, need: Need) -> bool {
        match need {
            Need::Nothing => true,
            Need::Act => self.act,
            Need::Containers => self.act && self.containers,
            Need::Services => self.act && self.services,
            Need::Admin => self.admin,
        }
    }
}

/// One binding: the key, its label in hints, and what it does.
pub struct Binding {
    /// Key label in hints.
    pub keys: &'static str,
    /// What it does, in words.
    pub help: &'static str,
    /// Whether it appears in the one-line footer (the rest only in `?`).
    pub in_footer: bool,
    /// Who has it.
    pub needs: Need,
}

impl Binding {
    /// Whether only operators and admins have it.
    pub fn acts(&self) -> bool {
        self.needs != Need::Nothing
    }
}

const fn b(keys: &'static str, help: &'static str, in_footer: bool, acts: bool) -> Binding {
    Binding {
        keys,
        help,
        in_footer,
        needs: if acts { Need::Act } else { Need::Nothing },
    }
}

const fn w(keys: &'static str, help: &'static str, in_footer: bool, needs: Need) -> Binding {
    Binding {
        keys,
        help,
        in_footer,
        needs,
    }
}

/// Keys every view has (after its own in `?`).
pub const GLOBAL: &[Binding] = &[
    b("1-5", "fleet output transfers jobs audit", false, false),
    b("6/7", "all containers/services", false, false),
    b("8", "alerts", false, false),
    w("9", "shell sessions", false, Need::Act),
    b("?", "help", true, false),
    b("esc", "back", false, false),
    b("q", "quit", true, false),
];

/// Bindings of the fleet view.
pub const FLEET: &[Binding] = &[
    b("↑↓/jk", "move", false, false),
    b("enter", "open", true, false),
    b("/", "filter", true, false),
    b(":", "run", true, true),
    b("f", "files", true, false),
    b("s", "sort", true, false),
    b("</>", "previous/next sort column", false, false),
    b("!", "shell", false, true),
    b("space", "mark agent", false, false),
    b("*", "mark all filtered", false, false),
    b("u", "unmark all", false, false),
    b("g/G", "first/last", false, false),
];

/// Bindings of the agent view.
pub const AGENT: &[Binding] = &[
    b("tab", "containers/services", true, false),
    b(":", "run here", true, true),
    b("f", "files", true, false),
    b("s", "shell", true, true),
    b("esc", "back", true, false),
    b("[/]", "chart span 5m-30d", false, false),
    b("c", "charts per disk, interface, GPU", false, false),
    b("↑↓/jk", "scroll usage; pick the chart", false, false),
    b("</>", "top processes a minute back/forward", false, false),
];

/// Bindings of a containers list (an agent's tab or the fleet's).
pub const CONTAINERS: &[Binding] = &[
    b("↑↓/jk", "move", false, false),
    b("enter/l", "logs", true, false),
    b("/", "filter", true, false),
    b("s", "sort", true, false),
    b("tab", "next tab", true, false),
    w("S/T/R", "start/stop/restart", false, Need::Containers),
    w("K/D", "kill/rm", false, Need::Containers),
    b(":", "run on its agent", false, true),
    b("!", "shell in it", false, true),
    b("r", "refresh", false, false),
];

/// Bindings of a units list (an agent's tab or the fleet's).
pub const SERVICES: &[Binding] = &[
    b("↑↓/jk", "move", false, false),
    b("enter/l", "journal", true, false),
    b("/", "filter", true, false),
    b("s", "sort", true, false),
    b("tab", "next tab", true, false),
    w("S/T/R", "start/stop/restart", false, Need::Services),
    w("L", "reload", false, Need::Services),
    w("E/D", "enable/disable", false, Need::Services),
    b(":", "run on its agent", false, true),
    b("r", "refresh", false, false),
];

/// Bindings of the logs pane.
pub const LOGS: &[Binding] = &[
    b("↑↓/pgup", "scroll", false, false),
    b("space/p", "pause", true, false),
    b("/", "search", true, false),
    b("G", "follow", true, false),
    b("esc", "back", true, false),
];

/// Bindings of the output view.
pub const OUTPUT: &[Binding] = &[
    b("ctrl-c", "cancel job", true, true),
    b("m", "merged/per agent", true, false),
    b("tab/←→", "agent", true, false),
    b("↑↓/pgup", "scroll", false, false),
    b("G", "follow", false, false),
    b(":", "run again", false, true),
];

/// Bindings of the files view.
pub const FILES: &[Binding] = &[
    b("enter/→", "open dir", true, false),
    b("←", "close dir", false, false),
    b("c", "copy to agent", true, true),
    b("r", "refresh", false, false),
    b("esc", "back", true, false),
];

/// Bindings of the transfers view.
pub const TRANSFERS: &[Binding] = &[
    b("↑↓", "select", false, false),
    b("x/ctrl-c", "cancel", true, true),
    b("esc", "back", true, false),
];

/// Bindings of the jobs view.
pub const JOBS: &[Binding] = &[
    b("enter", "results", true, false),
    b("r", "refresh", false, false),
    b("esc", "back", true, false),
];

/// Bindings of the audit view.
pub const AUDIT: &[Binding] = &[
    b("↑↓/pgup", "scroll", true, false),
    b("r", "refresh", false, false),
    b("esc", "back", true, false),
];

/// Bindings of the alerts view.
pub const ALERTS: &[Binding] = &[
    b("↑↓/jk", "move", false, false),
    b("enter", "agent", true, false),
    b("a", "acknowledge", true, true),
    b("S", "silence", true, true),
    b("r", "refresh", false, false),
    b("esc", "back", true, false),
];

/// Bindings of the sessions view.
pub const SESSIONS: &[Binding] = &[
    b("↑↓", "select", false, false),
    b("enter", "replay", true, false),
    w("j", "join live (admins)", true, Need::Admin),
    b("r", "refresh", false, false),
    b("esc", "back", true, false),
];

/// The bindings of a view.
pub fn bindings(view: &View) -> &'static [Binding] {
    match view {
        View::Fleet => FLEET,
        View::Agent(_) => AGENT,
        View::Output => OUTPUT,
        View::Files => FILES,
        View::Transfers => TRANSFERS,
        View::Jobs => JOBS,
        View::Audit => AUDIT,
        View::Workloads {
            kind: WorkKind::Containers,
            ..
        } => CONTAINERS,
        View::Workloads {
            kind: WorkKind::Services,
            ..
        } => SERVICES,
        View::Logs => LOGS,
        View::Alerts => ALERTS,
        View::Sessions => SESSIONS,
    }
}

/// Maps a key in `view` to an action, if `grants` allow it.
pub fn action(view: &View, key: KeyEvent, grants: Grants) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let action = match (view, key.code) {
        (View::Output, KeyCode::Char('c')) if ctrl => Action::Cancel,
        (View::Transfers, KeyCode::Char('c')) if ctrl => Action::Cancel,
        (_, KeyCode::Char('c')) if ctrl => Action::Quit,
        (_, _) if ctrl => return None,
        (_, KeyCode::Char('?')) => Action::Help,
        (_, KeyCode::Char('q')) => Action::Quit,
        (_, KeyCode::Char('1')) => Action::Show(View::Fleet),
        (_, KeyCode::Char('2')) => Action::Show(View::Output),
        (_, KeyCode::Char('3')) => Action::Show(View::Transfers),
        (_, KeyCode::Char('4')) => Action::Show(View::Jobs),
        (_, KeyCode::Char('5')) => Action::Show(View::Audit),
        (_, KeyCode::Char('6')) => Action::Show(View::Workloads {
            agent: None,
            kind: WorkKind::Containers,
        }),
        (_, KeyCode::Char('7')) => Action::Show(View::Workloads {
            agent: None,
            kind: WorkKind::Services,
        }),
        (_, KeyCode::Char('8')) => Action::Show(View::Alerts),
        (_, KeyCode::Char('9')) => Action::Show(View::Sessions),
        (_, KeyCode::Esc) => Action::Back,
        (View::Fleet, code) => fleet(code)?,
        (View::Agent(_), code) => match code {
            KeyCode::Char('h') | KeyCode::Left | KeyCode::Backspace => Action::Back,
            KeyCode::Char(':') => Action::ExecPrompt,
            KeyCode::Char('f') => Action::OpenFiles,
            KeyCode::Char('s' | '!') => Action::Shell,
            KeyCode::Tab => Action::NextTab(1),
            KeyCode::BackTab => Action::NextTab(-1),
            KeyCode::Char('[') => Action::Range(-1),
            KeyCode::Char(']') => Action::Range(1),
            KeyCode::Char('<') => Action::TopStep(-1),
            KeyCode::Char('>') => Action::TopStep(1),
            KeyCode::Char('c') => Action::Charts,
            code => scroll(code)?,
        },
        (View::Workloads { kind, .. }, code) => workloads(*kind, code)?,
        (View::Logs, code) => match code {
            KeyCode::Char(' ' | 'p') => Action::TogglePause,
            KeyCode::Char('/') => Action::StartFilter,
            KeyCode::Left | KeyCode::Char('h') => Action::Back,
            code => scroll(code)?,
        },
        (View::Output, code) => match code {
            KeyCode::Char('m') => Action::ToggleMerged,
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => Action::Pane(1),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => Action::Pane(-1),
            KeyCode::Char(':') => Action::ExecPrompt,
            code => scroll(code)?,
        },
        (View::Files, code) => match code {
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => Action::Open,
            KeyCode::Left | KeyCode::Char('h') => Action::Collapse,
            KeyCode::Char('c') => Action::Copy,
            KeyCode::Char('r') => Action::Refresh,
            code => scroll(code)?,
        },
        (View::Transfers, code) => match code {
            KeyCode::Char('x') => Action::Cancel,
            code => scroll(code)?,
        },
        (View::Jobs, code) => match code {
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => Action::Open,
            KeyCode::Left | KeyCode::Char('h') => Action::Back,
            KeyCode::Char('r') => Action::Refresh,
            code => scroll(code)?,
        },
        (View::Audit, code) => match code {
            KeyCode::Char('r') => Action::Refresh,
            code => scroll(code)?,
        },
        (View::Alerts, code) => match code {
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => Action::Open,
            KeyCode::Left | KeyCode::Char('h') => Action::Back,
            KeyCode::Char('a') => Action::AckAlert,
            KeyCode::Char('S') => Action::SilenceAlert,
            KeyCode::Char('r') => Action::Refresh,
            code => scroll(code)?,
        },
        (View::Sessions, code) => match code {
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => Action::Open,
            KeyCode::Char('j') => Action::Join,
            KeyCode::Char('r') => Action::Refresh,
            code => scroll(code)?,
        },
    };
    let needs = match action {
        Action::ExecPrompt
        | Action::Copy
        | Action::Cancel
        | Action::AckAlert
        | Action::SilenceAlert
        | Action::Shell => Need::Act,
        Action::Join => Need::Admin,
        // The hub lists sessions to operators and admins only.
        Action::Show(View::Sessions) => Need::Act,
        Action::Work(WorkAction::Container(_)) => Need::Containers,
        Action::Work(WorkAction::Service(_)) => Need::Services,
        _ => Need::Nothing,
    };
    grants.allows(needs).then_some(action)
}

fn workloads(kind: WorkKind, code: KeyCode) -> Option<Action> {
    Some(match (kind, code) {
        (_, KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right) => Action::OpenLogs,
        (_, KeyCode::Char('/')) => Action::StartFilter,
        (_, KeyCode::Char('s')) => Action::NextSort,
        (_, KeyCode::Char('r')) => Action::Refresh,
        (_, KeyCode::Char(':')) => Action::ExecPrompt,
        (WorkKind::Containers, KeyCode::Char('!')) => Action::Shell,
        (_, KeyCode::Tab) => Action::NextTab(1),
        (_, KeyCode::BackTab) => Action::NextTab(-1),
        (_, KeyCode::Left | KeyCode::Char('h') | KeyCode::Backspace) => Action::Back,
        (WorkKind::Containers, KeyCode::Char(c)) if c.is_ascii_uppercase() && c != 'G' => {
            Action::Work(WorkAction::Container(match c {
                'S' => ContainerAction::Start,
                'T' => ContainerAction::Stop,
                'R' => ContainerAction::Restart,
                'K' => ContainerAction::Kill,
                'D' => ContainerAction::Remove,
                _ => return None,
            }))
        }
        (WorkKind::Services, KeyCode::Char(c)) if c.is_ascii_uppercase() && c != 'G' => {
            Action::Work(WorkAction::Service(match c {
                'S' => ServiceAction::Start,
                'T' => ServiceAction::Stop,
                'R' => ServiceAction::Restart,
                'L' => ServiceAction::Reload,
                'E' => ServiceAction::Enable,
                'D' => ServiceAction::Disable,
                _ => return None,
            }))
        }
        (_, code) => scroll(code)?,
    })
}

fn scroll(code: KeyCode) -> Option<Action> {
    Some(match code {
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Move(-20),
        KeyCode::PageDown => Action::Move(20),
        KeyCode::Char('g') | KeyCode::Home => Action::Move(i32::MIN / 2),
        KeyCode::Char('G') | KeyCode::End => Action::Move(i32::MAX / 2),
        _ => return None,
    })
}

fn fleet(code: KeyCode) -> Option<Action> {
    Some(match code {
        KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right => Action::Open,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Char('s' | '>') => Action::NextSort,
        KeyCode::Char('<') => Action::PrevSort,
        KeyCode::Char(' ') => Action::ToggleMark,
        KeyCode::Char('*') => Action::MarkAllFiltered,
        KeyCode::Char('u') => Action::ClearMarks,
        KeyCode::Char(':') => Action::ExecPrompt,
        KeyCode::Char('f') => Action::OpenFiles,
        KeyCode::Char('!') => Action::Shell,
        code => scroll(code)?,
    })
}

/// The footer line for a view: its own hints then the global ones, without the keys `grants`
/// leave out.
pub fn footer(view: &View, grants: Grants) -> String {
    bindings(view)
        .iter()
        .chain(GLOBAL)
        .filter(|b| b.in_footer && grants.allows(b.needs))
        .map(|b| format!("{} {}", b.keys, b.help))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Every binding of a view for the help overlay, without the keys `grants` leave out.
pub fn help(view: &View, grants: Grants) -> Vec<&'static Binding> {
    bindings(view)
        .iter()
        .chain(GLOBAL)
        .filter(|b| grants.allows(b.needs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::from(code)
    }

    #[test]
    fn a_viewer_has_no_acting_keys_and_sees_none() {
        assert_eq!(
            action(&View::Fleet, key(KeyCode::Char(':')), Grants::acting(true)),
            Some(Action::ExecPrompt)
        );
        assert_eq!(
            action(&View::Fleet, key(KeyCode::Char(':')), Grants::acting(false)),
            None
        );
        assert_eq!(
            action(&View::Files, key(KeyCode::Char('c')), Grants::acting(false)),
            None
        );
        assert!(!footer(&View::Fleet, Grants::acting(false)).contains("run"));
        assert!(footer(&View::Fleet, Grants::acting(true)).contains(": run"));
        assert!(
            help(&View::Files, Grants::acting(false))
                .iter()
                .all(|b| !b.acts())
        );
    }

    /// Acknowledging and silencing act on the fleet's alerts: a viewer neither sees nor has them.
    #[test]
    fn a_viewer_cannot_acknowledge_or_silence() {
        for (c, want) in [('a', Action::AckAlert), ('S', Action::SilenceAlert)] {
            assert_eq!(
                action(&View::Alerts, key(KeyCode::Char(c)), Grants::acting(true)),
                Some(want)
            );
            assert_eq!(
                action(&View::Alerts, key(KeyCode::Char(c)), Grants::acting(false)),
                None
            );
        }
        let viewer = footer(&View::Alerts, Grants::acting(false));
        assert!(
            !viewer.contains("acknowledge") && !viewer.contains("silence"),
            "{viewer}"
        );
        let operator = footer(&View::Alerts, Grants::acting(true));
        assert!(
            operator.contains("a acknowledge") && operator.contains("S silence"),
            "{operator}"
        );
        assert_eq!(
            action(&View::Fleet, key(KeyCode::Char('8')), Grants::acting(false)),
            Some(Action::Show(View::Alerts)),
            "everyone may look"
        );
    }

    #[test]
    fn ctrl_c_cancels_in_panes_and_quits_elsewhere() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            action(&View::Output, ctrl_c, Grants::acting(true)),
            Some(Action::Cancel)
        );
        assert_eq!(
            action(&View::Transfers, ctrl_c, Grants::acting(true)),
            Some(Action::Cancel)
        );
        assert_eq!(
            action(&View::Fleet, ctrl_c, Grants::acting(true)),
            Some(Action::Quit)
        );
        assert_eq!(
            action(&View::Output, ctrl_c, Grants::acting(false)),
            None,
            "a viewer has no job to cancel"
        );
    }

    #[test]
    fn footers_fit_80_columns() {
        for view in [
            View::Fleet,
            View::Output,
            View::Files,
            View::Transfers,
            View::Jobs,
            View::Audit,
            View::Logs,
            View::Alerts,
            View::Sessions,
            View::Agent(flotilla_wire::IdentityId::from_random(
                flotilla_wire::Role::Agent,
                [1; 8],
            )),
            View::Workloads {
                agent: None,
                kind: WorkKind::Containers,
            },
            View::Workloads {
                agent: None,
                kind: WorkKind::Services,
            },
        ] {
            let all = Grants {
                act: true,
                containers: true,
                services: true,
                admin: true,
            };
            let f = footer(&view, all);
            assert!(f.chars().count() <= 80, "{view:?} footer too long: {f}");
        }
    }
}
