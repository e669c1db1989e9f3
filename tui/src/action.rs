//! What a key asks the console to do.

use crate::app::View;
use crate::app::workloads::WorkAction;

/// An intent, produced by the keymap and applied by `App::apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the cursor (or scroll) by this many rows (clamped).
    Move(i32),
    /// Open what is under the cursor: an agent, a directory, a job.
    Open,
    /// Collapse the directory under the cursor, or go to its parent.
    Collapse,
    /// Start typing a filter.
    StartFilter,
    /// Cycle the sort column.
    NextSort,
    /// Mark or unmark the selected agent.
    ToggleMark,
    /// Mark every agent the filter shows.
    MarkAllFiltered,
    /// Unmark every agent.
    ClearMarks,
    /// Open the `:` prompt to run a command on the marked agents (or the selected one).
    ExecPrompt,
    /// Show the selected agent's shared folder.
    OpenFiles,
    /// Copy the file or directory under the cursor to another agent.
    Copy,
    /// Cancel the running job (output view) or the selected transfer.
    Cancel,
    /// Switch the output view between merged and one agent at a time.
    ToggleMerged,
    /// Show the next (+1) or previous (-1) agent's output.
    Pane(i32),
    /// Fetch the view's data again.
    Refresh,
    /// Go to a view.
    Show(View),
    /// Show the keys of this view.
    Help,
    /// Leave the current view or overlay.
    Back,
    /// Leave the console.
    Quit,
    /// Next (+1) or previous (-1) tab: an agent's overview, containers and services.
    NextTab(i32),
    /// Open the log of the container or unit under the cursor.
    OpenLogs,
    /// Pause or resume the logs pane.
    TogglePause,
    /// Act on the container or unit under the cursor.
    Work(WorkAction),
    /// Acknowledge the firing alert under the cursor.
    AckAlert,
    /// Ask how long to silence the alert under the cursor, and why.
    SilenceAlert,
    /// Previous sort column of the fleet (`<`; `s` and `>` go to the next).
    PrevSort,
    /// Shorter (-1) or longer (+1) chart span in the agent view.
    Range(i32),
    /// Top-process tables a minute further back (-1) or nearer the present (+1).
    TopStep(i32),
    /// The agent view's per-device charts panel in place of usage and processes, or back.
    Charts,
    /// Open a shell on the selected agent or in the selected container (the console steps aside).
    Shell,
    /// Watch the selected live shell session read-only (the console steps aside).
    Join,
}
