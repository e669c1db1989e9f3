//! Workload subcommands: systemd unit actions (`flotilla service`).

pub mod services_cli;
