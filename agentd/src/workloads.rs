//! Workloads on this machine: systemd units (D-Bus) and their journal.
//!
//! - `services`: the unit inventory and cgroup stats the metrics stream carries.
//! - `unit_actions`: start, stop, restart, reload, enable and disable as exec jobs.
//! - `journal`: a unit's journal, tailed and followed on a logs stream.

#[cfg(unix)]
pub mod journal;
#[cfg(unix)]
pub mod services;
#[cfg(unix)]
pub mod unit_actions;
