//! The scriptable side of `flotilla`: login, agents, agent, watch, demo, mux. Every command has
//! `--json`.
//!
//! One-shot commands (`agents`, `agent`, `metrics`, `exec`, `health`, `ping`, `jobs`, `job`,
//! `audit`) go through a running `flotilla mux` for the login when one answers, unless `--no-mux`;
//! the console, `watch`, `ls`, `cp` and `demo` always dial.

mod arguments;
mod dispatch;
mod mux_command;

pub use crate::exec::EXIT_BROKEN_PIPE;
pub use arguments::{Cli, Command, ConsoleConfig};
pub use dispatch::run;

/// Whether `err` comes from writing into a pipe nobody reads any more (`flotilla agents | head -1`):
/// the command then ends quietly with [`EXIT_BROKEN_PIPE`], as it would by SIGPIPE.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
