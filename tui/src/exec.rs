//! `flotilla exec`, `health`, `ping`, `jobs`, `job` and `audit`: the exec stream and queries, and
//! their rendering.
//!
//! Rendering rules of `exec`: each output line is prefixed by its agent's name, aligned to the
//! longest target name and coloured per agent when the destination is a terminal and `NO_COLOR` is
//! unset. Lines are buffered per agent and stream until their newline, so two agents never share a
//! line; a line longer than [`MAX_LINE`] is cut there. Standard output lines go to our standard
//! output, standard error lines to our standard error, so `flotilla exec all -- hostname | sort`
//! works. Failures are reported at once on standard error; the summary comes last, also there.

use crate::client::{Client, ClientError, SendHalf};
use flotilla_wire::exec::{
    AgentEvent, AgentResult, AuditEntry, Builtin, ExecCommand, ExecControl, ExecEvent, ExecRequest,
    JobCounts, JobId, JobInfo, JobSummary, Outcome, OutputStream, PingResult, Query, QueryReply,
    Target,
};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_EXEC_FRAME, MAX_EXEC_REQUEST_FRAME, MAX_REQUEST_FRAME};
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::{ErrorCode, IdentityId};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Longest line kept waiting for its newline; longer output (a binary blob, `head -c 1G
/// /dev/zero`) is cut into lines of this size so memory stays bounded.
pub const MAX_LINE: usize = 64 * 1024;
/// Above this many targets the summary lists only agents that did not succeed.
pub const SUMMARY_ALL_UP_TO: usize = 50;
/// Events read ahead of the renderer: a little slack, then back-pressure to the hub.
const READ_AHEAD: usize = 16;
/// Exit status after Ctrl-C, as shells report a SIGINT death.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status when our standard output was closed (`| head`), as shells report a SIGPIPE death.
pub const EXIT_BROKEN_PIPE: u8 = 141;
/// Exit status for a request the hub refused as malformed or naming unknown agents.
pub const EXIT_USAGE: u8 = 2;

/// Per-agent prefix colours (ANSI): distinct on dark and light terminals.
const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

/// Parses `500ms`, `30s`, `5m`, `2h` (bare numbers are seconds).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("timeout {s:?}: expected a number then ms, s, m or h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "timeout {s:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    match ms {
        Some(0) => Err("timeout must be more than 0".into()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("timeout {s:?} is too long")),
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

/// How to render.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    /// NDJSON instead of text.
    pub json: bool,
    /// Colour prefixes on standard output.
    pub colour_out: bool,
    /// Colour prefixes on standard error.
    pub colour_err: bool,
}

impl RenderOptions {
    /// Colours only where the stream is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect(json: bool) -> Self {
        use std::io::IsTerminal;
        let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            json,
            colour_out: allowed && !json && io::stdout().is_terminal(),
            colour_err: allowed && !json && io::stderr().is_terminal(),
        }
    }
}

/// Where one agent stands, as the console saw it.
struct AgentView {
    target: Target,
    colour: &'static str,
    partial: [Vec<u8>; 2],
    last: Option<AgentEvent>,
}

