//! Drawing the console into ratatui's `TestBackend` for the snapshot tests.

use flotilla::app::App;
use flotilla::ui::{self, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

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
