//! Keys per view. The help overlay and the footer hints are generated from these tables, so what is
//! shown is what is handled.

use crate::action::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// One binding: the key, its label in hints, and what it does.
pub struct Binding {
    /// Key label in hints.
    pub keys: &'static str,
    /// What it does, in words.
    pub help: &'static str,
    /// Whether it appears in the one-line footer (the rest only in `?`).
    pub in_footer: bool,
}

/// Bindings of the fleet view.
pub const FLEET: &[Binding] = &[
    Binding {
        keys: "↑↓/jk",
        help: "move",
        in_footer: false,
    },
    Binding {
        keys: "enter",
        help: "open agent",
        in_footer: true,
    },
    Binding {
        keys: "/",
        help: "filter",
        in_footer: true,
    },
    Binding {
        keys: "s",
        help: "next sort column",
        in_footer: true,
    },
    Binding {
        keys: "space",
        help: "mark agent",
        in_footer: false,
    },
    Binding {
        keys: "*",
        help: "mark all filtered",
        in_footer: false,
    },
    Binding {
        keys: "g/G",
        help: "first/last",
        in_footer: false,
    },
    Binding {
        keys: "?",
        help: "help",
        in_footer: true,
    },
    Binding {
        keys: "q",
        help: "quit",
        in_footer: true,
    },
];

/// Bindings of the agent view.
pub const AGENT: &[Binding] = &[
    Binding {
        keys: "esc",
        help: "back",
        in_footer: true,
    },
    Binding {
        keys: "?",
        help: "help",
        in_footer: true,
    },
    Binding {
        keys: "q",
        help: "quit",
        in_footer: true,
    },
];

/// Maps a key in the fleet view to an action.
pub fn fleet_key(key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Move(-20),
        KeyCode::PageDown => Action::Move(20),
        KeyCode::Char('g') | KeyCode::Home => Action::Move(i32::MIN / 2),
        KeyCode::Char('G') | KeyCode::End => Action::Move(i32::MAX / 2),
        KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right => Action::OpenAgent,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char(' ') => Action::ToggleMark,
        KeyCode::Char('*') => Action::MarkAllFiltered,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

/// Maps a key in the agent view to an action.
pub fn agent_key(key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    Some(match key.code {
        KeyCode::Esc | KeyCode::Char('h') | KeyCode::Left | KeyCode::Backspace => Action::Back,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

/// The footer line for a binding table.
pub fn footer(bindings: &[Binding]) -> String {
    bindings
        .iter()
        .filter(|b| b.in_footer)
        .map(|b| format!("{} {}", b.keys, b.help))
        .collect::<Vec<_>>()
        .join("  ")
}
