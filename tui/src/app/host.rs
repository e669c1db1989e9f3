//! The agent view's time controls: the span every chart shows (`[` and `]`) and the minute the
//! top-process tables show (`<` back a minute, `>` forward, back to live at the present).
//!
//! The span travels to the network task with the focused agent (see [`App::history_span_s`]), so
//! the periodic history query and a change of span ask for the same thing. A step back in time asks
//! the hub for that minute's top processes ([`Command::HostTop`]); its answer is kept only while it
//! is still the minute asked for.

pub mod charts;

use super::App;
use crate::command::Command;
use flotilla_wire::history::TopMinute;
use flotilla_wire::host::HostView;

/// Chart spans the picker cycles through: label and seconds.
pub const RANGES: [(&str, u64); 6] = [
    ("5m", 300),
    ("1h", 3600),
    ("6h", 6 * 3600),
    ("24h", 24 * 3600),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
];

/// One hour, the span an agent view opens with.
pub const DEFAULT_RANGE: usize = 1;

/// How far back the top-process tables may step: the hub keeps per-minute top processes for the
/// one-minute tier only, which holds a day.
pub const TOP_BACK_MAX_MIN: u32 = 24 * 60;

/// The hub's answer for a past minute: its top processes, `None` when it kept nothing for it, or
/// why it could not say.
pub type PastTop = Result<Option<TopMinute>, String>;

/// Time controls of the agent view.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTime {
    /// Index into [`RANGES`].
    pub range: usize,
    /// Minutes back from the present the top tables show; 0 is live.
    pub top_back_min: u32,
    /// The minute asked for (its start, ms) and the hub's answer once it came: `Ok(None)` when the
    /// hub kept nothing for that minute.
    pub top: Option<(u64, Option<PastTop>)>,
    /// The hub's host depth of the agent (devices, interfaces, GPUs, SMART, custom series),
    /// re-read every few seconds while the view is open.
    pub view: Option<HostView>,
    /// Lines the usage panel is scrolled by (↑↓), so host depth stays readable at 80x24.
    pub scroll: u16,
    /// The per-device charts panel (`c`).
    pub charts: charts::Charts,
}

impl Default for HostTime {
    fn default() -> Self {
        Self {
            range: DEFAULT_RANGE,
            top_back_min: 0,
            top: None,
            view: None,
            scroll: 0,
            charts: charts::Charts::default(),
        }
    }
}

impl HostTime {
    /// The span's label, as chart titles show it.
    pub fn range_label(&self) -> &'static str {
        RANGES[self.range].0
    }

    /// The span in seconds.
    pub fn range_s(&self) -> u64 {
        RANGES[self.range].1
    }

    /// The start of the minute `back` minutes before `now_ms`.
    fn minute_start(now_ms: u64, back: u32) -> u64 {
        let minute = now_ms / 60_000 * 60_000;
        minute.saturating_sub(u64::from(back) * 60_000)
    }
}

impl App {
    /// The chart span in seconds of the agent view, for the network task's history queries.
    pub fn history_span_s(&self) -> u64 {
        self.host_time.range_s()
    }

    /// `[` (−1) and `]` (+1): a shorter or longer chart span, stopping at the ends. The history
    /// shown is dropped so a chart never carries the old span's points under the new label.
    pub(super) fn step_range(&mut self, delta: i32) {
        let last = RANGES.len() as i32 - 1;
        let next = (self.host_time.range as i32 + delta).clamp(0, last) as usize;
        if next != self.host_time.range {
            self.host_time.range = next;
            self.history = None;
            self.ask_chart();
        }
    }

    /// `<` (−1, a minute further back) and `>` (+1, a minute nearer the present; live at 0).
    pub(super) fn step_top(&mut self, delta: i32) {
        let Some(agent) = self.focused() else { return };
        let back = (i64::from(self.host_time.top_back_min) - i64::from(delta))
            .clamp(0, i64::from(TOP_BACK_MAX_MIN)) as u32;
        if back == self.host_time.top_back_min {
            return;
        }
        self.host_time.top_back_min = back;
        if back == 0 {
            self.host_time.top = None;
            return;
        }
        let from_ms = HostTime::minute_start(self.now_ms, back);
        self.host_time.top = Some((from_ms, None));
        self.commands.push(Command::HostTop {
            agent: agent.to_string(),
            from_ms,
            to_ms: from_ms + 60_000,
        });
    }

    /// The hub's answer for the minute starting at `from_ms`; ignored once another minute is asked.
    pub(super) fn apply_host_top(
        &mut self,
        from_ms: u64,
        result: Result<Vec<TopMinute>, String>,
    ) -> bool {
        match &mut self.host_time.top {
            Some((asked, answer)) if *asked == from_ms => {
                *answer = Some(result.map(|m| m.into_iter().next()));
                true
            }
            _ => false,
        }
    }

    /// The hub's host depth, kept when it is the agent in view.
    pub(super) fn apply_host_view(&mut self, view: HostView) -> bool {
        let fresh = self.focused().as_ref() == Some(&view.id);
        if fresh {
            self.host_time.view = Some(view);
            self.ask_chart();
        }
        fresh
    }

    /// ↑↓ in the agent view: picks the charted series while the charts panel is open, else
    /// scrolls the usage and host depth panel.
    pub(super) fn scroll_host(&mut self, delta: i32) {
        if self.host_time.charts.open {
            self.pick_chart(delta);
            return;
        }
        let next = (i64::from(self.host_time.scroll) + i64::from(delta)).clamp(0, 200);
        self.host_time.scroll = next as u16;
    }

    /// A newly opened agent view starts at the default span and live top tables.
    pub(super) fn reset_host_time(&mut self) {
        self.host_time = HostTime::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::View;
    use flotilla_wire::IdentityId;

    fn agent_app() -> App {
        let mut app = App::new(1_800_000_030_000);
        app.view = View::Agent(IdentityId::from_random(flotilla_wire::Role::Agent, [1; 8]));
        app
    }

    #[test]
    fn the_range_steps_between_five_minutes_and_thirty_days_and_stops_at_the_ends() {
        let mut app = agent_app();
        assert_eq!(app.host_time.range_label(), "1h");
        app.step_range(1);
        assert_eq!(
            (app.host_time.range_label(), app.history_span_s()),
            ("6h", 21_600)
        );
        for _ in 0..10 {
            app.step_range(1);
        }
        assert_eq!(app.host_time.range_label(), "30d");
        for _ in 0..10 {
            app.step_range(-1);
        }
        assert_eq!(app.host_time.range_label(), "5m");
    }

    #[test]
    fn stepping_back_asks_for_that_minute_and_forward_to_zero_is_live_again() {
        let mut app = agent_app();
        app.step_top(-1);
        app.step_top(-1);
        let minute = 1_800_000_000_000 - 120_000;
        assert_eq!(app.host_time.top_back_min, 2);
        let asked: Vec<_> = app
            .take_commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::HostTop { from_ms, to_ms, .. } => Some((from_ms, to_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(asked.last(), Some(&(minute, minute + 60_000)));
        // An answer for the minute before is stale.
        assert!(!app.apply_host_top(minute + 60_000, Ok(vec![])));
        assert!(app.apply_host_top(minute, Ok(vec![])));
        assert_eq!(app.host_time.top, Some((minute, Some(Ok(None)))));
        app.step_top(1);
        app.step_top(1);
        assert_eq!(app.host_time.top_back_min, 0);
        assert_eq!(app.host_time.top, None);
        // Forward from live stays live.
        app.step_top(1);
        assert_eq!(app.host_time.top_back_min, 0);
    }
}