/// Turns exec events into text or NDJSON. Pure: writes only to the writers it is given.
pub struct Renderer {
    opts: RenderOptions,
    job: Option<JobId>,
    expected: u32,
    agents: Vec<AgentView>,
    index: HashMap<IdentityId, usize>,
    width: usize,
    summary: Option<JobSummary>,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

fn seconds(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

/// Words for a final agent event: `exit 0`, `timed out (SIGTERM)`, `unreachable: offline…`.
pub fn describe(last: &AgentEvent) -> String {
    match last {
        AgentEvent::Exited(r) => {
            let how = match (r.code, r.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by {} ({s})", signal_name(s)),
                (None, None) => "ended".into(),
            };
            if r.timed_out {
                format!("timed out, {how}")
            } else if r.cancelled {
                format!("cancelled, {how}")
            } else {
                how
            }
        }
        AgentEvent::Failed(f) => format!("{}: {}", f.kind.as_str().replace('_', " "), f.message),
        AgentEvent::Started { .. } | AgentEvent::Output { .. } => "running".into(),
    }
}

impl Renderer {
    /// A renderer for one job.
    pub fn new(opts: RenderOptions) -> Self {
        Self {
            opts,
            job: None,
            expected: 0,
            agents: Vec::new(),
            index: HashMap::new(),
            width: 0,
            summary: None,
        }
    }

    /// The summary, once the hub sent it.
    pub fn summary(&self) -> Option<&JobSummary> {
        self.summary.as_ref()
    }

    /// The job id, once accepted.
    pub fn job(&self) -> Option<JobId> {
        self.job
    }

    /// The agent's name padded to the widest target, coloured if asked, followed by `tail`.
    fn cell(&self, i: usize, colour: bool, tail: &str) -> String {
        let a = &self.agents[i];
        let text = format!("{:<w$}{tail}", a.target.name, w = self.width);
        if colour {
            format!("\x1b[{}m{text}\x1b[0m", a.colour)
        } else {
            text
        }
    }

    fn prefix(&self, i: usize, colour: bool) -> String {
        self.cell(i, colour, " |")
    }

    fn base_json(&self, i: usize, event: &str) -> serde_json::Map<String, Value> {
        let a = &self.agents[i];
        let mut m = serde_json::Map::new();
        m.insert("event".into(), json!(event));
        m.insert("job".into(), json!(self.job));
        m.insert("agent".into(), json!(a.target.id));
        m.insert("name".into(), json!(a.target.name));
        m
    }

    fn line(
        &self,
        i: usize,
        stream: OutputStream,
        bytes: &[u8],
        partial: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<()> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes);
        if self.opts.json {
            let mut m = self.base_json(
                i,
                match stream {
                    OutputStream::Stdout => "stdout",
                    OutputStream::Stderr => "stderr",
                },
            );
            m.insert("line".into(), json!(text));
            if partial {
                m.insert("partial".into(), json!(true));
            }
            return writeln!(out, "{}", Value::Object(m));
        }
        match stream {
            OutputStream::Stdout => {
                writeln!(out, "{} {text}", self.prefix(i, self.opts.colour_out))
            }
            OutputStream::Stderr => {
                // Keep the order lines arrived in when both streams share a terminal.
                out.flush()?;
                writeln!(err, "{} {text}", self.prefix(i, self.opts.colour_err))
            }
        }
    }

    fn flush_partial(
        &mut self,
        i: usize,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<()> {
        for (slot, stream) in [(0, OutputStream::Stdout), (1, OutputStream::Stderr)] {
            let rest = std::mem::take(&mut self.agents[i].partial[slot]);
            if !rest.is_empty() {
                self.line(i, stream, &rest, true, out, err)?;
            }
        }
        Ok(())
    }

    /// Renders one event. Returns the summary when the job is done.
    pub fn handle(
        &mut self,
        ev: ExecEvent,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<()> {
        match ev {
            ExecEvent::Accepted { job, targets } => {
                self.job = Some(job);
                self.expected = targets;
            }
            ExecEvent::Targets(list) => {
                for t in list {
                    let colour = COLOURS[self.agents.len() % COLOURS.len()];
                    self.width = self.width.max(t.name.len());
                    self.index.insert(t.id.clone(), self.agents.len());
                    self.agents.push(AgentView {
                        target: t,
                        colour,
                        partial: [Vec::new(), Vec::new()],
                        last: None,
                    });
                }
                if self.opts.json && self.agents.len() as u32 == self.expected {
                    let targets: Vec<&Target> = self.agents.iter().map(|a| &a.target).collect();
                    writeln!(
                        out,
                        "{}",
                        json!({"event": "accepted", "job": self.job, "targets": targets})
                    )?;
                }
            }
            ExecEvent::Agent { agent, event } => {
                let Some(&i) = self.index.get(&agent) else {
                    return Ok(());
                };
                self.agent_event(i, event, out, err)?;
            }
            ExecEvent::Done(summary) => {
                for i in 0..self.agents.len() {
                    self.flush_partial(i, out, err)?;
                }
                self.summary = Some(summary);
                if self.opts.json {
                    writeln!(out, "{}", self.summary_json())?;
                } else {
                    out.flush()?;
                    write!(err, "{}", self.summary_text())?;
                }
            }
            ExecEvent::Refused(r) => {
                if self.opts.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"event": "refused", "code": r.code, "message": r.message})
                    )?;
                }
            }
        }
        Ok(())
    }

    fn agent_event(
        &mut self,
        i: usize,
        event: AgentEvent,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<()> {
        match event {
            AgentEvent::Started { pid } => {
                if self.opts.json {
                    let mut m = self.base_json(i, "started");
                    m.insert("pid".into(), json!(pid));
                    writeln!(out, "{}", Value::Object(m))?;
                }
            }
            AgentEvent::Output { stream, data } => {
                self.split_lines(i, stream, &data.0, out, err)?
            }
            last @ (AgentEvent::Exited(_) | AgentEvent::Failed(_)) => {
                self.flush_partial(i, out, err)?;
                if self.opts.json {
                    writeln!(out, "{}", self.final_json(i, &last))?;
                } else {
                    let ok = matches!(&last, AgentEvent::Exited(r) if r.code == Some(0) && !r.cancelled && !r.timed_out);
                    if !ok {
                        out.flush()?;
                        let prefix = self.prefix(i, self.opts.colour_err);
                        writeln!(err, "{prefix} ! {}", describe(&last))?;
                    }
                }
                self.agents[i].last = Some(last);
            }
        }
        Ok(())
    }

    /// Emits every complete line of `data` (after what was pending for this agent and stream), cuts
    /// lines at [`MAX_LINE`], and keeps the unterminated rest. Bytes are copied only into that rest.
    fn split_lines(
        &mut self,
        i: usize,
        stream: OutputStream,
        mut data: &[u8],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<()> {
        let slot = usize::from(stream == OutputStream::Stderr);
        let mut pending = std::mem::take(&mut self.agents[i].partial[slot]);
        while !data.is_empty() {
            let room = MAX_LINE - pending.len();
            let window = &data[..data.len().min(room + 1)];
            let (take, skip, partial) = match memchr::memchr(b'\n', window) {
                Some(nl) => (nl, 1, false),
                None if data.len() > room => (room, 0, true),
                None => {
                    pending.extend_from_slice(data);
                    break;
                }
            };
            if pending.is_empty() {
                self.line(i, stream, &data[..take], partial, out, err)?;
            } else {
                pending.extend_from_slice(&data[..take]);
                self.line(i, stream, &pending, partial, out, err)?;
                pending.clear();
            }
            data = &data[take + skip..];
        }
        self.agents[i].partial[slot] = pending;
        Ok(())
    }

    fn final_json(&self, i: usize, last: &AgentEvent) -> Value {
        let outcome = Outcome::of_event(last).map(Outcome::as_str);
        match last {
            AgentEvent::Exited(r) => {
                let mut m = self.base_json(i, "exit");
                m.insert("outcome".into(), json!(outcome));
                m.insert("code".into(), json!(r.code));
                m.insert("signal".into(), json!(r.signal));
                m.insert("duration_ms".into(), json!(r.duration_ms));
                m.insert("timed_out".into(), json!(r.timed_out));
                m.insert("cancelled".into(), json!(r.cancelled));
                Value::Object(m)
            }
            AgentEvent::Failed(f) => {
                let mut m = self.base_json(i, "error");
                m.insert("outcome".into(), json!(outcome));
                m.insert("kind".into(), json!(f.kind));
                m.insert("message".into(), json!(f.message));
                Value::Object(m)
            }
            _ => Value::Null,
        }
    }

    fn counts(&self) -> JobCounts {
        self.summary.as_ref().map(|s| s.counts).unwrap_or_default()
    }

    /// 0 only if every target exited 0.
    pub fn exit_status(&self) -> u8 {
        match &self.summary {
            Some(s) if s.counts.succeeded == s.targets && s.targets > 0 => 0,
            _ => 1,
        }
    }

    fn summary_json(&self) -> Value {
        let c = self.counts();
        let s = self.summary.as_ref();
        json!({
            "event": "summary",
            "job": self.job,
            "targets": s.map(|s| s.targets),
            "succeeded": c.succeeded,
            "failed": c.failed,
            "timed_out": c.timed_out,
            "cancelled": c.cancelled,
            "refused": c.refused,
            "unreachable": c.unreachable,
            "duration_ms": s.map(|s| s.duration_ms),
            "exit_status": self.exit_status(),
        })
    }

    /// The closing summary: counts, then one line per agent (only the unsuccessful ones on a big
    /// fleet).
    pub fn summary_text(&self) -> String {
        let c = self.counts();
        let (targets, ms) = self
            .summary
            .as_ref()
            .map(|s| (s.targets, s.duration_ms))
            .unwrap_or_default();
        let mut text = format!(
            "job {}: {targets} agent{}, {} succeeded, {} failed, {} timed out, {} unreachable",
            self.job.map(|j| j.to_string()).unwrap_or_default(),
            if targets == 1 { "" } else { "s" },
            c.succeeded,
            c.failed,
            c.timed_out,
            c.unreachable
        );
        if c.cancelled > 0 {
            text.push_str(&format!(", {} cancelled", c.cancelled));
        }
        if c.refused > 0 {
            text.push_str(&format!(", {} refused", c.refused));
        }
        text.push_str(&format!(" ({})\n", seconds(ms)));
        let all = self.agents.len() <= SUMMARY_ALL_UP_TO;
        let mut hidden = 0;
        for (i, a) in self.agents.iter().enumerate() {
            let ok = matches!(&a.last, Some(AgentEvent::Exited(r)) if r.code == Some(0) && !r.cancelled && !r.timed_out);
            if !all && ok {
                hidden += 1;
                continue;
            }
            let status = a
                .last
                .as_ref()
                .map(describe)
                .unwrap_or_else(|| "no result".into());
            let duration = match &a.last {
                Some(AgentEvent::Exited(r)) => seconds(r.duration_ms),
                _ => String::new(),
            };
            let name = self.cell(i, self.opts.colour_err, "");
            let line = format!("  {name}  {status:<24} {duration}");
            text.push_str(line.trim_end());
            text.push('\n');
        }
        if hidden > 0 {
            text.push_str(&format!("  … and {hidden} more that exited 0\n"));
        }
        text
    }
}

/// An exec stream as events, over either link.
pub struct ExecSession {
    send: SendHalf,
    events: mpsc::Receiver<Result<ExecEvent, ClientError>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ExecSession {
    /// Opens an exec stream and sends the request.
    pub async fn open(client: &Client, req: &ExecRequest) -> Result<Self, ClientError> {
        let link = client.link().clone();
        let (mut send, mut recv) = client.open_bi().await?;
        send.write_opening(&StreamOpen::Exec, req, MAX_EXEC_REQUEST_FRAME)
            .await
            .map_err(|e| link.stream_error(e))?;
        let (tx, events) = mpsc::channel(READ_AHEAD);
        // The reader owns the receive half so that a frame is never dropped half-read by a select.
        let reader = tokio::spawn(async move {
            loop {
                let ev = match read_frame::<ExecEvent, _>(&mut recv, MAX_EXEC_FRAME).await {
                    Ok(Some(ev)) => Ok(ev),
                    Ok(None) => return,
                    Err(e) => Err(link.stream_error(e)),
                };
                let stop = ev.is_err();
                if tx.send(ev).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Self {
            send,
            events,
            reader,
        })
    }

    /// The next event; `None` when the hub finished the stream. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<ExecEvent, ClientError>> {
        self.events.recv().await
    }

    /// Asks the hub to cancel the job.
    pub async fn cancel(&mut self) {
        let _ = write_frame(&mut self.send, &ExecControl::Cancel, MAX_EXEC_FRAME).await;
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where Ctrl-C comes from: the terminal, or a channel in tests.
pub enum Interrupts<'a> {
    /// SIGINT.
    Signal(tokio::signal::unix::Signal),
    /// Each message is one Ctrl-C.
    Channel(&'a mut mpsc::Receiver<()>),
    /// None will come.
    Never,
}

impl Interrupts<'_> {
    /// SIGINT, or never if the handler cannot be installed.
    pub fn sigint() -> Self {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map(Self::Signal)
            .unwrap_or(Self::Never)
    }

    /// Cancel-safe.
    async fn recv(&mut self) -> Option<()> {
        match self {
            Self::Signal(s) => s.recv().await,
            Self::Channel(rx) => rx.recv().await,
            Self::Never => std::future::pending().await,
        }
    }
}

/// Runs `req`, rendering to `out` and `err`, until the summary. Returns the exit status: 0 only if
/// every target exited 0; [`EXIT_INTERRUPTED`] after Ctrl-C; [`EXIT_USAGE`] for a bad selector.
pub async fn run_exec(
    client: &Client,
    req: &ExecRequest,
    opts: RenderOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    mut interrupts: Interrupts<'_>,
) -> Result<u8, ClientError> {
    let mut session = ExecSession::open(client, req).await?;
    let mut r = Renderer::new(opts);
    let mut interrupted = false;
    let io_err = |e: io::Error| ClientError::Stream(format!("cannot write output: {e}"));
    loop {
        tokio::select! {
            ev = session.next() => {
                let ev = match ev {
                    Some(ev) => ev?,
                    None => return Err(ClientError::Stream("hub ended the job stream before its summary".into())),
                };
                if let ExecEvent::Refused(refusal) = &ev {
                    r.handle(ev.clone(), out, err).map_err(io_err)?;
                    let status = if matches!(refusal.code, ErrorCode::BadRequest | ErrorCode::NotFound) { EXIT_USAGE } else { 1 };
                    if !opts.json {
                        writeln!(err, "flotilla: {}", refusal.message).map_err(io_err)?;
                    }
                    return Ok(status);
                }
                let done = matches!(ev, ExecEvent::Done(_));
                let idle = session.events.is_empty();
                let written = r.handle(ev, out, err).and_then(|()| if done || idle { out.flush() } else { Ok(()) });
                if let Err(e) = written {
                    // Our output is gone: nobody reads the rest, stop the job. A closed pipe
                    // (`| head`) ends quietly, as SIGPIPE would.
                    session.cancel().await;
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(EXIT_BROKEN_PIPE);
                    }
                    return Err(io_err(e));
                }
                if done {
                    return Ok(if interrupted { EXIT_INTERRUPTED } else { r.exit_status() });
                }
            }
            Some(()) = interrupts.recv() => {
                if interrupted {
                    return Ok(EXIT_INTERRUPTED);
                }
                interrupted = true;
                session.cancel().await;
                if !opts.json {
                    let job = r.job().map(|j| j.to_string()).unwrap_or_default();
                    let _ = writeln!(err, "cancelling job {job}: agents are stopping their commands (Ctrl-C again to quit now)");
                }
            }
        }
    }
}

/// Sends one query and collects every reply up to `End`; a refusal becomes an error.
pub async fn query(client: &Client, q: &Query) -> Result<Vec<QueryReply>, ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(&StreamOpen::Query, q, MAX_REQUEST_FRAME)
        .await
        .map_err(|e| link.stream_error(e))?;
    // Ends our side: finishes a QUIC stream, half-closes a connection to the mux.
    let _ = send.shutdown().await;
    let mut replies = Vec::new();
    // Bounded: a reply per job, result, entry or agent; the hub caps lists at 10,000.
    for _ in 0..1_000_000 {
        match read_frame::<QueryReply, _>(&mut recv, MAX_REQUEST_FRAME).await {
            Ok(Some(QueryReply::End)) => return Ok(replies),
            Ok(Some(QueryReply::Error(r))) => return Err(ClientError::Refused(r)),
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => break,
            Err(e) => return Err(link.stream_error(e)),
        }
    }
    Err(ClientError::Stream(
        "hub ended the query without its end marker".into(),
    ))
}

/// `2025-01-31 12:34:56Z` from ms since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn counts_cell(c: &JobCounts) -> String {
    format!(
        "{:>4} {:>4} {:>4} {:>4}",
        c.succeeded,
        c.failed + c.refused,
        c.timed_out,
        c.unreachable
    )
}

/// A job's state in one word: running, interrupted, cancelled, ok or failed.
pub fn job_state(j: &JobInfo) -> &'static str {
    match (j.ended_ms, j.interrupted, &j.cancelled_by) {
        (None, _, _) => "running",
        (_, true, _) => "interrupted",
        (_, _, Some(_)) => "cancelled",
        _ if j.counts.succeeded == j.targets => "ok",
        _ => "failed",
    }
}

