//! Alerts from the command line: `flotilla alerts` (what is firing, pending, silenced and recently
//! resolved), `flotilla alert add|list|show|rm|test|ack` (rules and acknowledgements) and
//! `flotilla silence add|list|rm`. The rules themselves are evaluated by the hub; these commands
//! only ask it. `args` holds the command lines, `commands` runs them, `text` renders tables and
//! JSON (shared with `flotilla watch`).
//!
//! Exit status: 0 done; 1 the hub refused or could not be reached; 2 a usage error (bad flags, a
//! rule file or rule the checks refuse, here or on the hub); [`EXIT_FIRING`] from `flotilla alerts
//! --firing-exit` when an alert fires unsilenced.

pub mod args;
pub mod commands;
pub mod console;
pub mod text;

pub use args::{AlertArgs, AlertsArgs, SilenceArgs};
pub use commands::{alert_command, alerts_command, silence_command};

/// Exit status of `flotilla alerts --firing-exit` when at least one alert fires and no silence
/// mutes it: apart from 1 (the hub could not be asked), so a cron job or a monitoring check can
/// tell "something is wrong with the fleet" from "cannot tell".
pub const EXIT_FIRING: u8 = 3;
