//! What a key asks the console to do.

/// An intent, produced by the keymap and applied by `App::apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the selection by this many rows (clamped).
    Move(i32),
    /// Open the selected agent's view.
    OpenAgent,
    /// Start typing a filter.
    StartFilter,
    /// Cycle the sort column.
    NextSort,
    /// Mark or unmark the selected agent.
    ToggleMark,
    /// Mark every agent the filter shows.
    MarkAllFiltered,
    /// Show the keys of this view.
    Help,
    /// Leave the current view or overlay.
    Back,
    /// Leave the console.
    Quit,
}