/// The `flotilla jobs` table.
pub fn jobs_table(jobs: &[JobInfo]) -> String {
    let mut out = format!(
        "{:>5}  {:<20}  {:<12}  {:>4} {:>4} {:>4} {:>4} {:>4}  {:<11}  {:<16}  COMMAND\n",
        "JOB", "STARTED", "BY", "AGTS", "OK", "FAIL", "T/O", "UNR", "STATE", "SELECTOR"
    );
    for j in jobs {
        out.push_str(&format!(
            "{:>5}  {:<20}  {:<12}  {:>4} {}  {:<11}  {:<16}  {}\n",
            j.job.0,
            utc(j.started_ms),
            j.actor_name,
            j.targets,
            counts_cell(&j.counts),
            job_state(j),
            j.selector,
            j.command.display()
        ));
    }
    out
}

/// One result's status words.
pub fn result_status(r: &AgentResult) -> String {
    match r.outcome {
        Outcome::Exited => match (r.code, r.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by {} ({s})", signal_name(s)),
            (None, None) => "ended".into(),
        },
        Outcome::TimedOut => "timed out".into(),
        Outcome::Cancelled if r.message.is_empty() => "cancelled".into(),
        other => {
            let word = other.as_str().replace('_', " ");
            if r.message.is_empty() {
                word
            } else {
                format!("{word}: {}", r.message)
            }
        }
    }
}

