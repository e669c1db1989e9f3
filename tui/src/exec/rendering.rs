//! Exec events as text or NDJSON: prefixed, aligned, per-agent lines, failures at once, and the
//! summary last.

use flotilla_wire::IdentityId;
use flotilla_wire::exec::{
    AgentEvent, ExecEvent, JobCounts, JobId, JobSummary, Outcome, OutputStream, Target,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{self, Write};

/// Longest line kept waiting for its newline; longer output (a binary blob, `head -c 1G
/// /dev/zero`) is cut into lines of this size so memory stays bounded.
pub const MAX_LINE: usize = 64 * 1024;
/// Above this many targets the summary lists only agents that did not succeed.
pub const SUMMARY_ALL_UP_TO: usize = 50;
/// Per-agent prefix colours (ANSI): distinct on dark and light terminals.
const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

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

pub(super) fn signal_name(sig: i32) -> &'static str {
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

pub(super) fn seconds(ms: u64) -> String {
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
        AgentEvent::Failed(f) => format!(
            "{}: {}",
            f.kind.as_str().replace('_', " "),
            crate::util::Escaped(&f.message)
        ),
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
        let text = format!(
            "{:<w$}{tail}",
            crate::util::Escaped(&a.target.name),
            w = self.width
        );
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
                    self.width = self
                        .width
                        .max(crate::util::escaped(&t.name).chars().count());
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

    /// Prefixes and failure messages are escaped; the command's own output stays raw, as ssh
    /// passes it.
    #[test]
    fn prefixes_and_messages_are_escaped_output_is_not() {
        let (out, err, _) = render(
            RenderOptions::default(),
            vec![
                ExecEvent::Accepted {
                    job: JobId(7),
                    targets: 2,
                },
                ExecEvent::Targets(vec![target(1, "a\x1bb"), target(2, "c")]),
                output(1, OutputStream::Stdout, "x\x1b[1m\n"),
                ExecEvent::Agent {
                    agent: id(2),
                    event: AgentEvent::Failed(ExecFailure {
                        kind: FailureKind::Refused,
                        message: "no \u{202e}way".into(),
                    }),
                },
            ],
        );
        assert_eq!(out, "a\\x1bb | x\x1b[1m\n");
        assert_eq!(err, "c      | ! refused: no \\u{202e}way\n");
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
}
