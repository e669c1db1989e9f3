//! User-visible console text, in one place.

/// Title in the header.
pub const TITLE: &str = "flotilla";
/// Header while dialling.
pub const CONNECTING: &str = "connecting…";
/// Header after the hub went away.
pub const RECONNECTING: &str = "reconnecting";
/// Placeholder in the filter prompt.
pub const FILTER_HINT: &str = "filter: name, label=value";
/// Shown when the filter matches nothing.
pub const NO_MATCH: &str = "no agent matches the filter";
/// Shown before the first snapshot.
pub const NO_AGENTS: &str = "no agents yet: enrol one with `agentd enroll --token …`";
/// Help overlay title.
pub const HELP_TITLE: &str = "keys";
/// Shown when a key's command could not be queued (the console is stuck, not busy).
pub const COMMAND_DROPPED: &str = "console busy: that command was dropped, try again";
