//! The `flotilla` client's integration tests, in one binary: the binary as a script sees it
//! ([`cli`]) and the connection multiplexer between invocations ([`mux`]). CI runs both a second
//! time against the statically linked client (`FLOTILLA_TEST_CLIENT`, `.ci/run`):
//! `cargo nextest run -p flotilla-tui --test it`.
//!
//! A new test file goes in `tui/tests/it/` with a `mod NAME;` line below.

mod cli;
mod mux;