/// `flotilla job ID`: the job, one line per agent, then the end of each agent's output.
pub fn job_detail(info: &JobInfo, results: &[AgentResult]) -> String {
    let mut out = format!(
        "job:       {}\nby:        {} ({})\nselector:  {}\ncommand:   {}\nstarted:   {}\nended:     {}\nstate:     {}\ntargets:   {}\nresults:   {} succeeded, {} failed, {} timed out, {} cancelled, {} refused, {} unreachable\n",
        info.job,
        info.actor_name,
        info.actor,
        info.selector,
        info.command.display(),
        utc(info.started_ms),
        info.ended_ms.map(utc).unwrap_or_else(|| "-".into()),
        job_state(info),
        info.targets,
        info.counts.succeeded,
        info.counts.failed,
        info.counts.timed_out,
        info.counts.cancelled,
        info.counts.refused,
        info.counts.unreachable
    );
    if let Some(by) = &info.cancelled_by {
        out.push_str(&format!("cancelled: by {by}\n"));
    }
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    out.push('\n');
    for r in results {
        out.push_str(&format!(
            "  {:<width$}  {:<40} {}\n",
            r.name,
            result_status(r),
            r.duration_ms.map(seconds).unwrap_or_default()
        ));
    }
    for r in results {
        for (label, tail, total) in [
            ("stdout", &r.stdout_tail, r.stdout_bytes),
            ("stderr", &r.stderr_tail, r.stderr_bytes),
        ] {
            if tail.0.is_empty() {
                continue;
            }
            let cut = if total > tail.0.len() as u64 {
                format!(", last {} of {} bytes", tail.0.len(), total)
            } else {
                String::new()
            };
            out.push_str(&format!("\n--- {} {label}{cut}\n", r.name));
            let text = String::from_utf8_lossy(&tail.0);
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// `flotilla job ID --json`.
pub fn job_json(info: &JobInfo, results: &[AgentResult]) -> Value {
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "agent": r.agent, "name": r.name, "outcome": r.outcome, "code": r.code,
                "signal": r.signal, "started_ms": r.started_ms, "duration_ms": r.duration_ms,
                "message": r.message,
                "stdout_tail": String::from_utf8_lossy(&r.stdout_tail.0),
                "stderr_tail": String::from_utf8_lossy(&r.stderr_tail.0),
                "stdout_bytes": r.stdout_bytes, "stderr_bytes": r.stderr_bytes,
            })
        })
        .collect();
    json!({ "job": info, "results": results })
}

