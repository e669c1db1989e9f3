//! Flotilla's integration tests, in one binary: a real hub and real agents over QUIC with mutual
//! TLS and a real SQLite file, the console's own library and the real `hubd`, `agentd` and
//! `flotilla` binaries. Linking hub, agent and client once instead of once per test file is what
//! keeps CI's build on two cores short.
//!
//! [`harness`] is the one way to start a fleet ([`harness::Fleet`]); each other module is one
//! area, named as its tests are filtered: `cargo nextest run -p flotilla-hubd -E 'test(/^exec::/)'`.
//!
//! # Adding a test module
//!
//! 1. Put the file in `hubd/tests/it/` (a file written for the old layout, `hubd/tests/NAME.rs`,
//!    moves here unchanged at first) and add `mod NAME;` below, in order.
//! 2. Replace its `mod common;` (and `mod exec_support;`, `mod files_support;`,
//!    `mod console_support;`) with `use crate::harness::…`: `common::TestFleet` is
//!    `harness::Fleet` (`Fleet::new()`; `fleet.agent(name)` that enrols and starts one is
//!    `fleet.spawn_agent(name)`, `fleet.admin(req)` is `fleet.admin_request(req)`, `fleet.listed_agents()`
//!    is `fleet.listed_agents()`); `Client`, `HubProc`, `run_json` and the like are re-exported by
//!    `harness`; exec and files fleets come from `harness::exec::exec_fleet(specs)` and
//!    `harness::files::files_fleet(names)`, or `Fleet::builder().agent(AgentSpec::any("web-1"))
//!    .start()` for any mix.
//! 3. Its insta snapshots: a snapshot of `tests/NAME.rs` was `snapshots/NAME__CASE.snap`; here it is
//!    `it/snapshots/it__NAME__CASE.snap`. `git mv` them, then check with `CI=true cargo nextest
//!    run -p flotilla-hubd -E 'test(/^NAME::/)'` that none is new.
//! 4. A test that changes or measures the whole process (a resource limit, peak memory) starts with
//!    `if !harness::in_own_process("NAME::test") { return; }`: nextest gives each test its own
//!    process, `cargo test` does not.
//! 5. A nextest test-group or override that named the old binary (`binary(NAME)`) now names this
//!    one and the module: `binary(it) & test(/^NAME::/)`.

mod harness;

mod alerts;
mod alerts_cli;
mod cli;
mod console_actions;
mod console_alerts;
mod console_host;
mod console_sessions;
mod console_tasks;
mod console_tmux;
mod console_views;
mod console_workloads;
mod containers;
mod deploy;
mod enrolment;
mod escapes;
mod exec;
mod exec_flood;
mod faults;
mod files;
mod files_nospace;
mod host_agent;
mod host_fleet;
mod host_history;
mod hostile_agent;
mod hostile_hub;
mod hostile_net;
mod kill_matrix;
mod lifecycle;
mod metrics;
mod notify;
mod rejections;
mod resumption;
mod services;
mod sessions;
mod shell;
mod workloads;
