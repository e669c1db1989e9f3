//! Workloads across the fleet from the command line: `flotilla logs` (a container's or unit's
//! log lines, relayed by the hub), `flotilla container`, `flotilla compose` and `flotilla service`
//! (actions run as jobs, rendered like `flotilla exec`).

pub mod actions;
pub mod logs;
pub mod services_cli;