/// The `flotilla audit` table.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let mut out = format!(
        "{:<20}  {:<19}  {:<12}  {:<20}  DETAIL\n",
        "TIME", "ACTOR", "ACTION", "TARGET"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<20}  {:<19}  {:<12}  {:<20}  {}\n",
            utc(e.at_ms),
            e.actor,
            e.action,
            e.target,
            e.detail
        ));
    }
    out
}

/// One `flotilla ping` line.
pub fn ping_line(p: &PingResult, width: usize) -> String {
    match p.rtt_us {
        Some(us) => format!(
            "{:<width$}  {:>8.2} ms  clock {:+} ms",
            p.name,
            us as f64 / 1000.0,
            p.clock_offset_ms.unwrap_or(0)
        ),
        None => format!("{:<width$}  unreachable: {}", p.name, p.error),
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

/// Runs `flotilla ping`; exit status 0 only if every agent answered.
pub async fn ping_command(client: &Client, selector: &str, json: bool) -> Result<u8, ClientError> {
    let replies = query(
        client,
        &Query::Ping {
            selector: selector.to_string(),
        },
    )
    .await?;
    let mut pings: Vec<PingResult> = replies
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Ping(p) => Some(p),
            _ => None,
        })
        .collect();
    pings.sort_by(|a, b| a.name.cmp(&b.name));
    let all_ok = pings.iter().all(|p| p.rtt_us.is_some());
    if json {
        for p in &pings {
            crate::util::outln!("{}", json!(p)).map_err(ClientError::Output)?;
        }
    } else {
        let width = pings.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &pings {
            crate::util::outln!("{}", ping_line(p, width)).map_err(ClientError::Output)?;
        }
    }
    Ok(u8::from(!all_ok))
}

