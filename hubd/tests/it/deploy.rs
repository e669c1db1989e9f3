//! Deployment and operations, tested the way a sysadmin meets them: the `hubd` and `agentd`
//! binaries in temporary directories on loopback — service files in a temporary root, backup and
//! restore, the Prometheus endpoint, SIGTERM and SIGHUP, configuration layering, logs without
//! secrets, and the example configurations in docs/.

mod backup;
mod docs;
mod install;
mod metrics;
pub(crate) mod prom;
mod reload;
mod secrets;
mod shutdown;
