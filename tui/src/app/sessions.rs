//! The sessions view (`9`): recorded shell sessions, newest first. `Enter` replays the selected
//! one and `j` (admins) watches a live one read-only; like a shell, the terminal loop suspends the
//! console to play it and gives the console back unchanged.

use super::shell::ShellTarget;
use super::{App, Fetched, View};
use flotilla_wire::Role;
use flotilla_wire::sessions::{SessionRow, SessionState};
use flotilla_wire::shell::ShellSessionId;

/// The sessions list and its cursor.
#[derive(Debug, Default)]
pub struct SessionsList {
    /// Newest first, as the hub lists them.
    pub rows: Fetched<Vec<SessionRow>>,
    /// Index of the selected row.
    pub selected: usize,
}

impl SessionsList {
    /// The selected session, once the list is in.
    pub fn selected_row(&self) -> Option<&SessionRow> {
        match &self.rows {
            Fetched::Ready(rows) => rows.get(self.selected),
            _ => None,
        }
    }

    /// Moves the cursor by `delta`, within the list.
    pub(super) fn move_by(&mut self, delta: i32) {
        let len = match &self.rows {
            Fetched::Ready(rows) => rows.len(),
            _ => 0,
        };
        let max = len.saturating_sub(1) as i64;
        self.selected = (self.selected as i64 + i64::from(delta)).clamp(0, max) as usize;
    }
}

/// A recording to play, or a live session to watch, in the terminal the console steps out of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPlay {
    /// Which session.
    pub id: ShellSessionId,
    /// Watch it live (read-only) instead of replaying its recording.
    pub join: bool,
}

/// What the terminal loop runs while the console steps aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// A shell (`s`, `!`).
    Shell(ShellTarget),
    /// A replay or a join (sessions view).
    Session(SessionPlay),
}

impl App {
    /// Whether we may join live sessions: the hub serves joins to admins only.
    pub fn can_join(&self) -> bool {
        matches!(self.role(), Some(Role::Admin))
    }

    /// Takes the sessions list the hub sent (or why not), keeping the cursor on the list.
    /// The cursor stays on the same session when a refresh brings newer ones above it.
    pub(super) fn sessions_listed(&mut self, result: Result<Vec<SessionRow>, String>) -> bool {
        let was = self.sessions.selected_row().map(|r| r.id);
        if let (Some(id), Ok(rows)) = (was, &result)
            && let Some(at) = rows.iter().position(|r| r.id == id)
        {
            self.sessions.selected = at;
        }
        self.sessions.rows = match result {
            Ok(rows) => Fetched::Ready(rows),
            Err(e) => Fetched::Failed(e),
        };
        self.sessions.move_by(0);
        self.view == View::Sessions
    }

    /// `Enter`: replay the selected session.
    pub(super) fn replay_selected(&mut self) {
        let Some(row) = self.sessions.selected_row() else {
            return;
        };
        if !row.recorded {
            self.notice = Some(format!("{}: its recording was pruned", row.id));
            return;
        }
        self.session_play = Some(SessionPlay {
            id: row.id,
            join: false,
        });
    }

    /// `j`: watch the selected live session read-only (admins).
    pub(super) fn join_selected(&mut self) {
        let Some(row) = self.sessions.selected_row() else {
            return;
        };
        if row.state != SessionState::Live {
            self.notice = Some(format!("{} is not live: Enter replays it", row.id));
            return;
        }
        self.session_play = Some(SessionPlay {
            id: row.id,
            join: true,
        });
    }

    /// What the terminal loop should run now: a shell or a session, if one was asked for.
    pub fn take_handoff(&mut self) -> Option<Handoff> {
        if let Some(target) = self.take_shell() {
            return Some(Handoff::Shell(target));
        }
        self.session_play.take().map(Handoff::Session)
    }