/// The newest `limit` jobs, newest first.
pub async fn jobs(client: &Client, limit: u32) -> Result<Vec<JobInfo>, ClientError> {
    Ok(query(client, &Query::Jobs { limit })
        .await?
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Job(j) => Some(j),
            _ => None,
        })
        .collect())
}

/// The newest `limit` audit entries, oldest first.
pub async fn audit(client: &Client, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
    Ok(query(client, &Query::Audit { limit })
        .await?
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Audit(e) => Some(e),
            _ => None,
        })
        .collect())
}

/// Runs `flotilla jobs`.
pub async fn jobs_command(client: &Client, limit: u32, json: bool) -> Result<u8, ClientError> {
    let jobs = jobs(client, limit).await?;
    if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        )
        .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", jobs_table(&jobs)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

/// Splits a job query's replies into the job and its results.
pub fn split_job(replies: Vec<QueryReply>) -> Option<(JobInfo, Vec<AgentResult>)> {
    let mut info = None;
    let mut results = Vec::new();
    for r in replies {
        match r {
            QueryReply::Job(j) => info = Some(j),
            QueryReply::Result(res) => results.push(res),
            _ => {}
        }
    }
    info.map(|i| (i, results))
}

/// Runs `flotilla job ID`.
pub async fn job_command(client: &Client, job: u64, json: bool) -> Result<u8, ClientError> {
    let replies = query(client, &Query::Job { job: JobId(job) }).await?;
    let Some((info, results)) = split_job(replies) else {
        return Err(ClientError::Stream("hub answered without the job".into()));
    };
    if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&job_json(&info, &results)).unwrap_or_default()
        )
        .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", job_detail(&info, &results)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

