//! Drawing the console into ratatui's `TestBackend` for the snapshot tests.

use super::WORK_DEADLINE;
use crossterm::event::{KeyCode, KeyEvent};
use flotilla::app::App;
use flotilla::console::Console;
use flotilla::event::Event;
use flotilla::ui::{self, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::Duration;

/// The screen as text, `w` by `h`, without colour and without trailing blanks.
pub(crate) fn render(app: &App, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    terminal
        .draw(|f| ui::render(app, Theme { color: false }, f))
        .expect("draw");
    let buf = terminal.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A key press as the console's event.
pub(crate) fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::from(code))
}

/// Types `text` into the console, one key per character.
pub(crate) fn keys(console: &mut Console, text: &str) {
    for c in text.chars() {
        console.apply(key(KeyCode::Char(c)));
    }
}

/// Applies events from the hub until `done` accepts the state. `nudge` runs every half second
/// without news (to ask again for a listing the agent has not reported yet).
pub(crate) async fn until(
    console: &mut Console,
    what: &str,
    done: impl Fn(&App) -> bool,
    mut nudge: impl FnMut(&mut Console),
) {
    let deadline = tokio::time::Instant::now() + WORK_DEADLINE;
    while !done(&console.app) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never showed {what}; screen:\n{}",
            render(&console.app, 160, 48)
        );
        match tokio::time::timeout(Duration::from_millis(500), console.step()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("console queue closed while waiting for {what}"),
            Err(_) => nudge(console),
        }
    }
}
