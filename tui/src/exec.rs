//! `flotilla exec`, `health`, `ping`, `jobs`, `job` and `audit`: the exec stream and queries, and
//! their rendering.
//!
//! Rendering rules of `exec`: each output line is prefixed by its agent's name, aligned to the
//! longest target name and coloured per agent when the destination is a terminal and `NO_COLOR` is
//! unset. Lines are buffered per agent and stream until their newline, so two agents never share a
//! line; a line longer than [`MAX_LINE`] is cut there. Standard output lines go to our standard
//! output, standard error lines to our standard error, so `flotilla exec all -- hostname | sort`
//! works. Failures are reported at once on standard error; the summary comes last, also there.

mod queries;
mod rendering;
mod session;

pub use crate::util::utc;
pub use queries::{
    audit, audit_command, audit_table, job_command, job_detail, job_json, job_state, jobs,
    jobs_command, jobs_table, ping_command, ping_line, query, result_status, split_job,
    stream_query,
};
pub use rendering::{MAX_LINE, RenderOptions, Renderer, SUMMARY_ALL_UP_TO, describe};
pub use session::{ExecSession, Interrupts, run_exec};

use crate::client::{Client, ClientError};
use flotilla_wire::exec::{Builtin, ExecCommand, ExecRequest};
use std::io;
use std::time::Duration;

/// Exit status after Ctrl-C, as shells report a SIGINT death.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status when our standard output was closed (`| head`), as shells report a SIGPIPE death.
pub const EXIT_BROKEN_PIPE: u8 = 141;
/// Exit status for a request the hub refused as malformed or naming unknown agents.
pub const EXIT_USAGE: u8 = 2;

/// Parses a timeout: `500ms`, `30s`, `5m`, `2h` (bare numbers are seconds); zero is refused.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match crate::util::parse_duration(s)? {
        d if d.is_zero() => Err("timeout must be more than 0".into()),
        d => Ok(d),
    }
}

// Options of `flotilla exec`. A plain comment on purpose: clap would take a doc comment as the
// subcommand's about, overriding the `Exec` variant's.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// Agents: `all`, or comma-separated name globs (web-*), ids, or key=value labels; join parts
    /// of one term with `+` to require all (env=prod+role=db).
    pub selector: String,
    /// Kill the command's process group on an agent after this long (500ms, 30s, 5m, 2h).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Run on at most N agents at once (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub batch: u32,
    /// Run the words through /bin/sh -c on each agent (needs exec = "any" there).
    #[arg(long)]
    pub shell: bool,
    /// Print NDJSON events (accepted, started, stdout, stderr, exit, error, summary).
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ExecArgs {
    /// The request this command line makes.
    pub fn request(&self) -> ExecRequest {
        ExecRequest {
            selector: self.selector.clone(),
            command: ExecCommand::Argv {
                argv: self.command.clone(),
                shell: self.shell,
            },
            timeout_ms: self.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
            batch: self.batch,
        }
    }
}

/// The health built-in as an exec request.
pub fn health_request(selector: &str, timeout: Option<Duration>) -> ExecRequest {
    ExecRequest {
        selector: selector.to_string(),
        command: ExecCommand::Builtin(Builtin::Health),
        timeout_ms: timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        batch: 0,
    }
}

/// Runs `flotilla exec` (or `health`) on the real terminal.
pub async fn exec_command(
    client: &Client,
    req: &ExecRequest,
    json: bool,
) -> Result<u8, ClientError> {
    let opts = RenderOptions::detect(json);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(MAX_LINE, stdout.lock());
    let mut err = io::stderr();
    run_exec(client, req, opts, &mut out, &mut err, Interrupts::sigint()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert!(
            parse_timeout("1w")
                .expect_err("unit")
                .contains("unknown unit")
        );
        assert!(parse_timeout("0s").is_err());
    }
}