/// Runs `flotilla audit`.
pub async fn audit_command(client: &Client, limit: u32, json: bool) -> Result<u8, ClientError> {
    let entries = audit(client, limit).await?;
    if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        )
        .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", audit_table(&entries)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;
    use flotilla_wire::exec::{Chunk, ExecFailure, ExitReport, FailureKind};

    fn id(n: u8) -> IdentityId {
        IdentityId::from_random(Role::Agent, [n; 8])
    }

    fn target(n: u8, name: &str) -> Target {
        Target {
            id: id(n),
            name: name.into(),
            online: true,
        }
    }

    fn output(n: u8, stream: OutputStream, s: &str) -> ExecEvent {
        ExecEvent::Agent {
            agent: id(n),
            event: AgentEvent::Output {
                stream,
                data: Chunk(s.as_bytes().to_vec()),
            },
        }
    }

    fn exited(n: u8, code: i32) -> ExecEvent {
        ExecEvent::Agent {
            agent: id(n),
            event: AgentEvent::Exited(ExitReport {
                code: Some(code),
                duration_ms: 12,
                ..ExitReport::default()
            }),
        }
    }

    fn render(opts: RenderOptions, events: Vec<ExecEvent>) -> (String, String, Renderer) {
        let mut r = Renderer::new(opts);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for ev in events {
            r.handle(ev, &mut out, &mut err).expect("render");
        }
        (
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
            r,
        )
    }

    fn job_events(tail: Vec<ExecEvent>) -> Vec<ExecEvent> {
        let mut v = vec![
            ExecEvent::Accepted {
                job: JobId(7),
                targets: 3,
            },
            ExecEvent::Targets(vec![target(1, "web-1"), target(2, "db-10"), target(3, "c")]),
        ];
        v.extend(tail);
        v
    }

    fn done(succeeded: u32, failed: u32, unreachable: u32) -> ExecEvent {
        ExecEvent::Done(JobSummary {
            job: JobId(7),
            targets: 3,
            counts: JobCounts {
                succeeded,
                failed,
                unreachable,
                ..JobCounts::default()
            },
            duration_ms: 1500,
        })
    }

    #[test]
    fn lines_are_prefixed_aligned_and_never_interleaved() {
        let (out, err, r) = render(
            RenderOptions::default(),
            job_events(vec![
                output(1, OutputStream::Stdout, "hel"),
                output(2, OutputStream::Stdout, "one\ntw"),
                output(1, OutputStream::Stdout, "lo\nwor"),
                output(2, OutputStream::Stderr, "oops\n"),
                output(2, OutputStream::Stdout, "o\n"),
                exited(1, 0),
                exited(2, 0),
                exited(3, 0),
                done(3, 0, 0),
            ]),
        );
        assert_eq!(
            out, "db-10 | one\nweb-1 | hello\ndb-10 | two\nweb-1 | wor\n",
            "partial lines wait for their newline; the rest is flushed at exit"
        );
        assert!(err.starts_with("db-10 | oops\n"), "{err}");
        assert!(
            err.contains(
                "job 7: 3 agents, 3 succeeded, 0 failed, 0 timed out, 0 unreachable (1.50 s)\n"
            ),
            "{err}"
        );
        assert!(err.contains("  web-1  exit 0"), "{err}");
        assert_eq!(r.exit_status(), 0);
    }

    #[test]
    fn failures_are_reported_at_once_and_fail_the_exit_status() {
        let (_, err, r) = render(
            RenderOptions::default(),
            job_events(vec![
                ExecEvent::Agent {
                    agent: id(3),
                    event: AgentEvent::Failed(ExecFailure {
                        kind: FailureKind::Unreachable,
                        message: "offline (last seen 5m ago)".into(),
                    }),
                },
                exited(2, 3),
                exited(1, 0),
                done(1, 1, 1),
            ]),
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines[0],
            "c     | ! unreachable: offline (last seen 5m ago)"
        );
        assert_eq!(lines[1], "db-10 | ! exit 3");
        assert_eq!(
            lines[2],
            "job 7: 3 agents, 1 succeeded, 1 failed, 0 timed out, 1 unreachable (1.50 s)"
        );
        assert_eq!(r.exit_status(), 1);
    }

    #[test]
    fn colours_only_where_asked() {
        let opts = RenderOptions {
            json: false,
            colour_out: true,
            colour_err: false,
        };
        let (out, err, _) = render(
            opts,
            job_events(vec![
                output(1, OutputStream::Stdout, "a\n"),
                output(2, OutputStream::Stderr, "b\n"),
            ]),
        );
        assert_eq!(out, "\x1b[36mweb-1 |\x1b[0m a\n");
        assert_eq!(err, "db-10 | b\n");
    }

    #[test]
    fn long_lines_are_cut_to_bound_memory() {
        let blob = "x".repeat(MAX_LINE + 10);
        let (out, _, _) = render(
            RenderOptions::default(),
            job_events(vec![output(1, OutputStream::Stdout, &blob), exited(1, 0)]),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), "web-1 | ".len() + MAX_LINE);
        assert_eq!(lines[1], "web-1 | xxxxxxxxxx");

        // A long line whose newline arrives in a later chunk is cut too.
        let half = "y".repeat(MAX_LINE / 2 + 1);
        let (out, _, _) = render(
            RenderOptions::default(),
            job_events(vec![
                output(1, OutputStream::Stdout, &half),
                output(1, OutputStream::Stdout, &half),
                output(1, OutputStream::Stdout, &format!("{half}\nend\n")),
            ]),
        );
        let lens: Vec<usize> = out.lines().map(|l| l.len() - "web-1 | ".len()).collect();
        assert_eq!(lens, [MAX_LINE, 3 * (MAX_LINE / 2 + 1) - MAX_LINE, 3]);
    }

    #[test]
    fn json_events_carry_job_and_agent() {
        let opts = RenderOptions {
            json: true,
            ..RenderOptions::default()
        };
        let (out, err, _) = render(
            opts,
            job_events(vec![
                ExecEvent::Agent {
                    agent: id(1),
                    event: AgentEvent::Started { pid: 42 },
                },
                output(1, OutputStream::Stderr, "warn\n"),
                exited(1, 0),
                done(1, 0, 0),
            ]),
        );
        assert!(err.is_empty());
        let v: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(v[0]["event"], "accepted");
        assert_eq!(v[0]["job"], 7);
        assert_eq!(v[0]["targets"][1]["name"], "db-10");
        assert_eq!(v[1]["event"], "started");
        assert_eq!(v[1]["agent"], id(1).as_str());
        assert_eq!(v[1]["pid"], 42);
        assert_eq!(v[2]["event"], "stderr");
        assert_eq!(v[2]["line"], "warn");
        assert_eq!(v[2]["name"], "web-1");
        assert_eq!(v[3]["event"], "exit");
        assert_eq!(v[3]["code"], 0);
        assert_eq!(v[3]["outcome"], "exited");
        assert_eq!(v[4]["event"], "summary");
        assert_eq!(v[4]["exit_status"], 1, "two targets never answered");
    }

    #[test]
    fn descriptions_name_what_happened() {
        let killed = AgentEvent::Exited(ExitReport {
            signal: Some(9),
            cancelled: true,
            ..ExitReport::default()
        });
        assert_eq!(describe(&killed), "cancelled, killed by SIGKILL (9)");
        let timed = AgentEvent::Exited(ExitReport {
            signal: Some(15),
            timed_out: true,
            ..ExitReport::default()
        });
        assert_eq!(describe(&timed), "timed out, killed by SIGTERM (15)");
        let refused = AgentEvent::Failed(ExecFailure {
            kind: FailureKind::Refused,
            message: "exec = \"off\"".into(),
        });
        assert_eq!(describe(&refused), "refused: exec = \"off\"");
    }

    #[test]
    fn timeouts_and_times_parse() {
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
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
