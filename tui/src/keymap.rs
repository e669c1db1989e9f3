//! Keys per view. The help overlay and the footer hints are generated from these tables, so what is
//! shown is what is handled; bindings that act on the fleet (run, copy, cancel) are neither shown
//! nor handled for a viewer.

use crate::action::Action;
use crate::app::View;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// One binding: the key, its label in hints, and what it does.
pub struct Binding {
    /// Key label in hints.
    pub keys: &'static str,
    /// What it does, in words.
    pub help: &'static str,
    /// Whether it appears in the one-line footer (the rest only in `?`).
    pub in_footer: bool,
    /// Whether only operators and admins have it.
    pub acts: bool,
}

const fn b(keys: &'static str, help: &'static str, in_footer: bool, acts: bool) -> Binding {
    Binding {
        keys,
        help,
        in_footer,
        acts,
    }
}

/// Keys every view has (after its own in `?`).
pub const GLOBAL: &[Binding] = &[
    b("1-5", "fleet output transfers jobs audit", false, false),
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
    b("space", "mark agent", false, false),
    b("*", "mark all filtered", false, false),
    b("u", "unmark all", false, false),
    b("g/G", "first/last", false, false),
];

/// Bindings of the agent view.
pub const AGENT: &[Binding] = &[
    b(":", "run here", true, true),
    b("f", "files", true, false),
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
    }
}

/// Maps a key in `view` to an action; `acts` says whether we may run and copy.
pub fn action(view: &View, key: KeyEvent, acts: bool) -> Option<Action> {
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
        (_, KeyCode::Esc) => Action::Back,
        (View::Fleet, code) => fleet(code)?,
        (View::Agent(_), code) => match code {
            KeyCode::Char('h') | KeyCode::Left | KeyCode::Backspace => Action::Back,
            KeyCode::Char(':') => Action::ExecPrompt,
            KeyCode::Char('f') => Action::OpenFiles,
            _ => return None,
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
    };
    let acting = matches!(action, Action::ExecPrompt | Action::Copy | Action::Cancel);
    (acts || !acting).then_some(action)
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
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char(' ') => Action::ToggleMark,
        KeyCode::Char('*') => Action::MarkAllFiltered,
        KeyCode::Char('u') => Action::ClearMarks,
        KeyCode::Char(':') => Action::ExecPrompt,
        KeyCode::Char('f') => Action::OpenFiles,
        code => scroll(code)?,
    })
}

/// The footer line for a view: its own hints then the global ones, without acting keys for a
/// viewer.
pub fn footer(view: &View, acts: bool) -> String {
    bindings(view)
        .iter()
        .chain(GLOBAL)
        .filter(|b| b.in_footer && (acts || !b.acts))
        .map(|b| format!("{} {}", b.keys, b.help))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Every binding of a view for the help overlay, without acting keys for a viewer.
pub fn help(view: &View, acts: bool) -> Vec<&'static Binding> {
    bindings(view)
        .iter()
        .chain(GLOBAL)
        .filter(|b| acts || !b.acts)
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
            action(&View::Fleet, key(KeyCode::Char(':')), true),
            Some(Action::ExecPrompt)
        );
        assert_eq!(action(&View::Fleet, key(KeyCode::Char(':')), false), None);
        assert_eq!(action(&View::Files, key(KeyCode::Char('c')), false), None);
        assert!(!footer(&View::Fleet, false).contains("run"));
        assert!(footer(&View::Fleet, true).contains(": run"));
        assert!(help(&View::Files, false).iter().all(|b| !b.acts));
    }

    #[test]
    fn ctrl_c_cancels_in_panes_and_quits_elsewhere() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(&View::Output, ctrl_c, true), Some(Action::Cancel));
        assert_eq!(action(&View::Transfers, ctrl_c, true), Some(Action::Cancel));
        assert_eq!(action(&View::Fleet, ctrl_c, true), Some(Action::Quit));
        assert_eq!(
            action(&View::Output, ctrl_c, false),
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
        ] {
            let f = footer(&view, true);
            assert!(f.chars().count() <= 80, "{view:?} footer too long: {f}");
        }
    }
}
