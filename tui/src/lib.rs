//! flotilla: the operator console (ratatui) and the scriptable CLI (`--json`) over the hub's
//! operator API.
//!
//! Layout: `client` talks to the hub; `app` holds state and applies `event`s and `action`s; `ui`
//! draws `&App`; `keymap` maps keys and generates hints; `cli` parses the command line and runs
//! the subcommands, of which `exec`, `files`, `watch` and `demo` have modules of their own; `mux`
//! is `flotilla mux`, the local multiplexer one-shot commands reach the hub through; `format`
//! renders agents and metrics as text; `util` holds small helpers (paths, clock, durations, dates,
//! output, and `Escaped`, through which every name an agent chose reaches a screen) and imports
//! nothing of ours.

pub mod action;
pub mod alerts;
pub mod app;
pub mod cli;
pub mod client;
pub mod command;
pub mod console;
pub mod demo;
pub mod event;
pub mod exec;
pub mod files;
pub mod format;
pub mod history;
pub mod host;
pub mod hostdetail;
pub mod keymap;
pub mod mux;
pub mod sessions;
pub mod shell;
pub mod strings;
pub mod ui;
pub mod util;
pub mod watch;
pub mod workloads;
