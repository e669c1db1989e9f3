//! Workloads across the fleet from the command line: `flotilla logs` (a container's or unit's
//! log lines, relayed by the hub), `flotilla container` and `flotilla compose` (actions run as
//! jobs, rendered like `flotilla exec`).

pub mod actions;
pub mod logs;