    /// Shows how a replay or join ended, once the console is back.
    pub fn session_play_ended(&mut self, play: &SessionPlay, how: &str) {
        let what = if play.join { "watching" } else { "replay of" };
        self.notice = Some(format!("{what} {}: {how}", play.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::command::Command;
    use crate::event::Event;

    fn connected(app: &mut App, role: Role) {
        app.update(Event::Connected(Box::new(flotilla_wire::msg::Welcome {
            protocol_version: flotilla_wire::PROTOCOL_VERSION,
            hub_version: "0.1.0".into(),
            identity: flotilla_wire::IdentityId::from_random(Role::Operator, [9; 8]),
            role,
            name: "root".into(),
            metrics_interval_ms: 5000,
        })));
    }

    fn row(n: u8, state: SessionState) -> SessionRow {
        SessionRow {
            id: ShellSessionId(u64::from(n)),
            operator: "op".into(),
            operator_name: "alice".into(),
            agent: "web-1".into(),
            container: String::new(),
            command: String::new(),
            started_ms: 1_700_000_000_000 + u64::from(n) * 1000,
            ended_ms: (state != SessionState::Live).then_some(1_700_000_100_000),
            exit: Some(0),
            reason: String::new(),
            bytes: 100,
            size: 80,
            recorded: true,
            state,
        }
    }

    #[test]
    fn nine_lists_sessions_and_enter_or_j_hand_the_terminal_over() {
        let mut app = App::new(0);
        connected(&mut app, Role::Admin);
        app.take_commands();
        app.apply(Action::Show(View::Sessions));
        assert_eq!(app.view, View::Sessions);
        assert_eq!(app.take_commands(), [Command::Sessions]);
        assert!(app.update(Event::Sessions(Ok(vec![
            row(2, SessionState::Live),
            row(1, SessionState::Ended),
        ]))));
        // The ended one: `j` refuses with a notice, Enter replays it.
        app.apply(Action::Move(1));
        app.apply(Action::Join);
        assert_eq!(app.take_handoff(), None);
        assert!(
            app.notice
                .as_deref()
                .is_some_and(|n| n.contains("not live"))
        );
        app.apply(Action::Open);
        let Some(Handoff::Session(play)) = app.take_handoff() else {
            panic!("Enter asks for a replay");
        };
        assert_eq!(play.id, row(1, SessionState::Ended).id);
        assert!(!play.join);
        // The live one: an admin joins it.
        app.apply(Action::Move(-1));
        app.apply(Action::Join);
        assert_eq!(
            app.take_handoff(),
            Some(Handoff::Session(SessionPlay {
                id: row(2, SessionState::Live).id,
                join: true
            }))
        );
        // A refresh with a newer session on top keeps the cursor on the same session.
        app.apply(Action::Move(1));
        app.update(Event::Sessions(Ok(vec![
            row(3, SessionState::Live),
            row(2, SessionState::Live),
            row(1, SessionState::Ended),
        ])));
        assert_eq!(
            app.sessions.selected_row().map(|r| r.id),
            Some(ShellSessionId(1))
        );
        app.apply(Action::Move(-2));
        app.session_play_ended(&play, "end of recording");
        assert_eq!(
            app.view,
            View::Sessions,
            "the console comes back where it was"
        );
        assert_eq!(app.sessions.selected, 0);
    }

    #[test]
    fn a_refused_list_says_why() {
        let mut app = App::new(0);
        app.apply(Action::Show(View::Sessions));
        app.update(Event::Sessions(Err(
            "viewers may not list shell sessions".into()
        )));
        assert!(matches!(app.sessions.rows, Fetched::Failed(ref e) if e.contains("viewers")));
        app.apply(Action::Open);
        assert_eq!(app.take_handoff(), None);
    }

    #[test]
    fn viewers_have_no_nine_and_operators_no_j() {
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        let key = |c| Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        let mut viewer = App::new(0);
        connected(&mut viewer, Role::Viewer);
        viewer.take_commands();
        viewer.update(key('9'));
        assert_eq!(
            viewer.view,
            View::Fleet,
            "the hub lists no sessions to viewers"
        );
        assert!(viewer.take_commands().is_empty());

        let mut operator = App::new(0);
        connected(&mut operator, Role::Operator);
        operator.update(key('9'));
        assert_eq!(operator.view, View::Sessions);
        operator.update(Event::Sessions(Ok(vec![row(1, SessionState::Live)])));
        operator.update(key('j'));
        assert_eq!(operator.take_handoff(), None, "joins are for admins");
    }
}
